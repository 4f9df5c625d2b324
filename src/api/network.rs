//! `/network-requirements`: the exact outbound rules an IQ's network needs.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use super::auth::{Authorized, Viewer};
use crate::network::NetworkRequirements;

pub fn router() -> Router<AppState> {
    Router::new().route("/network-requirements", get(show))
}

async fn show(_: Authorized<Viewer>, State(st): State<AppState>) -> Json<NetworkRequirements> {
    Json((*st.network).clone())
}
