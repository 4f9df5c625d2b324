//! The relay of one logged-in-or-not TLS session: IQ commands to libunftp one at a time,
//! libunftp's replies back, with the commands the front answers itself, the `REST` check,
//! passive replies rewritten to the public range, and transfer replies that wait for the data
//! connection's end (see the parent module).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{DATA_TLS_REQUIRED, FEAT, FrontCtx, Inbound, write};
use crate::config::PassiveHost;
use crate::domain::DeviceId;
use crate::ftps::conn::Conn;
use crate::ftps::data::{self, DataEnd, DataJob, DataParams, Job, ReceiveJob, Received};
use crate::ftps::path::{Node, resolve};
use crate::ftps::principal::Principal;
use crate::ftps::principal::SessionUser;
use crate::ftps::tls::SessionTls;
use crate::ftps::vfs::{DeviceVfs, RetrError};
use crate::ftps::wire::{self, LineBuf, Next, Step};
use crate::services::ServiceError;
use crate::services::reports::{MAX_REPORT_BYTES, Source};

struct Pending {
    verb: String,
    arg: String,
}

/// The session's current data connection.
struct DataChannel {
    task: JoinHandle<DataEnd>,
    /// A file for the data connection to send (`RETR`) or an upload to take (`STOR`), both
    /// served here.
    jobs: mpsc::Sender<Job>,
    /// libunftp's loopback data connection, once a command libunftp serves needs it.
    attach: Option<oneshot::Sender<TcpStream>>,
}

/// For libunftp's answer to a command the front sent it itself (it answers at once).
const ENGINE_REPLY: Duration = Duration::from_secs(10);

/// Counts a transfer on the connection while it lives (shutdown lets transfers finish).
struct Busy<'a>(&'a Conn);

/// What `HELP` answers: the commands an IQ uses, nothing of the implementation.
const HELP: &str = "214-Commands an IQ uses:\r\n AUTH PBSZ PROT USER PASS TYPE PASV EPSV SIZE MDTM REST RETR STOR\r\n LIST NLST MLSD MLST CWD CDUP PWD NOOP FEAT SITE QUIT\r\n214 End\r\n";

impl<'a> Busy<'a> {
    fn new(c: &'a Conn) -> Self {
        c.transfer_started();
        Busy(c)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.transfer_ended();
    }
}

pub(super) struct Relay<'a, C> {
    ctx: &'a FrontCtx,
    conn: &'a Arc<Conn>,
    tls: SessionTls,
    pub(super) client: C,
    inner: TcpStream,
    from_client: LineBuf,
    from_inner: Inbound,
    pending: Option<Pending>,
    prot_p: bool,
    logged_in: bool,
    /// The restart offset libunftp has accepted (`350`) for the next transfer.
    rest: u64,
    rest_asked: u64,
    /// The canonical `USER`, kept until `PASS`: both then go to libunftp in one write.
    user: Option<String>,
    /// Final replies from libunftp to drop (the `331` of a `USER` sent with its `PASS`).
    skip: u32,
    data: Option<DataChannel>,
    login_deadline: Instant,
    /// The last command line from the IQ, or the end of a transfer: the idle clock. The relay
    /// keeps it, not libunftp, which sees neither the commands the front answers itself
    /// (`PASV`, `RETR`, `STOR`, `TYPE`, ...) nor a transfer under way, and so closed a session
    /// right after the `226` of any download longer than the idle timeout.
    last_active: Instant,
    /// The session's directory, as libunftp keeps it (`CWD` joins, `CDUP` pops): `RETR`
    /// paths are joined to it here, as libunftp would.
    cwd: PathBuf,
}

impl<'a, C: AsyncRead + AsyncWrite + Unpin> Relay<'a, C> {
    pub(super) fn new(
        ctx: &'a FrontCtx,
        conn: &'a Arc<Conn>,
        tls: SessionTls,
        client: C,
        inner: TcpStream,
        from_inner: Inbound,
        login_deadline: Instant,
    ) -> Self {
        Relay {
            ctx,
            conn,
            tls,
            client,
            inner,
            from_client: LineBuf::default(),
            from_inner,
            pending: None,
            prot_p: false,
            logged_in: false,
            rest: 0,
            rest_asked: 0,
            user: None,
            skip: 0,
            data: None,
            login_deadline,
            last_active: Instant::now(),
            cwd: PathBuf::from("/"),
        }
    }

    pub(super) async fn run(&mut self) -> Result<(), &'static str> {
        // Small on purpose: an idle session keeps them (control lines are short).
        let mut cbuf = vec![0u8; 1024];
        let mut ibuf = vec![0u8; 2048];
        loop {
            if self.pending.is_none() {
                match self.from_client.next_line(wire::MAX_LINE) {
                    Next::Line(l) => {
                        self.command(&l).await?;
                        // From the end of the command: a RETR answered here returns after
                        // its transfer.
                        self.last_active = Instant::now();
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
                () = tokio::time::sleep_until(self.last_active + self.ctx.idle), if self.logged_in => {
                    if self.conn.busy() {
                        // A transfer is activity: the clock starts again when it ends.
                        self.last_active = Instant::now();
                        continue;
                    }
                    write(&mut self.client, "421 Idle timeout; closing control connection\r\n").await?;
                    return Err("idle timeout");
                }
                () = self.conn.closed() => {
                    let _ = write(&mut self.client, "421 Session closed by the server\r\n").await;
                    return Err("closed by the server");
                }
            }
        }
    }

    /// A reply from libunftp to a command the front sent it for itself.
    async fn engine_reply(&mut self) -> Result<super::Reply, &'static str> {
        tokio::time::timeout(ENGINE_REPLY, self.from_inner.reply(&mut self.inner))
            .await
            .map_err(|_| "the FTP engine did not answer")?
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
        let arg = line
            .split_once(' ')
            .map(|(_, a)| a.to_owned())
            .unwrap_or_default();
        self.pending = Some(Pending {
            verb: verb.to_owned(),
            arg,
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
            // libunftp's HELP names itself and its version: nothing an IQ needs, much an
            // attacker likes.
            "HELP" => self.reply_client(HELP).await,
            // SPEC §4: a write, refused like the others (libunftp would answer 502).
            "SITE"
                if self.logged_in
                    && arg
                        .split_whitespace()
                        .next()
                        .is_some_and(|w| w.eq_ignore_ascii_case("CHMOD")) =>
            {
                self.reply_client("550 Permission denied\r\n").await
            }
            "PASV" | "EPSV" | "PORT" | "EPRT" if self.logged_in && !self.prot_p => {
                self.reply_client(DATA_TLS_REQUIRED).await
            }
            "PASV" | "EPSV" if self.logged_in => self.offer(&cmd.verb).await,
            "RETR" if self.logged_in => self.retr(&cmd.arg).await,
            "STOR" if self.logged_in => self.stor(&cmd.arg).await,
            verb if self.logged_in && wire::is_transfer(verb) => {
                self.attach_engine().await?;
                self.forward(verb, &format!("{verb} {}", cmd.arg)).await
            }
            // Answered here, and sent on with PASS (one round trip to libunftp, not two).
            "USER" if !self.logged_in => {
                self.user = Some(if arg.eq_ignore_ascii_case(fwdist_release::probe::USER) {
                    fwdist_release::probe::USER.to_owned()
                } else {
                    // Never pass on what was typed: a client that swapped user and password
                    // would have its secret logged by libunftp.
                    DeviceId::parse(arg).map_or_else(|_| "invalid-user".to_owned(), |d| d.to_string())
                });
                self.reply_client("331 Password required\r\n").await
            }
            "PASS" if !self.logged_in => match self.user.take() {
                Some(user) => {
                    self.skip += 1;
                    self.forward("PASS", &format!("USER {user}\r\nPASS {}", cmd.arg))
                        .await
                }
                None => self.reply_client("503 Login with USER first\r\n").await,
            },
            "QUIT" => {
                // libunftp ends its side quietly; its reply is not waited for.
                let _ = self.send_inner("QUIT\r\n").await;
                self.reply_client("221 Goodbye\r\n").await?;
                Err("quit")
            }
            // libunftp is always binary; TYPE changes nothing there.
            "TYPE" => self.reply_client("200 Always in binary mode\r\n").await,
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
            verb => {
                let line = format!("{verb}{}{}", if cmd.arg.is_empty() { "" } else { " " }, cmd.arg);
                self.forward(verb, &line).await
            }
        }
    }

    /// `RETR`, served here: the part goes from the store straight into the data connection
    /// (see [`data`]); `REST n` at or past its end is refused with `554` (RFC 3659 §5.5) before
    /// anything is sent or recorded. libunftp never sees a `RETR`.
    async fn retr(&mut self, arg: &str) -> Result<(), &'static str> {
        let Some(user) = self.conn.user() else {
            return self.reply_client("530 Please authenticate\r\n").await;
        };
        let offset = std::mem::take(&mut self.rest);
        let path = self.cwd.join(arg);
        let r = self.serve_retr(&user, &path, offset).await;
        if offset > 0 {
            // libunftp accepted the REST too; clear it for whatever it serves next.
            self.send_inner("REST 0\r\n").await?;
            self.engine_reply().await?;
        }
        r
    }

    async fn serve_retr(&mut self, user: &SessionUser, path: &Path, offset: u64) -> Result<(), &'static str> {
        let vfs = DeviceVfs::new(self.ctx.shared.clone(), self.conn.clone());
        let opened = match vfs.retr(user, path, offset).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(dc) = self.data.take() {
                    dc.task.abort();
                }
                let reply = match e {
                    RetrError::NotFound => "550 File not found\r\n".to_owned(),
                    RetrError::PastEnd { size } => format!(
                        "554 Restart offset {offset} is at or past the end of the file ({size} bytes)\r\n"
                    ),
                    RetrError::Local(e) => {
                        tracing::error!(user = %user, error = %e, "opening a release part failed");
                        "451 Local error\r\n".to_owned()
                    }
                };
                return self.reply_client(&reply).await;
            }
        };
        let Some(mut dc) = self.data.take() else {
            opened.record.discard();
            return self.reply_client("425 No data connection established\r\n").await;
        };
        self.reply_client("150 Sending data\r\n").await?;
        let _busy = Busy::new(self.conn);
        let job = DataJob {
            reader: opened.reader,
            len: opened.len,
            record: opened.record,
        };
        // A send fails only if the data task ended already; its end says why.
        let _ = dc.jobs.send(Job::Send(job)).await;
        let end = (&mut dc.task).await.unwrap_or(DataEnd::Failed(426, data::CUT));
        match end {
            DataEnd::Ok => self.reply_client("226 Successfully sent\r\n").await,
            DataEnd::Failed(c, why) => self.reply_client(&format!("{c} {why}\r\n")).await,
        }
    }

    /// `STOR`, served here: `/report.json` of a device is taken (at most 4 KiB) and stored as
    /// its install report (SPEC §7); every other upload is read and discarded (up to 64 KiB)
    /// and refused with `550`, after a clean end of the data connection.
    async fn stor(&mut self, arg: &str) -> Result<(), &'static str> {
        let Some(user) = self.conn.user() else {
            return self.reply_client("530 Please authenticate\r\n").await;
        };
        let offset = std::mem::take(&mut self.rest);
        if offset > 0 {
            // libunftp accepted the REST too; clear it for whatever it serves next.
            self.send_inner("REST 0\r\n").await?;
            self.engine_reply().await?;
        }
        let path = self.cwd.join(arg);
        let device = match &user.principal {
            Principal::Device(d) if resolve(&path) == Some(Node::Report) => Some(d.clone()),
            _ => None,
        };
        let Some(mut dc) = self.data.take() else {
            return self.reply_client("425 No data connection established\r\n").await;
        };
        self.reply_client("150 Ready to receive data\r\n").await?;
        let _busy = Busy::new(self.conn);
        let (got, body) = oneshot::channel();
        let cap = if device.is_some() { MAX_REPORT_BYTES } else { 0 };
        let _ = dc.jobs.send(Job::Receive(ReceiveJob { cap, got })).await;
        let end = (&mut dc.task).await.unwrap_or(DataEnd::Failed(426, data::CUT));
        let Some(device) = device else {
            return self.reply_client("550 Permission denied\r\n").await;
        };
        let reply = match (end, body.await) {
            (DataEnd::Failed(c, why), _) => format!("{c} {why}\r\n"),
            (DataEnd::Ok, Ok(Received::TooLarge)) => {
                format!("552 Report is larger than {MAX_REPORT_BYTES} bytes; nothing stored\r\n")
            }
            (DataEnd::Ok, Ok(Received::Body(bytes))) => {
                let ip = self.conn.peer.ip().to_string();
                let reports = &self.ctx.shared.reports;
                match reports
                    .submit(&device.id, Some(&device.model), &bytes, Source::Ftps, ip)
                    .await
                {
                    Ok(r) => format!("226 Report {} stored\r\n", r.id),
                    Err(ServiceError::Invalid(why)) => format!("550 {}; nothing stored\r\n", one_line(&why)),
                    Err(e) => {
                        tracing::error!(user = %user, error = %e, "storing an install report failed");
                        "451 Local error; nothing stored\r\n".to_owned()
                    }
                }
            }
            (DataEnd::Ok, Err(_)) => format!("426 {}\r\n", data::CUT),
        };
        self.reply_client(&reply).await
    }

    /// Before a listing or upload: libunftp opens its (loopback) data connection, which the
    /// data task then relays to the IQ's.
    async fn attach_engine(&mut self) -> Result<(), &'static str> {
        let Some(attach) = self.data.as_mut().and_then(|d| d.attach.take()) else {
            return Ok(());
        };
        self.send_inner("PASV\r\n").await?;
        let reply = self.engine_reply().await?;
        let port = (reply.code == 227)
            .then(|| wire::pasv_port(reply.text.trim_end().as_bytes()))
            .flatten();
        let Some(port) = port else {
            tracing::error!(reply = %reply.text.trim_end(), "the FTP engine opened no data connection");
            return Ok(());
        };
        let connect = TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        if let Ok(Ok(internal)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
            let _ = internal.set_nodelay(true);
            let _ = attach.send(internal);
        }
        Ok(())
    }

    /// One line from libunftp.
    async fn reply_line(&mut self, line: Vec<u8>) -> Result<(), &'static str> {
        let step = self.from_inner.replies.feed(&line);
        if self.skip > 0 {
            if matches!(step, Step::Done(code) if code >= 200) {
                self.skip -= 1;
            }
            return Ok(());
        }
        let text = format!("{}\r\n", String::from_utf8_lossy(&line));
        let code = match step {
            Step::Done(code) if code >= 200 => code,
            _ => return self.reply_client(&text).await,
        };
        let Some(p) = self.pending.take() else {
            return self.reply_client(&text).await;
        };
        match p.verb.as_str() {
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
                if verb == "CWD" && code == 250 {
                    self.cwd = self.cwd.join(&p.arg);
                }
                if verb == "CDUP" && (200..300).contains(&code) {
                    self.cwd.pop();
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

    /// `PASV`/`EPSV`, answered here: a port of the public range, and a [`data`] task that
    /// binds the IQ's connection to this session. libunftp opens a data connection of its own
    /// only if a command it serves needs one ([`Self::attach_engine`]).
    async fn offer(&mut self, verb: &str) -> Result<(), &'static str> {
        self.end_data(Duration::ZERO).await;
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
            .claim(conn.local.ip(), conn.peer.ip(), conn.is_probe(), self.tls.keys())
            .await
        else {
            return self
                .reply_client("425 No passive port free right now; try again\r\n")
                .await;
        };
        let port = claim.port;
        conn.set_passive_port(port);
        let (jobs, job_rx) = mpsc::channel(1);
        let (attach, attach_rx) = oneshot::channel();
        let params = DataParams {
            deadline: conn.offer_deadline(self.ctx.data_timeout),
            conn,
            claim,
            handshake: self.ctx.data_timeout,
            tls: self.tls.data(),
            attach: attach_rx,
            jobs: job_rx,
            diagnostics: self.ctx.diagnostics.clone(),
        };
        self.data = Some(DataChannel {
            task: tokio::spawn(data::run(params)),
            jobs,
            attach: Some(attach),
        });
        let reply = match host {
            Some(ip) if verb == "PASV" => wire::pasv_reply(ip, port),
            _ => wire::epsv_reply(port),
        };
        self.reply_client(&reply).await
    }

    /// Ends the current data connection, after at most `wait` (a new PASV replaces it at
    /// once; a closing session lets a transfer record itself).
    pub(super) async fn end_data(&mut self, wait: Duration) {
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

/// A reason as one reply line: no CR/LF can end the reply early or start another.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
