//! The `fwdist` command line (SPEC §2). Each subcommand prints one clear line on failure and
//! exits non-zero; `main` does the printing.

pub mod api;
pub mod devices;
pub mod doctor;
pub mod fetch;
pub mod net;
pub mod netreq;
pub mod ops;
pub mod release;
pub mod simulate;
pub mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::Config;
use crate::domain::Role;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};

#[derive(Debug, Parser)]
#[command(
    name = "fwdist",
    version,
    about = "Firmware update distribution server for Salto KS IQs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the FTPS server and the admin HTTP API.
    Serve {
        /// TOML config file; without it, built-in defaults and FWDIST_* variables apply.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write an ed25519 release key pair: PREFIX.key (PKCS#8 PEM, 0600) and PREFIX.pub (SPKI PEM).
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Write manifest.json and manifest.json.sig for a firmware image.
    Sign(release::SignArgs),
    /// Verify a release directory: signature, size and sha256.
    Verify {
        /// Public key (SPKI PEM) the release must be signed by.
        #[arg(long = "pub", value_name = "PUB")]
        public: PathBuf,
        /// Directory holding manifest.json, manifest.json.sig and the image.
        dir: PathBuf,
    },
    /// Run the reference IQ once: fetch, verify and install this device's target release.
    /// Exit codes: 0 updated, 10 no update, 20 refused, 30 network failure, 31 login refused.
    Fetch(fetch::FetchArgs),
    /// Check from this network whether an IQ update would work there: DNS, TCP, greeting,
    /// TLS, certificate, login and every passive port; prints the firewall rule for what is
    /// blocked. Exit codes: 0 works, 3 degraded, 1 cannot work, 2 bad arguments.
    Doctor(doctor::DoctorArgs),
    /// Run many simulated IQs against a server and report rate, latency and errors.
    Simulate(simulate::SimulateArgs),
    /// Devices: import a fleet into the database (local), or add, pin and unpin through the API.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Print what an IQ's network must allow (outbound TCP to the control port and the passive
    /// range) from the configuration, as text, json, nftables or iptables rules.
    NetworkRequirements(netreq::NetReqArgs),
    /// Admin API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Upload a signed release directory to a running server (checked locally first).
    Publish(ops::PublishArgs),
    /// Create, inspect and steer rollouts through a running server's API.
    Rollout {
        #[command(subcommand)]
        command: ops::RolloutCommand,
    },
    /// Post an install report for a device, as the KS backend does (role reporter or admin).
    Report(ops::ReportArgs),
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Register every device of a CSV (`id,model[,label;label]`) at once, all or nothing;
    /// prints `id,secret` CSV (secrets are shown only once).
    Import {
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Create the database if it does not exist yet (without it, a missing database is an
        /// error: devices written to a database the server does not use could never log in).
        #[arg(long)]
        init: bool,
    },
    /// Register devices through the API; prints `id,secret` once per device.
    Add(ops::DevicesAdd),
    /// Hold a device on one release (its rollouts no longer decide) until unpinned or expired.
    Pin(ops::DevicesPin),
    /// Remove a device's pin.
    Unpin {
        #[arg(value_name = "MAC")]
        mac: String,
        #[command(flatten)]
        api: api::ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once (as the last word of the output) and stores only its hash.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = PossibleValuesParser::new(Role::NAMES).try_map(|s| Role::parse(&s)))]
        role: Role,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Create the database if it does not exist yet (without it, a missing database is an
        /// error: a token written to a database the server does not use would be refused).
        #[arg(long)]
        init: bool,
    },
    /// List tokens through the API (names, roles, times; never a token).
    List {
        #[command(flatten)]
        api: api::ApiArgs,
    },
    /// Revoke a token through the API: refused from the next request on.
    Revoke {
        /// Its id, from `fwdist token list`.
        id: String,
        #[command(flatten)]
        api: api::ApiArgs,
    },
}

/// Runs one parsed command and returns its exit code. Commands that need async I/O get a
/// multi-threaded tokio runtime of their own; `serve` loads its config before it starts
/// telemetry and runs until SIGINT or SIGTERM.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen { out } => release::keygen(&out)?,
        Command::Sign(args) => release::sign(&args)?,
        Command::Verify { public, dir } => release::verify(&public, &dir)?,
        Command::Token {
            command:
                TokenCommand::Create {
                    name,
                    role,
                    config,
                    init,
                },
        } => {
            let cfg = Config::load(config.as_deref())?;
            runtime()?.block_on(token::create(&cfg, &name, role, init))?;
        }
        Command::Devices {
            command: DevicesCommand::Import { file, config, init },
        } => {
            let cfg = Config::load(config.as_deref())?;
            runtime()?.block_on(devices::import(&cfg, &file, init))?;
        }
        Command::Devices {
            command: DevicesCommand::Add(a),
        } => runtime()?.block_on(ops::devices_add(&a))?,
        Command::Devices {
            command: DevicesCommand::Pin(a),
        } => runtime()?.block_on(ops::devices_pin(&a))?,
        Command::Devices {
            command: DevicesCommand::Unpin { mac, api },
        } => runtime()?.block_on(ops::devices_unpin(&mac, &api))?,
        Command::Token {
            command: TokenCommand::List { api },
        } => runtime()?.block_on(ops::token_list(&api))?,
        Command::Token {
            command: TokenCommand::Revoke { id, api },
        } => runtime()?.block_on(ops::token_revoke(&id, &api))?,
        Command::Publish(args) => runtime()?.block_on(ops::publish(&args))?,
        Command::Rollout { command } => runtime()?.block_on(ops::rollout(&command))?,
        Command::Report(args) => runtime()?.block_on(ops::report(&args))?,
        Command::NetworkRequirements(args) => netreq::run(&args)?,
        Command::Simulate(args) => return runtime()?.block_on(simulate::run(&args)),
        Command::Fetch(args) => return runtime()?.block_on(fetch::run(&args)),
        Command::Doctor(args) => return runtime()?.block_on(doctor::run(&args)),
        Command::Serve { config } => {
            let cfg = Config::load(config.as_deref())?;
            crate::telemetry::init();
            runtime()?.block_on(async {
                let app = App::build(cfg).await?;
                app.run_until_stopped(shutdown_signal()).await
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
