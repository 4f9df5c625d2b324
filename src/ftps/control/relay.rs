//! The relay of one logged-in-or-not TLS session: IQ commands to libunftp one at a time,
//! libunftp's replies back, with the commands the front answers itself, the `REST` check,
//! passive replies rewritten to the public range, and transfer replies that wait for the data
//! connection's end (see the parent module).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{DATA_TLS_REQUIRED, FEAT, FrontCtx, Inbound, write};
use crate::config::PassiveHost;
use crate::domain::DeviceId;
use crate::ftps::conn::Conn;
use crate::ftps::data::{self, DataEnd, DataParams};
use crate::ftps::tls::SessionTls;
use crate::ftps::wire::{self, LineBuf, Next, Step};

struct Pending {
    verb: String,
}

/// The session's current data connection.
struct DataChannel {
    task: JoinHandle<DataEnd>,
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
            // Answered here, and sent on with PASS (one round trip to libunftp, not two).
            "USER" if !self.logged_in => {
                self.user = Some(if arg.eq_ignore_ascii_case(crate::probe::USER) {
                    crate::probe::USER.to_owned()
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
    pub(super) async fn end_data(&mut self, wait: Duration) {
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
