//! Per-session facts that libunftp does not hand to backends: which passive data port a
//! session was offered.
//!
//! libunftp 0.24 exposes the passive port only in its log record
//! `"Listening on passive port IP:PORT"`, tagged with the session's `trace-id`; and it logs
//! `"PASS: User <user> logged in"` with the same `trace-id`, where `<user>` is our
//! [`super::auth::Device`]'s `Display` (`MAC#SERIAL`). The log bridge feeds both records
//! here, which links trace-id → session serial → last passive port. The storage backend,
//! which knows its session serial, reads the port when a RETR starts. Entries are removed
//! when the session's backend is dropped (that happens on every session end, unlike
//! libunftp's `LoggedOut` event). EPSV is not logged by libunftp, so EPSV transfers record no
//! data port.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Sessions {
    next_serial: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_trace: HashMap<String, u64>,
    by_serial: HashMap<u64, Entry>,
}

#[derive(Debug, Default)]
struct Entry {
    trace_id: String,
    passive_port: Option<u16>,
}

impl Sessions {
    /// A fresh serial for a session that just authenticated.
    pub fn allocate(&self) -> u64 {
        self.next_serial.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// From the log record "PASS: User MAC#SERIAL logged in".
    pub fn logged_in(&self, trace_id: &str, serial: u64) {
        let mut g = self.lock();
        g.by_trace.insert(trace_id.to_owned(), serial);
        g.by_serial.insert(
            serial,
            Entry {
                trace_id: trace_id.to_owned(),
                passive_port: None,
            },
        );
    }

    /// From the log record "Listening on passive port IP:PORT".
    pub fn passive_offered(&self, trace_id: &str, port: u16) {
        let mut g = self.lock();
        if let Some(serial) = g.by_trace.get(trace_id).copied()
            && let Some(e) = g.by_serial.get_mut(&serial)
        {
            e.passive_port = Some(port);
        }
    }

    pub fn passive_port(&self, serial: u64) -> Option<u16> {
        self.lock().by_serial.get(&serial).and_then(|e| e.passive_port)
    }

    /// The session ended.
    pub fn ended(&self, serial: u64) {
        let mut g = self.lock();
        if let Some(e) = g.by_serial.remove(&serial) {
            g.by_trace.remove(&e.trace_id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_serial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters (each operation is a single insert/remove), so recover from poisoning.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Parses the user part of "PASS: User aa:bb:cc:dd:ee:ff#17 logged in" → 17.
pub fn serial_from_login_message(msg: &str) -> Option<u64> {
    let rest = msg.strip_prefix("PASS: User ")?.strip_suffix(" logged in")?;
    rest.rsplit_once('#')?.1.parse().ok()
}

/// Parses "Listening on passive port 127.0.0.1:50012" → 50012.
pub fn port_from_passive_message(msg: &str) -> Option<u16> {
    msg.strip_prefix("Listening on passive port ")?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_log_lines() {
        assert_eq!(
            serial_from_login_message("PASS: User aa:bb:cc:dd:ee:ff#17 logged in"),
            Some(17)
        );
        assert_eq!(serial_from_login_message("PASS: User x logged in"), None);
        assert_eq!(
            port_from_passive_message("Listening on passive port 127.0.0.1:50012"),
            Some(50012)
        );
        assert_eq!(port_from_passive_message("Listening on passive port nope"), None);
    }

    #[test]
    fn links_trace_to_port_and_forgets_on_end() {
        let s = Sessions::default();
        let a = s.allocate();
        let b = s.allocate();
        s.logged_in("t-a", a);
        s.logged_in("t-b", b);
        s.passive_offered("t-a", 50001);
        s.passive_offered("t-b", 50002);
        s.passive_offered("t-a", 50003);
        s.passive_offered("unknown", 50004);
        assert_eq!(s.passive_port(a), Some(50003));
        assert_eq!(s.passive_port(b), Some(50002));
        s.ended(a);
        assert_eq!(s.passive_port(a), None);
        s.ended(b);
        assert!(s.is_empty());
    }
}
