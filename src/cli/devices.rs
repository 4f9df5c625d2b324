//! `fwdist devices import FILE.csv`: register a fleet in one go (all or nothing) and print
//! each device's secret once, as CSV `id,secret` on standard output.
//!
//! Input: one device per line, `id,model[,label;label...]`; a header line starting with `id`
//! and blank lines or `#` comments are skipped.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::db::Db;
use crate::domain::{DeviceId, Model};
use crate::services::devices::{Devices, NewDevice, check_labels};
use crate::services::targeting::Targeting;

type Row = NewDevice;

/// Parses the CSV; every error names its line.
///
/// # Errors
/// The first malformed line, or a device listed twice.
pub fn parse_csv(text: &str) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (n == 1 && line.to_ascii_lowercase().starts_with("id"))
        {
            continue;
        }
        let mut cols = line.split(',').map(str::trim);
        let id = DeviceId::parse(cols.next().unwrap_or_default()).with_context(|| format!("line {n}"))?;
        let model = Model::parse(cols.next().unwrap_or_default()).with_context(|| format!("line {n}"))?;
        let labels: Vec<String> = cols
            .next()
            .unwrap_or_default()
            .split(';')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if cols.next().is_some() {
            bail!("line {n}: expected id,model[,labels]");
        }
        if !seen.insert(id) {
            bail!("line {n}: device {id} is listed twice");
        }
        check_labels(&labels).with_context(|| format!("line {n}"))?;
        rows.push(NewDevice { id, model, labels });
    }
    Ok(rows)
}

/// # Errors
/// Unreadable file, bad CSV, an already registered device (nothing is written), database.
pub async fn import(cfg: &Config, file: &Path, init: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let rows = parse_csv(&text)?;
    super::token::refuse_missing_db(cfg, init)?;
    let db = Db::connect(&cfg.db.url).await.context("opening the database")?;
    let devices = Devices::new(
        db.clone(),
        Targeting::new(db.clone()),
        crate::services::rollouts::Rollouts::new(db.clone()),
        None,
    );
    let result = devices.import(&rows, "cli").await;
    db.close().await;
    let secrets = match result {
        Ok(s) => s,
        Err(crate::services::ServiceError::Conflict(_)) => bail!(
            "a device in {} is already registered; nothing was imported",
            file.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "id,secret")?;
    for (id, secret) in &secrets {
        writeln!(out, "{id},{}", secret.expose())?;
    }
    eprintln!(
        "imported {} devices; their secrets are above and are shown only once",
        secrets.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_lines() {
        let rows = parse_csv("id,model,labels\naa:bb:cc:00:00:01,iq2,site-a;lab\n\n# c\nAABBCC000002, iq2\n")
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].labels, vec!["site-a".to_owned(), "lab".to_owned()]);
        let e = parse_csv("aa:bb:cc:00:00:01,iq2\nnot-a-mac,iq2\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let e = parse_csv("aa:bb:cc:00:00:01,iq2\naa-bb-cc-00-00-01,iq2\n").unwrap_err();
        assert!(format!("{e:#}").contains("twice"), "{e:#}");
        assert!(parse_csv("aa:bb:cc:00:00:01,IQ2\n").is_err());
        assert!(parse_csv("aa:bb:cc:00:00:01,iq2,x,y\n").is_err());
        // The API's label limits hold for an import too.
        let long = format!("aa:bb:cc:00:00:01,iq2,{}\n", "x".repeat(65));
        let e = parse_csv(&long).unwrap_err();
        assert!(format!("{e:#}").contains("line 1: labels: at most 32"), "{e:#}");
    }
}
