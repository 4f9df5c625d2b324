//! A hand-driven FTP control connection, plain or TLS, for protocol edge cases and for
//! commands whose final reply suppaftp would hide (e.g. the 550 after a STOR's 150).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::ftp_client::{client_config, pause_for};
use crate::helpers::TestApp;

pub type TlsStream = suppaftp::tokio_rustls::client::TlsStream<TcpStream>;

/// A control connection, plain ([`RawCtl::connect`]) or TLS ([`RawCtl::login`]), for protocol
/// edge cases and for commands whose final reply suppaftp would hide.
pub struct RawCtl<S = TcpStream> {
    io: BufReader<S>,
    /// The TLS configuration of the control connection: data connections use it too, so they
    /// resume the control connection's session (fwdist refuses a data connection that does not).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Source address of the control connection; data connections come from it too.
    bind: Option<std::net::IpAddr>,
}

impl RawCtl<TcpStream> {
    /// Connects and reads the greeting (which must be a 220).
    pub async fn connect(addr: SocketAddr) -> RawCtl {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut ctl = RawCtl {
            io: BufReader::new(stream),
            tls: None,
            bind: None,
        };
        let (code, text) = ctl.reply().await;
        assert_eq!(code, 220, "greeting: {text}");
        ctl
    }

    async fn secure_once(app: &TestApp, attempt: u64) -> Result<RawCtl<TlsStream>, String> {
        let mut ctl = RawCtl::connect(app.ftp_addr).await;
        let (code, text) = ctl.cmd("AUTH TLS").await;
        assert_eq!(code, 234, "AUTH TLS: {text}");
        tokio::time::sleep(pause_for(attempt)).await;
        let tcp = ctl.io.into_inner();
        let config = client_config(app, None);
        let tls = tls_connect_with(&config, tcp).await?;
        let mut ctl = RawCtl {
            io: BufReader::new(tls),
            tls: Some(config),
            bind: None,
        };
        for cmd in ["PBSZ 0", "PROT P"] {
            let (code, text) = ctl.try_cmd(cmd).await?;
            assert_eq!(code, 200, "{cmd}: {text}");
        }
        Ok(ctl)
    }

    /// Connect, AUTH TLS, PBSZ 0, PROT P, USER, PASS; returns the reply to PASS.
    pub async fn login_reply(app: &TestApp, user: &str, pass: &str) -> (u32, String) {
        for attempt in 0..3 {
            if let Ok(mut ctl) = Self::secure_once(app, attempt).await {
                let (code, text) = ctl.cmd(&format!("USER {user}")).await;
                assert_eq!(code, 331, "USER: {text}");
                return ctl.cmd(&format!("PASS {pass}")).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("TLS failed 3 times");
    }

    /// Connect, AUTH TLS, PBSZ 0, PROT P, USER, PASS (230 required); TLS retried 3 times.
    pub async fn login(app: &TestApp, user: &str, pass: &str) -> RawCtl<TlsStream> {
        let mut last = String::new();
        for attempt in 0..3 {
            match Self::secure_once(app, attempt).await {
                Ok(mut ctl) => {
                    let (code, text) = ctl.cmd(&format!("USER {user}")).await;
                    assert!(code == 331 || code == 230, "USER: {text}");
                    if code == 331 {
                        let (code, text) = ctl.cmd(&format!("PASS {pass}")).await;
                        assert_eq!(code, 230, "PASS: {text}");
                    }
                    return ctl;
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("raw FTPS login failed 3 times: {last}");
    }
}

impl RawCtl<TlsStream> {
    /// TLS on a data connection, resuming this control connection's session.
    pub async fn data_tls(&self, tcp: TcpStream) -> Result<TlsStream, String> {
        let config = self.tls.clone().expect("a TLS control connection");
        tls_connect_with(&config, tcp).await
    }

    /// `PASV` (which must succeed): the announced address.
    pub async fn pasv_addr(&mut self) -> SocketAddr {
        self.send_raw("PASV\r\n").await;
        self.pasv_reply().await
    }

    /// The reply to a `PASV` already sent (which must be a `227`): the announced address.
    pub async fn pasv_reply(&mut self) -> SocketAddr {
        let (code, text) = self.reply().await;
        assert_eq!(code, 227, "PASV: {text}");
        let inner = &text[text.find('(').unwrap() + 1..text.find(')').unwrap()];
        let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().unwrap()).collect();
        SocketAddr::from((
            [n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8],
            n[4] * 256 + n[5],
        ))
    }

    /// `PASV` and a TCP connection to the announced port (TLS comes after the 150).
    pub async fn pasv(&mut self) -> TcpStream {
        let addr = self.pasv_addr().await;
        connect_from(self.bind, addr).await
    }

    /// `RETR path` over `data`, a connection to the offered port: `150`, TLS resuming this
    /// control connection's session, the whole file, then the `226`.
    pub async fn retr_over(&mut self, data: TcpStream, path: &str) -> Vec<u8> {
        let (code, text) = self.cmd(&format!("RETR {path}")).await;
        assert_eq!(code, 150, "RETR {path}: {text}");
        let mut tls = self.data_tls(data).await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        let (code, text) = self.reply().await;
        assert_eq!(code, 226, "RETR {path}: {text}");
        got
    }

    /// Writes raw bytes (pipelined commands) without reading a reply.
    pub async fn send_raw(&mut self, text: &str) {
        self.io.write_all(text.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// `STOR path` with a few bytes; returns the final reply code (the 150 is passed over).
    pub async fn stor(&mut self, path: &str) -> u32 {
        self.stor_bytes(path, b"evil").await.0
    }

    /// `STOR path` sending `bytes`; the final reply (the 150 is passed over).
    pub async fn stor_bytes(&mut self, path: &str, bytes: &[u8]) -> (u32, String) {
        let data = self.pasv().await;
        let (code, text) = self.cmd(&format!("STOR {path}")).await;
        if code != 150 && code != 125 {
            return (code, text);
        }
        if let Ok(mut tls) = self.data_tls(data).await {
            let _ = tls.write_all(bytes).await;
            let _ = tls.shutdown().await;
            // Reading to the server's close_notify also takes in the TLS 1.3 tickets this
            // data connection was sent (the next data connection resumes with one).
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut sink)).await;
        }
        self.reply().await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawCtl<S> {
    pub async fn try_reply(&mut self) -> Result<(u32, String), String> {
        let mut all = String::new();
        let mut first_code: Option<String> = None;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(15), self.io.read_line(&mut line))
                .await
                .map_err(|_| format!("reply timed out; got so far: {all:?}"))?
                .map_err(|e| format!("reading reply: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "connection closed while waiting for a reply; got so far: {all:?}"
                ));
            }
            all.push_str(&line);
            let code = first_code.get_or_insert_with(|| line.get(..3).unwrap_or_default().to_string());
            if line.len() >= 4 && line.starts_with(code.as_str()) && line.as_bytes()[3] == b' ' {
                return Ok((code.parse().unwrap_or(0), all));
            }
        }
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> (u32, String) {
        self.try_reply().await.unwrap()
    }

    pub async fn try_cmd(&mut self, line: &str) -> Result<(u32, String), String> {
        self.io
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.io.flush().await.map_err(|e| e.to_string())?;
        self.try_reply().await
    }

    pub async fn cmd(&mut self, line: &str) -> (u32, String) {
        self.try_cmd(line).await.unwrap_or_else(|e| panic!("{line}: {e}"))
    }
}

/// TLS on a fresh configuration: it resumes nothing (a client without session reuse).
pub async fn tls_connect(app: &TestApp, tcp: TcpStream) -> Result<TlsStream, String> {
    tls_connect_with(&client_config(app, None), tcp).await
}

pub async fn tls_connect_with(
    config: &std::sync::Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> Result<TlsStream, String> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    suppaftp::tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}

async fn connect_from(bind: Option<std::net::IpAddr>, addr: SocketAddr) -> TcpStream {
    match bind {
        None => TcpStream::connect(addr).await.unwrap(),
        Some(ip) => {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::new(ip, 0)).unwrap();
            s.connect(addr).await.unwrap()
        }
    }
}

/// Logs in over FTPS from `bind` (if set) trusting `cert`, with no retry: fwdist has no AUTH
/// TLS race. Panics unless the login succeeds.
pub async fn login_with(
    addr: SocketAddr,
    cert: &std::path::Path,
    bind: Option<std::net::IpAddr>,
    user: &str,
    pass: &str,
) -> RawCtl<TlsStream> {
    login_on(connect_from(bind, addr).await, cert, bind, user, pass).await
}

/// [`login_with`] on a connection already open (to the control port, from `bind` if set).
pub async fn login_on(
    stream: TcpStream,
    cert: &std::path::Path,
    bind: Option<std::net::IpAddr>,
    user: &str,
    pass: &str,
) -> RawCtl<TlsStream> {
    let mut ctl = RawCtl {
        io: BufReader::new(stream),
        tls: None,
        bind,
    };
    assert_eq!(ctl.reply().await.0, 220);
    assert_eq!(ctl.cmd("AUTH TLS").await.0, 234);
    let config = crate::ftp_client::client_config_for(cert, None);
    let tls = tls_connect_with(&config, ctl.io.into_inner()).await.unwrap();
    let mut ctl = RawCtl {
        io: BufReader::new(tls),
        tls: Some(config),
        bind,
    };
    for cmd in ["PBSZ 0", "PROT P"] {
        assert_eq!(ctl.cmd(cmd).await.0, 200, "{cmd}");
    }
    let (code, text) = ctl.cmd(&format!("USER {user}")).await;
    assert_eq!(code, 331, "USER: {text}");
    let (code, text) = ctl.cmd(&format!("PASS {pass}")).await;
    assert_eq!(code, 230, "PASS: {text}");
    ctl
}

pub async fn login_at(addr: SocketAddr, cert: &std::path::Path, user: &str, pass: &str) -> RawCtl<TlsStream> {
    login_with(addr, cert, None, user, pass).await
}

pub async fn login_from(app: &TestApp, ip: &str, user: &str, pass: &str) -> RawCtl<TlsStream> {
    login_with(
        app.ftp_addr,
        &app.cert_path(),
        Some(ip.parse().unwrap()),
        user,
        pass,
    )
    .await
}
