//! `GET /audit` (admin): the append-only log of changes and automatic rollout actions
//! (SPEC §10), newest first, optionally one action.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Authorized};
use super::error::{ApiError, ApiQuery};
use super::{AppState, Listing, PageQuery};
use crate::db::audit::AuditRow;
use crate::domain::format_ms;

/// Every action the log holds (SPEC §10).
pub const ACTIONS: &[&str] = &[
    "token.create",
    "token.revoke",
    "device.create",
    "device.disable",
    "device.enable",
    "device.secret",
    "device.delete",
    "device.unlock",
    "release.publish",
    "release.yank",
    "rollout.create",
    "rollout.update",
    "rollout.advance",
    "rollout.pause",
    "pin.set",
    "pin.clear",
];

pub fn router() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

#[derive(Debug, Serialize)]
struct AuditView {
    id: i64,
    at: String,
    actor: String,
    action: String,
    target: String,
    detail: serde_json::Value,
}

impl AuditView {
    fn new(a: &AuditRow) -> Self {
        AuditView {
            id: a.id,
            at: format_ms(a.at),
            actor: a.actor.clone(),
            action: a.action.clone(),
            target: a.target.clone(),
            detail: a.detail_json(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    action: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<AuditView>>, ApiError> {
    let action = q.action.as_deref().filter(|a| !a.is_empty());
    if let Some(a) = action
        && !ACTIONS.contains(&a)
    {
        return Err(ApiError::BadRequest(format!(
            "action {a:?} is not one of {}",
            ACTIONS.join(", ")
        )));
    }
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    }
    .page()?;
    let rows = st.db.list_audit(action, page).await?;
    let (rows, next) = page.finish(rows, |a| a.id);
    Ok(Json(Listing {
        items: rows.iter().map(AuditView::new).collect(),
        next,
    }))
}
