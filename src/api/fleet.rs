//! `GET /fleet`: the dashboard's fleet page in one answer (issue 13) — devices per model and
//! installed version, devices that have not reported in `stale_days`, and download records
//! and failed reports per hour over 24 h and per day over 7 d.
//!
//! Each part is a few kept rows or an index range (`db::fleet`); the
//! answer is kept for [`FRESH_MS`] per `stale_days` ([`FleetCache`], one per router) and then
//! refreshed in the background while the old one is served, so dashboards polling it cost
//! the database one round of those queries per 30 s, whatever the number of tabs, and only
//! the first request for a `stale_days` waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Authorized, Viewer};
use super::error::{ApiError, ApiQuery};
use super::openapi::DeviceIdSchema;
use crate::db::fleet::Bucket;
use crate::domain::{DeviceId, format_ms, now_ms};

/// How long an answer is reused.
pub const FRESH_MS: i64 = 30_000;
/// Stale devices listed by id (the count covers them all).
pub const STALE_LISTED: u32 = 20;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(show_fleet))
}

/// Answers per `stale_days`: fresh for [`FRESH_MS`]; after that the stale answer is still
/// served at once while one refresh runs in the background, so only the first request for a
/// `stale_days` waits for the queries.
#[derive(Debug, Clone, Default)]
pub struct FleetCache(Arc<Mutex<HashMap<u32, Entry>>>);

#[derive(Debug, Clone)]
struct Entry {
    at: i64,
    view: FleetView,
    refreshing: bool,
}

/// What the cache has for a request.
enum Cached {
    Fresh(FleetView),
    /// Serve it, and refresh in the background.
    Stale(FleetView),
    /// Stale, and a refresh is already running.
    StaleRefreshing(FleetView),
    Missing,
}

impl FleetCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        // Entries are replaced whole: a poisoned lock still holds consistent ones.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, days: u32, now: i64) -> Cached {
        let mut g = self.lock();
        match g.get_mut(&days) {
            None => Cached::Missing,
            Some(e) if now.saturating_sub(e.at) < FRESH_MS => Cached::Fresh(e.view.clone()),
            Some(e) if e.refreshing => Cached::StaleRefreshing(e.view.clone()),
            Some(e) => {
                e.refreshing = true;
                Cached::Stale(e.view.clone())
            }
        }
    }

    fn put(&self, days: u32, now: i64, view: &FleetView) {
        self.lock().insert(
            days,
            Entry {
                at: now,
                view: view.clone(),
                refreshing: false,
            },
        );
    }

    fn refresh_failed(&self, days: u32) {
        if let Some(e) = self.lock().get_mut(&days) {
            e.refreshing = false;
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FleetQuery {
    /// Devices without an install report for this many days count as stale (1-365,
    /// default 7).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 365)]
    stale_days: Option<String>,
}

/// The fleet at a glance.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Fleet)]
pub struct FleetView {
    /// Registered devices.
    devices: u64,
    models: Vec<ModelView>,
    stale: StaleView,
    /// 24 hourly buckets, oldest first; the last is the current hour.
    last_24h: Vec<BucketView>,
    /// 7 daily buckets (UTC days), oldest first; the last is today.
    last_7d: Vec<BucketView>,
    /// When this answer was computed (it is reused for 30 s).
    #[schema(format = DateTime)]
    computed_at: String,
}

/// The devices of one model.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FleetModel)]
struct ModelView {
    model: String,
    devices: u64,
    versions: Vec<VersionView>,
}

/// Devices of a model by installed version.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FleetVersion)]
struct VersionView {
    /// The version of their latest `installed` report (null: none yet).
    #[schema(required = true)]
    version: Option<String>,
    devices: u64,
}

/// Devices without an install report in `days`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FleetStale)]
struct StaleView {
    days: u32,
    devices: u64,
    /// Up to 20 of them: never reported first, then the longest silent.
    listed: Vec<StaleDeviceView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FleetStaleDevice)]
struct StaleDeviceView {
    #[schema(value_type = DeviceIdSchema)]
    id: DeviceId,
    model: String,
    /// Null: it never reported.
    #[schema(format = DateTime, required = true)]
    last_report_at: Option<String>,
}

/// Download records (by when they finished) and failed install reports in one time bucket.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = FleetBucket)]
struct BucketView {
    #[schema(format = DateTime)]
    start: String,
    complete: u64,
    aborted: u64,
    failed_reports: u64,
}

impl BucketView {
    fn new(b: &Bucket) -> Self {
        BucketView {
            start: format_ms(b.start),
            complete: b.complete,
            aborted: b.aborted,
            failed_reports: b.failed_reports,
        }
    }
}

fn parse_days(s: Option<&str>) -> Result<u32, ApiError> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(7),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| ApiError::BadRequest(format!("invalid stale_days {s:?}: expected 1-365"))),
    }
}

async fn compute(st: &AppState, days: u32, now: i64) -> Result<FleetView, ApiError> {
    let mut models: Vec<ModelView> = Vec::new();
    for c in st.db.devices_per_version().await? {
        if models.last().is_none_or(|m| m.model != c.model) {
            models.push(ModelView {
                model: c.model.clone(),
                devices: 0,
                versions: Vec::new(),
            });
        }
        if let Some(m) = models.last_mut() {
            m.devices += c.devices;
            m.versions.push(VersionView {
                version: c.version,
                devices: c.devices,
            });
        }
    }
    let cutoff = now.saturating_sub(i64::from(days) * DAY);
    let (stale_n, listed) = st.db.stale_devices(cutoff, STALE_LISTED).await?;
    let hour0 = now - now.rem_euclid(HOUR) - 23 * HOUR;
    let day0 = now - now.rem_euclid(DAY) - 6 * DAY;
    let hours = st.db.activity(hour0, HOUR, 24).await?;
    let days7 = st.db.activity(day0, DAY, 7).await?;
    Ok(FleetView {
        devices: models.iter().map(|m| m.devices).sum(),
        models,
        stale: StaleView {
            days,
            devices: stale_n,
            listed: listed
                .into_iter()
                .map(|d| StaleDeviceView {
                    id: d.id,
                    model: d.model,
                    last_report_at: d.last_report_at.map(format_ms),
                })
                .collect(),
        },
        last_24h: hours.iter().map(BucketView::new).collect(),
        last_7d: days7.iter().map(BucketView::new).collect(),
        computed_at: format_ms(now),
    })
}

/// The fleet at a glance
///
/// Devices per model and installed version, devices that have not sent an install report
/// in `stale_days`, and download records and failed reports per hour (24 h) and per day
/// (7 d). The answer is reused for 30 s, then refreshed in the background while it is still
/// served (`computed_at` says when it was computed).
#[utoipa::path(
    get,
    path = "/fleet",
    params(FleetQuery),
    responses((status = 200, description = "The fleet.", body = FleetView)),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn show_fleet(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    Extension(cache): Extension<FleetCache>,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Json<FleetView>, ApiError> {
    let days = parse_days(q.stale_days.as_deref())?;
    let now = now_ms();
    match cache.get(days, now) {
        Cached::Fresh(v) | Cached::StaleRefreshing(v) => Ok(Json(v)),
        Cached::Stale(v) => {
            tokio::spawn(async move {
                let now = now_ms();
                match compute(&st, days, now).await {
                    Ok(fresh) => cache.put(days, now, &fresh),
                    Err(e) => {
                        tracing::warn!(error = %e, "refreshing the fleet answer failed");
                        cache.refresh_failed(days);
                    }
                }
            });
            Ok(Json(v))
        }
        Cached::Missing => {
            let v = compute(&st, days, now).await?;
            cache.put(days, now, &v);
            Ok(Json(v))
        }
    }
}
