//! Bearer-token authorisation: `Authorized<R>` extracts the caller and checks its role before
//! the body is read, so a wrong role is a 403 whatever the body holds.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::db::tokens::TokenRow;
use crate::domain::Role;
use crate::secret::Secret;

pub trait RoleNeeded {
    const ROLE: Role;
}

pub struct Viewer;
pub struct Publisher;
pub struct Admin;
/// Posting install reports: the `reporter` role, or `admin`.
pub struct Reporter;

impl RoleNeeded for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl RoleNeeded for Publisher {
    const ROLE: Role = Role::Publisher;
}
impl RoleNeeded for Admin {
    const ROLE: Role = Role::Admin;
}
impl RoleNeeded for Reporter {
    const ROLE: Role = Role::Reporter;
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
        if !row.role.allows(R::ROLE) {
            return Err(ApiError::Forbidden(R::ROLE));
        }
        Ok(Authorized {
            token: row,
            _role: PhantomData,
        })
    }
}
