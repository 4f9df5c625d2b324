//! The admin HTTP API (SPEC §6), axum. One file per resource; each exposes `router()`.
//!
//! Translates HTTP to calls of `services` (which own the rules) and plain reads of `db`;
//! knows nothing of FTP except the address `/healthz` probes, and reaches the firmware store
//! only through `services::publish`.
//!
//! Each resource's `router()` is a utoipa-axum `OpenApiRouter`: a handler is routed and
//! documented by the same `routes!` call (see `openapi.rs`); the rules every route shares
//! (unknown query parameters, 405, 404) read that document (see `rules.rs`). The dashboard
//! (`ui`) is served beside the API at `/`, outside the document.

pub mod audit;
pub mod auth;
pub mod devices;
pub mod diagnostics;
pub mod downloads;
pub mod error;
pub mod fleet;
pub mod health;
pub mod history;
pub mod listener;
pub mod network;
pub mod openapi;
pub mod releases;
pub mod reports;
pub mod rollouts;
pub mod rules;
pub mod sites;
pub mod tokens;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::Method;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    let (routes, doc) = documented(state.max_image_bytes).split_for_parts();
    let doc = openapi::finish(doc);
    let table = Arc::new(rules::RouteTable::new(&doc).with_pages(&ui::PAGES));
    let served = match openapi::Served::new(&doc) {
        Ok(s) => s,
        // utoipa's types always serialize; should one not, the API still serves the rest and
        // the document's endpoint answers 500.
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document could not be serialized");
            openapi::Served(axum::body::Bytes::new())
        }
    };
    let not_allowed = table.clone();
    routes
        .merge(health::router())
        .merge(ui::router())
        .route_layer(axum::middleware::from_fn_with_state(
            table,
            rules::refuse_unknown_query,
        ))
        .method_not_allowed_fallback(move |method: Method, matched: Option<MatchedPath>| {
            let table = not_allowed.clone();
            async move { rules::method_not_allowed(&table, &method, matched.as_ref()) }
        })
        .fallback(rules::no_such_endpoint)
        .layer(Extension(served))
        .layer(Extension(fleet::FleetCache::default()))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every `/api/v1` route with its operation in the document (before [`openapi::finish`]).
pub fn documented(max_image_bytes: u64) -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::default()
        .merge(releases::router(max_image_bytes))
        .merge(devices::router())
        .merge(rollouts::router())
        .merge(history::router())
        .merge(reports::router())
        .merge(downloads::router())
        .merge(network::router())
        .merge(diagnostics::router())
        .merge(sites::router())
        .merge(fleet::router())
        .merge(tokens::router())
        .merge(audit::router())
        .routes(routes!(openapi::openapi_document));
    OpenApiRouter::with_openapi(openapi::base()).nest(openapi::PREFIX, api)
}

/// The OpenAPI document as `GET /api/v1/openapi.json` serves it.
pub fn openapi_document(max_image_bytes: u64) -> utoipa::openapi::OpenApi {
    openapi::finish(documented(max_image_bytes).into_openapi())
}

/// One page of a list: `{"items": [...], "next": cursor|null}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listing<T> {
    /// Newest first.
    pub items: Vec<T>,
    /// Give it as `after` for the next page; null on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// `limit` and `after` of list endpoints (kept as text: a bad value gets our own 400).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1-1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next` of the previous page.
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

/// A query filter: absent or empty is no filter; a bad value is a 400 with `parse`'s reason
/// (which names the parameter: `invalid model "IQ2": expected …`).
///
/// # Errors
/// `parse` refuses the value.
pub fn filter<T>(
    value: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, crate::domain::InvalidInput>,
) -> Result<Option<T>, ApiError> {
    value
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).map_err(|e| ApiError::BadRequest(e.0)))
        .transpose()
}

/// The `model` filter.
///
/// # Errors
/// Not a model name.
pub fn filter_model(value: Option<&str>) -> Result<Option<crate::domain::Model>, ApiError> {
    filter(value, crate::domain::Model::parse)
}

/// A `true`/`false` filter named `name`.
///
/// # Errors
/// Neither `true` nor `false`.
pub fn filter_bool(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    filter(value, |s| match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(crate::domain::InvalidInput(format!(
            "invalid {name} {s:?}: expected true or false"
        ))),
    })
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
