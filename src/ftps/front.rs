//! The FTPS front door: our own accept loop in front of libunftp.
//!
//! libunftp's `Server::listen` accepts connections itself and offers no hook between the
//! accept and the greeting, so it cannot refuse a busy address with `421`, and gives us no
//! handle to end a session it has left hanging. Here we accept each control connection
//! ourselves and hand it to a `Server` built for that one connection
//! (`Server::service`), which lets us:
//!
//! - refuse a connection from an address that already has `ftps.max_sessions_per_ip`
//!   sessions open with `421` before the greeting (an IQ retries later);
//! - give each session its own passive-port binder ([`super::ports`]) and its own
//!   per-connection context ([`Conn`]), which can close the session when libunftp would leave
//!   it waiting (a data connection that never came, a failed data-channel TLS handshake);
//! - drain on shutdown: stop accepting, close idle sessions at once, let transfers finish.
//!
//! Building a `Server` per connection is cheap: the TLS configuration and everything else
//! are shared `Arc`s. The one thing `Server::service` does not share across connections is
//! libunftp's failed-login cache, so the lockout lives in [`super::auth`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

use crate::diagnostics::{Diagnostics, Event};
use crate::domain::DeviceId;

/// One control connection, as the rest of the FTPS front sees it.
pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    /// A second handle on the control socket, to end the session from outside libunftp.
    ctl: std::net::TcpStream,
    device: Mutex<Option<DeviceId>>,
    transfers: AtomicU32,
    /// The passive port last offered to this session (PASV or EPSV); 0 = none yet.
    passive_port: AtomicU32,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({} from {})", self.id, self.peer)
    }
}

impl Conn {
    pub fn new(id: u64, peer: SocketAddr, ctl: std::net::TcpStream) -> Self {
        Conn {
            id,
            peer,
            ctl,
            device: Mutex::new(None),
            transfers: AtomicU32::new(0),
            passive_port: AtomicU32::new(0),
        }
    }

    pub fn device(&self) -> Option<DeviceId> {
        *self
            .device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_device(&self, id: DeviceId) {
        *self
            .device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id);
    }

    /// Ends the session: libunftp's control loop reads end-of-stream and stops.
    pub fn close(&self) {
        let _ = self.ctl.shutdown(std::net::Shutdown::Both);
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

    pub fn transfer_started(&self) {
        self.transfers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn transfer_ended(&self) {
        self.transfers.fetch_sub(1, Ordering::Relaxed);
    }

    fn busy(&self) -> bool {
        self.transfers.load(Ordering::Relaxed) > 0
    }
}

/// Concurrent sessions per client IP. Pure bookkeeping; the permit gives the slot back.
#[derive(Debug)]
pub struct IpGate {
    limit: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

#[derive(Debug)]
pub struct Permit {
    gate: Arc<IpGate>,
    ip: IpAddr,
}

impl IpGate {
    /// `limit` 0 means no limit.
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(IpGate {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn try_enter(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut g = self.lock();
        let n = g.entry(ip).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Permit {
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
    }
}

/// Builds the libunftp server for one connection.
pub trait ServerFactory: Send + Sync + 'static {
    fn serve(&self, conn: Arc<Conn>, stream: TcpStream) -> futures_util::future::BoxFuture<'static, ()>;
    /// The connection is gone: release what was kept for it.
    fn forget(&self, conn_id: u64);
}

pub struct Front {
    pub listener: TcpListener,
    pub gate: Arc<IpGate>,
    pub diagnostics: Arc<Diagnostics>,
    pub factory: Arc<dyn ServerFactory>,
}

type Conns = Arc<Mutex<HashMap<u64, Arc<Conn>>>>;

fn lock_conns(c: &Conns) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Front {
    /// Accepts until `shutdown` resolves, then drains for at most `grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send, grace: Duration) {
        let conns: Conns = Arc::default();
        let next_id = AtomicU64::new(1);
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
            let Some(permit) = self.gate.try_enter(peer.ip()) else {
                self.diagnostics.count(peer.ip(), None, Event::SessionRefused);
                tracing::warn!(ip = %peer.ip(), "session refused: too many sessions from this address");
                tokio::spawn(refuse(stream));
                continue;
            };
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let (stream, ctl) = match split_handle(stream) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, %peer, "could not set up an FTPS connection");
                    continue;
                }
            };
            let conn = Arc::new(Conn::new(id, peer, ctl));
            lock_conns(&conns).insert(id, conn.clone());
            let session = self.factory.serve(conn, stream);
            let (conns, factory) = (conns.clone(), self.factory.clone());
            tokio::spawn(async move {
                session.await;
                lock_conns(&conns).remove(&id);
                factory.forget(id);
                drop(permit);
            });
        }
        drop(self.listener);
        // Drain: idle sessions are closed now, sessions in a transfer when it ends.
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open: Vec<Arc<Conn>> = lock_conns(&conns).values().cloned().collect();
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
    }
}

/// `421` before the greeting, then close. Plain text: no TLS has been negotiated yet.
async fn refuse(mut stream: TcpStream) {
    let reply = b"421 Too many sessions from your address; try again later\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(reply).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The stream for libunftp and a second handle on the same socket for us.
fn split_handle(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let ctl = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, ctl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_limits_per_address_and_gives_slots_back() {
        let gate = IpGate::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = gate.try_enter(a).unwrap();
        let _p2 = gate.try_enter(a).unwrap();
        assert!(gate.try_enter(a).is_none());
        let _q = gate.try_enter(b).expect("another address has its own slots");
        drop(p1);
        assert_eq!(gate.open(a), 1);
        assert!(gate.try_enter(a).is_some());
    }

    #[test]
    fn zero_means_no_limit() {
        let gate = IpGate::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let permits: Vec<_> = (0..1000).map(|_| gate.try_enter(a).unwrap()).collect();
        assert_eq!(gate.open(a), 1000);
        drop(permits);
        assert_eq!(gate.open(a), 0);
    }
}
