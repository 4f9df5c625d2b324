//! Download records on their way to the database.
//!
//! Transfers hand finished records to a bounded channel (awaiting only when the database is
//! far behind) and one writer task inserts them in batches, one transaction per batch, so
//! no session waits on a transaction of its own. On shutdown the writer drains what is
//! queued before exiting.
//!
//! A complete download is written ahead of its `226`: [`Recorder::record_committed`] waits
//! until the batch holding the record has committed (at most [`COMMIT_WAIT`]), so an IQ that
//! was told its transfer succeeded has a record that survives a `kill -9` of the server the
//! next instant. The wait costs a session the time of one batch commit, shared by every
//! transfer that finished meanwhile. Aborted downloads are not waited for: their reply is an
//! error the IQ retries after, and the retry is recorded again.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use std::sync::Arc;

use crate::db::Db;
use crate::db::downloads::DownloadRecord;
use crate::domain::Outcome;
use crate::metrics::Metrics;

const QUEUE: usize = 16 * 1024;
const BATCH: usize = 512;
/// The longest a complete download's `226` waits for its record to commit. Past it the reply
/// is sent anyway (the IQ has every byte; holding it longer only makes it retry) and the
/// record stays queued; `fwdist_record_waits_total{result="late"}` counts such replies.
pub const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// A record and, when its sender waits for the commit, where to say it happened.
#[derive(Debug)]
struct Item {
    record: DownloadRecord,
    committed: Option<oneshot::Sender<bool>>,
}

#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Item>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// Queues a record; waits only if the queue is full.
    pub async fn record(&self, r: DownloadRecord) {
        self.send(r, None).await;
    }

    /// Queues a record and waits until it is committed, at most [`COMMIT_WAIT`] after it was
    /// queued. Returns whether it was committed in time.
    pub async fn record_committed(&self, r: DownloadRecord) -> bool {
        let (tx, rx) = oneshot::channel();
        if !self.send(r, Some(tx)).await {
            self.waited("failed");
            return false;
        }
        match tokio::time::timeout(COMMIT_WAIT, rx).await {
            Ok(Ok(true)) => {
                self.waited("committed");
                true
            }
            Ok(Ok(false) | Err(_)) => {
                self.waited("failed");
                false
            }
            Err(_) => {
                tracing::warn!(
                    waited_ms = COMMIT_WAIT.as_millis(),
                    "download record not committed in time; replying 226 anyway"
                );
                self.waited("late");
                false
            }
        }
    }

    fn waited(&self, result: &str) {
        self.metrics.record_waits.with_label_values(&[result]).inc();
    }

    /// Returns whether the record was queued.
    async fn send(&self, record: DownloadRecord, committed: Option<oneshot::Sender<bool>>) -> bool {
        // Counted from here; a send that fails or is cancelled gives its count back.
        let queued = Queued(&self.metrics.record_queue_depth);
        queued.0.inc();
        match self.tx.send(Item { record, committed }).await {
            Ok(()) => {
                std::mem::forget(queued);
                true
            }
            Err(_) => {
                tracing::error!("download record dropped: recorder has stopped");
                false
            }
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
                let item = Item {
                    record: r,
                    committed: None,
                };
                if self.tx.try_send(item).is_err() {
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

async fn write_loop(db: Db, mut rx: mpsc::Receiver<Item>, metrics: Arc<Metrics>) {
    let mut items = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut items, BATCH).await > 0 {
        let (batch, waiting): (Vec<_>, Vec<_>) = items.drain(..).map(|i| (i.record, i.committed)).unzip();
        let mut attempt = 0u32;
        let mut committed = false;
        loop {
            match db
                .insert_downloads(&batch, &crate::services::rollouts::RULES)
                .await
            {
                Ok(()) => {
                    written(&metrics, &batch);
                    committed = true;
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
        // A sender that stopped waiting (its deadline passed) has dropped its receiver.
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(committed);
        }
        metrics
            .record_queue_depth
            .sub(i64::try_from(batch.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Page;
    use crate::db::downloads::DownloadFilter;
    use crate::domain::{DeviceId, Model, Version};

    fn record(n: u64) -> DownloadRecord {
        DownloadRecord {
            device: DeviceId::parse("aa:bb:cc:00:00:01").expect("id"),
            model: Model::parse("iq2").expect("model"),
            version: Version::parse("1.0.0").expect("version"),
            file: "fw.bin".into(),
            offset: 0,
            bytes: n,
            size: n,
            outcome: Outcome::Complete,
            started_at: 1,
            finished_at: 2,
            client_ip: "192.0.2.1".into(),
            data_port: Some(50_000),
            node: "n1".into(),
        }
    }

    #[tokio::test]
    async fn a_record_waited_for_is_in_the_database_when_the_wait_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.sqlite").display()))
            .await
            .expect("db");
        let metrics = Arc::new(Metrics::new());
        let (rec, writer) = spawn_writer(db.clone(), metrics.clone());
        let page = Page {
            limit: 100,
            after: None,
        };
        for n in 1..=20u64 {
            assert!(rec.record_committed(record(n)).await, "record {n} committed");
            let rows = db
                .list_downloads(&DownloadFilter::default(), page)
                .await
                .expect("list");
            assert_eq!(rows.len() as u64, n, "record {n} readable once its wait ended");
        }
        let committed = metrics.record_waits.with_label_values(&["committed"]).get();
        assert_eq!(committed, 20);
        // Records not waited for are written too, by the time the writer has drained.
        rec.record(record(99)).await;
        drop(rec);
        writer.await.expect("writer ends");
        let rows = db
            .list_downloads(&DownloadFilter::default(), page)
            .await
            .expect("list");
        assert_eq!(rows.len(), 21);
        assert_eq!(metrics.record_queue_depth.get(), 0);
    }
}
