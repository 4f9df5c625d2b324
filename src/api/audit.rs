//! `GET /audit` (admin): the append-only log of changes and automatic rollout actions
//! (SPEC §10), newest first, optionally one action.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list_audit))
}

/// One entry of the audit log, never edited.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
struct AuditView {
    id: i64,
    #[schema(format = DateTime)]
    at: String,
    /// The token's name; `cli` for `fwdist token create`, `fwdist` for automatic actions.
    actor: String,
    #[schema(value_type = AuditAction)]
    action: String,
    /// The object: `aa:bb:cc:dd:ee:ff`, `iq2/1.2.0`, `rollout/7`, `token/ops`.
    target: String,
    /// What changed.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

/// The schema of an audit action: one of [`ACTIONS`].
struct AuditAction;

impl utoipa::PartialSchema for AuditAction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("What was done (SPEC §10)."))
            .enum_values(Some(ACTIONS.iter().copied()))
            .into()
    }
}
impl ToSchema for AuditAction {}

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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only entries of this action.
    #[param(value_type = Option<AuditAction>, inline)]
    action: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The audit log, newest first
///
/// Every change made through the API or the CLI, and every automatic rollout advance or
/// pause (SPEC §10).
#[utoipa::path(
    get,
    path = "/audit",
    params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of entries.", body = Listing<AuditView>)),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn list_audit(
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
    let page = q.page.page()?;
    let rows = st.db.list_audit(action, page).await?;
    let (rows, next) = page.finish(rows, |a| a.id);
    Ok(Json(Listing {
        items: rows.iter().map(AuditView::new).collect(),
        next,
    }))
}
