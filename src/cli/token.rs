//! `fwdist token create`: writes the same database the server uses, so it works while the
//! server runs (SQLite WAL allows the second writer to wait its turn).

use anyhow::Context as _;

use crate::config::Config;
use crate::db::Db;
use crate::domain::Role;
use crate::services::tokens::Tokens;

/// Prints the token as the last word of its output.
///
/// # Errors
/// Bad config, database failure, or an empty name.
pub async fn create(cfg: &Config, name: &str, role: Role) -> anyhow::Result<()> {
    let db = Db::connect(&cfg.db.url).await.context("opening the database")?;
    let created = Tokens::new(db.clone()).create(name, role).await;
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
