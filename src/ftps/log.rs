//! Bridge from libunftp's slog records into our `tracing` output.
//!
//! Records are formatted only when `tracing` would show them, so a quiet server pays almost
//! nothing per record.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, OwnedKVList, Record, Serializer};

#[derive(Debug, Clone)]
pub struct SlogBridge;

impl SlogBridge {
    pub fn logger() -> slog::Logger {
        slog::Logger::root(SlogBridge.fuse(), slog::o!())
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

/// libunftp warns about every command a storage backend refuses ("Control channel error").
/// Our tree refuses by design: a device without an update gets `550` on `/target/...` (the
/// normal poll), a write gets `550` read-only. Those are the client's answer, not a server
/// problem: logged at debug. Its "Failed login attempt" repeats our own warning with the
/// loopback address it sees instead of the IQ's, and its I/O errors on the loopback link to
/// the relay (a session the relay ended) say nothing either: debug too. Anything else keeps
/// its level.
fn effective_level(record: &Record<'_>) -> slog::Level {
    if record.level() != slog::Level::Warning {
        return record.level();
    }
    let msg = record.msg().to_string();
    let expected = [
        "PermanentFileNotAvailable",
        "PermanentDirectoryNotAvailable",
        "PermissionDenied",
    ];
    // The engine's only peer is our relay on loopback: an I/O error there means the relay
    // ended the session (for its own logged reason), not that anything went wrong.
    let engine_io = msg.starts_with("Control channel error") && msg.contains("kind: IoError")
        || msg.starts_with("Could not send error reply to client");
    if (msg.starts_with("Control channel error") && expected.iter().any(|k| msg.contains(k)))
        || msg.starts_with("PASS: Failed login attempt")
        || engine_io
    {
        slog::Level::Debug
    } else {
        slog::Level::Warning
    }
}

impl Drain for SlogBridge {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let level = effective_level(record);
        let shown = match level {
            slog::Level::Critical | slog::Level::Error => {
                tracing::enabled!(target: "unftp", tracing::Level::ERROR)
            }
            slog::Level::Warning => tracing::enabled!(target: "unftp", tracing::Level::WARN),
            slog::Level::Info => tracing::enabled!(target: "unftp", tracing::Level::INFO),
            slog::Level::Debug => tracing::enabled!(target: "unftp", tracing::Level::DEBUG),
            slog::Level::Trace => tracing::enabled!(target: "unftp", tracing::Level::TRACE),
        };
        if !shown {
            return Ok(());
        }
        let msg = record.msg().to_string();
        let f = fields(record, values);
        {
            let trace = f.trace_id.as_deref().unwrap_or("-");
            let kv = f.text.as_str();
            match level {
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
