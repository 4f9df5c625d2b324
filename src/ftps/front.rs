//! The FTPS front door: our own accept loop, in front of everything.
//!
//! fwdist owns every socket an IQ talks to: this loop accepts control connections, refuses
//! an address that already has `ftps.max_sessions_per_ip` sessions open with `421` before
//! the greeting, and hands each connection to its control relay ([`super::control`]), which
//! speaks TLS to the IQ and plain FTP to a libunftp session on loopback ([`super::inner`]).
//! Open sessions are registered in [`Sessions`], so a device can be cut off (disabled) and
//! the server can drain on shutdown: stop accepting, close idle sessions at once, let
//! transfers finish within the grace period. In one-port mode a connection from an address
//! with an outstanding offer is first held and classified ([`super::oneport`]): a data
//! connection goes to its offer, a control client through the same admission as any other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

use super::conn::Conn;
use super::control::{self, FrontCtx};
use super::inner::Inner;
use super::oneport::{Held, OnePort, Verdict};
use super::sessions::Sessions;
use crate::diagnostics::{Diagnostics, Event};

/// Concurrent sessions per client IP and in all. Pure bookkeeping; the permit gives the
/// slot back.
#[derive(Debug)]
pub struct IpGate {
    limit: u32,
    /// Sessions in all (`ftps.max_sessions`, at most what the descriptor budget affords).
    total_limit: u64,
    open: Mutex<HashMap<IpAddr, u32>>,
    total: std::sync::atomic::AtomicU64,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Address,
    Server,
}

#[derive(Debug)]
pub struct Permit {
    gate: Arc<IpGate>,
    ip: IpAddr,
}

impl IpGate {
    /// `limit` 0 means no limit per address; `total_limit` 0 none in all.
    pub fn new(limit: u32, total_limit: u64) -> Arc<Self> {
        Arc::new(IpGate {
            limit,
            total_limit,
            open: Mutex::new(HashMap::new()),
            total: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn try_enter(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Full> {
        let mut g = self.lock();
        if self.total_limit > 0 && self.total.load(Ordering::Relaxed) >= self.total_limit {
            return Err(Full::Server);
        }
        let n = g.entry(ip).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            return Err(Full::Address);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            gate: self.clone(),
            ip,
        })
    }

    pub fn open(&self, ip: IpAddr) -> u32 {
        self.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut g = self.gate.lock();
        if let Some(n) = g.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.remove(&self.ip);
            }
        }
        self.gate.total.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Front {
    pub listener: TcpListener,
    pub gate: Arc<IpGate>,
    pub diagnostics: Arc<Diagnostics>,
    pub sessions: Arc<Sessions>,
    pub ctx: Arc<FrontCtx>,
    pub inner_listener: TcpListener,
}

/// What admitting a control client takes: the limits, the registry, the relay's context.
/// Shared by the accept loop and the tasks that classify held connections (one port).
struct Admission {
    gate: Arc<IpGate>,
    diagnostics: Arc<Diagnostics>,
    sessions: Arc<Sessions>,
    ctx: Arc<FrontCtx>,
    next_id: AtomicU64,
    /// Set when the front stops accepting: a held connection classified later is dropped.
    stopping: AtomicBool,
}

impl Admission {
    /// A control client: the per-address and server-wide limits (`421` before the
    /// greeting), then its session.
    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        let permit = match self.gate.try_enter(peer.ip()) {
            Ok(p) => p,
            Err(full) => {
                self.diagnostics.count(peer.ip(), None, Event::SessionRefused);
                match full {
                    Full::Address => {
                        tracing::warn!(ip = %peer.ip(), "session refused: too many sessions from this address")
                    }
                    Full::Server => {
                        tracing::warn!(ip = %peer.ip(), "session refused: the server has all the sessions it may hold")
                    }
                }
                tokio::spawn(refuse(stream, full));
                return;
            }
        };
        let Ok(local) = stream.local_addr() else { return };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id, peer, local));
        self.sessions.register(conn.clone());
        let registered = Registered {
            sessions: self.sessions.clone(),
            id,
        };
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            // Dropped however the session ends (a panic included): registry, gauge and
            // the per-address slot are always given back.
            let _registered = registered;
            let _permit = permit;
            control::run(ctx, conn, stream).await;
        });
    }

    /// A new connection from `peer` (the IQ, also behind a balancer): held when one-port
    /// mode has offers outstanding for its address, else admitted as a control client.
    fn route(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, one_port: Option<&Arc<OnePort>>) {
        if let Some(held) = one_port.and_then(|o| o.hold(peer.ip())) {
            tokio::spawn(self.clone().classify(held, stream, peer));
            return;
        }
        self.admit(stream, peer);
    }

    /// One port: a connection from an address with an outstanding offer, held until it is
    /// known whether it is that offer's data connection or a control client.
    async fn classify(self: Arc<Self>, mut held: Held, stream: TcpStream, peer: SocketAddr) {
        let verdict = held.classify(&stream).await;
        self.diagnostics
            .metrics
            .oneport_held
            .with_label_values(&[verdict.as_str()])
            .inc();
        match verdict {
            Verdict::Data => {
                if !held.hand_over(stream).await {
                    tracing::debug!(%peer, "a data connection came after its offer ended");
                }
            }
            Verdict::Control => {
                drop(held);
                self.admit(stream, peer);
            }
            Verdict::Gone => {}
        }
    }
}

impl Front {
    /// Accepts until `shutdown` resolves, then drains for at most `grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send, grace: Duration) {
        let inner: Arc<Inner> = self.ctx.inner.clone();
        let engine = tokio::spawn(inner.run(self.inner_listener));
        let admission = Arc::new(Admission {
            gate: self.gate.clone(),
            diagnostics: self.diagnostics.clone(),
            sessions: self.sessions.clone(),
            ctx: self.ctx.clone(),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
        });
        let one_port = self.ctx.pool.one_port().cloned();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                r = self.listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: pause instead of spinning.
                    tracing::error!(error = %e, "accepting an FTPS connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.sessions.probes.is_probe(peer) {
                tokio::spawn(answer_probe(stream));
                continue;
            }
            if self.ctx.proxy {
                // Behind a balancer: the IQ's address is in the header, read off the loop.
                let admission = admission.clone();
                let one_port = one_port.clone();
                tokio::spawn(async move {
                    let mut stream = stream;
                    match super::proxy::read(&mut stream, peer).await {
                        Ok(client) => admission.route(stream, client, one_port.as_ref()),
                        Err(e) => tracing::debug!(%peer, error = %e, "connection closed: no PROXY header"),
                    }
                });
                continue;
            }
            admission.route(stream, peer, one_port.as_ref());
        }
        admission.stopping.store(true, Ordering::Relaxed);
        drop(self.listener);
        // Drain: idle sessions are closed now, sessions in a transfer when it ends.
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open = self.sessions.open();
            if open.is_empty() {
                break;
            }
            let late = tokio::time::Instant::now() >= deadline;
            for c in open.iter().filter(|c| late || !c.busy()) {
                c.close();
            }
            if late {
                tracing::warn!(
                    sessions = open.len(),
                    "closed FTPS sessions still busy after the grace period"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        engine.abort();
    }
}

/// Unregisters a session when dropped.
struct Registered {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.unregister(self.id);
    }
}

/// `/healthz`'s connection: the listener works.
async fn answer_probe(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(b"220 fwdist FTPS listener ok\r\n").await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// `421` before the greeting, then close. Plain text: no TLS has been negotiated yet.
async fn refuse(mut stream: TcpStream, full: Full) {
    let reply: &[u8] = match full {
        Full::Address => b"421 Too many sessions from your address; try again later\r\n",
        Full::Server => b"421 Too many sessions; try again later\r\n",
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(reply).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_limits_per_address_and_gives_slots_back() {
        let gate = IpGate::new(2, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = gate.try_enter(a).unwrap();
        let _p2 = gate.try_enter(a).unwrap();
        assert_eq!(gate.try_enter(a).err(), Some(Full::Address));
        let _q = gate.try_enter(b).expect("another address has its own slots");
        drop(p1);
        assert_eq!(gate.open(a), 1);
        assert!(gate.try_enter(a).is_ok());
    }

    #[test]
    fn the_server_wide_cap_holds_across_addresses_and_gives_slots_back() {
        let gate = IpGate::new(0, 3);
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        let mut held: Vec<_> = (1..=3).map(|i| gate.try_enter(ip(i)).unwrap()).collect();
        assert_eq!(gate.try_enter(ip(9)).err(), Some(Full::Server));
        held.pop();
        assert!(gate.try_enter(ip(9)).is_ok(), "a slot given back is free again");
    }

    #[test]
    fn zero_means_no_limit() {
        let gate = IpGate::new(0, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let permits: Vec<_> = (0..1000).map(|_| gate.try_enter(a).unwrap()).collect();
        assert_eq!(gate.open(a), 1000);
        drop(permits);
        assert_eq!(gate.open(a), 0);
    }
}
