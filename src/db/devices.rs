//! `devices`: registered IQs and the hash of their secret; their lifecycle (enable, disable,
//! new secret, delete) written with its audit entry in one transaction.

use sqlx::FromRow;

use super::audit::{AuditEntry, append_audit, commit_if_changed};
use super::{Db, DbError, DbResult, Dialect, Flag, Page, members};
use crate::domain::{DeviceId, Model, now_ms};
use crate::secret::SecretHash;

#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub seq: i64,
    pub id: DeviceId,
    pub model: Model,
    pub labels: Vec<String>,
    pub enabled: bool,
    pub created_at: i64,
    /// The version of its latest `installed` report.
    pub installed_version: Option<String>,
}

/// What the FTPS authenticator needs to check a login.
#[derive(Debug, Clone)]
pub struct DeviceCredentials {
    pub model: Model,
    pub secret_hash: SecretHash,
    pub enabled: bool,
}

#[derive(FromRow)]
struct Raw {
    seq: i64,
    id: String,
    model: String,
    labels: String,
    enabled: Flag,
    created_at: i64,
    installed_version: Option<String>,
}

impl TryFrom<Raw> for DeviceRow {
    type Error = DbError;
    fn try_from(r: Raw) -> DbResult<Self> {
        let corrupt = |e: String| DbError::Corrupt(format!("device {}: {e}", r.id));
        Ok(DeviceRow {
            seq: r.seq,
            id: DeviceId::parse(&r.id).map_err(|e| corrupt(e.0))?,
            model: Model::parse(&r.model).map_err(|e| corrupt(e.0))?,
            labels: serde_json::from_str(&r.labels).map_err(|e| corrupt(e.to_string()))?,
            enabled: r.enabled.0,
            created_at: r.created_at,
            installed_version: r.installed_version,
        })
    }
}

fn labels_json(labels: &[String]) -> serde_json::Value {
    serde_json::Value::Array(
        labels
            .iter()
            .map(|l| serde_json::Value::String(l.clone()))
            .collect(),
    )
}

impl Db {
    /// SQL that is true when the JSON array of strings in `column` holds the text `param`.
    fn has_label(&self, column: &str, param: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("EXISTS (SELECT 1 FROM json_each({column}) WHERE value = {param})"),
            Dialect::Postgres => format!("{column}::jsonb ? {param}"),
        }
    }
}

const COLUMNS: &str = "seq, id, model, labels, enabled, created_at, installed_version";

impl Db {
    /// # Errors
    /// A duplicate id (see [`DbError::is_unique_violation`]) or database failure.
    pub async fn insert_device(
        &self,
        id: &DeviceId,
        model: &Model,
        labels: &[String],
        secret: &SecretHash,
        audit: &AuditEntry,
    ) -> DbResult<DeviceRow> {
        let labels = serde_json::to_string(labels).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let mut tx = self.pool().begin().await?;
        let raw: Raw = sqlx::query_as(&format!(
            "INSERT INTO devices (id, model, labels, secret_hash, enabled, created_at)
             VALUES ($1, $2, $3, $4, 1, $5) RETURNING {COLUMNS}"
        ))
        .bind(id.to_string())
        .bind(model.as_str())
        .bind(labels)
        .bind(&secret.0[..])
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        super::fleet::bump_versions(&mut tx, model.as_str(), None, 1).await?;
        append_audit(&mut tx, audit, now_ms()).await?;
        tx.commit().await?;
        raw.try_into()
    }

    /// Registers many devices in one transaction: all or none, each with its `device.create`
    /// audit entry by `actor`.
    ///
    /// # Errors
    /// A duplicate id (unique violation; nothing is written) or database failure.
    pub async fn insert_devices(
        &self,
        devices: &[(DeviceId, Model, Vec<String>, SecretHash)],
        actor: &str,
    ) -> DbResult<()> {
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let mut per_model: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for (id, model, labels, secret) in devices {
            *per_model.entry(model.as_str()).or_default() += 1;
            let labels_text = serde_json::to_string(labels).map_err(|e| DbError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO devices (id, model, labels, secret_hash, enabled, created_at) VALUES ($1, $2, $3, $4, 1, $5)",
            )
            .bind(id.to_string())
            .bind(model.as_str())
            .bind(labels_text)
            .bind(&secret.0[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let audit = AuditEntry::new(
                actor,
                "device.create",
                id.to_string(),
                serde_json::json!({"model": model.as_str(), "labels": labels_json(labels)}),
            );
            append_audit(&mut tx, &audit, now).await?;
        }
        for (model, n) in per_model {
            super::fleet::bump_versions(&mut tx, model, None, n).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// # Errors
    /// Database failure.
    pub async fn device(&self, id: &DeviceId) -> DbResult<Option<DeviceRow>> {
        let raw: Option<Raw> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM devices WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        raw.map(TryInto::try_into).transpose()
    }

    /// # Errors
    /// Database failure.
    pub async fn device_credentials(&self, id: &DeviceId) -> DbResult<Option<DeviceCredentials>> {
        let row: Option<(String, Vec<u8>, Flag)> =
            sqlx::query_as("SELECT model, secret_hash, enabled FROM devices WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(self.pool())
                .await?;
        row.map(|(model, hash, enabled)| {
            Ok(DeviceCredentials {
                model: Model::parse(&model).map_err(|e| DbError::Corrupt(e.0))?,
                secret_hash: SecretHash::from_slice(&hash)
                    .ok_or_else(|| DbError::Corrupt(format!("device {id}: bad secret hash")))?,
                enabled: enabled.0,
            })
        })
        .transpose()
    }

    /// Newest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_devices(
        &self,
        model: Option<&Model>,
        label: Option<&str>,
        enabled: Option<bool>,
        page: Page,
    ) -> DbResult<Vec<DeviceRow>> {
        let has_label = self.has_label("devices.labels", "$2");
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM devices WHERE ($1 IS NULL OR model = $1)
               AND ($2 IS NULL OR {has_label})
               AND ($5 IS NULL OR enabled = $5)
               AND seq < $3
             ORDER BY seq DESC LIMIT $4"
        ))
        .bind(model.map(Model::as_str))
        .bind(label)
        .bind(page.before_id())
        .bind(page.fetch_limit())
        .bind(enabled.map(i64::from))
        .fetch_all(self.pool())
        .await?;
        raws.into_iter().map(TryInto::try_into).collect()
    }

    /// Every device of a model with its labels (for a new rollout's members), or only those
    /// carrying `label`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn devices_of_model(
        &self,
        model: &Model,
        label: Option<&str>,
    ) -> DbResult<Vec<(DeviceId, Vec<String>)>> {
        let has_label = self.has_label("devices.labels", "$2");
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT id, labels FROM devices WHERE model = $1 AND ($2 IS NULL OR {has_label})"
        ))
        .bind(model.as_str())
        .bind(label)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(id, labels)| {
                Ok((
                    DeviceId::parse(&id).map_err(|e| DbError::Corrupt(e.0))?,
                    serde_json::from_str(&labels)
                        .map_err(|e| DbError::Corrupt(format!("device {id} labels: {e}")))?,
                ))
            })
            .collect()
    }

    /// The devices with these ids: (id, model, labels); unknown ids are left out.
    ///
    /// # Errors
    /// Database failure.
    pub async fn devices_by_ids(&self, ids: &[DeviceId]) -> DbResult<Vec<(DeviceId, Model, Vec<String>)>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, model, labels FROM devices WHERE id IN ({})",
                marks.join(",")
            );
            let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for (id, model, labels) in q.fetch_all(self.pool()).await? {
                let c = |e: crate::domain::InvalidInput| DbError::Corrupt(e.0);
                out.push((
                    DeviceId::parse(&id).map_err(c)?,
                    Model::parse(&model).map_err(c)?,
                    serde_json::from_str(&labels)
                        .map_err(|e| DbError::Corrupt(format!("device {id} labels: {e}")))?,
                ));
            }
        }
        Ok(out)
    }

    /// Enables or disables a device, with its audit entry. Returns false (nothing written)
    /// when there is no such device.
    ///
    /// # Errors
    /// Database failure.
    pub async fn set_device_enabled(
        &self,
        id: &DeviceId,
        enabled: bool,
        audit: &AuditEntry,
    ) -> DbResult<bool> {
        let mut tx = self.pool().begin().await?;
        let r = sqlx::query("UPDATE devices SET enabled = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(i64::from(enabled))
            .execute(&mut *tx)
            .await?;
        commit_if_changed(tx, r.rows_affected(), audit).await
    }

    /// Replaces a device's secret hash, with its audit entry; false when there is no such
    /// device.
    ///
    /// # Errors
    /// Database failure.
    pub async fn set_device_secret(
        &self,
        id: &DeviceId,
        secret: &SecretHash,
        audit: &AuditEntry,
    ) -> DbResult<bool> {
        let mut tx = self.pool().begin().await?;
        let r = sqlx::query("UPDATE devices SET secret_hash = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(&secret.0[..])
            .execute(&mut *tx)
            .await?;
        commit_if_changed(tx, r.rows_affected(), audit).await
    }

    /// Deletes a device: its row, its pin and its rollout memberships (with their counts), in
    /// one transaction with the audit entry. Its download records and reports stay (they
    /// name the device by id). False when there is no such device.
    ///
    /// # Errors
    /// Database failure.
    pub async fn delete_device(&self, id: &DeviceId, audit: &AuditEntry) -> DbResult<bool> {
        let mut tx = self.pool().begin().await?;
        let gone: Option<(String, Option<String>)> =
            sqlx::query_as("DELETE FROM devices WHERE id = $1 RETURNING model, installed_version")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((model, version)) = gone else {
            return Ok(false);
        };
        super::fleet::bump_versions(&mut tx, &model, version.as_deref(), -1).await?;
        sqlx::query("DELETE FROM pins WHERE device = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        // Off the rollouts' explicit lists too: registered again, it is a new unit.
        sqlx::query("DELETE FROM rollout_devices WHERE device = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        members::remove_device(&mut tx, id).await?;
        append_audit(&mut tx, audit, now_ms()).await?;
        tx.commit().await?;
        Ok(true)
    }
}
