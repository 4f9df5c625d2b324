//! The admin HTTP API (SPEC §6), axum. One file per resource; each exposes `router()`.
//!
//! Translates HTTP to calls of `services` (which own the rules) and plain reads of `db`;
//! knows nothing of FTP except the address `/healthz` probes, and reaches the firmware store
//! only through `services::publish`.

pub mod audit;
pub mod auth;
pub mod devices;
pub mod diagnostics;
pub mod downloads;
pub mod error;
pub mod health;
pub mod listener;
pub mod network;
pub mod releases;
pub mod reports;
pub mod rollouts;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use serde::{Deserialize, Serialize};
use tower_http::trace::TraceLayer;

use crate::db::{Db, Page};
use crate::services::Services;
use error::ApiError;

/// Largest JSON body accepted (release uploads have their own limit).
pub const MAX_JSON_BODY: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Db,
    pub services: Services,
    /// Where `/healthz` checks that the FTPS server greets.
    pub ftp_addr: SocketAddr,
    pub max_image_bytes: u64,
    pub network: Arc<crate::network::NetworkRequirements>,
    pub diagnostics: Arc<crate::diagnostics::Diagnostics>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How `/healthz` reaches the FTPS listener without taking a session slot.
    pub ftps_probes: Arc<crate::ftps::HealthProbes>,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(releases::router(state.max_image_bytes))
        .merge(devices::router())
        .merge(rollouts::router())
        .merge(reports::router())
        .merge(downloads::router())
        .merge(network::router())
        .merge(diagnostics::router())
        .merge(tokens::router())
        .merge(audit::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) });
    Router::new()
        .nest("/api/v1", api)
        .merge(health::router())
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `{"items": [...], "next": cursor|null}`.
#[derive(Debug, Serialize)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// `limit` and `after` of list endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<String>,
    pub after: Option<String>,
}

impl PageQuery {
    /// # Errors
    /// A limit outside 1..=1000 or a cursor that is not one of ours.
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = match &self.limit {
            None => 100,
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=Page::MAX).contains(l))
                .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1-{}", Page::MAX)))?,
        };
        let after = match &self.after {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => Some(
                s.parse::<i64>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| ApiError::BadRequest("after is not a valid cursor".into()))?,
            ),
        };
        Ok(Page { limit, after })
    }
}

/// An RFC 3339 time in a body, as unix ms; `what` names the field in the 422.
///
/// # Errors
/// Not RFC 3339, or out of range.
pub fn parse_time(what: &str, s: &str) -> Result<i64, ApiError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::Unprocessable(format!("{what} must be an RFC 3339 time, got {s:?}")))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::Unprocessable(format!("{what} is out of range")))
}
