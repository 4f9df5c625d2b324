//! Refuses transfers over a plaintext data channel, closing libunftp 0.24's `PROT C` + `EPSV`
//! bypass (its data-channel TLS check only guards `PASV`).
//!
//! libunftp decides TLS for a data connection in its `DataCommandExecutor` (`ftps_mode: On`
//! or `Off`) and hands our backend only a boxed writer, so the backend cannot see it. But
//! libunftp instruments the executor's `exec_retr`, `exec_list_variant` and `exec_mlsd` with
//! `tracing` spans that record the executor (`self`) by `Debug`. [`DataChannelTap`] is a
//! `tracing` layer that watches only those spans and marks the ones whose executor says
//! `ftps_mode: Off`; the backend, running inside that span, asks [`data_channel_is_plain`]
//! before it sends a byte. If it cannot tell (no tap installed, or libunftp changed its
//! spans), it refuses: fail closed.

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Registry};

const DATACHAN_TARGET: &str = "libunftp::server::datachan";
const EXEC_SPANS: [&str; 3] = ["exec_retr", "exec_list_variant", "exec_mlsd"];

/// True for the spans this module reads.
pub fn is_exec_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == DATACHAN_TARGET && EXEC_SPANS.contains(&meta.name())
}

/// Marker in the extensions of an executor span whose data channel has no TLS.
struct Plain;
/// Marker for an executor span that was seen and inspected.
struct Inspected;

/// The layer; install it with a per-layer filter of [`is_exec_span`] (see `telemetry`).
pub struct DataChannelTap;

struct FindPlain {
    plain: bool,
}

impl Visit for FindPlain {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "self" {
            self.plain = format!("{value:?}").contains("ftps_mode: Off");
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for DataChannelTap {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !is_exec_span(attrs.metadata()) {
            return;
        }
        let mut find = FindPlain { plain: false };
        attrs.record(&mut find);
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            ext.insert(Inspected);
            if find.plain {
                ext.insert(Plain);
            }
        }
    }
}

/// Whether the data connection of the transfer running in the current task is plaintext.
/// `true` also when that cannot be determined.
pub fn data_channel_is_plain() -> bool {
    let current = tracing::Span::current();
    let known = current.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        span.scope()
            .find(|s| is_exec_span(s.metadata()))
            .filter(|s| s.extensions().get::<Inspected>().is_some())
            .map(|s| s.extensions().get::<Plain>().is_some())
    });
    known.flatten().unwrap_or(true)
}
