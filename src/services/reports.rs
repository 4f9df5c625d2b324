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

/// A report body that passed every check that needs no database: what [`parse_body`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportBody {
    pub version: Version,
    pub outcome: ReportOutcome,
    pub detail: Option<String>,
}

impl ReportBody {
    /// The JSON an IQ would send for this report.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::json!({
            "version": self.version.as_str(),
            "outcome": self.outcome.as_str(),
            "detail": self.detail,
        })
        .to_string()
        .into_bytes()
    }
}

/// Pure: the body of an install report, whoever sent it (SPEC §7).
///
/// # Errors
/// [`ServiceError::Invalid`] for a body over 4 KiB, not a JSON object of exactly `version`,
/// `outcome` and optional `detail`, a version that is not a version, an unknown outcome, or
/// a `detail` over 1 KiB.
pub fn parse_body(body: &[u8]) -> ServiceResult<ReportBody> {
    if body.len() > MAX_REPORT_BYTES {
        return Err(ServiceError::Invalid(format!(
            "report is larger than {MAX_REPORT_BYTES} bytes"
        )));
    }
    let b: Body = serde_json::from_slice(body)
        .map_err(|e| ServiceError::Invalid(format!("report is not valid: {e}")))?;
    let version = Version::parse(&b.version)?;
    let outcome = ReportOutcome::parse(&b.outcome)?;
    if b.detail.as_ref().is_some_and(|d| d.len() > MAX_DETAIL_BYTES) {
        return Err(ServiceError::Invalid(format!(
            "detail is longer than {MAX_DETAIL_BYTES} bytes"
        )));
    }
    Ok(ReportBody {
        version,
        outcome,
        detail: b.detail,
    })
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
        let ReportBody {
            version,
            outcome,
            detail,
        } = parse_body(body)?;
        if self.db.release(&model, &version).await?.is_none() {
            return Err(ServiceError::Invalid(format!("no release {model} {version}")));
        }
        let report = NewReport {
            device: *device,
            model,
            version,
            outcome,
            detail,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_parses_and_round_trips_and_bad_ones_are_invalid() {
        let b = parse_body(br#"{"version":"2.4.1","outcome":"installed","detail":"ok"}"#)
            .expect("a valid report");
        assert_eq!(b.version.as_str(), "2.4.1");
        assert_eq!(b.outcome, ReportOutcome::Installed);
        assert_eq!(parse_body(&b.to_json()).ok(), Some(b));
        let no_detail = parse_body(br#"{"version":"1.0.0","outcome":"failed"}"#).expect("valid");
        assert_eq!(no_detail.detail, None);
        assert_eq!(parse_body(&no_detail.to_json()).ok(), Some(no_detail));
        let long = format!(
            r#"{{"version":"1.0.0","outcome":"failed","detail":"{}"}}"#,
            "x".repeat(MAX_DETAIL_BYTES + 1)
        );
        let big = format!(
            r#"{{"version":"1.0.0","outcome":"failed","detail":"{}"}}"#,
            "x".repeat(5000)
        );
        for bad in [
            &br#"{"version":"1.0.0","outcome":"failed","extra":1}"#[..],
            br#"{"version":"1.0","outcome":"failed"}"#,
            br#"{"version":"1.0.0","outcome":"maybe"}"#,
            br#"{"outcome":"failed"}"#,
            br#"[]"#,
            b"",
            long.as_bytes(),
            big.as_bytes(),
        ] {
            assert!(
                matches!(parse_body(bad), Err(ServiceError::Invalid(_))),
                "accepted {}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
