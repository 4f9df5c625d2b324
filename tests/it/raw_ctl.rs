//! A hand-driven FTP control connection, plain or TLS, for protocol edge cases and for
//! commands whose final reply suppaftp would hide (e.g. the 550 after a STOR's 150).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::ftp_client::{client_config, pause_for};
use crate::helpers::TestApp;

pub type TlsStream = suppaftp::tokio_rustls::client::TlsStream<TcpStream>;

/// A control connection, plain ([`RawCtl::connect`]) or TLS ([`RawCtl::login`]), for protocol
/// edge cases and for commands whose final reply suppaftp would hide.
pub struct RawCtl<S = TcpStream> {
    io: BufReader<S>,
}

impl RawCtl<TcpStream> {
    /// Connects and reads the greeting (which must be a 220).
    pub async fn connect(addr: SocketAddr) -> RawCtl {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut ctl = RawCtl {
            io: BufReader::new(stream),
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
        let tls = tls_connect(app, tcp).await?;
        let mut ctl = RawCtl {
            io: BufReader::new(tls),
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
    /// `PASV` and a TCP connection to the announced port (TLS comes after the 150).
    pub async fn pasv(&mut self) -> TcpStream {
        let (code, text) = self.cmd("PASV").await;
        assert_eq!(code, 227, "PASV: {text}");
        let inner = &text[text.find('(').unwrap() + 1..text.find(')').unwrap()];
        let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().unwrap()).collect();
        let addr = SocketAddr::from((
            [n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8],
            n[4] * 256 + n[5],
        ));
        TcpStream::connect(addr).await.unwrap()
    }

    /// `STOR path` with a few bytes; returns the final reply code (the 150 is passed over).
    pub async fn stor(&mut self, app: &TestApp, path: &str) -> u32 {
        let data = self.pasv().await;
        let (code, _) = self.cmd(&format!("STOR {path}")).await;
        if code != 150 && code != 125 {
            return code;
        }
        // libunftp finishes the TLS handshake before it calls the storage backend.
        if let Ok(mut tls) = tls_connect(app, data).await {
            let _ = tls.write_all(b"evil").await;
            let _ = tls.shutdown().await;
        }
        self.reply().await.0
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

pub async fn tls_connect(app: &TestApp, tcp: TcpStream) -> Result<TlsStream, String> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    suppaftp::tokio_rustls::TlsConnector::from(client_config(app, None))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}
