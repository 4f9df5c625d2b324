//! Bridge from libunftp's slog records into our `tracing` output, and the tap that reads the
//! two session facts libunftp only logs (see [`super::sessions`]).
//!
//! Records are formatted only when `tracing` would show them or when they are one of the two
//! tapped messages, so a quiet server pays almost nothing per record.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use slog::{Drain, Key, OwnedKVList, Record, Serializer};

use super::sessions::{self, Sessions};

#[derive(Debug, Clone)]
pub struct SlogBridge {
    sessions: Arc<Sessions>,
}

impl SlogBridge {
    pub fn logger(sessions: Arc<Sessions>) -> slog::Logger {
        slog::Logger::root(SlogBridge { sessions }.fuse(), slog::o!())
    }
}

/// Collects `key=value` pairs, and the `trace-id` separately.
#[derive(Default)]
struct Fields {
    trace_id: Option<String>,
    text: String,
}

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        if key == "trace-id" {
            self.trace_id = Some(val.to_string());
        } else {
            let _ = write!(self.text, " {key}={val}");
        }
        Ok(())
    }
}

fn fields(record: &Record<'_>, values: &OwnedKVList) -> Fields {
    let mut f = Fields::default();
    let _ = slog::KV::serialize(&record.kv(), record, &mut f);
    let _ = slog::KV::serialize(values, record, &mut f);
    f
}

impl Drain for SlogBridge {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let module = record.module();
        let tapped =
            record.level() == slog::Level::Info && (module.ends_with("::pasv") || module.ends_with("::pass"));
        let shown = match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::enabled!(target: "unftp", tracing::Level::ERROR)
            }
            slog::Level::Warning => tracing::enabled!(target: "unftp", tracing::Level::WARN),
            slog::Level::Info => tracing::enabled!(target: "unftp", tracing::Level::INFO),
            slog::Level::Debug => tracing::enabled!(target: "unftp", tracing::Level::DEBUG),
            slog::Level::Trace => tracing::enabled!(target: "unftp", tracing::Level::TRACE),
        };
        if !tapped && !shown {
            return Ok(());
        }
        let msg = record.msg().to_string();
        let f = fields(record, values);
        if tapped && let Some(trace) = &f.trace_id {
            if let Some(port) = sessions::port_from_passive_message(&msg) {
                self.sessions.passive_offered(trace, port);
            } else if let Some(serial) = sessions::serial_from_login_message(&msg) {
                self.sessions.logged_in(trace, serial);
            }
        }
        if shown {
            let trace = f.trace_id.as_deref().unwrap_or("-");
            let kv = f.text.as_str();
            match record.level() {
                slog::Level::Critical | slog::Level::Error => {
                    tracing::error!(target: "unftp", trace_id = trace, "{msg}{kv}")
                }
                slog::Level::Warning => tracing::warn!(target: "unftp", trace_id = trace, "{msg}{kv}"),
                slog::Level::Info => tracing::info!(target: "unftp", trace_id = trace, "{msg}{kv}"),
                slog::Level::Debug => tracing::debug!(target: "unftp", trace_id = trace, "{msg}{kv}"),
                slog::Level::Trace => tracing::trace!(target: "unftp", trace_id = trace, "{msg}{kv}"),
            }
        }
        Ok(())
    }
}
