//! `/network-requirements`: the exact outbound rules an IQ's network needs, as JSON (default)
//! or, with `?format=text|nftables|iptables` (and `?chain=`), as text/plain.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::AppState;
use super::auth::{Authorized, Viewer};
use super::error::{ApiError, ApiQuery};
use crate::network::{Chain, Format};

pub fn router() -> Router<AppState> {
    Router::new().route("/network-requirements", get(show))
}

#[derive(Debug, Deserialize)]
struct Params {
    format: Option<String>,
    chain: Option<String>,
}

async fn show(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    let format = match p.format.as_deref() {
        None => Format::Json,
        Some(f) => Format::parse(f).map_err(|e| ApiError::BadRequest(e.to_string()))?,
    };
    let chain = p
        .chain
        .as_deref()
        .map(Chain::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if format == Format::Json {
        return Ok(Json((*st.network).clone()).into_response());
    }
    let body = st
        .network
        .render(format, chain.as_ref())
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}
