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
//!
//! The same layer reads two more of libunftp's data-channel spans, for [`super::ports`]:
//! `spawn_processing` (created right after a passive port accepted a data connection; its
//! `socket` field names the port and the client) and `writer`/`reader` (where libunftp runs the
//! data-channel TLS handshake and, on failure, panics — #375). While a `writer`/`reader` span
//! is entered, the connection it serves is kept in a thread-local, so the panic hook installed
//! by [`install_panic_hook`] can say which data connection's handshake failed.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Registry};

const DATACHAN_TARGET: &str = "libunftp::server::datachan";
const EXEC_SPANS: [&str; 3] = ["exec_retr", "exec_list_variant", "exec_mlsd"];
const ACCEPT_SPAN: &str = "spawn_processing";
const TLS_SPANS: [&str; 2] = ["writer", "reader"];

/// True for the transfer spans whose executor tells plaintext from TLS.
pub fn is_exec_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == DATACHAN_TARGET && EXEC_SPANS.contains(&meta.name())
}

/// True for every span this module reads (the layer's filter).
pub fn is_tapped_span(meta: &Metadata<'_>) -> bool {
    meta.is_span()
        && meta.target() == DATACHAN_TARGET
        && (EXEC_SPANS.contains(&meta.name())
            || meta.name() == ACCEPT_SPAN
            || TLS_SPANS.contains(&meta.name()))
}

/// The data connection a span serves: (passive port, client address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataConn(u16, IpAddr);

/// Parses tokio's `Debug` of a `TcpStream`, `... addr: 127.0.0.1:50001, peer: 127.0.0.1:40312, ...`.
fn data_conn(socket_debug: &str) -> Option<DataConn> {
    let field = |name: &str| -> Option<SocketAddr> {
        let rest = &socket_debug[socket_debug.find(name)? + name.len()..];
        let end = rest.find([',', ' ', '}']).unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    Some(DataConn(field("addr: ")?.port(), field("peer: ")?.ip()))
}

struct FindSocket(Option<DataConn>);

impl Visit for FindSocket {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "socket" {
            self.0 = data_conn(&format!("{value:?}"));
        }
    }
}

thread_local! {
    static IN_TLS_SETUP: Cell<Option<DataConn>> = const { Cell::new(None) };
}

/// Chains a panic hook that reports libunftp's data-channel TLS panics (see module docs).
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_datachan = info
            .location()
            .is_some_and(|l| l.file().contains("libunftp") && l.file().ends_with("datachan.rs"));
        if in_datachan && let Some(DataConn(port, ip)) = IN_TLS_SETUP.with(Cell::get) {
            super::ports::data_tls_failed(port, ip);
            return;
        }
        previous(info);
    }));
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
        let name = attrs.metadata().name();
        if name == ACCEPT_SPAN || TLS_SPANS.contains(&name) {
            let mut find = FindSocket(None);
            attrs.record(&mut find);
            if let Some(c) = find.0 {
                if name == ACCEPT_SPAN {
                    super::ports::data_connected(c.0, c.1);
                } else if let Some(span) = ctx.span(id) {
                    span.extensions_mut().insert(c);
                }
            }
            return;
        }
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

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(c) = span.extensions().get::<DataConn>()
        {
            IN_TLS_SETUP.with(|t| t.set(Some(*c)));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && span.extensions().get::<DataConn>().is_some()
        {
            IN_TLS_SETUP.with(|t| t.set(None));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_port_and_peer_from_a_tokio_socket() {
        let s =
            "PollEvented { io: Some(TcpStream { addr: 127.0.0.1:50001, peer: 127.0.0.1:40312, fd: 23 }) }";
        assert_eq!(data_conn(s), Some(DataConn(50001, "127.0.0.1".parse().unwrap())));
        let v6 = "TcpStream { addr: [::1]:50002, peer: [::1]:40000, fd: 9 }";
        assert_eq!(data_conn(v6), Some(DataConn(50002, "::1".parse().unwrap())));
        assert_eq!(data_conn("TcpStream { fd: 9 }"), None);
    }

    #[tokio::test]
    async fn tokio_socket_debug_has_the_fields_we_read() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(
            data_conn(&format!("{s:?}")),
            Some(DataConn(port, "127.0.0.1".parse().unwrap())),
            "{s:?}"
        );
        drop(c);
    }
}
