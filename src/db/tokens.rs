//! `tokens`: admin API tokens, stored only as a hash.

use super::{Db, DbError, DbResult};
use crate::domain::{Role, now_ms};
use crate::secret::SecretHash;

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: Role,
}

impl Db {
    /// # Errors
    /// Database failure.
    pub async fn insert_token(&self, name: &str, role: Role, hash: &SecretHash) -> DbResult<i64> {
        let row: (i64,) = sqlx::query_as(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(&hash.0[..])
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        Ok(row.0)
    }

    /// The token with this hash, if any. Lookup by the hash of a 256-bit random token leaks
    /// nothing useful through timing, so no constant-time compare is needed here.
    ///
    /// # Errors
    /// Database failure or a corrupt role.
    pub async fn token_by_hash(&self, hash: &SecretHash) -> DbResult<Option<TokenRow>> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, name, role FROM tokens WHERE hash = $1")
                .bind(&hash.0[..])
                .fetch_optional(self.pool())
                .await?;
        row.map(|(id, name, role)| {
            let role = Role::parse(&role).map_err(|e| DbError::Corrupt(e.0))?;
            Ok(TokenRow { id, name, role })
        })
        .transpose()
    }
}
