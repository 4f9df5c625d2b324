//! `/tokens` (list, revoke) and `/whoami`: the caller's own name and role, for scripts and
//! pages that show only what the role allows. Tokens are created by `fwdist token create`
//! (it bootstraps the first one); the API never shows a token, only its name and times.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, AnyRole, Authorized};
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::openapi::RoleName;
use super::{AppState, Listing, PageQuery};
use crate::db::tokens::TokenRow;
use crate::domain::format_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(whoami))
}

/// An API token: never the token itself, only its name and times.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Token)]
struct TokenView {
    id: i64,
    name: String,
    #[schema(value_type = RoleName)]
    role: &'static str,
    #[schema(format = DateTime)]
    created_at: String,
    /// Within a minute (it is written at most once a minute); null if never used.
    #[schema(format = DateTime, required = true)]
    last_used_at: Option<String>,
}

impl TokenView {
    fn new(t: &TokenRow) -> Self {
        TokenView {
            id: t.id,
            name: t.name.clone(),
            role: t.role.as_str(),
            created_at: format_ms(t.created_at),
            last_used_at: t.last_used_at.map(format_ms),
        }
    }
}

/// List tokens, newest first
#[utoipa::path(
    get,
    path = "/tokens",
    params(PageQuery),
    responses((status = 200, description = "A page of tokens.", body = Listing<TokenView>)),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn list_tokens(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Listing<TokenView>>, ApiError> {
    let page = q.page()?;
    let rows = st.services.tokens.list(page).await?;
    let (rows, next) = page.finish(rows, |t| t.id);
    Ok(Json(Listing {
        items: rows.iter().map(TokenView::new).collect(),
        next,
    }))
}

/// `{id}` of `/tokens/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct TokenPath {
    /// The token's id (from `GET /tokens`).
    #[param(value_type = i64)]
    id: String,
}

/// Revoke a token
///
/// It is refused at once, on every node.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    params(TokenPath),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, description = "No such token.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn revoke_token(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(TokenPath { id }): ApiPath<TokenPath>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no such token: {id:?}")))?;
    st.services.tokens.revoke(id, &who.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's token and what its role may do.
#[derive(Debug, Serialize, ToSchema)]
struct WhoAmI {
    name: String,
    #[schema(value_type = RoleName)]
    role: &'static str,
    /// What the role may do: `read`, `publish`, `admin`, `report`.
    #[schema(value_type = Vec<Capability>)]
    can: Vec<&'static str>,
}

/// Something a role may do.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // describes `WhoAmI::can`
enum Capability {
    Read,
    Publish,
    Admin,
    Report,
}

/// Who the caller is
///
/// The token's name and role, and what the role may do (pages use it to show only what the
/// role allows).
#[utoipa::path(
    get,
    path = "/whoami",
    responses((status = 200, description = "The caller.", body = WhoAmI)),
    extensions(("x-fwdist-role" = json!("any"))),
)]
async fn whoami(who: Authorized<AnyRole>) -> Json<WhoAmI> {
    use crate::domain::Role;
    let r = who.token.role;
    let can = [
        (Role::Viewer, "read"),
        (Role::Publisher, "publish"),
        (Role::Admin, "admin"),
        (Role::Reporter, "report"),
    ]
    .into_iter()
    .filter(|(need, _)| r.allows(*need))
    .map(|(_, what)| what)
    .collect();
    Json(WhoAmI {
        name: who.token.name,
        role: r.as_str(),
        can,
    })
}
