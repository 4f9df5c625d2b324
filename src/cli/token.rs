//! `fwdist token create`: writes the same database the server uses, so it works while the
//! server runs (SQLite WAL allows the second writer to wait its turn). It refuses to create a
//! database unless `--init` says so: run from the wrong directory, it would otherwise print a
//! token that the running server has never heard of.

use anyhow::Context as _;

use crate::config::Config;
use crate::db::Db;
use crate::domain::Role;
use crate::services::tokens::Tokens;

/// Local commands write the server's database: one that does not exist yet is most likely the
/// wrong directory or config, so it is created only with `--init`.
///
/// # Errors
/// The database file is missing and `init` is false.
pub fn refuse_missing_db(cfg: &Config, init: bool) -> anyhow::Result<()> {
    if !init && let Some(path) = Db::missing_file(&cfg.db.url) {
        anyhow::bail!(
            "no database at {} (run this where the server runs, or give its --config; --init creates a new one)",
            path.display()
        );
    }
    Ok(())
}

/// Prints the token as the last word of its output.
///
/// # Errors
/// Bad config, database failure, or an empty name.
pub async fn create(cfg: &Config, name: &str, role: Role, init: bool) -> anyhow::Result<()> {
    refuse_missing_db(cfg, init)?;
    let db = Db::connect(&cfg.db.url).await.context("opening the database")?;
    let created = Tokens::new(db.clone()).create(name, role, "cli").await;
    db.close().await;
    let (id, token) = created?;
    println!(
        "created {} token {:?} (id {id}); it is shown only once: {}",
        role.as_str(),
        name.trim(),
        token.expose()
    );
    Ok(())
}
