//! The open FTPS sessions, session serials and the failed-login lockouts.
//!
//! Every accepted control connection is registered here until it ends, so the admin API can
//! close a device's sessions at once (disable, secret rotation, delete) and the front can
//! drain on shutdown. The lockouts live here too, so the API can show and clear them
//! (through [`DeviceSessions`]). A serial, unique to each logged-in session, is carried in its
//! [`super::auth::Device`] (and so in libunftp's log lines), tying a session's records together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::auth::Lockout;
use super::conn::Conn;
use crate::domain::{DeviceId, now_ms};
use crate::metrics::Metrics;
use crate::services::devices::{DeviceSessions, LockoutView};

#[derive(Debug)]
pub struct Sessions {
    next_serial: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    pub lockout: Lockout,
    /// `fwdist_ftps_sessions`, and lockout refusals.
    pub metrics: Arc<Metrics>,
    /// `/healthz` connections, answered by the accept loop without a session.
    pub probes: Arc<HealthProbes>,
    /// Bumped by [`Sessions::close_device`] before it looks for sessions: a login that read
    /// the device's credentials before an admin's change checks it after its session is
    /// registered, so it cannot slip between the change and the close.
    generations: Mutex<HashMap<DeviceId, u64>>,
}

/// The local addresses of `/healthz` probes on their way in: the front's accept loop answers
/// a connection from one of them with `220` and closes it, before any session limit, so the
/// health check proves the listener accepts without taking a session slot (a check that
/// counted as a session was refused `421` whenever its address had its 16 sessions open).
#[derive(Debug, Default)]
pub struct HealthProbes {
    pending: Mutex<std::collections::HashSet<std::net::SocketAddr>>,
    count: std::sync::atomic::AtomicUsize,
}

impl HealthProbes {
    /// Announces a probe from `local` (bound before it connects); dropping the guard ends it.
    pub fn announce(self: &Arc<Self>, local: std::net::SocketAddr) -> ProbeGuard {
        self.lock().insert(local);
        self.count.fetch_add(1, Ordering::SeqCst);
        ProbeGuard {
            probes: self.clone(),
            local,
        }
    }

    /// True (once) for a connection from an announced probe.
    pub fn is_probe(&self, peer: std::net::SocketAddr) -> bool {
        // The common case, no probe under way, costs one atomic load per accept.
        self.count.load(Ordering::SeqCst) > 0 && self.lock().contains(&peer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<std::net::SocketAddr>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct ProbeGuard {
    probes: Arc<HealthProbes>,
    local: std::net::SocketAddr,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if self.probes.lock().remove(&self.local) {
            self.probes.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(
            Lockout::new(5, std::time::Duration::from_secs(300)),
            Arc::new(Metrics::new()),
        )
    }
}

impl Sessions {
    pub fn new(lockout: Lockout, metrics: Arc<Metrics>) -> Self {
        Sessions {
            next_serial: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            lockout,
            metrics,
            probes: Arc::default(),
            generations: Mutex::new(HashMap::new()),
        }
    }

    /// How often the device's sessions were closed (see [`Sessions::close_device`]).
    pub fn generation(&self, device: DeviceId) -> u64 {
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&device)
            .copied()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh serial for a session that just authenticated.
    pub fn allocate(&self) -> u64 {
        self.next_serial.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn register(&self, conn: Arc<Conn>) {
        if self.lock().insert(conn.id, conn).is_none() {
            self.metrics.ftps_sessions.inc();
        }
    }

    pub fn unregister(&self, id: u64) {
        if self.lock().remove(&id).is_some() {
            self.metrics.ftps_sessions.dec();
        }
    }

    pub fn open(&self) -> Vec<Arc<Conn>> {
        self.lock().values().cloned().collect()
    }

    /// Closes every open session of `device` (its control and data connections); returns how many.
    pub fn close_device(&self, device: DeviceId) -> usize {
        {
            let mut g = self
                .generations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Bounded: entries only for devices an admin acted on.
            if g.len() >= 100_000 {
                g.clear();
            }
            *g.entry(device).or_default() += 1;
        }
        let mine: Vec<Arc<Conn>> = self
            .lock()
            .values()
            .filter(|c| c.device() == Some(device))
            .cloned()
            .collect();
        for c in &mine {
            c.close();
        }
        mine.len()
    }
}

impl DeviceSessions for Sessions {
    fn close_device(&self, id: DeviceId) -> usize {
        Sessions::close_device(self, id)
    }

    fn lockouts(&self, id: DeviceId) -> Vec<LockoutView> {
        let now = now_ms();
        let mut v: Vec<LockoutView> = self
            .lockout
            .locked(&id.to_string())
            .into_iter()
            .map(|(client_ip, left)| LockoutView {
                client_ip,
                until: now.saturating_add(i64::try_from(left.as_millis()).unwrap_or(i64::MAX)),
            })
            .collect();
        v.sort_by_key(|l| l.client_ip);
        v
    }

    fn unlock(&self, id: DeviceId) -> usize {
        self.lockout.clear(&id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Model;
    use crate::ftps::principal::{DeviceLogin, Principal, SessionUser};

    fn device(id: DeviceId) -> SessionUser {
        SessionUser {
            principal: Principal::Device(DeviceLogin {
                id,
                model: Model::parse("iq2").unwrap(),
            }),
            ip: "192.0.2.1".parse().unwrap(),
            serial: 1,
        }
    }

    #[test]
    fn serials_are_unique() {
        let s = Sessions::default();
        let a = s.allocate();
        assert_ne!(a, s.allocate());
    }

    #[test]
    fn closing_a_device_closes_only_its_sessions() {
        let s = Sessions::default();
        let addr = "192.0.2.1:1000".parse().unwrap();
        let d = DeviceId::parse("aa:bb:cc:00:00:01").unwrap();
        let e = DeviceId::parse("aa:bb:cc:00:00:02").unwrap();
        let (c1, c2, c3) = (
            Arc::new(Conn::new(1, addr, addr)),
            Arc::new(Conn::new(2, addr, addr)),
            Arc::new(Conn::new(3, addr, addr)),
        );
        c1.set_user(device(d));
        c2.set_user(device(e));
        c3.set_user(device(d));
        for c in [&c1, &c2, &c3] {
            s.register(c.clone());
        }
        s.unregister(3);
        assert_eq!(s.close_device(d), 1);
        assert!(c1.is_closed() && !c2.is_closed() && !c3.is_closed());
    }
}
