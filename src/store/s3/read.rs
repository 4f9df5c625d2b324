//! Reading part of an object as one [`AsyncRead`]: consecutive ranged GETs of a bounded
//! window, each streamed, so every request has a deadline however slowly the reader is
//! drained, memory stays at one chunk, and a short answer is an error rather than a shorter
//! file.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt as _};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::{AsyncRead, ReadBuf};

type Window = (BoxStream<'static, object_store::Result<Bytes>>, Bytes, u64);

/// `[next, end)` of one object as consecutive ranged GETs of at most `window` bytes,
/// each streamed. A window that ends short is an error, never a silently shorter file.
pub(super) struct RangeReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// Start of the next window to request.
    next: u64,
    end: u64,
    /// Bytes per request.
    window: u64,
    /// The current window's body, the chunk being copied out, and the bytes still due.
    body: Option<Window>,
    opening: Option<BoxFuture<'static, io::Result<Window>>>,
}

impl RangeReader {
    /// Reads `[offset, offset + len)` of `path`, `window` bytes per request; the first
    /// request is made here (a missing object is `NotFound` now, not at the first read).
    pub(super) async fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        offset: u64,
        len: u64,
        window: u64,
    ) -> io::Result<Self> {
        let mut reader = RangeReader {
            store,
            path,
            next: offset,
            end: offset.saturating_add(len),
            window: window.max(1),
            body: None,
            opening: None,
        };
        if len > 0 {
            let first = reader.open_next();
            reader.body = Some(first.await?);
        }
        Ok(reader)
    }

    fn open_next(&mut self) -> BoxFuture<'static, io::Result<Window>> {
        let start = self.next;
        let stop = self.end.min(start.saturating_add(self.window));
        self.next = stop;
        let (store, path) = (self.store.clone(), self.path.clone());
        Box::pin(async move {
            let opts = GetOptions::default().with_range(Some(GetRange::Bounded(start..stop)));
            match store.get_opts(&path, opts).await {
                Ok(got) => Ok((got.into_stream(), Bytes::new(), stop - start)),
                Err(object_store::Error::NotFound { .. }) => {
                    Err(io::Error::new(io::ErrorKind::NotFound, path.to_string()))
                }
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }
}

impl AsyncRead for RangeReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some((body, chunk, due)) = this.body.as_mut() {
                if !chunk.is_empty() {
                    let n = chunk.len().min(buf.remaining());
                    buf.put_slice(&chunk.split_to(n));
                    return Poll::Ready(Ok(()));
                }
                match ready!(body.poll_next_unpin(cx)) {
                    Some(Ok(bytes)) => {
                        let len = bytes.len() as u64;
                        if len > *due {
                            return Poll::Ready(Err(io::Error::other(
                                "the object store sent more than the range asked",
                            )));
                        }
                        *due -= len;
                        *chunk = bytes;
                        continue;
                    }
                    Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                    None if *due > 0 => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{} ended {due} bytes short of the range asked", this.path),
                        )));
                    }
                    None => this.body = None,
                }
            }
            if this.opening.is_none() {
                if this.next >= this.end {
                    return Poll::Ready(Ok(()));
                }
                let opening = this.open_next();
                this.opening = Some(opening);
            }
            if let Some(opening) = this.opening.as_mut() {
                let window = ready!(opening.as_mut().poll(cx));
                this.opening = None;
                this.body = Some(window?);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt as _, PutPayload};
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt as _;

    use super::*;

    async fn read(data: &[u8], offset: u64, len: u64, window: u64) -> io::Result<Vec<u8>> {
        let store = Arc::new(InMemory::new());
        let path = Path::from("releases/iq2/1.0.0/fw.bin");
        store
            .put(&path, PutPayload::from(data.to_vec()))
            .await
            .map_err(io::Error::other)?;
        let mut r = RangeReader::open(store, path, offset, len, window).await?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a test runtime")
    }

    #[test]
    fn a_missing_object_fails_the_open_and_a_short_one_fails_the_read() {
        rt().block_on(async {
            let store = Arc::new(InMemory::new());
            let missing = RangeReader::open(store, Path::from("nope"), 0, 10, 4).await;
            assert_eq!(missing.err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
            // Asking past the end: the store answers less (or refuses), never silently.
            assert!(read(b"0123456789", 4, 10, 4).await.is_err());
        });
    }

    proptest! {
        /// Whatever the window, the bytes read are exactly the range asked.
        #[test]
        fn windows_stitch_into_exactly_the_range(
            data in proptest::collection::vec(any::<u8>(), 1..3000),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
            window in 1u64..700,
        ) {
            let offset = a.index(data.len() + 1);
            let len = b.index(data.len() - offset + 1);
            let got = rt().block_on(read(&data, offset as u64, len as u64, window)).expect("read");
            prop_assert_eq!(&got[..], &data[offset..offset + len]);
        }
    }
}
