//! `fwdist token create`: writes the same database the server uses, so it works while the
//! server runs (SQLite WAL allows the second writer to wait its turn).

use anyhow::Context as _;

use crate::config::Config;
use crate::db::Db;
use crate::domain::Role;
use crate::secret::Secret;

/// Prints the token as the last word of its output.
///
/// # Errors
/// Bad config, database failure, or an empty name.
pub async fn create(cfg: &Config, name: &str, role: Role) -> anyhow::Result<()> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 {
        anyhow::bail!("--name must be 1-64 characters");
    }
    let db = Db::connect(&cfg.db.url).await.context("opening the database")?;
    let token = Secret::generate("fwd_").context("no randomness")?;
    let id = db.insert_token(name, role, &token.hash()).await?;
    db.close().await;
    println!(
        "created {} token {name:?} (id {id}); it is shown only once: {}",
        role.as_str(),
        token.expose()
    );
    Ok(())
}
