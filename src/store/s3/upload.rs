//! A staged image on its way into the bucket: a multipart upload fed part by part, with
//! backpressure, aborted when dropped unfinished.

use std::io;

use async_trait::async_trait;
use object_store::WriteMultipart;

use super::PARTS_IN_FLIGHT;
use crate::store::UploadSink;

/// A staged image on its way up, part by part.
pub(super) struct MultipartSink {
    pub(super) writer: Option<WriteMultipart>,
}

fn closed() -> io::Error {
    io::Error::other("the staged upload was already finished")
}

#[async_trait]
impl UploadSink for MultipartSink {
    async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let writer = self.writer.as_mut().ok_or_else(closed)?;
        // Backpressure: at most PARTS_IN_FLIGHT parts uploading, so memory stays bounded.
        writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(io::Error::other)?;
        writer.write(chunk);
        Ok(())
    }

    async fn finish(&mut self) -> io::Result<()> {
        let writer = self.writer.take().ok_or_else(closed)?;
        writer.finish().await.map(drop).map_err(io::Error::other)
    }
}

impl Drop for MultipartSink {
    /// An upload dropped unfinished (refused, too large, cut off) aborts its multipart
    /// upload, so its parts do not linger in the bucket.
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Err(e) = writer.abort().await {
                    tracing::debug!(error = %e, "aborting an unfinished multipart upload");
                }
            });
        }
    }
}
