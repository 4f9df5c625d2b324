//! `/tokens` (list, revoke) and `/whoami`: the caller's own name and role, for scripts and
//! pages that show only what the role allows. Tokens are created by `fwdist token create`
//! (it bootstraps the first one); the API never shows a token, only its name and times.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, AnyRole, Authorized};
use super::error::{ApiError, ApiPath, ApiQuery};
use super::{AppState, Listing, PageQuery};
use crate::db::tokens::TokenRow;
use crate::domain::format_ms;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list))
        .route("/tokens/{id}", delete(revoke))
        .route("/whoami", get(whoami))
}

#[derive(Debug, Serialize)]
struct TokenView {
    id: i64,
    name: String,
    role: &'static str,
    created_at: String,
    /// Within a minute (it is written at most once a minute); null if never used.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<TokenView>>, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    }
    .page()?;
    let rows = st.services.tokens.list(page).await?;
    let (rows, next) = page.finish(rows, |t| t.id);
    Ok(Json(Listing {
        items: rows.iter().map(TokenView::new).collect(),
        next,
    }))
}

async fn revoke(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no such token: {id:?}")))?;
    st.services.tokens.revoke(id, &who.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct WhoAmI {
    name: String,
    role: &'static str,
    /// What the role may do: `read`, `publish`, `admin`, `report`.
    can: Vec<&'static str>,
}

/// Any valid token, whatever its role.
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
