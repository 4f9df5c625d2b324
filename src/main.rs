use std::process::ExitCode;

use clap::Parser as _;
use fwdist::app::App;
use fwdist::cli::{
    Cli, Command, DevicesCommand, TokenCommand, devices, fetch, netreq, release, simulate, token,
};
use fwdist::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fwdist: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen { out } => release::keygen(&out)?,
        Command::Sign(args) => release::sign(&args)?,
        Command::Verify { public, dir } => release::verify(&public, &dir)?,
        Command::Token {
            command: TokenCommand::Create { name, role, config },
        } => {
            let cfg = Config::load(config.as_deref())?;
            runtime()?.block_on(token::create(&cfg, &name, role))?;
        }
        Command::Devices {
            command: DevicesCommand::Import { file, config },
        } => {
            let cfg = Config::load(config.as_deref())?;
            runtime()?.block_on(devices::import(&cfg, &file))?;
        }
        Command::NetworkRequirements(args) => netreq::run(&args)?,
        Command::Simulate(args) => return runtime()?.block_on(simulate::run(&args)),
        Command::Fetch(args) => return runtime()?.block_on(fetch::run(&args)),
        Command::Doctor(args) => return runtime()?.block_on(fwdist::cli::doctor::run(&args)),
        Command::Serve { config } => {
            let cfg = Config::load(config.as_deref())?;
            fwdist::telemetry::init();
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
