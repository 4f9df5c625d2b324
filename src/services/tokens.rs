//! Admin API tokens: created by `fwdist token create` (and by the tests' harness), shown
//! once, stored as a SHA-256 hash; listed and revoked through the API. Audited.

use super::{ServiceError, ServiceResult};
use crate::db::audit::AuditEntry;
use crate::db::tokens::TokenRow;
use crate::db::{Db, Page};
use crate::domain::Role;
use crate::secret::Secret;

/// Every token starts with this, so a leaked one is recognisable in a scan.
pub const PREFIX: &str = "fwd_";

#[derive(Debug, Clone)]
pub struct Tokens {
    db: Db,
}

impl Tokens {
    pub fn new(db: Db) -> Self {
        Tokens { db }
    }

    /// Creates a token named `name` (1–64 characters after trimming) with `role`; returns its
    /// id and the token itself, which is never stored.
    ///
    /// # Errors
    /// A bad name, no randomness, database failure.
    pub async fn create(&self, name: &str, role: Role, actor: &str) -> ServiceResult<(i64, Secret)> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(ServiceError::Invalid("--name must be 1-64 characters".into()));
        }
        let token =
            Secret::generate(PREFIX).map_err(|e| ServiceError::Internal(format!("no randomness: {e}")))?;
        let audit = AuditEntry::new(
            actor,
            "token.create",
            format!("token/{name}"),
            serde_json::json!({"role": role.as_str()}),
        );
        let id = self.db.insert_token(name, role, &token.hash(), &audit).await?;
        tracing::info!(token = id, name, role = role.as_str(), "API token created");
        Ok((id, token))
    }

    /// Every token (names, roles, times; never the token).
    ///
    /// # Errors
    /// Database failure.
    pub async fn list(&self, page: Page) -> ServiceResult<Vec<TokenRow>> {
        Ok(self.db.list_tokens(page).await?)
    }

    /// Revokes token `id`: refused from the next request on, on every node.
    ///
    /// # Errors
    /// No such token, database failure.
    pub async fn revoke(&self, id: i64, actor: &str) -> ServiceResult<TokenRow> {
        let row = self
            .db
            .revoke_token(id, actor)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no such token: {id}")))?;
        tracing::info!(token = id, name = %row.name, "API token revoked");
        Ok(row)
    }
}
