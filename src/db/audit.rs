//! `audit`: the append-only log of changes (SPEC §10). Entries are written in the same
//! transaction as the change they describe, so the log never shows a change that did not
//! happen nor misses one that did; nothing here updates or deletes an entry.

use sqlx::{Any, FromRow, Transaction};

use super::{Db, DbError, DbResult, Page};
use crate::domain::now_ms;

/// An audit entry to write with a change. `detail` must never hold a secret or a token.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub detail: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        actor: &str,
        action: &'static str,
        target: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        AuditEntry {
            actor: actor.to_owned(),
            action,
            target: target.into(),
            detail,
        }
    }
}

/// A stored entry.
#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl AuditRow {
    /// The detail as JSON (it is written from a JSON value; a corrupt one reads as a string).
    pub fn detail_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.detail).unwrap_or_else(|_| serde_json::Value::String(self.detail.clone()))
    }
}

pub(super) async fn append_audit(tx: &mut Transaction<'_, Any>, a: &AuditEntry, at: i64) -> DbResult<()> {
    sqlx::query("INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(at)
        .bind(&a.actor)
        .bind(a.action)
        .bind(&a.target)
        .bind(a.detail.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Ends a change's transaction: when it changed a row, with its audit entry, committed;
/// otherwise rolled back, nothing written. Returns whether it changed.
pub(super) async fn commit_if_changed(
    mut tx: Transaction<'_, Any>,
    rows_affected: u64,
    audit: &AuditEntry,
) -> DbResult<bool> {
    if rows_affected == 0 {
        return Ok(false);
    }
    append_audit(&mut tx, audit, now_ms()).await?;
    tx.commit().await?;
    Ok(true)
}

impl Db {
    /// Appends an audit entry on its own (a change whose row was written already).
    ///
    /// # Errors
    /// Database failure.
    pub async fn append_audit(&self, a: &AuditEntry) -> DbResult<()> {
        let mut tx = self.pool().begin().await?;
        append_audit(&mut tx, a, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Newest first, optionally only one action.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_audit(&self, action: Option<&str>, page: Page) -> DbResult<Vec<AuditRow>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor, action, target, detail FROM audit
             WHERE ($1 IS NULL OR action = $1) AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(action)
        .bind(page.before_id())
        .bind(page.fetch_limit())
        .fetch_all(self.pool())
        .await
        .map_err(DbError::from)?;
        Ok(rows)
    }
}
