//! One FTPS session as the front knows it: the IQ's real address, who logged in, the passive
//! offer it holds and its deadline, whether a transfer runs. Shared by the control relay
//! ([`super::control`]), the data connection task ([`super::data`]), the libunftp session
//! behind them (its authenticator and storage backend) and the registry that closes a
//! device's sessions.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::principal::{Principal, SessionUser};
use crate::domain::DeviceId;

pub struct Conn {
    pub id: u64,
    /// The IQ's address (the TCP peer of the control connection).
    pub peer: SocketAddr,
    /// Our address on the control connection: passive ports are opened on it.
    pub local: SocketAddr,
    /// Who logged in (set by the session's authenticator).
    user: Mutex<Option<SessionUser>>,
    transfers: AtomicU32,
    /// The passive port last offered to this session; 0 = none yet.
    passive_port: AtomicU32,
    /// When the session's current unused offer was first made (re-sending PASV keeps it).
    unused_since: Mutex<Option<Instant>>,
    misses: AtomicU32,
    closing: watch::Sender<bool>,
    closed_flag: AtomicBool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({} from {})", self.id, self.peer)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unused offers a session may let expire before it is closed.
const MAX_MISSES: u32 = 2;

impl Conn {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr) -> Self {
        Conn {
            id,
            peer,
            local,
            user: Mutex::new(None),
            transfers: AtomicU32::new(0),
            passive_port: AtomicU32::new(0),
            unused_since: Mutex::new(None),
            misses: AtomicU32::new(0),
            closing: watch::Sender::new(false),
            closed_flag: AtomicBool::new(false),
        }
    }

    pub fn set_user(&self, user: SessionUser) {
        *lock(&self.user) = Some(user);
    }

    pub fn user(&self) -> Option<SessionUser> {
        lock(&self.user).clone()
    }

    pub fn device(&self) -> Option<DeviceId> {
        lock(&self.user).as_ref().and_then(|u| u.device().map(|d| d.id))
    }

    pub fn is_probe(&self) -> bool {
        lock(&self.user)
            .as_ref()
            .is_some_and(|u| u.principal == Principal::Probe)
    }

    /// Ends the session (control and data connections) from outside.
    pub fn close(&self) {
        self.closed_flag.store(true, Ordering::Relaxed);
        self.closing.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        self.closed_flag.load(Ordering::Relaxed)
    }

    /// Resolves once [`Conn::close`] was called.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub fn set_passive_port(&self, port: u16) {
        self.passive_port.store(u32::from(port), Ordering::Relaxed);
    }

    /// The data port of the session's current transfer (recorded with each download).
    pub fn passive_port(&self) -> Option<u16> {
        u16::try_from(self.passive_port.load(Ordering::Relaxed))
            .ok()
            .filter(|p| *p != 0)
    }

    /// The deadline of an offer made now: `timeout` after the session's current unused offer
    /// was first made, however often PASV was sent since.
    pub fn offer_deadline(&self, timeout: Duration) -> Instant {
        *lock(&self.unused_since).get_or_insert_with(Instant::now) + timeout
    }

    /// A data connection arrived and was bound: the next offer starts a fresh clock.
    pub fn offer_used(&self) {
        *lock(&self.unused_since) = None;
    }

    /// An offer expired unused; closes the session at the second miss.
    pub fn offer_missed(&self) {
        *lock(&self.unused_since) = None;
        if self.misses.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_MISSES {
            self.close();
        }
    }

    pub fn transfer_started(&self) {
        self.transfers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn transfer_ended(&self) {
        self.transfers.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn busy(&self) -> bool {
        self.transfers.load(Ordering::Relaxed) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        Conn::new(1, a, a)
    }

    #[tokio::test(start_paused = true)]
    async fn a_re_sent_offer_keeps_its_first_deadline() {
        let c = conn();
        let t = Duration::from_secs(5);
        let first = c.offer_deadline(t);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(c.offer_deadline(t), first, "PASV again must not extend the offer");
        c.offer_used();
        assert!(c.offer_deadline(t) > first, "a used offer starts a fresh clock");
    }

    #[tokio::test]
    async fn the_second_miss_closes_the_session() {
        let c = conn();
        c.offer_missed();
        assert!(!c.is_closed());
        c.offer_missed();
        assert!(c.is_closed());
        c.closed().await;
    }
}
