//! FTPS client helpers: suppaftp over rustls trusting exactly the server's certificate, with
//! the retry that libunftp's AUTH TLS race requires. The raw control-channel client is in
//! `raw_ctl`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use suppaftp::tokio::{AsyncTlsConnector, ImplAsyncFtpStream};
use suppaftp::{FtpError, FtpResult};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::flushing_tls::FlushingTlsStream;
use crate::helpers::TestApp;

pub type Ftps = ImplAsyncFtpStream<FlushingTlsStream>;

/// A logged-in (or at least TLS-secured) FTPS session that remembers which passive data
/// ports it connected to.
pub struct Session {
    pub ftp: Ftps,
    ports: Arc<Mutex<Vec<u16>>>,
}

impl Session {
    /// The data port of the most recent data connection.
    pub fn last_data_port(&self) -> u16 {
        *self
            .ports
            .lock()
            .unwrap()
            .last()
            .expect("no data connection made yet")
    }
}

impl Deref for Session {
    type Target = Ftps;
    fn deref(&self) -> &Ftps {
        &self.ftp
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Ftps {
        &mut self.ftp
    }
}

/// Client options. `recv_buf` caps the data socket's receive buffer (and disables autotuning)
/// so that a reader that stops early really stops the server.
#[derive(Default, Clone, Copy)]
pub struct Opts {
    pub recv_buf: Option<u32>,
    /// Offer only this TLS version (default: 1.2 and 1.3).
    pub tls: Option<&'static rustls::SupportedProtocolVersion>,
}

pub(crate) fn client_config(
    app: &TestApp,
    tls: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<rustls::ClientConfig> {
    client_config_for(&app.cert_path(), tls)
}

pub(crate) fn client_config_for(
    cert: &std::path::Path,
    tls: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<rustls::ClientConfig> {
    let cert = CertificateDer::from_pem_file(cert).expect("server cert PEM");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&tls.map_or_else(|| rustls::DEFAULT_VERSIONS.to_vec(), |v| vec![v]))
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    Arc::new(config)
}

/// The rustls connector, pausing `pause` before the control-channel handshake (its first use).
///
/// libunftp answers `AUTH TLS` with 234 and only then switches its reader to TLS, from a
/// spawned task; a ClientHello that arrives first is read as a plaintext command and the
/// session dies (LIBUNFTP.md, "AUTH TLS race"). The first attempt does not pause, like a real
/// client; retries pause so that they converge even on a loaded machine.
pub struct PausingConnector {
    inner: suppaftp::tokio_rustls::TlsConnector,
    pause: Duration,
    used: AtomicBool,
}

impl std::fmt::Debug for PausingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PausingConnector")
            .field("pause", &self.pause)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl AsyncTlsConnector for PausingConnector {
    type Stream = FlushingTlsStream;

    async fn connect(&self, domain: &str, stream: TcpStream) -> FtpResult<FlushingTlsStream> {
        if !self.used.swap(true, Ordering::SeqCst) && !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned())
            .map_err(|e| FtpError::SecureError(e.to_string()))?;
        let tls = self
            .inner
            .connect(name, stream)
            .await
            .map_err(|e| FtpError::SecureError(e.to_string()))?;
        Ok(FlushingTlsStream::from(tls))
    }
}

/// The pause before the control-channel handshake on attempt `i` (0-based).
pub(crate) fn pause_for(attempt: u64) -> Duration {
    Duration::from_millis([0, 50, 250][attempt.min(2) as usize])
}

async fn secure_once(app: &TestApp, opts: Opts, attempt: u64) -> FtpResult<Session> {
    let ports = Arc::new(Mutex::new(Vec::new()));
    let seen = ports.clone();
    let ftp = Ftps::connect(app.ftp_addr)
        .await?
        .passive_stream_builder(move |addr: SocketAddr| {
            seen.lock().unwrap().push(addr.port());
            Box::pin(async move {
                let socket = TcpSocket::new_v4().map_err(FtpError::ConnectionError)?;
                if let Some(size) = opts.recv_buf {
                    socket
                        .set_recv_buffer_size(size)
                        .map_err(FtpError::ConnectionError)?;
                }
                socket.connect(addr).await.map_err(FtpError::ConnectionError)
            })
        });
    let connector = PausingConnector {
        inner: suppaftp::tokio_rustls::TlsConnector::from(client_config(app, opts.tls)),
        pause: pause_for(attempt),
        used: AtomicBool::new(false),
    };
    let ftp = ftp.into_secure(connector, "127.0.0.1").await?;
    Ok(Session { ftp, ports })
}

/// True for a reply from the server (as opposed to a transport or TLS failure).
fn is_reply(e: &FtpError) -> bool {
    matches!(e, FtpError::UnexpectedResponse(_))
}

/// Connect, `AUTH TLS`, `PBSZ 0`, `PROT P` — retried up to 3 times on transport/TLS failures
/// (libunftp loses the AUTH TLS upgrade race on a few % of loopback connections).
pub async fn secure(app: &TestApp, opts: Opts) -> FtpResult<Session> {
    retry(|attempt| secure_once(app, opts, attempt)).await
}

/// [`secure`] and then `USER`/`PASS`. A reply such as 530 is returned at once, never retried.
pub async fn login_with(app: &TestApp, user: &str, pass: &str, opts: Opts) -> FtpResult<Session> {
    retry(|attempt| async move {
        let mut s = secure_once(app, opts, attempt).await?;
        s.ftp.login(user, pass).await?;
        Ok(s)
    })
    .await
}

pub async fn login(app: &TestApp, user: &str, pass: &str) -> FtpResult<Session> {
    login_with(app, user, pass, Opts::default()).await
}

async fn retry<F, Fut>(mut attempt: F) -> FtpResult<Session>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = FtpResult<Session>>,
{
    let mut last = None;
    for i in 0..3u64 {
        match tokio::time::timeout(Duration::from_secs(20), attempt(i)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) if is_reply(&e) => return Err(e),
            Ok(Err(e)) => last = Some(format!("{e}")),
            Err(_) => last = Some("timed out".to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100 * (i + 1))).await;
    }
    Err(FtpError::SecureError(format!(
        "FTPS connect failed 3 times; last: {}",
        last.unwrap()
    )))
}

/// The FTP reply code inside an error, if the error is a server reply.
pub fn code(e: &FtpError) -> Option<u32> {
    match e {
        FtpError::UnexpectedResponse(r) => Some(r.status.code()),
        _ => None,
    }
}

/// Asserts `r` failed with FTP reply `want`.
#[track_caller]
pub fn assert_code<T>(r: FtpResult<T>, want: u32, what: &str) {
    match r {
        Ok(_) => panic!("{what}: expected reply {want}, but it succeeded"),
        Err(e) => assert_eq!(code(&e), Some(want), "{what}: expected reply {want}, got {e}"),
    }
}

/// `RETR path`: the whole payload, then the completion reply (226).
pub async fn retr_all(s: &mut Session, path: &str) -> FtpResult<Vec<u8>> {
    let (buf, result) = retr_partial(s, path).await;
    result.map(|()| buf)
}

/// How long any single transfer may take before the test fails (instead of hanging).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// Ends a session with `QUIT`; the server must answer within 10 s.
pub async fn bye(mut s: Session) {
    match tokio::time::timeout(Duration::from_secs(10), s.ftp.quit()).await {
        Ok(_) => {}
        Err(_) => panic!("QUIT got no reply within 10 s"),
    }
}

/// Names in a `LIST` answer (last field of each line).
pub fn names(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .last()
                .map(|n| n.trim_end_matches('/').to_string())
        })
        .filter(|n| n != "." && n != "..")
        .collect();
    v.sort();
    v
}

pub async fn list_names(s: &mut Session, path: &str) -> FtpResult<Vec<String>> {
    Ok(names(&s.ftp.list(Some(path)).await?))
}

/// `RETR path` keeping whatever bytes arrived even when the transfer then fails.
pub async fn retr_partial(s: &mut Session, path: &str) -> (Vec<u8>, FtpResult<()>) {
    let mut buf = Vec::new();
    let transfer = async {
        let mut stream = s.ftp.retr_as_stream(path).await?;
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(FtpError::ConnectionError)?;
        stream.finish().await
    };
    let result = match tokio::time::timeout(TRANSFER_TIMEOUT, transfer).await {
        Ok(r) => r,
        Err(_) => panic!("RETR {path} did not complete within {TRANSFER_TIMEOUT:?}"),
    };
    (buf, result)
}
