//! `tokens`: admin API tokens, stored only as a hash; created and revoked with their audit
//! entry in one transaction.

use super::audit::{AuditEntry, append_audit};
use super::{Db, DbError, DbResult, Page};
use crate::domain::{Role, now_ms};
use crate::secret::SecretHash;

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// How stale `last_used_at` may get: a busy token is written once a minute, not per request.
pub const LAST_USED_GRANULARITY_MS: i64 = 60_000;

type Raw = (i64, String, String, i64, Option<i64>);

fn from_raw((id, name, role, created_at, last_used_at): Raw) -> DbResult<TokenRow> {
    let role = Role::parse(&role).map_err(|e| DbError::Corrupt(e.0))?;
    Ok(TokenRow {
        id,
        name,
        role,
        created_at,
        last_used_at,
    })
}

impl Db {
    /// # Errors
    /// Database failure.
    pub async fn insert_token(
        &self,
        name: &str,
        role: Role,
        hash: &SecretHash,
        audit: &AuditEntry,
    ) -> DbResult<i64> {
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let row: (i64,) = sqlx::query_as(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(&hash.0[..])
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut audit = audit.clone();
        if let serde_json::Value::Object(m) = &mut audit.detail {
            m.insert("id".into(), row.0.into());
        }
        append_audit(&mut tx, &audit, now).await?;
        tx.commit().await?;
        Ok(row.0)
    }

    /// Every token, newest first (never the token itself: only its hash is stored).
    ///
    /// # Errors
    /// Database failure or a corrupt role.
    pub async fn list_tokens(&self, page: Page) -> DbResult<Vec<TokenRow>> {
        let rows: Vec<Raw> = sqlx::query_as(
            "SELECT id, name, role, created_at, last_used_at FROM tokens WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(page.before_id())
        .bind(page.fetch_limit())
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_raw).collect()
    }

    /// Deletes the token `id` (every node refuses it from the next request: tokens are looked
    /// up per request). Returns the revoked token, None if there was none.
    ///
    /// # Errors
    /// Database failure.
    pub async fn revoke_token(&self, id: i64, actor: &str) -> DbResult<Option<TokenRow>> {
        let mut tx = self.pool().begin().await?;
        let row: Option<Raw> = sqlx::query_as(
            "DELETE FROM tokens WHERE id = $1 RETURNING id, name, role, created_at, last_used_at",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row.map(from_raw).transpose()? else {
            return Ok(None);
        };
        let audit = AuditEntry::new(
            actor,
            "token.revoke",
            format!("token/{}", row.name),
            serde_json::json!({"id": row.id, "role": row.role.as_str()}),
        );
        append_audit(&mut tx, &audit, now_ms()).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Notes that `token` was used now, unless it was within [`LAST_USED_GRANULARITY_MS`].
    ///
    /// # Errors
    /// Database failure.
    pub async fn touch_token(&self, token: &TokenRow) -> DbResult<()> {
        let now = now_ms();
        if token
            .last_used_at
            .is_some_and(|t| now - t < LAST_USED_GRANULARITY_MS)
        {
            return Ok(());
        }
        sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
            .bind(token.id)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The token with this hash, if any. Lookup by the hash of a 256-bit random token leaks
    /// nothing useful through timing, so no constant-time compare is needed here.
    ///
    /// # Errors
    /// Database failure or a corrupt role.
    pub async fn token_by_hash(&self, hash: &SecretHash) -> DbResult<Option<TokenRow>> {
        let row: Option<Raw> =
            sqlx::query_as("SELECT id, name, role, created_at, last_used_at FROM tokens WHERE hash = $1")
                .bind(&hash.0[..])
                .fetch_optional(self.pool())
                .await?;
        row.map(from_raw).transpose()
    }
}
