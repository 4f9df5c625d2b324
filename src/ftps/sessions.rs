//! Session serials: a number unique to each logged-in session, carried in its
//! [`super::auth::Device`] (and so in libunftp's "PASS: User MAC#SERIAL logged in" log line),
//! which ties a session's log records together.
//!
//! Per-connection facts that libunftp does not hand to backends (the passive port offered,
//! the device of a connection) live in [`super::front::Conn`], which the passive-port binder
//! and the storage backend of the same connection share.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Sessions {
    next_serial: AtomicU64,
}

impl Sessions {
    /// A fresh serial for a session that just authenticated.
    pub fn allocate(&self) -> u64 {
        self.next_serial.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_unique() {
        let s = Sessions::default();
        let a = s.allocate();
        assert_ne!(a, s.allocate());
    }
}
