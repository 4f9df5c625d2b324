//! A small explicit-FTPS client: just what an IQ needs (RFC 959 + RFC 4217: `AUTH TLS`,
//! `PBSZ 0`, `PROT P`, `USER`/`PASS`, `TYPE I`, `PASV`, `REST`, `RETR`, `QUIT`).
//!
//! Hand-written rather than suppaftp because an IQ's correctness hangs on details suppaftp
//! gets wrong or hides: it never flushes a command written into TLS (measured: a `SIZE` after
//! a large RETR sat unsent until the next write), it offers no greeting or reply timeouts, and
//! its errors do not keep the reply code the simulator counts. Every wait here is bounded, and
//! every data connection resumes its own control connection's TLS session
//! ([`super::resume`]), as servers that bind the two require.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("server replied {code}: {text}")]
    Reply { code: u16, text: String },
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's reply code, when the failure is a reply.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Worth another attempt: anything but a definite refusal by the server.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Reply { code, .. } => *code < 500,
            ClientError::Protocol(_) => false,
            _ => true,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// Where and how to connect.
#[derive(Clone)]
pub struct ClientConfig {
    pub addr: SocketAddr,
    /// Name the server certificate must carry (a DNS name or an IP literal).
    pub server_name: ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
    /// Resumable TLS sessions shared by this process's control connections
    /// ([`super::resume::shared_store`]).
    pub sessions: Arc<dyn rustls::client::ClientSessionStore>,
    /// Bound on every single wait (connect, reply, handshake, data read).
    pub timeout: Duration,
    /// Pause between `234` and the ClientHello. libunftp 0.24 reads a ClientHello that
    /// arrives before it switched to TLS as a command and drops the session; retries pause.
    pub pause_before_handshake: Duration,
    /// Local address to connect from (control and data), e.g. to model many sites on one
    /// machine with 127.0.0.x sources.
    pub bind_ip: Option<IpAddr>,
}

async fn tcp_connect(addr: SocketAddr, bind_ip: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = bind_ip else {
        return TcpStream::connect(addr).await;
    };
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

pub struct FtpsClient {
    ctl: BufReader<TlsStream<TcpStream>>,
    cfg: ClientConfig,
    tls: super::resume::SessionStores,
    peer: IpAddr,
    greeting: Reply,
}

/// How far a connection got: the steps of [`FtpsClient::connect_staged`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The TCP connection to the control port.
    Tcp,
    /// The server's `220` greeting.
    Greeting,
    /// `AUTH TLS` answered `234`.
    AuthTls,
    /// The TLS handshake on the control connection.
    Handshake,
    /// `PBSZ 0`, `PROT P` over TLS.
    Protection,
}

/// A failed [`FtpsClient::connect_staged`]: the stage that failed, why, and the greeting when
/// one had arrived.
#[derive(Debug)]
pub struct StageError {
    pub stage: Stage,
    pub error: ClientError,
    pub greeting: Option<Reply>,
}

/// One FTP reply: code and full text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

async fn bounded<T>(limit: Duration, what: &'static str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| ClientError::Timeout(what))
}

/// Reads one (possibly multi-line) reply.
async fn read_reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>, limit: Duration) -> Result<Reply> {
    let mut text = String::new();
    let mut first: Option<[u8; 3]> = None;
    loop {
        let mut line = String::new();
        let n = bounded(limit, "a reply", r.read_line(&mut line)).await??;
        if n == 0 {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            )));
        }
        if text.len() > 64 * 1024 {
            return Err(ClientError::Protocol("reply too long".into()));
        }
        text.push_str(&line);
        let b = line.as_bytes();
        if b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) {
            if first.is_none() {
                return Err(ClientError::Protocol(format!(
                    "not an FTP reply: {:?}",
                    line.trim_end()
                )));
            }
            continue;
        }
        let code: [u8; 3] = [b[0], b[1], b[2]];
        let start = *first.get_or_insert(code);
        if code == start && b[3] == b' ' {
            let code =
                u16::from(code[0] - b'0') * 100 + u16::from(code[1] - b'0') * 10 + u16::from(code[2] - b'0');
            return Ok(Reply {
                code,
                text: text.trim_end().to_owned(),
            });
        }
    }
}

fn expect(reply: Reply, ok: &[u16]) -> Result<Reply> {
    if ok.contains(&reply.code) {
        Ok(reply)
    } else {
        Err(ClientError::Reply {
            code: reply.code,
            text: reply.text,
        })
    }
}

/// The address in a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply (RFC 959 §4.1.2).
pub fn parse_pasv(text: &str) -> Option<SocketAddrV4> {
    let inner = text
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| inside)?;
    let n: Vec<u16> = inner.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    if n.len() != 6 || n.iter().any(|x| *x > 255) {
        return None;
    }
    let b = |i: usize| n[i] as u8;
    let ip = Ipv4Addr::new(b(0), b(1), b(2), b(3));
    Some(SocketAddrV4::new(ip, n[4] * 256 + n[5]))
}

impl FtpsClient {
    /// Connects, reads the greeting, upgrades with `AUTH TLS`, and sets `PBSZ 0`, `PROT P`.
    ///
    /// # Errors
    /// Connection, greeting, handshake or reply failures; timeouts.
    pub async fn connect(cfg: ClientConfig) -> Result<Self> {
        Self::connect_staged(cfg).await.map_err(|e| e.error)
    }

    /// [`FtpsClient::connect`], saying which stage failed (`fwdist doctor` reports each).
    ///
    /// # Errors
    /// As [`FtpsClient::connect`], with the failed [`Stage`].
    pub async fn connect_staged(cfg: ClientConfig) -> std::result::Result<Self, StageError> {
        let at = |stage: Stage, greeting: Option<&Reply>| {
            let greeting = greeting.cloned();
            move |error: ClientError| StageError {
                stage,
                error,
                greeting,
            }
        };
        let t = cfg.timeout;
        let tcp = bounded(t, "the TCP connection", tcp_connect(cfg.addr, cfg.bind_ip))
            .await
            .map_err(at(Stage::Tcp, None))?
            .map_err(|source| ClientError::Connect {
                addr: cfg.addr,
                source,
            })
            .map_err(at(Stage::Tcp, None))?;
        let _ = tcp.set_nodelay(true);
        let mut plain = BufReader::new(tcp);
        let greeting = read_reply(&mut plain, t)
            .await
            .and_then(|r| expect(r, &[220]))
            .map_err(at(Stage::Greeting, None))?;
        let auth = at(Stage::AuthTls, Some(&greeting));
        let reply = async {
            plain.get_mut().write_all(b"AUTH TLS\r\n").await?;
            expect(read_reply(&mut plain, t).await?, &[234])?;
            if !plain.buffer().is_empty() {
                return Err(ClientError::Protocol("server sent data after 234".into()));
            }
            Ok(())
        };
        reply.await.map_err(auth)?;
        if !cfg.pause_before_handshake.is_zero() {
            tokio::time::sleep(cfg.pause_before_handshake).await;
        }
        let stores = super::resume::SessionStores::new(&cfg.tls, &cfg.sessions);
        let connector = TlsConnector::from(stores.control.clone());
        let tls = bounded(
            t,
            "the TLS handshake",
            connector.connect(cfg.server_name.clone(), plain.into_inner()),
        )
        .await
        .map_err(at(Stage::Handshake, Some(&greeting)))?
        .map_err(|e| ClientError::Handshake(e.to_string()))
        .map_err(at(Stage::Handshake, Some(&greeting)))?;
        let peer = tls
            .get_ref()
            .0
            .peer_addr()
            .map_err(ClientError::Io)
            .map_err(at(Stage::Handshake, Some(&greeting)))?
            .ip();
        let protection = at(Stage::Protection, Some(&greeting));
        let mut c = FtpsClient {
            ctl: BufReader::new(tls),
            cfg,
            tls: stores,
            peer,
            greeting,
        };
        let setup = async {
            c.cmd("PBSZ 0", &[200]).await?;
            c.cmd("PROT P", &[200]).await
        };
        setup.await.map_err(protection)?;
        Ok(c)
    }

    /// The server's `220` greeting.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// The control connection's peer address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// The negotiated TLS version and cipher suite of the control connection.
    pub fn tls_summary(&self) -> String {
        let conn = self.ctl.get_ref().get_ref().1;
        let version = conn.protocol_version().and_then(|v| v.as_str()).map_or_else(
            || "TLS (unknown version)".to_owned(),
            |v| v.replace("TLSv1_", "TLS 1."),
        );
        let suite = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown cipher suite");
        format!("{version}, {suite}")
    }

    /// Sends a command (flushed through TLS) and checks the reply code.
    ///
    /// # Errors
    /// I/O failure, timeout, or a reply code outside `ok`.
    pub async fn cmd(&mut self, line: &str, ok: &[u16]) -> Result<Reply> {
        self.send(line).await?;
        expect(read_reply(&mut self.ctl, self.cfg.timeout).await?, ok)
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        let t = self.cfg.timeout;
        let w = self.ctl.get_mut();
        bounded(t, "sending a command", async {
            w.write_all(line.as_bytes()).await?;
            w.write_all(b"\r\n").await?;
            w.flush().await
        })
        .await??;
        Ok(())
    }

    /// # Errors
    /// 530 and friends as [`ClientError::Reply`].
    pub async fn login(&mut self, user: &str, pass: &str) -> Result<()> {
        let r = self.cmd(&format!("USER {user}"), &[230, 331]).await?;
        if r.code == 331 {
            self.cmd(&format!("PASS {pass}"), &[230]).await?;
        }
        self.cmd("TYPE I", &[200]).await?;
        Ok(())
    }

    /// `PASV`: returns the data address (the announced IP is ignored for the control peer's,
    /// as curl and lftp do, so NAT-mangled replies still work) and port.
    async fn pasv(&mut self) -> Result<SocketAddr> {
        let announced = self.pasv_announced().await?;
        Ok(SocketAddr::new(self.peer, announced.port()))
    }

    /// `PASV`: the address and port exactly as the `227` reply announces them.
    ///
    /// # Errors
    /// A refusal, transport failure or timeout; a `227` that does not hold an address.
    pub async fn pasv_announced(&mut self) -> Result<SocketAddrV4> {
        let r = self.cmd("PASV", &[227]).await?;
        parse_pasv(&r.text).ok_or_else(|| ClientError::Protocol(format!("bad PASV reply: {}", r.text)))
    }

    /// Opens a data connection to `addr` (from this client's `bind_ip`), waiting at most
    /// `limit`.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when nothing answers in time, [`ClientError::Connect`] when
    /// the connection is refused or unreachable.
    pub async fn connect_data(&self, addr: SocketAddr, limit: Duration) -> Result<TcpStream> {
        bounded(limit, "the data connection", tcp_connect(addr, self.cfg.bind_ip))
            .await?
            .map_err(|source| ClientError::Connect { addr, source })
    }

    /// Downloads `path` from `offset` into `sink`, reading at most `limit` bytes (an IQ never
    /// reads past the manifest's size). Returns the bytes written and the data port used.
    ///
    /// # Errors
    /// Any refusal, transport failure, timeout, or more data than `limit`.
    pub async fn retr<W: AsyncWrite + Unpin>(
        &mut self,
        path: &str,
        offset: u64,
        limit: u64,
        sink: &mut W,
    ) -> Result<(u64, u16)> {
        let addr = self.pasv().await?;
        let tcp = self.connect_data(addr, self.cfg.timeout).await?;
        if offset > 0 {
            self.cmd(&format!("REST {offset}"), &[350]).await?;
        }
        let got = self
            .transfer_over(tcp, &format!("RETR {path}"), limit, sink)
            .await?;
        Ok((got, addr.port()))
    }

    /// Sends `command` (`RETR …`, `LIST`, …), upgrades the already connected data connection
    /// `tcp` to TLS and copies what arrives on it into `sink`, reading at most `limit` bytes;
    /// then expects `226`. Returns the bytes written.
    ///
    /// # Errors
    /// Any refusal, transport failure, timeout, or more data than `limit`; a failed data
    /// channel handshake is [`ClientError::Handshake`].
    pub async fn transfer_over<W: AsyncWrite + Unpin>(
        &mut self,
        tcp: TcpStream,
        command: &str,
        limit: u64,
        sink: &mut W,
    ) -> Result<u64> {
        let t = self.cfg.timeout;
        self.cmd(command, &[125, 150]).await?;
        let mut data = self.data_tls(tcp).await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            let n = bounded(t, "file data", data.read(&mut buf)).await??;
            if n == 0 {
                break;
            }
            if got + n as u64 > limit {
                return Err(ClientError::Protocol(format!(
                    "server sent more than the expected {limit} bytes"
                )));
            }
            sink.write_all(&buf[..n]).await?;
            got += n as u64;
        }
        sink.flush().await?;
        // Close our side (close_notify) before waiting for 226: vsftpd, for one, sends the 226
        // only after the client has shut the data connection down.
        let _ = bounded(t, "closing the data connection", data.shutdown()).await;
        drop(data);
        expect(read_reply(&mut self.ctl, t).await?, &[226, 250])?;
        Ok(got)
    }

    /// TLS on a connected data connection, resuming this session's TLS session.
    async fn data_tls(&self, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = TlsConnector::from(self.tls.data.clone());
        bounded(
            self.cfg.timeout,
            "the data TLS handshake",
            connector.connect(self.cfg.server_name.clone(), tcp),
        )
        .await?
        .map_err(|e| ClientError::Handshake(format!("data channel: {e}")))
    }

    /// Uploads `bytes` as `path` (an install report: `STOR /report.json`); returns the final
    /// reply (226).
    ///
    /// # Errors
    /// Any refusal (a 5xx reply is [`ClientError::Reply`]), transport failure or timeout.
    pub async fn stor(&mut self, path: &str, bytes: &[u8]) -> Result<Reply> {
        let t = self.cfg.timeout;
        let addr = self.pasv().await?;
        let tcp = self.connect_data(addr, t).await?;
        self.cmd(&format!("STOR {path}"), &[125, 150]).await?;
        let mut data = self.data_tls(tcp).await?;
        bounded(t, "sending the upload", data.write_all(bytes)).await??;
        let _ = bounded(t, "closing the data connection", data.shutdown()).await;
        // Read to the server's close_notify: it also carries the TLS tickets the next data
        // connection resumes with.
        let mut rest = Vec::new();
        let _ = bounded(t, "the end of the data connection", data.read_to_end(&mut rest)).await;
        drop(data);
        expect(read_reply(&mut self.ctl, t).await?, &[226, 250])
    }

    /// Fetches a small file whole (a manifest or signature).
    ///
    /// # Errors
    /// As [`FtpsClient::retr`].
    pub async fn retr_small(&mut self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.retr(path, 0, limit, &mut out).await?;
        Ok(out)
    }

    /// Connects and logs in, retrying once (after a pause) when the TLS upgrade fails: the
    /// libunftp AUTH TLS race makes that happen to a few % of connections.
    ///
    /// # Errors
    /// As [`FtpsClient::connect`] and [`FtpsClient::login`]; a 530 is never retried.
    pub async fn open(cfg: &ClientConfig, user: &str, pass: &str) -> Result<(Self, bool)> {
        let (mut c, retried) = match Self::connect(cfg.clone()).await {
            Ok(c) => (c, false),
            Err(ClientError::Handshake(_) | ClientError::Io(_) | ClientError::Protocol(_)) => {
                let mut again = cfg.clone();
                again.pause_before_handshake = Duration::from_millis(100);
                (Self::connect(again).await?, true)
            }
            Err(e) => return Err(e),
        };
        c.login(user, pass).await?;
        Ok((c, retried))
    }

    /// Says goodbye; errors are irrelevant by now.
    pub async fn quit(mut self) {
        let _ = self.cmd("QUIT", &[221]).await;
        let _ = self.ctl.get_mut().shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(s: &str) -> Result<Reply> {
        read_reply(&mut BufReader::new(s.as_bytes()), Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn replies_single_and_multi_line() {
        let r = parse("220 hello\r\n").await.unwrap();
        assert_eq!((r.code, r.text.as_str()), (220, "220 hello"));
        let r = parse("211-Features:\r\n AUTH TLS\r\n211 End\r\n").await.unwrap();
        assert_eq!(r.code, 211);
        assert!(r.text.contains("AUTH TLS"));
        assert!(parse("garbage\r\n").await.is_err());
        assert!(parse("").await.is_err());
    }

    #[test]
    fn pasv_replies() {
        let a = parse_pasv("227 Entering Passive Mode (203,0,113,5,195,82)").unwrap();
        assert_eq!(a, "203.0.113.5:50002".parse().unwrap());
        assert_eq!(
            parse_pasv("227 Entering Passive Mode (0,0,0,0,4,1)")
                .unwrap()
                .port(),
            1025
        );
        for bad in [
            "227 no address",
            "227 (1,2,3,4,5)",
            "227 (1,2,3,4,5,256)",
            "227 (a,b,c,d,e,f)",
        ] {
            assert_eq!(parse_pasv(bad), None, "{bad}");
        }
    }
}
