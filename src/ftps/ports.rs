//! Passive ports: few of them, shared well, and never held for long.
//!
//! The front opens the passive ports itself (libunftp's own passive listener sits on an
//! ephemeral loopback port behind it, see [`super::control`]), so this pool hands out the
//! public ones:
//!
//! - round-robin, each port to one session at a time, bind + listen under one lock, so two
//!   sessions never race for a port (libunftp's random allocation can);
//! - when every port has an offer outstanding, a `PASV` waits up to [`QUEUE_WAIT`] for one to
//!   free — a queue, not a failure — and only then gets `425`, which the IQ retries;
//! - a port is held from the `227` until the session's data connection is bound (or the
//!   offer expires, see [`super::conn::Conn::offer_deadline`]), not for the transfer;
//! - the public probe account holds at most one port per client address, so anyone can run
//!   `fwdist doctor` but nobody can take the range with it.
//!
//! With `ftps.passive_ports = "same"` there is no range: [`Passive::Same`] hands out offers on
//! the control port, told apart by the TLS session their data connections resume
//! ([`super::oneport`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

use super::oneport::{OnePort, SharedOffer};
use super::tls::SessionKeys;

/// How long a PASV may wait for a passive port when all of them are offered.
pub const QUEUE_WAIT: Duration = Duration::from_secs(3);

/// Pure: the order in which ports are tried, starting after the last one handed out.
pub fn candidates(range: &RangeInclusive<u16>, cursor: usize) -> impl Iterator<Item = u16> + '_ {
    let first = u32::from(*range.start());
    let len = u32::from(*range.end()) - first + 1;
    (0..len).map(move |i| {
        let off = (u32::try_from(cursor % len as usize).unwrap_or(0) + i) % len;
        u16::try_from(first + off).unwrap_or(*range.end())
    })
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    ip: IpAddr,
    probe: bool,
}

pub struct PortPool {
    range: RangeInclusive<u16>,
    inner: Mutex<Inner>,
    /// Signalled whenever a port is given back.
    freed: Notify,
    /// `fwdist_passive_ports_in_use`.
    in_use: prometheus::IntGauge,
    /// `ftps.proxy_protocol`: data connections begin with a PROXY header too.
    proxy: bool,
}

#[derive(Default)]
struct Inner {
    cursor: usize,
    held: HashMap<u16, Holder>,
}

impl std::fmt::Debug for PortPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortPool({:?})", self.range)
    }
}

/// Where passive data connections go: ports of their own, or the control port.
#[derive(Debug)]
pub enum Passive {
    Range(Arc<PortPool>),
    Same(Arc<OnePort>),
}

impl Passive {
    /// An offer for a session of `client` (the probe account when `probe`), waiting up to
    /// [`QUEUE_WAIT`]; `None` after that.
    pub async fn claim(
        &self,
        bind_ip: IpAddr,
        client: IpAddr,
        probe: bool,
        keys: SessionKeys,
    ) -> Option<Claim> {
        match self {
            Passive::Range(pool) => {
                let held = pool.claim(bind_ip, client, probe).await?;
                Some(Claim {
                    port: held.port,
                    source: Source::Range(held),
                })
            }
            // No port is scarce: an offer is made at once, the probe's too.
            Passive::Same(one) => Some(Claim {
                port: one.port,
                source: Source::Same(one.claim(client, keys)),
            }),
        }
    }

    /// The shared port's offers, in one-port mode.
    pub fn one_port(&self) -> Option<&Arc<OnePort>> {
        match self {
            Passive::Same(one) => Some(one),
            Passive::Range(_) => None,
        }
    }

    /// Offers outstanding now.
    pub fn outstanding(&self) -> usize {
        match self {
            Passive::Range(pool) => pool.outstanding(),
            Passive::Same(one) => one.outstanding(),
        }
    }
}

/// An offer held for one session: the port announced, and where its data connection comes
/// from. Given back when dropped.
#[derive(Debug)]
pub struct Claim {
    pub port: u16,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Range(RangeClaim),
    Same(SharedOffer),
}

impl Claim {
    /// The next connection on the offered port (a separate range: anyone's; one port: one the
    /// front classified as a data connection of this session's address).
    /// Also the bytes already read from it (one port: its ClientHello).
    pub async fn accept(&mut self) -> io::Result<(TcpStream, Vec<u8>, IpAddr)> {
        match &mut self.source {
            Source::Range(c) => {
                let (mut s, peer) = c.listener.accept().await?;
                let from = if c.pool.proxy {
                    super::proxy::read(&mut s, peer).await.map_err(io::Error::other)?
                } else {
                    peer
                };
                Ok((s, Vec::new(), from.ip()))
            }
            // The front read the PROXY header, when there is one, before it classified it.
            Source::Same(o) => {
                let a = o.accept().await.ok_or(io::ErrorKind::NotConnected)?;
                Ok((a.stream, a.prefix, a.from))
            }
        }
    }
}

/// A port of the range held for one session; given back when dropped.
#[derive(Debug)]
pub struct RangeClaim {
    pool: Arc<PortPool>,
    pub port: u16,
    pub listener: TcpListener,
}

impl Drop for RangeClaim {
    fn drop(&mut self) {
        let mut g = self.pool.lock();
        g.held.remove(&self.port);
        self.pool
            .in_use
            .set(i64::try_from(g.held.len()).unwrap_or(i64::MAX));
        drop(g);
        self.pool.freed.notify_waiters();
    }
}

enum Busy {
    /// Every usable port is held: wait for one to be given back.
    AllHeld,
    /// A port is free in the pool but its socket still lingers: try again shortly.
    Lingering,
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>, in_use: prometheus::IntGauge, proxy: bool) -> Arc<Self> {
        Arc::new(PortPool {
            range,
            inner: Mutex::new(Inner::default()),
            freed: Notify::new(),
            in_use,
            proxy,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ports held right now.
    pub fn outstanding(&self) -> usize {
        self.lock().held.len()
    }

    /// A listening port on `bind_ip` for a session of `client` (the probe account when
    /// `probe`), waiting up to [`QUEUE_WAIT`] when none is free; `None` after that.
    pub async fn claim(self: &Arc<Self>, bind_ip: IpAddr, client: IpAddr, probe: bool) -> Option<RangeClaim> {
        let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let busy = match self.try_claim(bind_ip, Holder { ip: client, probe }) {
                Ok(c) => return Some(c),
                Err(b) => b,
            };
            let waited = match busy {
                Busy::AllHeld => tokio::time::timeout_at(deadline, freed).await.is_ok(),
                Busy::Lingering => {
                    let soon = tokio::time::Instant::now() + Duration::from_millis(2);
                    tokio::time::sleep_until(soon.min(deadline)).await;
                    tokio::time::Instant::now() < deadline
                }
            };
            if !waited {
                return None;
            }
        }
    }

    fn try_claim(self: &Arc<Self>, bind_ip: IpAddr, who: Holder) -> Result<RangeClaim, Busy> {
        let mut g = self.lock();
        if who.probe && g.held.values().any(|h| h.probe && h.ip == who.ip) {
            return Err(Busy::AllHeld);
        }
        let cursor = g.cursor;
        let mut lingering = false;
        for (i, port) in candidates(&self.range, cursor).enumerate() {
            if g.held.contains_key(&port) {
                continue;
            }
            let Ok(listener) = bind_listen(SocketAddr::new(bind_ip, port)) else {
                lingering = true;
                continue;
            };
            g.cursor = cursor + i + 1;
            g.held.insert(port, who);
            self.in_use.set(i64::try_from(g.held.len()).unwrap_or(i64::MAX));
            return Ok(RangeClaim {
                pool: self.clone(),
                port,
                listener,
            });
        }
        Err(if lingering { Busy::Lingering } else { Busy::AllHeld })
    }
}

/// Bind and listen in one step, so no other session can take the port in between.
fn bind_listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(64)
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

    fn free_range(n: u16) -> RangeInclusive<u16> {
        // Ports that were free a moment ago; good enough for a unit test on loopback.
        let first = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .min(65535 - n);
        first..=first + n - 1
    }

    #[tokio::test]
    async fn the_probe_holds_one_port_per_address_and_devices_the_rest() {
        let pool = PortPool::new(free_range(3), prometheus::IntGauge::new("t", "t").unwrap(), false);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = pool.claim(lo, a, true).await.expect("the first probe port");
        assert!(
            pool.try_claim(lo, Holder { ip: a, probe: true }).is_err(),
            "a second probe port from the same address must wait"
        );
        let _p2 = pool
            .claim(lo, b, true)
            .await
            .expect("another address has its own");
        let _d = pool
            .claim(lo, a, false)
            .await
            .expect("a device from that address is not limited");
        assert_eq!(pool.outstanding(), 3);
        drop(p1);
        assert_eq!(pool.outstanding(), 2);
        assert!(pool.claim(lo, a, true).await.is_some(), "the port came back");
    }
}
