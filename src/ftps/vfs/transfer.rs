//! Reading a release part and sending it: [`DeviceVfs::open`] opens the bytes (from the
//! database row or the store), [`Transfer`] counts what reached the data channel and records
//! the download even when cut off, and [`Busy`] marks the connection as transferring so
//! shutdown lets the transfer finish.

use std::io::Cursor;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use unftp_core::storage;

use super::view::{Part, part_bytes, part_name};
use super::{DeviceVfs, closed, local};
use crate::db::downloads::DownloadRecord;
use crate::db::releases::ReleaseRow;
use crate::domain::{Outcome, now_ms};
use crate::ftps::auth::Device;
use crate::ftps::front::Conn;
use crate::ftps::records::Recorder;
use crate::store::READ_BUFFER;

/// Counts a transfer in progress on the connection while it lives (shutdown lets those finish).
pub(super) struct Busy<'a>(&'a Conn);

impl<'a> Busy<'a> {
    pub(super) fn new(c: &'a Conn) -> Self {
        c.transfer_started();
        Busy(c)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.transfer_ended();
    }
}

impl DeviceVfs {
    /// Opens a release part from `offset`.
    pub(super) async fn open(
        &self,
        r: &ReleaseRow,
        part: Part,
        offset: u64,
    ) -> storage::Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        match part {
            Part::Meta(m) => {
                let bytes = part_bytes(r, m);
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                Ok(Box::new(Cursor::new(bytes[start..].to_vec())))
            }
            Part::Image => {
                let offset = offset.min(r.size);
                let f = self
                    .shared
                    .store
                    .open_file(&r.model, &r.version, &r.file, offset)
                    .await
                    .map_err(local)?;
                // tokio's BufReader zeroes its whole buffer up front: size it to what is left
                // (profiling P2 showed a 1 MiB memset plus its page faults per small RETR).
                let left = usize::try_from(r.size - offset).unwrap_or(READ_BUFFER);
                Ok(Box::new(BufReader::with_capacity(left.clamp(1, READ_BUFFER), f)))
            }
        }
    }

    /// Starts the record of a RETR of `part` (of `size` bytes) from `offset`, as `aborted`
    /// with no bytes yet; without a record when `ftps.record_downloads` is off.
    pub(super) fn transfer(
        &self,
        user: &Device,
        r: &ReleaseRow,
        part: Part,
        offset: u64,
        size: u64,
    ) -> Transfer {
        Transfer {
            recorder: self.shared.recorder.clone(),
            record: self.shared.record.then(|| DownloadRecord {
                device: user.id,
                model: r.model.clone(),
                version: r.version.clone(),
                file: part_name(r, part).to_owned(),
                offset,
                bytes: 0,
                size,
                outcome: Outcome::Aborted,
                started_at: now_ms(),
                finished_at: 0,
                client_ip: user.ip.to_string(),
                data_port: self.conn.passive_port(),
                node: self.shared.node.clone(),
            }),
            sent: 0,
        }
    }
}

/// Sends the record when dropped before [`Transfer::finish`]: a transfer cut off by the
/// session ending is still recorded, as `aborted`.
pub(super) struct Transfer {
    recorder: Recorder,
    record: Option<DownloadRecord>,
    /// Bytes written to the data channel so far, recorded or not.
    pub(super) sent: u64,
}

impl Transfer {
    fn add(&mut self, n: u64) {
        self.sent += n;
        if let Some(r) = &mut self.record {
            r.bytes += n;
        }
    }

    /// Copies `reader` to `output` with a buffer of up to [`READ_BUFFER`] (no larger than the
    /// part's `size`), counting each write, then flushes. A read failure is a `LocalError`, a
    /// write or flush failure `ConnectionClosed`.
    pub(super) async fn copy<R, W>(
        &mut self,
        reader: &mut R,
        output: &mut W,
        size: u64,
    ) -> storage::Result<()>
    where
        R: AsyncRead + Unpin + Send + ?Sized,
        W: AsyncWrite + Unpin + Send + ?Sized,
    {
        let mut buf = vec![
            0u8;
            READ_BUFFER
                .min(usize::try_from(size).unwrap_or(READ_BUFFER))
                .max(1)
        ];
        loop {
            let n = reader.read(&mut buf).await.map_err(local)?;
            if n == 0 {
                break;
            }
            output.write_all(&buf[..n]).await.map_err(closed)?;
            self.add(n as u64);
        }
        output.flush().await.map_err(closed)
    }

    pub(super) async fn finish(mut self, outcome: Outcome) {
        if let Some(mut r) = self.record.take() {
            r.outcome = outcome;
            r.finished_at = now_ms();
            self.recorder.record(r).await;
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.finished_at = now_ms();
            self.recorder.record_detached(r);
        }
    }
}
