//! What the kernel knows about a client's TCP connection, read from the socket we own: how
//! many of the bytes we wrote the IQ's TCP stack has acknowledged (`TCP_INFO`,
//! `tcpi_bytes_acked`), so a download is `complete` only once the IQ has every byte, and a
//! cut one is recorded with what actually arrived, not what sat in our socket buffers.
//!
//! [`Counted`] wraps the raw socket under TLS and counts the bytes written to it; set against
//! the acknowledged count that says how far the IQ got, in plaintext terms, to within one TLS
//! record. `nix::sockopt_impl!` is nix's own way to declare a socket option (its getter holds
//! the `unsafe`), `libc::tcp_info` the kernel's layout.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::{getsockopt_impl, sockopt_impl};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

sockopt_impl!(TcpInfo, GetOnly, libc::SOL_TCP, libc::TCP_INFO, libc::tcp_info);

/// The kernel's acknowledgement counters for one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Bytes of ours the peer acknowledged (the SYN counts one).
    pub bytes_acked: u64,
    /// The connection is gone (reset, or both sides closed and done).
    pub closed: bool,
}

/// # Errors
/// The descriptor is not a TCP socket.
pub fn acked(fd: BorrowedFd<'_>) -> io::Result<Acked> {
    let info = nix::sys::socket::getsockopt(&fd, TcpInfo).map_err(io::Error::from)?;
    Ok(Acked {
        bytes_acked: info.tcpi_bytes_acked,
        // TCP_CLOSE (7): reset or fully closed; nothing more will be acknowledged.
        closed: info.tcpi_state == 7,
    })
}

/// Copies what is left of `prefix` (from `at`) into `buf`; false once it is all given.
fn give_prefix(prefix: &mut Vec<u8>, at: &mut usize, buf: &mut ReadBuf<'_>) -> bool {
    if *at >= prefix.len() {
        return false;
    }
    let n = (prefix.len() - *at).min(buf.remaining());
    buf.put_slice(&prefix[*at..*at + n]);
    *at += n;
    if *at == prefix.len() {
        *prefix = Vec::new();
        *at = 0;
    }
    true
}

/// A TCP stream that counts the bytes written into it.
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    /// Bytes already read from `inner` (a ClientHello the front read to route the
    /// connection), yielded before reading on.
    prefix: Vec<u8>,
    at: usize,
    written: u64,
    /// `tcpi_bytes_acked` when the stream was wrapped (before we wrote anything).
    base: u64,
}

impl Counted {
    pub fn new(inner: TcpStream) -> Self {
        Counted::with_prefix(inner, Vec::new())
    }

    /// A stream whose first bytes, `prefix`, were read from `inner` already.
    pub fn with_prefix(inner: TcpStream, prefix: Vec<u8>) -> Self {
        let base = acked(inner.as_fd()).map(|a| a.bytes_acked).unwrap_or(1);
        Counted {
            inner,
            prefix,
            at: 0,
            written: 0,
            base,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// How many of the bytes written so far the peer has acknowledged, and whether the
    /// connection is gone.
    pub fn acknowledged(&self) -> (u64, bool) {
        match acked(self.inner.as_fd()) {
            Ok(a) => (
                a.bytes_acked.saturating_sub(self.base).min(self.written),
                a.closed,
            ),
            Err(_) => (0, true),
        }
    }

    /// Waits until the peer has acknowledged everything written, the connection is gone, or
    /// acknowledgements stop for `stall`; returns how much was acknowledged.
    ///
    /// A client that has read everything answers with its `close_notify` or FIN, which also
    /// acknowledges the last bytes: that arrival is awaited first (no polling on the common
    /// path), then the counters are polled with a growing pause.
    pub async fn wait_acknowledged(&self, stall: Duration) -> u64 {
        let mut pause = Duration::from_millis(1);
        let mut last = 0;
        let mut since = tokio::time::Instant::now();
        let mut heard = false;
        loop {
            let (acked, closed) = self.acknowledged();
            if acked >= self.written || closed {
                return acked;
            }
            if acked > last {
                last = acked;
                since = tokio::time::Instant::now();
                pause = Duration::from_millis(1);
            } else if since.elapsed() >= stall {
                return acked;
            }
            if heard {
                tokio::time::sleep(pause).await;
            } else {
                // Readiness stays set until the data is read, so this is awaited only once.
                tokio::select! {
                    _ = self.inner.readable() => heard = true,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if give_prefix(&mut this.prefix, &mut this.at, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that first yields bytes already read from it (what followed `AUTH TLS` in the
/// same read: a client's ClientHello), then reads on.
#[derive(Debug)]
pub struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Prefixed { prefix, at: 0, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if give_prefix(&mut this.prefix, &mut this.at, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Plaintext bytes sent, matched to raw (TLS) bytes written, at the points the sender
/// flushed: turns "raw bytes acknowledged" into "plaintext bytes the peer has".
#[derive(Debug, Default)]
pub struct Checkpoints {
    points: Vec<(u64, u64)>,
}

impl Checkpoints {
    /// After a flush: `raw` bytes written in all, `plain` bytes of the payload among them.
    pub fn push(&mut self, raw: u64, plain: u64) {
        self.points.push((raw, plain));
    }

    /// The payload bytes covered by `raw_acked` acknowledged raw bytes: exact at a flush
    /// point, interpolated between two (so off by at most one TLS record, 16 KiB).
    pub fn plain_acked(&self, raw_acked: u64) -> u64 {
        let i = self.points.partition_point(|(raw, _)| *raw <= raw_acked);
        let (raw0, plain0) = if i == 0 { (0, 0) } else { self.points[i - 1] };
        match self.points.get(i) {
            Some(&(raw1, plain1)) if raw1 > raw0 => {
                let part =
                    u128::from(raw_acked - raw0) * u128::from(plain1 - plain0) / u128::from(raw1 - raw0);
                plain0 + u64::try_from(part).unwrap_or(0)
            }
            _ => plain0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn checkpoints_map_raw_bytes_to_payload_bytes() {
        let mut c = Checkpoints::default();
        assert_eq!(c.plain_acked(1000), 0);
        c.push(1100, 1000);
        c.push(2200, 2000);
        assert_eq!(c.plain_acked(0), 0);
        assert_eq!(c.plain_acked(550), 500, "halfway to the first flush");
        assert_eq!(c.plain_acked(1100), 1000);
        assert_eq!(c.plain_acked(1650), 1500);
        assert_eq!(c.plain_acked(2200), 2000);
        assert_eq!(c.plain_acked(u64::MAX), 2000);
    }

    #[tokio::test]
    async fn acknowledged_follows_what_the_peer_read() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let mut s = Counted::new(s);
        s.write_all(&[7u8; 10_000]).await.unwrap();
        let mut got = vec![0u8; 10_000];
        client.read_exact(&mut got).await.unwrap();
        let acked = s.wait_acknowledged(Duration::from_secs(5)).await;
        assert_eq!(acked, 10_000);
        assert_eq!(s.written(), 10_000);
    }

    #[tokio::test]
    async fn prefixed_yields_the_prefix_then_the_stream() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut p = Prefixed::new(b"hello".to_vec(), s);
        let mut all = String::new();
        p.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
