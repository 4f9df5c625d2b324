//! The control connection, owned by the front: fwdist speaks to the IQ, libunftp speaks to
//! fwdist over loopback in plaintext.
//!
//! Why: libunftp 0.24 buffers a command line without limit, has no deadline on the TLS
//! upgrade or the login, loses the race between its `234` and the client's ClientHello, and
//! cannot be told "wait for the IQ's acknowledgements before `226`". Owning the socket
//! closes all of these in code we own, without patching libunftp:
//!
//! - the greeting, `AUTH TLS` and the TLS handshake are ours: the bytes after `AUTH TLS` go
//!   to rustls, never to a command parser (no race), with a deadline;
//! - every command line is capped at [`wire::MAX_LINE`]; a longer one ends the session with
//!   a `500`; a session that has not logged in within [`LOGIN_TIMEOUT`] gets `421`;
//! - `PBSZ`/`PROT`/`FEAT`/`CCC`/`TYPE`/`QUIT` are answered here (the loopback leg has no
//!   TLS), `USER` is held and sent on with `PASS` in canonical form (so libunftp never logs
//!   what a client typed there);
//! - `PASV`/`EPSV` and `RETR` — the whole download path — are served here: the IQ is offered
//!   a port of the public range, [`super::data`] owns that connection, and a `RETR` is opened
//!   through the device tree (`DeviceVfs::retr`, libunftp's own storage backend) and sent by
//!   it; `REST` at or past the end of the file gets `554` before anything is sent. libunftp
//!   opens a (loopback) data connection only for what it serves itself, listings and uploads,
//!   and a transfer's final reply then waits for the data connection's end and reports its
//!   truth. libunftp keeps the login, the directory (`CWD`/`CDUP`, mirrored here for `RETR`
//!   paths), `SIZE`/`MDTM`/`MLST`, listings and uploads.
//!
//! One command at a time: after forwarding a command the relay reads the IQ again only once
//! libunftp's final reply is out, so a reply always answers the command it follows.
//! Serving the download path here instead of relaying it saves a loopback listener, a
//! loopback connection and three loopback replies per download (measured: P2, 1 KiB
//! sessions, went from 0.83 to 0.97 of the pre-front build; see `bench/README.md`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

mod relay;

use super::conn::Conn;
use super::inner::Inner;
use super::ports::Passive;
use super::tcp::Prefixed;
use super::tls::SessionTls;
use super::wire::{self, LineBuf, Next, ReplyReader, Step};
use crate::config::PassiveHost;
use crate::diagnostics::Diagnostics;
use relay::Relay;

pub const GREETING: &str = "220 fwdist firmware server (explicit FTPS required)\r\n";
/// From connect to `230`.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// For the control connection's TLS handshake after `234`.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// For writing a reply to the IQ.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) const FEAT: &str = "211-Extensions supported:\r\n SIZE\r\n MDTM\r\n UTF8\r\n EPSV\r\n MLST\r\n MLSD\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n REST STREAM\r\n211 END\r\n";
const TLS_REQUIRED: &str = "534 A TLS connection is required on the control channel\r\n";
pub(super) const DATA_TLS_REQUIRED: &str = "534 A TLS connection is required on the data channel\r\n";

/// What every session's relay shares.
#[derive(Debug)]
pub struct FrontCtx {
    pub tls: Arc<rustls::ServerConfig>,
    pub inner: Arc<Inner>,
    pub pool: Passive,
    pub diagnostics: Arc<Diagnostics>,
    pub host: PassiveHost,
    pub data_timeout: Duration,
    /// `ftps.idle_timeout_secs`: a logged-in session with no command from the IQ and no
    /// transfer running for this long is closed (see [`relay`]).
    pub idle: Duration,
    /// `ftps.proxy_protocol`: connections begin with a PROXY v1 header ([`crate::ftps::proxy`]).
    pub proxy: bool,
    /// What the storage backends share: the front opens `RETR`s with it itself.
    pub shared: Arc<crate::ftps::vfs::FtpsShared>,
}

/// Serves one control connection until it ends.
pub async fn run(ctx: Arc<FrontCtx>, conn: Arc<Conn>, tcp: TcpStream) {
    let login_deadline = Instant::now() + LOGIN_TIMEOUT;
    if let Err(why) = session(&ctx, &conn, tcp, login_deadline).await {
        tracing::debug!(peer = %conn.peer, reason = why, "FTPS session ended");
    }
    conn.close();
}

pub(super) async fn write<S: AsyncWrite + Unpin>(s: &mut S, text: &str) -> Result<(), &'static str> {
    let w = async {
        s.write_all(text.as_bytes()).await?;
        s.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, w).await {
        Ok(Ok(())) => Ok(()),
        _ => Err("the client stopped reading"),
    }
}

async fn session(
    ctx: &FrontCtx,
    conn: &Arc<Conn>,
    tcp: TcpStream,
    login_deadline: Instant,
) -> Result<(), &'static str> {
    let tls = SessionTls::new(&ctx.tls);
    let setup = async {
        let mut tcp = tcp;
        let _ = tcp.set_nodelay(true);
        write(&mut tcp, GREETING).await?;
        let rest = plaintext(&mut tcp, login_deadline, &ctx.diagnostics.metrics).await?;
        let until = login_deadline.min(Instant::now() + TLS_TIMEOUT);
        let client =
            match tokio::time::timeout_at(until, tls.control().accept(Prefixed::new(rest, tcp))).await {
                Ok(Ok(s)) => s,
                Ok(Err(_)) => return Err("control TLS handshake failed"),
                Err(_) => return Err("no control TLS handshake in time"),
            };
        let mut inner = ctx
            .inner
            .connect(conn)
            .await
            .map_err(|_| "cannot reach the FTP engine")?;
        let mut greeting = Inbound::default();
        tokio::time::timeout(Duration::from_secs(5), greeting.reply(&mut inner))
            .await
            .map_err(|_| "no greeting from the FTP engine")??;
        Ok((client, inner, greeting))
    };
    let (client, inner, greeting) = tokio::select! {
        r = setup => r?,
        () = conn.closed() => return Err("closed by the server"),
    };
    let mut relay = Relay::new(ctx, conn, tls, client, inner, greeting, login_deadline);
    let r = relay.run().await;
    // A transfer still running gets to record how far it got (it watches `closed`).
    conn.close();
    relay.end_data(Duration::from_secs(2)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), relay.client.shutdown()).await;
    r
}

/// Before TLS: only what it takes to start TLS. Returns the bytes read past `AUTH TLS`.
async fn plaintext(
    tcp: &mut TcpStream,
    deadline: Instant,
    metrics: &crate::metrics::Metrics,
) -> Result<Vec<u8>, &'static str> {
    let mut lines = LineBuf::default();
    let mut buf = [0u8; 1024];
    loop {
        match lines.next_line(wire::MAX_LINE) {
            Next::TooLong => {
                write(tcp, "500 Command line too long; closing\r\n").await?;
                return Err("line too long");
            }
            Next::Line(l) => {
                let cmd = wire::command(&l);
                let reply = match cmd.as_ref().map(|c| (c.verb.as_str(), c.arg.trim())) {
                    Some(("AUTH", a)) if a.eq_ignore_ascii_case("TLS") || a.eq_ignore_ascii_case("TLS-C") => {
                        write(tcp, "234 AUTH TLS OK; start the handshake\r\n").await?;
                        return Ok(lines.take_rest());
                    }
                    Some(("AUTH", _)) => "504 Only AUTH TLS is supported\r\n",
                    Some(("FEAT", _)) => FEAT,
                    Some(("NOOP", _)) => "200 OK\r\n",
                    Some(("QUIT", _)) => {
                        write(tcp, "221 Goodbye\r\n").await?;
                        return Err("quit before TLS");
                    }
                    Some(_) => {
                        metrics.refused(crate::metrics::Refusal::Plaintext);
                        TLS_REQUIRED
                    }
                    None => "500 Syntax error, command unrecognized\r\n",
                };
                write(tcp, reply).await?;
                continue;
            }
            Next::Partial => {}
        }
        let n = tokio::select! {
            r = tcp.read(&mut buf) => r.map_err(|_| "read failed")?,
            () = tokio::time::sleep_until(deadline) => {
                write(tcp, "421 Login timed out; closing\r\n").await?;
                return Err("login timed out");
            }
        };
        if n == 0 {
            return Err("client left");
        }
        lines.extend(&buf[..n]);
    }
}

/// Lines from libunftp, with where its replies end.
#[derive(Default)]
pub(super) struct Inbound {
    pub(super) lines: LineBuf,
    pub(super) replies: ReplyReader,
}

/// A whole reply from libunftp: its code and its lines, each with `\r\n`.
pub(super) struct Reply {
    pub(super) code: u16,
    pub(super) text: String,
}

impl Inbound {
    /// The next line from libunftp (any size: it is ours), reading as needed.
    async fn line(&mut self, inner: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
        let mut buf = [0u8; 4096];
        loop {
            if let Next::Line(l) = self.lines.next_line(usize::MAX) {
                return Ok(l);
            }
            let n = inner.read(&mut buf).await.map_err(|_| "FTP engine read failed")?;
            if n == 0 {
                return Err("FTP engine closed the session");
            }
            self.lines.extend(&buf[..n]);
        }
    }

    /// Reads up to and including the next final reply.
    pub(super) async fn reply(&mut self, inner: &mut TcpStream) -> Result<Reply, &'static str> {
        let mut text = String::new();
        loop {
            let l = self.line(inner).await?;
            text.push_str(&String::from_utf8_lossy(&l));
            text.push_str("\r\n");
            if let Step::Done(code) = self.replies.feed(&l)
                && code >= 200
            {
                return Ok(Reply { code, text });
            }
        }
    }
}
