//! libunftp behind the front: one loopback listener, one libunftp `Server` per session.
//!
//! The control relay ([`super::control`]) connects here once the IQ's TLS handshake is done;
//! the accepted stream goes to a `Server` built for that session ([`ServerFactory`]), which
//! speaks plain FTP over loopback. Connections are matched to their session by the relay's
//! source port, registered before it connects; anything else that reaches this port (another
//! local process) is dropped unserved.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::conn::Conn;

/// Builds the libunftp server for one session.
pub trait ServerFactory: Send + Sync + 'static {
    fn serve(&self, conn: Arc<Conn>, stream: TcpStream) -> futures_util::future::BoxFuture<'static, ()>;
}

pub struct Inner {
    addr: SocketAddr,
    expected: Mutex<HashMap<u16, Arc<Conn>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inner({})", self.addr)
    }
}

impl Inner {
    /// # Errors
    /// No loopback port could be bound.
    pub async fn bind() -> io::Result<(Arc<Inner>, TcpListener)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let inner = Arc::new(Inner {
            addr: listener.local_addr()?,
            expected: Mutex::new(HashMap::new()),
        });
        Ok((inner, listener))
    }

    fn expected(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Arc<Conn>>> {
        self.expected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the loopback connection to a new libunftp session for `conn`.
    ///
    /// # Errors
    /// The loopback connection failed.
    pub async fn connect(&self, conn: &Arc<Conn>) -> io::Result<TcpStream> {
        let sock = TcpSocket::new_v4()?;
        sock.bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let port = sock.local_addr()?.port();
        self.expected().insert(port, conn.clone());
        let r = sock.connect(self.addr).await;
        if r.is_err() {
            self.expected().remove(&port);
        }
        let s = r?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Accepts loopback connections and starts their sessions, until dropped.
    pub async fn run(self: Arc<Self>, listener: TcpListener, factory: Arc<dyn ServerFactory>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "accepting on the FTP engine's loopback port failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let conn = if peer.ip().is_loopback() {
                self.expected().remove(&peer.port())
            } else {
                None
            };
            let Some(conn) = conn else {
                tracing::warn!(%peer, "unexpected connection to the FTP engine's loopback port dropped");
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(factory.serve(conn, stream));
        }
    }
}
