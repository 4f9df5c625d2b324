//! One passive data connection, owned by the front from the IQ's socket to libunftp's.
//!
//! A task per offer ([`run`]):
//! 1. **Bind**: accept connections on the offered port (in one-port mode: take those the
//!    front classified as data connections, [`super::oneport`]) until one from the session's address
//!    completes a TLS handshake that *resumes* this session's TLS session
//!    ([`super::tls::SessionTls`]) within `data_connect_timeout_secs` of its accept. Anyone
//!    else — another host, a stranger at the same NAT address, a client that never starts TLS
//!    — is dropped and counted, and the offer stays open for the IQ until it expires.
//! 2. **Serve**: a `RETR` of a release part arrives as a [`DataJob`] from the control relay
//!    (libunftp never sees it) and is sent straight from the store into the TLS stream; the download is `complete` only
//!    when the IQ's TCP stack has acknowledged every byte ([`super::tcp`]), and the record is
//!    written here, by the owner of the socket, whether the transfer ends or is cut. Listings
//!    and uploads are relayed between the IQ and libunftp's loopback data connection (opened
//!    only for them, see [`super::control`]); a
//!    refused upload is drained (up to [`DRAIN_CAP`]) and closed with a TLS `close_notify`, so
//!    the IQ sees the `550`, not a reset.
//!
//! The task ends with a [`DataEnd`]: the control relay waits for it before it forwards the
//! transfer's final reply, and answers the IQ's failure itself when libunftp cannot know it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::conn::Conn;
use super::ports::Claim;
use super::records::Recorder;
use super::tcp::{Checkpoints, Counted};
use crate::db::downloads::DownloadRecord;
use crate::diagnostics::{Diagnostics, Event};
use crate::domain::{Outcome, now_ms};

type Tls = tokio_rustls::server::TlsStream<Counted>;

/// What a refused upload may still send before its data connection is closed.
pub const DRAIN_CAP: u64 = 64 * 1024;
/// Handshakes run at once on one offered port (a stranger cannot hold the port shut).
const MAX_HANDSHAKES: usize = 4;
/// A transfer whose IQ stops reading or acknowledging for this long is cut.
pub const STALL: Duration = Duration::from_secs(30);
const CHUNK: usize = 256 * 1024;

/// A file to send down the data connection: a RETR from the storage backend.
pub struct DataJob {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub len: u64,
    /// The download record to complete (not recorded: the probe file). Recorded `aborted`
    /// even if the job is dropped unsent (its data connection never came).
    pub record: Pending,
}

/// Bytes to take from the IQ: an install report (`STOR /report.json`), or a refused upload
/// (`cap` 0), which is drained and discarded.
pub struct ReceiveJob {
    /// Most bytes kept; one more and the upload is [`Received::TooLarge`] (and drained).
    pub cap: usize,
    pub got: oneshot::Sender<Received>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Body(Vec<u8>),
    TooLarge,
}

/// What the control relay hands the data connection.
pub enum Job {
    Send(DataJob),
    Receive(ReceiveJob),
}

/// How the data connection ended, for the transfer's final reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEnd {
    Ok,
    /// The reply the IQ gets instead of libunftp's.
    Failed(u16, &'static str),
}

pub const NOT_BOUND: &str = "Data connection refused: it must resume this control connection's TLS session";
pub const NO_TLS: &str = "Data connection refused: no TLS handshake in time";
pub const EXPIRED: &str = "No data connection arrived on the passive port in time";
pub const CUT: &str = "Data connection closed; transfer aborted";

pub struct DataParams {
    pub conn: Arc<Conn>,
    pub claim: Claim,
    pub deadline: Instant,
    pub handshake: Duration,
    pub tls: tokio_rustls::TlsAcceptor,
    /// libunftp's loopback data connection, for what libunftp serves (listings, uploads).
    pub attach: oneshot::Receiver<TcpStream>,
    pub jobs: mpsc::Receiver<Job>,
    pub diagnostics: Arc<Diagnostics>,
}

pub async fn run(p: DataParams) -> DataEnd {
    let DataParams {
        conn,
        mut claim,
        deadline,
        handshake,
        tls,
        attach,
        mut jobs,
        diagnostics,
    } = p;
    let port = claim.port;
    let bound = tokio::select! {
        r = bind(&conn, &mut claim, deadline, handshake, &tls, &diagnostics) => r,
        () = conn.closed() => return DataEnd::Failed(426, CUT),
    };
    let tls = match bound {
        Ok(s) => s,
        Err(end) => {
            if end == DataEnd::Failed(425, EXPIRED) {
                tracing::warn!(port, ip = %conn.peer.ip(), device = conn.device().map(|d| d.to_string()).unwrap_or_default(),
                    "passive port offered but no data connection arrived (a firewall may block this port)");
                diagnostics.count(conn.peer.ip(), conn.device(), Event::PassiveOfferUnused { port });
                conn.offer_missed();
            } else {
                // A connection came and was refused (no TLS resumption, a failed handshake):
                // the offer is over, and the next one gets a fresh clock.
                conn.offer_used();
            }
            return end;
        }
    };
    conn.offer_used();
    drop(claim);
    serve(&conn, tls, attach, &mut jobs).await
}

/// Accepts until a connection of this session is bound, or the offer expires.
async fn bind(
    conn: &Arc<Conn>,
    claim: &mut Claim,
    deadline: Instant,
    handshake: Duration,
    acceptor: &tokio_rustls::TlsAcceptor,
    diagnostics: &Diagnostics,
) -> Result<Tls, DataEnd> {
    let mut shakes: JoinSet<Result<Tls, &'static str>> = JoinSet::new();
    let mut last_refusal = None;
    let want: IpAddr = conn.peer.ip();
    let port = claim.port;
    loop {
        let accepting = Instant::now() < deadline;
        if !accepting && shakes.is_empty() {
            return Err(match last_refusal {
                Some(why) => DataEnd::Failed(425, why),
                None => DataEnd::Failed(425, EXPIRED),
            });
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline), if accepting => {}
            r = claim.accept(), if accepting && shakes.len() < MAX_HANDSHAKES => {
                let Ok((stream, prefix, from)) = r else {
                    // One port: the offer's channel never closes while the claim lives;
                    // a range: an accept error (EMFILE) is not worth spinning on.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if from != want {
                    tracing::warn!(port, from = %from, session = %want, "data connection from another address dropped");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                shakes.spawn(async move {
                    let s = Counted::with_prefix(stream, prefix);
                    match tokio::time::timeout(handshake, acceptor.accept(s)).await {
                        Err(_) => Err(NO_TLS),
                        Ok(Err(_)) => Err("Data connection refused: TLS handshake failed"),
                        Ok(Ok(tls)) if super::tls::resumed(tls.get_ref().1) => Ok(tls),
                        Ok(Ok(mut tls)) => {
                            // Close cleanly: the client reads an empty transfer, then the 425.
                            let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
                            Err(NOT_BOUND)
                        }
                    }
                });
            }
            Some(r) = shakes.join_next() => match r {
                Ok(Ok(tls)) => return Ok(tls),
                Ok(Err(why)) => {
                    let event = if why == NOT_BOUND { Event::DataUnbound } else { Event::DataTlsFailure };
                    tracing::warn!(port, ip = %want, device = conn.device().map(|d| d.to_string()).unwrap_or_default(), reason = why, "data connection refused");
                    diagnostics.count(want, conn.device(), event);
                    last_refusal = Some(why);
                }
                Err(_) => {}
            },
        }
    }
}

/// Serves a bound data connection: a file the front sends itself (a `RETR`), or a relay to
/// libunftp's loopback data connection (listings, uploads), whichever comes first.
async fn serve(
    conn: &Conn,
    mut tls: Tls,
    attach: oneshot::Receiver<TcpStream>,
    jobs: &mut mpsc::Receiver<Job>,
) -> DataEnd {
    let internal = tokio::select! {
        Some(job) = jobs.recv() => return match job {
            Job::Send(job) => send(conn, &mut tls, job).await,
            Job::Receive(job) => receive(conn, tls, job).await,
        },
        Ok(internal) = attach => internal,
        () = conn.closed() => return DataEnd::Failed(426, CUT),
        else => return finish(tls, false).await,
    };
    relay(conn, tls, internal).await
}

/// Takes an upload of at most `cap` bytes (then the IQ's end of file), or notes that it is
/// larger; either way the connection ends cleanly (close_notify, the rest drained).
async fn receive(conn: &Conn, mut tls: Tls, job: ReceiveJob) -> DataEnd {
    let mut body = Vec::with_capacity(job.cap.min(64 * 1024));
    let mut buf = vec![0u8; 16 * 1024];
    // A whole upload gets one stall period, not one per read: a client dribbling a byte at a
    // time cannot hold the transfer slot for hours.
    let until = Instant::now() + STALL;
    // Past the cap, `finish` drains what the client still sends (up to DRAIN_CAP) before it
    // closes, so the client reads the refusal rather than a reset.
    let outcome = loop {
        let r = tokio::select! {
            () = conn.closed() => return DataEnd::Failed(426, CUT),
            r = tokio::time::timeout_at(until, tls.read(&mut buf)) => {
                r.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            }
        };
        match r {
            Ok(0) => break Received::Body(body),
            Ok(n) if body.len() + n > job.cap => break Received::TooLarge,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(_) => return DataEnd::Failed(426, CUT),
        }
    };
    let _ = job.got.send(outcome);
    finish(tls, false).await
}

/// Relays between the IQ and libunftp until libunftp's side is done.
async fn relay(conn: &Conn, mut tls: Tls, mut internal: TcpStream) -> DataEnd {
    let mut down = vec![0u8; 64 * 1024];
    let mut up = vec![0u8; 16 * 1024];
    let mut upstream_open = true;
    let mut relayed = false;
    loop {
        tokio::select! {
            () = conn.closed() => return DataEnd::Failed(426, CUT),
            r = internal.read(&mut down) => match r {
                Ok(n) if n > 0 => {
                    relayed = true;
                    if with_stall(tls.write_all(&down[..n])).await.is_err() {
                        return DataEnd::Failed(426, CUT);
                    }
                }
                // libunftp is done with this connection (a listing sent, an upload refused).
                _ => return finish(tls, relayed).await,
            },
            r = tls.read(&mut up), if upstream_open => match r {
                Ok(n) if n > 0 => {
                    if internal.write_all(&up[..n]).await.is_err() {
                        // libunftp refused the upload and closed its side.
                        return finish(tls, false).await;
                    }
                }
                _ => {
                    upstream_open = false;
                    let _ = internal.shutdown().await;
                }
            },
        }
    }
}

async fn with_stall<T>(f: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(STALL, f)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Ends the downstream with a TLS close_notify, then reads and discards what the IQ still
/// sends (at most [`DRAIN_CAP`], for a short while) so closing causes no reset. Failing to
/// deliver the end matters only when data was relayed to the IQ (a listing).
async fn finish(mut tls: Tls, relayed: bool) -> DataEnd {
    let sent = with_stall(async {
        tls.flush().await?;
        tls.shutdown().await
    })
    .await;
    let mut drained = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let until = Instant::now() + Duration::from_secs(2);
    while drained <= DRAIN_CAP {
        match tokio::time::timeout_at(until, tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n as u64,
            _ => break,
        }
    }
    if sent.is_ok() || !relayed {
        DataEnd::Ok
    } else {
        DataEnd::Failed(426, CUT)
    }
}

/// A download record to complete; recorded `aborted` (with the bytes known so far) when
/// dropped before it was finished: the session went away, or the data connection never came.
pub struct Pending {
    record: Option<(Recorder, DownloadRecord)>,
}

impl Pending {
    pub fn new(record: Option<(Recorder, DownloadRecord)>) -> Self {
        Pending { record }
    }

    /// Nothing was attempted (no data connection): no record.
    pub fn discard(mut self) {
        self.record = None;
    }

    fn finish(&mut self, bytes: u64, outcome: Outcome) -> Option<(Recorder, DownloadRecord)> {
        let (rec, mut r) = self.record.take()?;
        r.bytes = bytes;
        r.outcome = outcome;
        r.finished_at = now_ms();
        Some((rec, r))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some((rec, mut r)) = self.record.take() {
            r.finished_at = now_ms();
            rec.record_detached(r);
        }
    }
}

/// Sends a file and waits until the IQ acknowledged it; records the download.
async fn send(conn: &Conn, tls: &mut Tls, job: DataJob) -> DataEnd {
    let DataJob {
        mut reader,
        len,
        record,
    } = job;
    let mut pending = record;
    let start = tls.get_ref().0.written();
    let mut cps = Checkpoints::default();
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(CHUNK).clamp(1, CHUNK)];
    let mut plain = 0u64;
    let mut cut = false;
    let mut read_failed = false;
    while plain < len {
        let want = usize::try_from(len - plain).unwrap_or(CHUNK).min(buf.len());
        let n = match reader.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => {
                read_failed = true;
                break;
            }
            Ok(n) => n,
        };
        let wrote = tokio::select! {
            r = with_stall(async {
                tls.write_all(&buf[..n]).await?;
                tls.flush().await
            }) => r.is_ok(),
            // The session is being closed (device disabled, server stopping past its grace).
            () = conn.closed() => false,
        };
        if !wrote {
            cut = true;
            break;
        }
        plain += n as u64;
        cps.push(tls.get_ref().0.written() - start, plain);
    }
    if !cut && !read_failed {
        cut = with_stall(tls.shutdown()).await.is_err();
    }
    let counted = tls.get_ref().0;
    let stall = if conn.is_closed() { Duration::ZERO } else { STALL };
    let acked_raw = counted.wait_acknowledged(stall).await;
    let acked = cps.plain_acked(acked_raw.saturating_sub(start)).min(plain);
    let complete = !cut && !read_failed && acked == len;
    let outcome = if complete {
        Outcome::Complete
    } else {
        Outcome::Aborted
    };
    if let Some((rec, r)) = pending.finish(acked, outcome) {
        if complete {
            tracing::info!(device = %r.device, version = %r.version, file = %r.file, offset = r.offset, bytes = acked, "download complete");
        } else {
            tracing::warn!(device = %r.device, version = %r.version, file = %r.file, offset = r.offset, bytes = acked, size = r.size, "download aborted");
        }
        if complete {
            // Written ahead of the 226 (see `records`): a record the IQ was told of survives
            // the server dying the next instant.
            rec.record_committed(r).await;
        } else {
            rec.record(r).await;
        }
    }
    if complete {
        DataEnd::Ok
    } else if read_failed {
        DataEnd::Failed(451, "Local error reading the file; transfer aborted")
    } else {
        DataEnd::Failed(426, CUT)
    }
}
