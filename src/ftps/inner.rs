//! libunftp behind the front: one loopback listener, one libunftp `Server` per session.
//!
//! The control relay ([`super::control`]) connects here once the IQ's TLS handshake is done;
//! the accepted stream goes to a `Server` built for that session ([`ServerFactory`]), which
//! speaks plain FTP over loopback. Connections are matched to their session by the relay's
//! source port: whichever of the two sides (the relay after its connect, this accept loop)
//! gets there first leaves its half in [`Inner`]'s rendezvous table for the other. The relay
//! does not bind its source port itself: binding port 0 searches the port table under a lock
//! (3 % of the server's CPU at 1,000 sessions/s), the kernel's choice at connect does not. An
//! accepted connection nobody claims within [`UNCLAIMED`] (another local process) is dropped.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::conn::Conn;

/// Builds the libunftp server for one session.
pub trait ServerFactory: Send + Sync + 'static {
    fn serve(&self, conn: Arc<Conn>, stream: TcpStream) -> futures_util::future::BoxFuture<'static, ()>;
}

/// How long an accepted loopback connection waits for its session to claim it.
const UNCLAIMED: Duration = Duration::from_secs(5);
/// Unclaimed connections kept at most (a local process flooding the port).
const MAX_UNCLAIMED: usize = 1024;

enum Half {
    /// The relay connected and waits for its stream to be served.
    Session(Arc<Conn>),
    /// Accepted before the relay registered; `u64` tells its timer which one it was.
    Stream(TcpStream, u64),
}

pub struct Inner {
    addr: SocketAddr,
    factory: Arc<dyn ServerFactory>,
    table: Mutex<HashMap<u16, Half>>,
    next: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inner({})", self.addr)
    }
}

impl Inner {
    /// # Errors
    /// No loopback port could be bound.
    pub async fn bind(factory: Arc<dyn ServerFactory>) -> io::Result<(Arc<Inner>, TcpListener)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let inner = Arc::new(Inner {
            addr: listener.local_addr()?,
            factory,
            table: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        });
        Ok((inner, listener))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Half>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the loopback connection to a new libunftp session for `conn`.
    ///
    /// # Errors
    /// The loopback connection failed.
    pub async fn connect(&self, conn: &Arc<Conn>) -> io::Result<TcpStream> {
        let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.addr))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        s.set_nodelay(true)?;
        let port = s.local_addr()?.port();
        let accepted = {
            let mut t = self.table();
            match t.remove(&port) {
                Some(Half::Stream(stream, _)) => Some(stream),
                other => {
                    if let Some(o) = other {
                        t.insert(port, o);
                    }
                    t.insert(port, Half::Session(conn.clone()));
                    None
                }
            }
        };
        if let Some(stream) = accepted {
            tokio::spawn(self.factory.serve(conn.clone(), stream));
        }
        Ok(s)
    }

    /// Accepts loopback connections and starts their sessions, until dropped.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "accepting on the FTP engine's loopback port failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !peer.ip().is_loopback() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let port = peer.port();
            let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let session = {
                let mut t = self.table();
                match t.remove(&port) {
                    Some(Half::Session(conn)) => Some((conn, stream)),
                    _ if t.len() >= MAX_UNCLAIMED => {
                        tracing::warn!(%peer, "unexpected connections to the FTP engine's loopback port: dropped");
                        None
                    }
                    _ => {
                        t.insert(port, Half::Stream(stream, id));
                        None
                    }
                }
            };
            match session {
                Some((conn, stream)) => {
                    tokio::spawn(self.factory.serve(conn, stream));
                }
                None => {
                    // Weak: a pending timer must not keep the engine (and the recorder it
                    // holds) alive past shutdown.
                    let me = Arc::downgrade(&self);
                    tokio::spawn(async move {
                        tokio::time::sleep(UNCLAIMED).await;
                        let Some(me) = me.upgrade() else { return };
                        let mut t = me.table();
                        if matches!(t.get(&port), Some(Half::Stream(_, i)) if *i == id) {
                            t.remove(&port);
                            tracing::warn!(
                                port,
                                "a connection to the FTP engine's loopback port no session claimed: dropped"
                            );
                        }
                    });
                }
            }
        }
    }
}
