//! A TLS stream for suppaftp that never leaves a written command in a user-space buffer.
//!
//! suppaftp 12.2 sends control commands with `write_all` and never flushes. tokio-rustls may
//! accept those bytes into rustls without handing them to the socket, and then they stay
//! there until the next write: the client waits for a reply to a command the server never
//! got (measured: after a large RETR, `SIZE` sat unsent until a later `NOOP` pushed it out;
//! `ss` showed nothing sent and nothing queued on either side). This wrapper completes a
//! flush before reporting a write as done.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use suppaftp::FtpResult;
use suppaftp::tokio::TokioTlsStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub type RustlsClientStream = suppaftp::tokio_rustls::client::TlsStream<TcpStream>;

#[derive(Debug)]
pub struct FlushingTlsStream {
    inner: RustlsClientStream,
    /// Bytes of the current `poll_write` already taken by rustls while its flush is pending;
    /// the caller retries with the same buffer after `Pending`, as `AsyncWrite` requires.
    accepted: Option<usize>,
}

impl From<RustlsClientStream> for FlushingTlsStream {
    fn from(inner: RustlsClientStream) -> Self {
        Self {
            inner,
            accepted: None,
        }
    }
}

impl AsyncRead for FlushingTlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlushingTlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = match this.accepted {
            Some(n) => n,
            None => {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
                this.accepted = Some(n);
                n
            }
        };
        let flushed = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        this.accepted = None;
        Poll::Ready(flushed.map(|()| n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl TokioTlsStream for FlushingTlsStream {
    type InnerStream = RustlsClientStream;

    fn tcp_stream(self) -> FtpResult<TcpStream> {
        Ok(self.inner.into_inner().0)
    }

    fn get_ref(&self) -> &TcpStream {
        self.inner.get_ref().0
    }

    fn mut_ref(&mut self) -> &mut RustlsClientStream {
        &mut self.inner
    }
}
