//! The admin API's listener: it owns the admin socket, accepts connections itself and serves
//! each with hyper's HTTP/1.1 connection, so that no client — before any token is checked —
//! can hold the API open or take the descriptors FTPS needs (issue 10):
//!
//! - **connection cap** (`admin.max_connections`): a connection past it is accepted and
//!   closed at once, unanswered. Not leaving it in the kernel's backlog means a flood is
//!   visible to its client and in the log (one WARN per [`REFUSALS_LOGGED_EVERY`]), and an
//!   honest client is not left waiting for a slot that may never come; the accept costs one
//!   descriptor for an instant. The cap is the admin share of [`crate::descriptors`].
//! - **header timeout** (`admin.header_timeout_secs`, hyper's `header_read_timeout`): a
//!   request's head must arrive whole within it, counted from when hyper starts waiting for
//!   it — the accept, or the end of the previous response — so it closes a slowloris
//!   connection and an idle keep-alive connection alike. A TLS handshake has the same bound.
//! - **idle timeout** (`admin.idle_timeout_secs`): a per-connection deadline, kept by
//!   [`Activity`]. The connection is closed once no byte has moved for that long while the
//!   server waits on the client: for its next request, for a request body that stopped
//!   arriving, for it to read a response (a write that makes no progress). A request the
//!   server is still working on (a handler running, not reading the body) is not cut off.
//! - every request carries `ConnectInfo<SocketAddr>`, as with axum's own `serve`, so
//!   handlers (a report's client IP, [`super::reports::ClientIp`]) are unchanged.
//! - **TLS** (`admin.cert`, `admin.key`): HTTPS only, `http/1.1` by ALPN, on the same rustls
//!   base as the FTPS front ([`crate::tls`]). Without it, plain HTTP, and a WARN at start
//!   when the address is not loopback: a token should not cross a network in clear text.
//! - **shutdown**: stop accepting, let each connection finish the request it is serving
//!   (hyper's graceful shutdown; idle ones close at once) and return when all are closed.
//!   The caller bounds that wait (the app's grace period).
//!
//! HTTP/1.1 only, as before (axum's `serve` was built without HTTP/2).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::AdminConfig;

/// How long the accept loop pauses after a failed accept (`EMFILE` and friends).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);
/// At most one WARN about refused connections per this period, with their count.
pub const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("admin.cert/admin.key: {0}")]
    Tls(crate::tls::LoadError),
    #[error("cannot bind: {0}")]
    Bind(io::Error),
}

/// The listener's bounds, from `[admin]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn new(cfg: &AdminConfig) -> Self {
        Limits {
            header_timeout: Duration::from_secs(cfg.header_timeout_secs),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
            max_connections: usize::try_from(cfg.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// The bound admin socket, ready to [`serve`](AdminListener::serve).
pub struct AdminListener {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
}

impl std::fmt::Debug for AdminListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminListener")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl AdminListener {
    /// Loads the TLS files (if configured) and binds `admin.listen`.
    ///
    /// # Errors
    /// An unusable certificate or key, or an address that cannot be bound.
    pub async fn bind(cfg: &AdminConfig) -> Result<Self, ListenerError> {
        let tls = match cfg.tls_files() {
            Some((cert, key)) => {
                let mut sc = crate::tls::server_config(cert, key).map_err(ListenerError::Tls)?;
                sc.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc)))
            }
            None => None,
        };
        let listener = TcpListener::bind(cfg.listen).await.map_err(ListenerError::Bind)?;
        if tls.is_none() && !cfg.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %cfg.listen,
                "the admin API listens beyond loopback without TLS: tokens cross the network in \
                 clear text; set admin.cert and admin.key"
            );
        }
        Ok(AdminListener {
            listener,
            tls,
            limits: Limits::new(cfg),
        })
    }

    /// The address actually bound (port 0 resolved).
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `router` until `shutdown` resolves, then drains: no new connections, requests
    /// in flight finish, idle connections close. Returns once every connection is closed.
    ///
    /// # Errors
    /// None so far: a failed accept is logged and retried (the `Result` is for the caller's
    /// uniform handling of its servers).
    pub async fn serve(self, router: Router, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let AdminListener {
            listener,
            tls,
            limits,
        } = self;
        let shared = Arc::new(Shared { router, tls, limits });
        let slots = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
        let per_address = PerAddress::new(limits.max_connections);
        let (stop, stopping) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut refusals = Refusals::default();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                Some(done) = conns.join_next() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!(error = %e, "an admin API connection panicked");
                    }
                    continue;
                }
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "accepting an admin API connection failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            };
            let Some(mine) = per_address.enter(peer.ip()) else {
                drop(stream);
                refusals.note(peer, limits.max_connections);
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                refusals.note(peer, limits.max_connections);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (shared, stopping) = (shared.clone(), stopping.clone());
            conns.spawn(async move {
                connection(stream, peer, shared, stopping).await;
                drop(slot);
                drop(mine);
            });
        }
        drop(listener);
        let _ = stop.send(true);
        while conns.join_next().await.is_some() {}
        Ok(())
    }
}

/// Connections per client address: at most a quarter of the cap each, so one client
/// (authenticated or not) cannot hold every slot.
#[derive(Debug, Clone)]
struct PerAddress {
    cap: usize,
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

struct AddressSlot {
    of: PerAddress,
    ip: std::net::IpAddr,
}

impl PerAddress {
    fn new(max_connections: usize) -> Self {
        PerAddress {
            cap: (max_connections / 4).max(1),
            open: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(&self, ip: std::net::IpAddr) -> Option<AddressSlot> {
        let mut g = self.lock();
        let n = g.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot { of: self.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut g = self.of.lock();
        if let Some(n) = g.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.ip);
            }
        }
    }
}

/// What every connection of one listener shares.
struct Shared {
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
}

/// Counts connections refused at the cap and logs them, at most once per period.
#[derive(Debug, Default)]
struct Refusals {
    logged: Option<Instant>,
    count: u64,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, cap: usize) {
        self.count += 1;
        let now = Instant::now();
        if self.logged.is_none_or(|t| now >= t + REFUSALS_LOGGED_EVERY) {
            tracing::warn!(
                max_connections = cap,
                refused = self.count,
                last_from = %peer.ip(),
                "admin API at its connection cap (admin.max_connections): connections closed unanswered"
            );
            self.logged = Some(now);
            self.count = 0;
        }
    }
}

/// Resolves once the listener stops (or is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// One connection, from its transport (a TCP stream; an in-memory pipe in tests) to its end.
async fn connection<T>(
    transport: T,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(shared.limits.idle_timeout));
    // Under TLS, so a stalled write is the peer's TCP window, not rustls' buffer.
    let io = Watched::new(transport, activity.clone());
    let Some(acceptor) = &shared.tls else {
        return http(io, peer, &shared, activity, &mut stopping).await;
    };
    let handshake = tokio::time::timeout(shared.limits.header_timeout, acceptor.accept(io));
    let tls = tokio::select! {
        r = handshake => r,
        () = stopped(&mut stopping) => return,
    };
    match tls {
        Ok(Ok(tls)) => http(tls, peer, &shared, activity, &mut stopping).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin API TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "admin API TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 on `io` until the client or a deadline ends it, or the listener stops.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    shared: &Shared,
    activity: Arc<Activity>,
    stopping: &mut watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = shared.router.clone();
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = InFlight::start(act.clone());
        let body_activity = act.clone();
        let mut req = req.map(|inner| {
            axum::body::Body::new(WatchedBody {
                inner,
                activity: body_activity,
            })
        });
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response = match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|inner| GuardedBody {
                inner,
                _in_flight: in_flight,
            }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = shared.limits.idle_timeout;
    let mut check = Instant::now() + idle;
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "admin API connection closed");
                }
                return;
            }
            () = stopped(stopping), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(check) => {
                let now = Instant::now();
                match activity.expires() {
                    Some(at) if at <= now => {
                        tracing::debug!(%peer, idle_secs = idle.as_secs(), "admin API connection closed: idle");
                        return;
                    }
                    Some(at) => check = at,
                    // The server is working on a request: look again later.
                    None => check = now + idle,
                }
            }
        }
    }
}

/// One connection's idle deadline: when a byte last moved, and whether the server is
/// waiting on the client. Updated by the transport ([`Watched`]), the request body
/// ([`WatchedBody`]) and the request's lifetime ([`InFlight`]).
#[derive(Debug)]
struct Activity {
    born: Instant,
    idle: Duration,
    /// Milliseconds after `born`: the last byte moved, a request started or ended, or the
    /// server began to wait on the client.
    last_ms: AtomicU64,
    /// Requests being served (one at a time on HTTP/1.1): from the head to the response
    /// body's end.
    in_flight: AtomicUsize,
    /// The last write (or flush) could not progress: the client is not reading.
    write_stalled: AtomicBool,
    /// The handler asked for request body that has not arrived.
    body_waiting: AtomicBool,
    /// A request body was dropped before its end (refused unread, e.g. a `413`): the
    /// client may still be sending it, so the close lingers (see [`Watched`]).
    body_left: AtomicBool,
}

impl Activity {
    fn new(idle: Duration) -> Self {
        Activity {
            born: Instant::now(),
            idle,
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            write_stalled: AtomicBool::new(false),
            body_waiting: AtomicBool::new(false),
            body_left: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, SeqCst);
    }

    /// Sets a wait flag; the idle clock restarts when the flag changes.
    fn set(&self, flag: &AtomicBool, on: bool) {
        if flag.swap(on, SeqCst) != on {
            self.touch();
        }
    }

    /// When the connection expires unless something moves; `None` while the server works on
    /// a request and waits on nobody.
    fn expires(&self) -> Option<Instant> {
        let waiting = self.in_flight.load(SeqCst) == 0
            || self.write_stalled.load(SeqCst)
            || self.body_waiting.load(SeqCst);
        waiting.then(|| self.born + Duration::from_millis(self.last_ms.load(SeqCst)) + self.idle)
    }
}

/// A request being served; dropped with the response body (or the handler, if the connection
/// goes first).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.touch();
        activity.in_flight.fetch_add(1, SeqCst);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The clock first: a watcher that sees no request in flight sees the new time.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

/// The connection's transport, reporting progress and stalled writes to [`Activity`].
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Set once the write side is shut: how long the close lingers (see `poll_shutdown`).
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    drained: usize,
}

/// How long a closing connection keeps reading what the client still sends, and how much.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024 * 1024;

impl<T> Watched<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched {
            inner,
            activity,
            linger: None,
            drained: 0,
        }
    }
}

impl<T> Watched<T> {
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => self.activity.set(&self.activity.write_stalled, true),
            Poll::Ready(Ok(n)) => {
                self.activity.set(&self.activity.write_stalled, false);
                if *n > 0 {
                    self.activity.touch();
                }
            }
            Poll::Ready(Err(_)) => self.activity.set(&self.activity.write_stalled, false),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.activity.set(&this.activity.write_stalled, r.is_pending());
        r
    }

    /// A lingering close: the write side is shut (the client has the whole response and its
    /// end), then, when a request body was left unread, what the client still sends — the rest of a request body the server refused
    /// unread, a `413` for an oversized upload — is read and dropped until the client closes,
    /// [`LINGER`] passes or [`LINGER_BYTES`] came. Closing with unread bytes would make the
    /// kernel reset the connection, and a client still writing its body could lose the
    /// response it was sent.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            if !this.activity.body_left.load(SeqCst) {
                // Every request was read whole: nothing is on its way to be reset.
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if this.drained >= LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            if let Some(l) = this.linger.as_mut()
                && l.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => this.drained += buf.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The request body, reporting when the handler waits for bytes the client has not sent.
struct WatchedBody {
    inner: Incoming,
    activity: Arc<Activity>,
}

impl HttpBody for WatchedBody {
    type Data = <Incoming as HttpBody>::Data;
    type Error = <Incoming as HttpBody>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        this.activity.set(&this.activity.body_waiting, r.is_pending());
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.activity.set(&self.activity.body_waiting, false);
        if !self.inner.is_end_stream() {
            self.activity.set(&self.activity.body_left, true);
        }
    }
}

/// The response body, holding its request's [`InFlight`] until hyper is done with it.
struct GuardedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: HttpBody + Unpin> HttpBody for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    // Time is paused in these tests (tokio's test clock): the server's deadlines run on
    // virtual time, so what they assert about it is exact, and no test waits it out.

    const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 4242);
    const SLOW: Duration = Duration::from_secs(30);

    fn limits(header_secs: u64, idle_secs: u64) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(header_secs),
            idle_timeout: Duration::from_secs(idle_secs),
            max_connections: 4,
        }
    }

    fn router() -> Router {
        Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(a): ConnectInfo<SocketAddr>| async move { a.to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(SLOW).await;
                    "done"
                }),
            )
            .route("/big", get(|| async { vec![b'x'; 1 << 20] }))
            .route(
                "/echo",
                post(|b: axum::body::Bytes| async move { format!("got {}", b.len()) }),
            )
    }

    /// One connection over an in-memory pipe of `buffer` bytes: the client's end, the
    /// server's task, and the listener's stop signal.
    fn start(
        limits: Limits,
        buffer: usize,
    ) -> (DuplexStream, tokio::task::JoinHandle<()>, watch::Sender<bool>) {
        let (client, server) = tokio::io::duplex(buffer);
        let shared = Arc::new(Shared {
            router: router(),
            tls: None,
            limits,
        });
        let (stop, stopping) = watch::channel(false);
        (
            client,
            tokio::spawn(connection(server, PEER, shared, stopping)),
            stop,
        )
    }

    async fn read_until(c: &mut DuplexStream, needle: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(needle) {
            let n = c.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Waits (virtual time) for the server to close the connection; returns when it did.
    async fn server_closes(task: tokio::task::JoinHandle<()>) -> Instant {
        tokio::time::timeout(Duration::from_secs(600), task)
            .await
            .expect("the server closes the connection")
            .unwrap();
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn handlers_see_the_peer_address() {
        let (mut c, _task, _stop) = start(limits(10, 60), 64 * 1024);
        c.write_all(b"GET /peer HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut c, "192.0.2.7:4242").await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_timeout_closes_a_silent_and_a_slowloris_connection() {
        let t0 = Instant::now();
        let (_silent, task, _stop) = start(limits(3, 60), 1024);
        assert_eq!(server_closes(task).await - t0, Duration::from_secs(3));
        let t0 = Instant::now();
        let (mut slow, task, _stop) = start(limits(3, 60), 1024);
        let dribble = async {
            for b in b"GET /peer HTTP/1.1\r\nHost: t\r\n\r\n" {
                if slow.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let (closed, ()) = tokio::join!(server_closes(task), dribble);
        assert_eq!(
            closed - t0,
            Duration::from_secs(3),
            "bytes kept coming, the head did not"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_at_work_is_not_cut_off_and_the_idle_connection_closes_after_it() {
        let t0 = Instant::now();
        let (mut c, task, _stop) = start(limits(300, 5), 64 * 1024);
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut c, "done").await;
        let answered = Instant::now();
        assert!(
            answered - t0 >= SLOW,
            "the handler ran its 30 s, six idle periods"
        );
        let closed = server_closes(task).await;
        assert!(
            closed - answered >= Duration::from_secs(5) && closed - answered <= Duration::from_secs(10),
            "idle for one to two periods after the response: {:?}",
            closed - answered
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_the_response_is_closed() {
        let t0 = Instant::now();
        let (mut c, task, _stop) = start(limits(300, 5), 1024);
        c.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        // 1 MiB into a 1 KiB pipe nobody reads.
        let closed = server_closes(task).await;
        assert!(closed - t0 >= Duration::from_secs(5), "{:?}", closed - t0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_body_that_stops_arriving_is_closed_one_that_trickles_is_served() {
        let t0 = Instant::now();
        let (mut c, task, _stop) = start(limits(300, 5), 64 * 1024);
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let closed = server_closes(task).await;
        assert!(closed - t0 >= Duration::from_secs(5), "{:?}", closed - t0);

        let (mut c, _task, _stop) = start(limits(300, 5), 64 * 1024);
        c.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..20 {
            // Slower than the whole body may take at once, faster than the idle timeout.
            tokio::time::sleep(Duration::from_secs(3)).await;
            c.write_all(b"x").await.unwrap();
        }
        read_until(&mut c, "got 20").await;
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_lets_the_request_in_flight_finish_then_closes() {
        let (mut c, task, stop) = start(limits(300, 60), 64 * 1024);
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.send(true).unwrap();
        let t0 = Instant::now();
        read_until(&mut c, "done").await;
        let closed = server_closes(task).await;
        assert!(
            closed - t0 < SLOW + Duration::from_secs(1),
            "closed right after the response"
        );
        // A connection that opens while the listener stops is closed without a request.
        let (_c, task, stop) = start(limits(300, 60), 1024);
        stop.send(true).unwrap();
        let t0 = Instant::now();
        assert_eq!(server_closes(task).await, t0);
    }

    #[test]
    fn limits_come_from_the_admin_section() {
        let cfg = AdminConfig::default();
        let l = Limits::new(&cfg);
        assert_eq!(l.header_timeout, Duration::from_secs(cfg.header_timeout_secs));
        assert_eq!(l.idle_timeout, Duration::from_secs(cfg.idle_timeout_secs));
        assert_eq!(l.max_connections, 256);
    }
}
