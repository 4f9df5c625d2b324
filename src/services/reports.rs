//! Install reports (SPEC §7): what an IQ (over FTPS) or the KS backend (over the API) says
//! happened after a download. Validated here, whoever sends it; stored with nothing edited
//! later; applied at once to the device's state in every rollout of that release.

use serde::Deserialize;

use super::rollouts::{RULES, Rollouts};
use super::{ServiceError, ServiceResult};
use crate::db::Db;
use crate::db::reports::{NewReport, ReportRow};
use crate::domain::{DeviceId, Model, ReportOutcome, Version, now_ms};

/// Largest report body accepted.
pub const MAX_REPORT_BYTES: usize = 4096;
/// Largest `detail`.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Where a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Ftps,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ftps => "ftps",
            Source::Api => "api",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    version: String,
    outcome: String,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Reports {
    db: Db,
    rollouts: Rollouts,
    node: String,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Reports {
    pub fn new(
        db: Db,
        rollouts: Rollouts,
        node: String,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        Reports {
            db,
            rollouts,
            node,
            metrics,
        }
    }

    /// Validates and stores a report by `device` (of `model`, when the caller knows it: the
    /// FTPS session does).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for an unknown device; [`ServiceError::Invalid`] for a body
    /// over 4 KiB, not a JSON object of exactly `version`, `outcome` and optional `detail`, a
    /// version that is not a release of the device's model, or a `detail` over 1 KiB;
    /// database failure. Nothing is stored on any error.
    pub async fn submit(
        &self,
        device: &DeviceId,
        model: Option<&Model>,
        body: &[u8],
        source: Source,
        client_ip: String,
    ) -> ServiceResult<ReportRow> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(ServiceError::Invalid(format!(
                "report is larger than {MAX_REPORT_BYTES} bytes"
            )));
        }
        let model = match model {
            Some(m) => m.clone(),
            None => {
                self.db
                    .device(device)
                    .await?
                    .ok_or_else(|| ServiceError::NotFound(format!("no such device: {device}")))?
                    .model
            }
        };
        let b: Body = serde_json::from_slice(body)
            .map_err(|e| ServiceError::Invalid(format!("report is not valid: {e}")))?;
        let version = Version::parse(&b.version)?;
        let outcome = ReportOutcome::parse(&b.outcome)?;
        if b.detail.as_ref().is_some_and(|d| d.len() > MAX_DETAIL_BYTES) {
            return Err(ServiceError::Invalid(format!(
                "detail is longer than {MAX_DETAIL_BYTES} bytes"
            )));
        }
        if self.db.release(&model, &version).await?.is_none() {
            return Err(ServiceError::Invalid(format!("no release {model} {version}")));
        }
        let report = NewReport {
            device: *device,
            model,
            version,
            outcome,
            detail: b.detail,
            at: now_ms(),
            source: source.as_str(),
            client_ip,
            node: self.node.clone(),
        };
        let stored = self.db.insert_report(&report, &RULES).await?;
        self.metrics
            .reports
            .with_label_values(&[outcome.as_str(), source.as_str()])
            .inc();
        tracing::info!(device = %device, version = %stored.version, outcome = outcome.as_str(), source = source.as_str(), "install report stored");
        self.rollouts.poke();
        Ok(stored)
    }
}
