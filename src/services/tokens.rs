//! Admin API tokens: created by `fwdist token create` (and by the tests' harness), shown
//! once, stored as a SHA-256 hash.

use super::{ServiceError, ServiceResult};
use crate::db::Db;
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
    pub async fn create(&self, name: &str, role: Role) -> ServiceResult<(i64, Secret)> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(ServiceError::Invalid("--name must be 1-64 characters".into()));
        }
        let token =
            Secret::generate(PREFIX).map_err(|e| ServiceError::Internal(format!("no randomness: {e}")))?;
        let id = self.db.insert_token(name, role, &token.hash()).await?;
        tracing::info!(token = id, name, role = role.as_str(), "API token created");
        Ok((id, token))
    }
}
