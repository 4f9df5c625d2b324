//! `fwdist fetch`: run the reference IQ once. Exit codes: 0 updated, 10 no update,
//! 20 refused (verification), 30 network failure, 31 login refused, 1 usage/local error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::domain::{DeviceId, Model};
use fwdist_iq::fetch::{self, FetchOptions, Fetched, Outcome};
use fwdist_release::signing::TrustedKeys;

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// FTPS control address, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// This IQ's MAC address (any of the three forms), sent as `USER` exactly as given.
    #[arg(long)]
    pub device: String,
    /// The device secret (better given through the environment than the command line).
    #[arg(long, env = "FWDIST_DEVICE_SECRET", hide_env_values = true)]
    pub secret: String,
    /// This IQ's model: a manifest for another model is refused.
    #[arg(long)]
    pub model: String,
    /// Directory of trusted release keys (*.pub).
    #[arg(long)]
    pub trust: PathBuf,
    /// State directory: installed image, its sequence, partial downloads.
    #[arg(long)]
    pub state: PathBuf,
    /// PEM certificate(s) the server's TLS certificate must chain to.
    #[arg(long, default_value = "certs/server.crt")]
    pub ca: PathBuf,
    /// Transfer attempts, each resuming where the last stopped.
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// Seconds any single network wait may take.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// # Errors
/// Usage and local errors (exit 1); fetch failures are returned as exit codes.
pub async fn run(a: &FetchArgs) -> anyhow::Result<ExitCode> {
    let user = login_name(&a.device)?;
    let model = Model::parse(&a.model)?;
    let trust = TrustedKeys::load_dir(&a.trust).with_context(|| format!("--trust {}", a.trust.display()))?;
    if trust.is_empty() {
        bail!("--trust {}: no *.pub keys there", a.trust.display());
    }
    let client = super::net::client_config(&a.server, &a.ca, a.timeout).await?;
    let opts = FetchOptions {
        client,
        user,
        secret: a.secret.clone(),
        model,
        trust,
        state_dir: a.state.clone(),
        attempts: a.attempts,
        backoff: Duration::from_millis(500),
    };
    match fetch::fetch(&opts).await {
        Ok(Fetched::Updated {
            version,
            sequence,
            resumed_from,
        }) => {
            let resumed = if resumed_from > 0 {
                format!(", resumed from byte {resumed_from}")
            } else {
                String::new()
            };
            println!("updated to {version} (sequence {sequence}{resumed})");
            Ok(ExitCode::from(Outcome::Updated as u8))
        }
        Ok(Fetched::NoUpdate(why)) => {
            println!("no update: {why}");
            Ok(ExitCode::from(Outcome::NoUpdate as u8))
        }
        Err(e) => {
            eprintln!("fwdist: {e}");
            Ok(ExitCode::from(e.outcome() as u8))
        }
    }
}

/// The `USER` fetch sends: `--device` exactly as typed, once it parses as a MAC. Not the
/// canonical form: fwdist takes any of the three (SPEC §4), but a plain FTP server serving the
/// same tree needs its account name verbatim, and Linux account names cannot contain ':'.
fn login_name(device: &str) -> anyhow::Result<String> {
    DeviceId::parse(device)?;
    Ok(device.to_owned())
}

#[cfg(test)]
mod tests {
    use super::login_name;

    #[test]
    fn the_device_id_is_sent_as_typed_once_it_is_a_mac() {
        for id in [
            "aa-bb-cc-dd-ee-ff",
            "AA:BB:CC:DD:EE:FF",
            "aabbccddeeff",
            "Fa-0B-cc-dd-ee-01",
        ] {
            assert_eq!(login_name(id).unwrap(), id);
        }
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa-bb:cc-dd-ee-ff",
            "not a mac",
            " aa:bb:cc:dd:ee:ff",
        ] {
            assert!(login_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
