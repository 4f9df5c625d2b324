//! Download records on their way to the database.
//!
//! Transfers hand finished records to a bounded channel (awaiting only when the database is
//! far behind) and one writer task inserts them in batches, one transaction per batch, so
//! no session ever waits on database I/O per record. On shutdown the writer drains what is
//! queued before exiting.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use std::sync::Arc;

use crate::db::Db;
use crate::db::downloads::DownloadRecord;
use crate::domain::Outcome;
use crate::metrics::Metrics;

const QUEUE: usize = 16 * 1024;
const BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<DownloadRecord>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// Queues a record; waits only if the queue is full.
    pub async fn record(&self, r: DownloadRecord) {
        // Counted from here; a send that fails or is cancelled gives its count back.
        let queued = Queued(&self.metrics.record_queue_depth);
        queued.0.inc();
        match self.tx.send(r).await {
            Ok(()) => std::mem::forget(queued),
            Err(_) => tracing::error!("download record dropped: recorder has stopped"),
        }
    }

    /// For paths that cannot await (a transfer future being dropped).
    pub fn record_detached(&self, r: DownloadRecord) {
        let this = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { this.record(r).await });
            }
            Err(_) => {
                self.metrics.record_queue_depth.inc();
                if self.tx.try_send(r).is_err() {
                    self.metrics.record_queue_depth.dec();
                    tracing::error!("download record dropped: no runtime and queue full");
                }
            }
        }
    }
}

/// Takes its count back from `fwdist_record_queue_depth` unless forgotten (sent).
struct Queued<'a>(&'a prometheus::IntGauge);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Starts the writer. It ends once every [`Recorder`] clone is dropped and the queue is empty.
pub fn spawn_writer(db: Db, metrics: Arc<Metrics>) -> (Recorder, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let recorder = Recorder {
        tx,
        metrics: metrics.clone(),
    };
    (recorder, tokio::spawn(write_loop(db, rx, metrics)))
}

/// Counts a written batch.
fn written(m: &Metrics, batch: &[DownloadRecord]) {
    for r in batch {
        let outcome = match r.outcome {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
        };
        m.downloads.with_label_values(&[outcome]).inc();
        m.download_bytes.inc_by(r.bytes);
    }
}

async fn write_loop(db: Db, mut rx: mpsc::Receiver<DownloadRecord>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut attempt = 0u32;
        loop {
            match db
                .insert_downloads(&batch, &crate::services::rollouts::RULES)
                .await
            {
                Ok(()) => {
                    written(&metrics, &batch);
                    break;
                }
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, records = batch.len(), "writing download records failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, records = batch.len(), "download records lost: database keeps failing");
                    break;
                }
            }
        }
        metrics
            .record_queue_depth
            .sub(i64::try_from(batch.len()).unwrap_or(i64::MAX));
        batch.clear();
    }
}
