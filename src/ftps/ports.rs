//! Passive ports: few of them, shared well, and never left waiting.
//!
//! libunftp's default passive allocation tries 9 random ports and, between its `bind` and
//! `listen`, can hand one port to two sessions (the second then loses its control connection
//! with no reply). With a small range (the firewall answer wants at most a handful of ports)
//! that matters. [`PortPool`] replaces it through libunftp's `Binder` hook, which we can give
//! every session because each session gets its own `Server` (see [`super::front`]):
//!
//! - ports are offered round-robin, each at most once at a time: a port with an offer
//!   outstanding is skipped, and bind + listen happen under one lock, so two sessions never
//!   race for a port. When every port has an offer outstanding, the PASV waits (up to
//!   [`QUEUE_WAIT`]) for one to free — a queue, not a failure; only then does it get
//!   libunftp's `425 No data connection established`, a clear transient reply the IQ retries.
//! - a port is held only from PASV until the data connection arrives (the data tap in
//!   [`super::datachan_guard`] reports the accept), not for the transfer;
//! - an offer nobody connects to within `ftps.data_connect_timeout_secs` is withdrawn: the
//!   listener is shut (libunftp itself would hold it 15 s, and leave a RETR that was already
//!   answered `150` waiting for the session's idle timeout), the session is closed so the IQ
//!   sees a dropped connection and retries, and the miss is counted in [`crate::diagnostics`]
//!   for that device and client IP — typically a firewall that drops that passive port.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpSocket;
use tokio::sync::Notify;

/// How long a PASV may wait for a passive port when all of them are offered.
pub const QUEUE_WAIT: Duration = Duration::from_secs(3);

/// Why no port could be offered right now.
enum Busy {
    /// Every port has an offer outstanding: wait for one to be used or withdrawn.
    AllOffered,
    /// Some port is still held by a listener libunftp is about to drop: try again shortly.
    Lingering,
}

use super::front::Conn;
use crate::diagnostics::{Diagnostics, Event};

/// Pure: the order in which ports are tried, starting after the last one handed out.
pub fn candidates(range: &RangeInclusive<u16>, cursor: usize) -> impl Iterator<Item = u16> + '_ {
    let first = u32::from(*range.start());
    let len = u32::from(*range.end()) - first + 1;
    (0..len).map(move |i| {
        let off = (u32::try_from(cursor % len as usize).unwrap_or(0) + i) % len;
        u16::try_from(first + off).unwrap_or(*range.end())
    })
}

struct Offer {
    id: u64,
    conn: Arc<Conn>,
    /// A second handle on the listening socket, to shut it when the offer expires.
    listener: std::net::TcpListener,
}

pub struct PortPool {
    range: RangeInclusive<u16>,
    timeout: Duration,
    diagnostics: Arc<Diagnostics>,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
    /// Signalled whenever an offer ends (used, withdrawn or its session gone).
    freed: Notify,
}

#[derive(Default)]
struct Inner {
    cursor: usize,
    offers: HashMap<u16, Offer>,
    /// Who last connected to a port, for data-channel TLS failures reported after the accept.
    connected: HashMap<(u16, IpAddr), Arc<Conn>>,
}

impl std::fmt::Debug for PortPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortPool({:?})", self.range)
    }
}

/// The pool the process's data-channel tap reports to (one FTPS front per process).
static CURRENT: OnceLock<Mutex<Weak<PortPool>>> = OnceLock::new();

fn current() -> Option<Arc<PortPool>> {
    CURRENT
        .get()?
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .upgrade()
}

/// From the data tap: a data connection from `peer` arrived on passive port `port`.
pub fn data_connected(port: u16, peer: IpAddr) {
    if let Some(p) = current() {
        p.connected(port, peer);
    }
}

/// From the panic hook: the TLS handshake of the data connection `(port, peer)` failed.
pub fn data_tls_failed(port: u16, peer: IpAddr) {
    if let Some(p) = current() {
        p.tls_failed(port, peer);
    }
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>, timeout: Duration, diagnostics: Arc<Diagnostics>) -> Arc<Self> {
        let pool = Arc::new(PortPool {
            range,
            timeout,
            diagnostics,
            next_id: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
        });
        let slot = CURRENT.get_or_init(|| Mutex::new(Weak::new()));
        *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::downgrade(&pool);
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ports with an offer outstanding right now.
    pub fn outstanding(&self) -> usize {
        self.lock().offers.len()
    }

    /// Binds and listens on the next free port for `conn`, waiting up to [`QUEUE_WAIT`] when
    /// every port is taken.
    async fn offer_or_wait(self: &Arc<Self>, ip: IpAddr, conn: &Arc<Conn>) -> io::Result<TcpSocket> {
        let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let busy = match self.offer(ip, conn) {
                Ok(s) => return Ok(s),
                Err(b) => b,
            };
            let waited = match busy {
                Busy::AllOffered => tokio::time::timeout_at(deadline, freed).await.is_ok(),
                Busy::Lingering => {
                    let soon = tokio::time::Instant::now() + Duration::from_millis(2);
                    tokio::time::sleep_until(soon.min(deadline)).await;
                    tokio::time::Instant::now() < deadline
                }
            };
            if !waited {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "every passive port is in use",
                ));
            }
        }
    }

    /// Binds and listens on the next free port for `conn`.
    fn offer(self: &Arc<Self>, ip: IpAddr, conn: &Arc<Conn>) -> Result<TcpSocket, Busy> {
        let mut g = self.lock();
        // A second PASV replaces the session's earlier offer. The first was never connected
        // to: that is what a firewall dropping the port looks like, so it counts as a miss
        // (the session itself goes on).
        let stale: Vec<u16> = g
            .offers
            .iter()
            .filter(|(_, o)| o.conn.id == conn.id)
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            if let Some(o) = g.offers.remove(&p) {
                shut(&o.listener);
                self.diagnostics.count(
                    conn.peer.ip(),
                    conn.device(),
                    Event::PassiveOfferUnused { port: p },
                );
            }
        }
        let cursor = g.cursor;
        let mut lingering = false;
        for (i, port) in candidates(&self.range, cursor).enumerate() {
            if g.offers.contains_key(&port) {
                continue;
            }
            let Ok((socket, dup)) = bind_listen(SocketAddr::new(ip, port)) else {
                lingering = true;
                continue;
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            g.cursor = cursor + i + 1;
            conn.set_passive_port(port);
            g.offers.insert(
                port,
                Offer {
                    id,
                    conn: conn.clone(),
                    listener: dup,
                },
            );
            let pool = Arc::downgrade(self);
            let timeout = self.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(pool) = pool.upgrade() {
                    pool.expire(port, id);
                }
            });
            return Ok(socket);
        }
        Err(if lingering {
            Busy::Lingering
        } else {
            Busy::AllOffered
        })
    }

    fn connected(&self, port: u16, peer: IpAddr) {
        let mut g = self.lock();
        let Some(o) = g.offers.get(&port) else { return };
        if o.conn.peer.ip() != peer {
            // libunftp closes a data connection from another address; the offer stands.
            return;
        }
        if let Some(o) = g.offers.remove(&port) {
            g.connected.retain(|_, c| c.id != o.conn.id);
            g.connected.insert((port, peer), o.conn);
        }
        drop(g);
        self.freed.notify_waiters();
    }

    fn expire(&self, port: u16, id: u64) {
        let offer = {
            let mut g = self.lock();
            match g.offers.get(&port) {
                Some(o) if o.id == id => g.offers.remove(&port),
                _ => None,
            }
        };
        let Some(o) = offer else { return };
        shut(&o.listener);
        self.freed.notify_waiters();
        let device = o.conn.device();
        tracing::warn!(
            port,
            ip = %o.conn.peer.ip(),
            device = device.map(|d| d.to_string()).unwrap_or_default(),
            "passive port offered but no data connection arrived: closing the session (a firewall may block this port)"
        );
        self.diagnostics
            .count(o.conn.peer.ip(), device, Event::PassiveOfferUnused { port });
        o.conn.close();
    }

    fn tls_failed(&self, port: u16, peer: IpAddr) {
        let conn = self.lock().connected.remove(&(port, peer));
        let device = conn.as_ref().and_then(|c| c.device());
        tracing::warn!(port, ip = %peer, device = device.map(|d| d.to_string()).unwrap_or_default(),
            "TLS handshake on the data connection failed");
        self.diagnostics.count(peer, device, Event::DataTlsFailure);
        // libunftp leaves the control channel waiting for a transfer that will never run.
        if let Some(c) = conn {
            c.close();
        }
    }

    /// The connection ended: forget it.
    pub fn forget(&self, conn_id: u64) {
        let mut g = self.lock();
        g.connected.retain(|_, c| c.id != conn_id);
        let mine: Vec<u16> = g
            .offers
            .iter()
            .filter(|(_, o)| o.conn.id == conn_id)
            .map(|(p, _)| *p)
            .collect();
        let any = !mine.is_empty();
        for p in mine {
            if let Some(o) = g.offers.remove(&p) {
                shut(&o.listener);
            }
        }
        drop(g);
        if any {
            self.freed.notify_waiters();
        }
    }
}

fn shut(listener: &std::net::TcpListener) {
    // On Linux this wakes libunftp's pending accept with an error, so it drops its listener.
    let _ = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Both);
}

/// Bind and listen in one step (no window for another session to take the port), and keep
/// a second handle on the socket. libunftp calls `listen` again on what we return: harmless.
fn bind_listen(addr: SocketAddr) -> io::Result<(TcpSocket, std::net::TcpListener)> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    let listener = s.listen(1024)?.into_std()?;
    let dup = listener.try_clone()?;
    let fd: std::os::fd::OwnedFd = listener.into();
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    Ok((socket, dup))
}

/// libunftp's `Binder` for one session.
#[derive(Debug)]
pub struct SessionBinder {
    pub pool: Arc<PortPool>,
    pub conn: Arc<Conn>,
}

#[async_trait]
impl libunftp::options::Binder for SessionBinder {
    async fn bind(&mut self, local_addr: IpAddr, _range: RangeInclusive<u16>) -> io::Result<TcpSocket> {
        self.pool.offer_or_wait(local_addr, &self.conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_cycle_from_the_cursor() {
        let r = 50000..=50003;
        assert_eq!(
            candidates(&r, 0).collect::<Vec<_>>(),
            [50000, 50001, 50002, 50003]
        );
        assert_eq!(
            candidates(&r, 5).collect::<Vec<_>>(),
            [50001, 50002, 50003, 50000]
        );
        assert_eq!(candidates(&(7..=7), 9).collect::<Vec<_>>(), [7]);
        assert_eq!(
            candidates(&(65535..=65535), usize::MAX).collect::<Vec<_>>(),
            [65535]
        );
        let full = 1024..=65535u16;
        assert_eq!(candidates(&full, usize::MAX).count(), full.len());
    }
}
