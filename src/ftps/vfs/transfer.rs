//! Reading a release part: [`DeviceVfs::open`] opens the bytes (from the database row or
//! the store) and [`DeviceVfs::draft`] starts the download record the data connection task
//! completes.

use std::io::Cursor;

use unftp_core::storage;

use super::view::{Part, part_bytes, part_name};
use super::{DeviceVfs, local};
use crate::db::downloads::DownloadRecord;
use crate::db::releases::ReleaseRow;
use crate::domain::{Outcome, now_ms};
use crate::ftps::principal::{DeviceLogin, SessionUser};
use crate::ftps::records::Recorder;
use crate::store::{FileRef, PartReader};

impl DeviceVfs {
    /// Opens a release part from `offset`.
    pub(super) async fn open(&self, r: &ReleaseRow, part: Part, offset: u64) -> storage::Result<PartReader> {
        match part {
            Part::Meta(m) => {
                let bytes = part_bytes(r, m);
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                Ok(Box::new(Cursor::new(bytes[start..].to_vec())))
            }
            Part::Image => {
                let offset = offset.min(r.size);
                let file = FileRef {
                    model: &r.model,
                    version: &r.version,
                    file: &r.file,
                };
                let reader = self
                    .shared
                    .store
                    .open_range(file, offset, r.size - offset)
                    .await
                    .map_err(local)?;
                Ok(reader)
            }
        }
    }

    /// The record of a RETR of `part` (of `size` bytes) from `offset`, before it ran;
    /// `None` when `ftps.record_downloads` is off.
    pub(super) fn draft(
        &self,
        user: &SessionUser,
        device: &DeviceLogin,
        r: &ReleaseRow,
        part: Part,
        offset: u64,
        size: u64,
    ) -> Option<(Recorder, DownloadRecord)> {
        self.shared.record.then(|| {
            (
                self.shared.recorder.clone(),
                DownloadRecord {
                    device: device.id,
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
}
