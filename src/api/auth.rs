//! Bearer-token authorisation: `Authorized<R>` extracts the caller and checks its role before
//! the body is read, so a wrong role is a 403 whatever the body holds. Tokens are looked up
//! in the database on every request, so a revoked one is refused at once on every node.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::db::tokens::TokenRow;
use crate::domain::Role;
use crate::secret::Secret;

pub trait RoleNeeded {
    /// None: any valid token.
    const ROLE: Option<Role>;
}

pub struct Viewer;
pub struct Publisher;
pub struct Admin;
/// Posting install reports: the `reporter` role, or `admin`.
pub struct Reporter;

impl RoleNeeded for Viewer {
    const ROLE: Option<Role> = Some(Role::Viewer);
}
impl RoleNeeded for Publisher {
    const ROLE: Option<Role> = Some(Role::Publisher);
}
impl RoleNeeded for Admin {
    const ROLE: Option<Role> = Some(Role::Admin);
}
impl RoleNeeded for Reporter {
    const ROLE: Option<Role> = Some(Role::Reporter);
}

/// Any valid token (`/whoami`).
pub struct AnyRole;

impl RoleNeeded for AnyRole {
    const ROLE: Option<Role> = None;
}

/// A caller whose role allows `R` (see [`Role::allows`]).
pub struct Authorized<R: RoleNeeded> {
    pub token: TokenRow,
    _role: PhantomData<R>,
}

impl<R: RoleNeeded + Send + Sync> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?;
        let value = header.to_str().map_err(|_| ApiError::Unauthorized)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::Unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::Unauthorized);
        }
        let hash = Secret::from_client(token.trim()).hash();
        let row = state
            .db
            .token_by_hash(&hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if let Some(needed) = R::ROLE
            && !row.role.allows(needed)
        {
            return Err(ApiError::Forbidden(needed));
        }
        // Best effort: a failed write of the last-used time does not refuse the request.
        if let Err(e) = state.db.touch_token(&row).await {
            tracing::warn!(error = %e, token = row.id, "could not note the token's use");
        }
        Ok(Authorized {
            token: row,
            _role: PhantomData,
        })
    }
}
