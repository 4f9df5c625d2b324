//! Reading a release part and sending it: [`DeviceVfs::open`] opens the bytes (from the
//! database row or the store), [`DeviceVfs::send`] hands them to the session's data
//! connection with the download record to complete, and [`Busy`] marks the connection as
//! transferring so shutdown lets the transfer finish.

use std::io::Cursor;

use tokio::io::{AsyncRead, BufReader};
use tokio::sync::oneshot;
use unftp_core::storage;

use super::view::{Part, part_bytes, part_name};
use super::{DeviceVfs, local};
use crate::db::downloads::DownloadRecord;
use crate::db::releases::ReleaseRow;
use crate::domain::{Outcome, now_ms};
use crate::ftps::auth::Device;
use crate::ftps::conn::Conn;
use crate::ftps::data::{DataJob, Pending};
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

    /// The record of a RETR of `part` (of `size` bytes) from `offset`, before it ran;
    /// `None` when `ftps.record_downloads` is off.
    pub(super) fn draft(
        &self,
        user: &Device,
        r: &ReleaseRow,
        part: Part,
        offset: u64,
        size: u64,
    ) -> Option<(Recorder, DownloadRecord)> {
        self.shared.record.then(|| {
            (
                self.shared.recorder.clone(),
                DownloadRecord {
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
                },
            )
        })
    }

    /// Sends `len` bytes of `reader` down the session's data connection (the front's
    /// [`crate::ftps::data`] task owns it, records the download and waits for the IQ's
    /// acknowledgements); `Ok` with the bytes only when the IQ got every one.
    pub(super) async fn send(
        &self,
        reader: Box<dyn AsyncRead + Send + Unpin>,
        len: u64,
        record: Option<(Recorder, DownloadRecord)>,
    ) -> storage::Result<u64> {
        let lost = || storage::Error::new(storage::ErrorKind::ConnectionClosed, "data connection lost");
        let jobs = self.conn.take_data().ok_or_else(lost)?;
        let (done, result) = oneshot::channel();
        let job = DataJob {
            reader,
            len,
            record: Pending::new(record),
            done,
        };
        jobs.send(job).await.map_err(|_| lost())?;
        match result.await {
            Ok(Ok(n)) => Ok(n),
            _ => Err(lost()),
        }
    }
}
