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
//! - `PBSZ`/`PROT`/`FEAT`/`CCC` are answered here (the loopback leg has no TLS), `USER` is
//!   passed on in canonical form (so libunftp never logs what a client typed there), `REST`
//!   at or past the end of the file is refused with `554` before libunftp sends anything;
//! - passive replies are rewritten: libunftp listens on an ephemeral loopback port, the IQ is
//!   offered a port of the public range, and [`super::data`] owns that connection;
//! - a transfer's final reply waits for the data connection's end and reports its truth.
//!
//! One command at a time: after forwarding a command the relay reads the IQ again only once
//! libunftp's final reply is out, so a reply always answers the command it follows.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::Conn;
use super::data::{self, DataEnd, DataParams};
use super::inner::Inner;
use super::ports::PortPool;
use super::tcp::Prefixed;
use super::tls::SessionTls;
use super::wire::{self, LineBuf, Next, ReplyReader, Step};
use crate::config::PassiveHost;
use crate::diagnostics::Diagnostics;
use crate::domain::DeviceId;

pub const GREETING: &str = "220 fwdist firmware server (explicit FTPS required)\r\n";
/// From connect to `230`.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// For the control connection's TLS handshake after `234`.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// For writing a reply to the IQ.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

const FEAT: &str = "211-Extensions supported:\r\n SIZE\r\n MDTM\r\n UTF8\r\n EPSV\r\n MLST\r\n MLSD\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n REST STREAM\r\n211 END\r\n";
const TLS_REQUIRED: &str = "534 A TLS connection is required on the control channel\r\n";
const DATA_TLS_REQUIRED: &str = "534 A TLS connection is required on the data channel\r\n";

/// What every session's relay shares.
#[derive(Debug)]
pub struct FrontCtx {
    pub tls: Arc<rustls::ServerConfig>,
    pub inner: Arc<Inner>,
    pub pool: Arc<PortPool>,
    pub diagnostics: Arc<Diagnostics>,
    pub host: PassiveHost,
    pub data_timeout: Duration,
}

/// Serves one control connection until it ends.
pub async fn run(ctx: Arc<FrontCtx>, conn: Arc<Conn>, tcp: TcpStream) {
    let login_deadline = Instant::now() + LOGIN_TIMEOUT;
    if let Err(why) = session(&ctx, &conn, tcp, login_deadline).await {
        tracing::debug!(peer = %conn.peer, reason = why, "FTPS session ended");
    }
    conn.close();
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, text: &str) -> Result<(), &'static str> {
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
        let rest = plaintext(&mut tcp, login_deadline).await?;
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
    let mut relay = Relay {
        ctx,
        conn,
        tls,
        client,
        inner,
        from_client: LineBuf::default(),
        from_inner: greeting,
        pending: None,
        prot_p: false,
        logged_in: false,
        rest: 0,
        rest_asked: 0,
        data: None,
        login_deadline,
    };
    let r = relay.run().await;
    // A transfer still running gets to record how far it got (it watches `closed`).
    conn.close();
    relay.end_data(Duration::from_secs(2)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), relay.client.shutdown()).await;
    r
}

/// Before TLS: only what it takes to start TLS. Returns the bytes read past `AUTH TLS`.
async fn plaintext(tcp: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, &'static str> {
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
                    Some(_) => TLS_REQUIRED,
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
struct Inbound {
    lines: LineBuf,
    replies: ReplyReader,
}

/// A whole reply from libunftp: its code and its lines, each with `\r\n`.
struct Reply {
    code: u16,
    text: String,
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
    async fn reply(&mut self, inner: &mut TcpStream) -> Result<Reply, &'static str> {
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

struct Pending {
    verb: String,
}

/// The session's current data connection.
struct DataChannel {
    task: JoinHandle<DataEnd>,
}

struct Relay<'a, C> {
    ctx: &'a FrontCtx,
    conn: &'a Arc<Conn>,
    tls: SessionTls,
    client: C,
    inner: TcpStream,
    from_client: LineBuf,
    from_inner: Inbound,
    pending: Option<Pending>,
    prot_p: bool,
    logged_in: bool,
    /// The restart offset libunftp has accepted (`350`) for the next transfer.
    rest: u64,
    rest_asked: u64,
    data: Option<DataChannel>,
    login_deadline: Instant,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Relay<'_, C> {
    async fn run(&mut self) -> Result<(), &'static str> {
        let mut cbuf = vec![0u8; 4096];
        let mut ibuf = vec![0u8; 8192];
        loop {
            if self.pending.is_none() {
                match self.from_client.next_line(wire::MAX_LINE) {
                    Next::Line(l) => {
                        self.command(&l).await?;
                        continue;
                    }
                    Next::TooLong => {
                        write(&mut self.client, "500 Command line too long; closing\r\n").await?;
                        return Err("line too long");
                    }
                    Next::Partial => {}
                }
            }
            // Replies already buffered are handled before reading more.
            if let Next::Line(l) = self.from_inner.lines.next_line(usize::MAX) {
                self.reply_line(l).await?;
                continue;
            }
            tokio::select! {
                r = self.client.read(&mut cbuf), if self.pending.is_none() => match r {
                    Ok(n) if n > 0 => self.from_client.extend(&cbuf[..n]),
                    _ => return Err("client left"),
                },
                r = self.inner.read(&mut ibuf) => match r {
                    Ok(n) if n > 0 => self.from_inner.lines.extend(&ibuf[..n]),
                    _ => return Err("FTP engine closed the session"),
                },
                () = tokio::time::sleep_until(self.login_deadline), if !self.logged_in => {
                    write(&mut self.client, "421 Login timed out; closing\r\n").await?;
                    return Err("login timed out");
                }
                () = self.conn.closed() => {
                    let _ = write(&mut self.client, "421 Session closed by the server\r\n").await;
                    return Err("closed by the server");
                }
            }
        }
    }

    async fn reply_client(&mut self, text: &str) -> Result<(), &'static str> {
        write(&mut self.client, text).await
    }

    async fn send_inner(&mut self, text: &str) -> Result<(), &'static str> {
        self.inner
            .write_all(text.as_bytes())
            .await
            .map_err(|_| "FTP engine write failed")
    }

    async fn forward(&mut self, verb: &str, line: &str) -> Result<(), &'static str> {
        self.pending = Some(Pending {
            verb: verb.to_owned(),
        });
        self.send_inner(&format!("{line}\r\n")).await
    }

    /// One command line from the IQ.
    async fn command(&mut self, line: &[u8]) -> Result<(), &'static str> {
        let Some(cmd) = wire::command(line) else {
            return self
                .reply_client("500 Syntax error, command unrecognized\r\n")
                .await;
        };
        let arg = cmd.arg.trim();
        match cmd.verb.as_str() {
            "AUTH" => self.reply_client("503 TLS is already active\r\n").await,
            "PBSZ" => self.reply_client("200 PBSZ=0\r\n").await,
            "PROT" if arg.eq_ignore_ascii_case("P") => {
                self.prot_p = true;
                self.reply_client("200 PROT OK. Securing data channel\r\n").await
            }
            "PROT" if arg.eq_ignore_ascii_case("C") => {
                self.prot_p = false;
                self.reply_client("200 PROT OK. Switching data channel to plaintext\r\n")
                    .await
            }
            "PROT" => self.reply_client("504 PROT S/E not implemented\r\n").await,
            "CCC" => {
                self.reply_client("534 Cannot downgrade connection, TLS enforced.\r\n")
                    .await
            }
            "FEAT" => self.reply_client(FEAT).await,
            "STAT" if arg.is_empty() => self.reply_client("211 fwdist firmware server\r\n").await,
            "PASV" | "EPSV" | "PORT" | "EPRT" if self.logged_in && !self.prot_p => {
                self.reply_client(DATA_TLS_REQUIRED).await
            }
            "USER" => {
                let user = if arg.eq_ignore_ascii_case(crate::probe::USER) {
                    crate::probe::USER.to_owned()
                } else {
                    // Never pass on what was typed: a client that swapped user and password
                    // would have its secret logged by libunftp.
                    DeviceId::parse(arg).map_or_else(|_| "invalid-user".to_owned(), |d| d.to_string())
                };
                self.forward("USER", &format!("USER {user}")).await
            }
            "REST" => match arg.parse::<u64>() {
                Ok(n) if i64::try_from(n).is_ok() => {
                    self.rest_asked = n;
                    self.forward("REST", &format!("REST {n}")).await
                }
                _ => {
                    self.reply_client("501 REST needs a byte offset from 0 to 9223372036854775807\r\n")
                        .await
                }
            },
            "RETR" if self.rest > 0 => self.retr_after_rest(arg).await,
            verb => {
                let line = format!("{verb}{}{}", if cmd.arg.is_empty() { "" } else { " " }, cmd.arg);
                self.forward(verb, &line).await
            }
        }
    }

    /// `REST n` then `RETR path`: refused with `554` when `n` is at or past the end (RFC 3659
    /// §5.5), before libunftp answers `150` and sends nothing.
    async fn retr_after_rest(&mut self, path: &str) -> Result<(), &'static str> {
        self.send_inner(&format!("SIZE {path}\r\n")).await?;
        let size = self.from_inner.reply(&mut self.inner).await?;
        let size = (size.code == 213)
            .then(|| size.text.get(4..).and_then(|t| t.trim().parse::<u64>().ok()))
            .flatten();
        if let Some(size) = size
            && self.rest >= size
        {
            let rest = self.rest;
            self.send_inner("REST 0\r\n").await?;
            self.from_inner.reply(&mut self.inner).await?;
            self.rest = 0;
            return self
                .reply_client(&format!(
                    "554 Restart offset {rest} is at or past the end of the file ({size} bytes)\r\n"
                ))
                .await;
        }
        self.forward("RETR", &format!("RETR {path}")).await
    }

    /// One line from libunftp.
    async fn reply_line(&mut self, line: Vec<u8>) -> Result<(), &'static str> {
        let step = self.from_inner.replies.feed(&line);
        let text = format!("{}\r\n", String::from_utf8_lossy(&line));
        let code = match step {
            Step::Done(code) if code >= 200 => code,
            _ => return self.reply_client(&text).await,
        };
        let Some(p) = self.pending.take() else {
            return self.reply_client(&text).await;
        };
        match p.verb.as_str() {
            "PASV" | "EPSV" if code == 227 || code == 229 => self.open_data(&p.verb, &line).await,
            verb if wire::is_transfer(verb) => {
                self.rest = 0;
                self.finish_transfer(code, &text).await
            }
            verb => {
                if verb == "PASS" && code == 230 {
                    self.logged_in = true;
                }
                if verb == "REST" {
                    self.rest = if code == 350 { self.rest_asked } else { 0 };
                }
                self.reply_client(&text).await
            }
        }
    }

    /// The final reply of a transfer: the data connection's end decides what the IQ hears.
    async fn finish_transfer(&mut self, code: u16, text: &str) -> Result<(), &'static str> {
        let Some(mut dc) = self.data.take() else {
            return self.reply_client(text).await;
        };
        self.conn.set_data(None);
        let wait = if (200..300).contains(&code) {
            data::STALL
        } else {
            Duration::from_secs(3)
        };
        let end = match tokio::time::timeout(wait, &mut dc.task).await {
            Ok(Ok(end)) => end,
            _ => {
                dc.task.abort();
                if (200..300).contains(&code) {
                    DataEnd::Failed(426, data::CUT)
                } else {
                    DataEnd::Ok
                }
            }
        };
        match end {
            DataEnd::Failed(c, why) => self.reply_client(&format!("{c} {why}\r\n")).await,
            DataEnd::Ok => self.reply_client(text).await,
        }
    }

    /// libunftp listens for a data connection on loopback: offer the IQ a public port instead
    /// and connect the two through a [`data`] task.
    async fn open_data(&mut self, verb: &str, line: &[u8]) -> Result<(), &'static str> {
        let internal = if verb == "PASV" {
            wire::pasv_port(line)
        } else {
            wire::epsv_port(line)
        };
        self.end_data(Duration::ZERO).await;
        let Some(internal) = internal else {
            return self.reply_client("425 Cannot open a passive port\r\n").await;
        };
        let host = match (verb, self.public_v4().await) {
            ("PASV", None) => {
                return self
                    .reply_client("425 No IPv4 address to announce; use EPSV\r\n")
                    .await;
            }
            (_, h) => h,
        };
        let conn = self.conn.clone();
        let Some(claim) = self
            .ctx
            .pool
            .claim(conn.local.ip(), conn.peer.ip(), conn.is_probe())
            .await
        else {
            return self
                .reply_client("425 No passive port free right now; try again\r\n")
                .await;
        };
        let inner = match tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect((Ipv4Addr::LOCALHOST, internal)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => return self.reply_client("425 Cannot open a passive port\r\n").await,
        };
        let _ = inner.set_nodelay(true);
        let port = claim.port;
        conn.set_passive_port(port);
        let (tx, jobs) = mpsc::channel(1);
        conn.set_data(Some(tx));
        let params = DataParams {
            deadline: conn.offer_deadline(self.ctx.data_timeout),
            conn,
            claim,
            handshake: self.ctx.data_timeout,
            tls: self.tls.data(),
            internal: inner,
            jobs,
            diagnostics: self.ctx.diagnostics.clone(),
        };
        self.data = Some(DataChannel {
            task: tokio::spawn(data::run(params)),
        });
        let reply = match host {
            Some(ip) if verb == "PASV" => wire::pasv_reply(ip, port),
            _ => wire::epsv_reply(port),
        };
        self.reply_client(&reply).await
    }

    /// Ends the current data connection, after at most `wait` (a new PASV replaces it at
    /// once; a closing session lets a transfer record itself).
    async fn end_data(&mut self, wait: Duration) {
        self.conn.set_data(None);
        if let Some(mut dc) = self.data.take()
            && tokio::time::timeout(wait, &mut dc.task).await.is_err()
        {
            dc.task.abort();
        }
    }

    async fn public_v4(&self) -> Option<Ipv4Addr> {
        match &self.ctx.host {
            PassiveHost::Ip(ip) => Some(*ip),
            PassiveHost::Dns(name) => {
                let found = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::lookup_host((name.as_str(), 0)),
                )
                .await
                .ok()?
                .ok()?;
                found
                    .filter_map(|a| match a.ip() {
                        IpAddr::V4(v4) => Some(v4),
                        IpAddr::V6(_) => None,
                    })
                    .next()
            }
        }
    }
}
