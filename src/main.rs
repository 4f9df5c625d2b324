//! The `fwdist` binary: parse the command line, run it (see [`fwdist::cli::run`]), and turn a
//! failure into one `fwdist: error: ...` line on stderr (joined, if its text had several) and a
//! non-zero exit code.

use std::process::ExitCode;

use clap::Parser as _;
use fwdist::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the error's text holds (a TOML parse error spans several).
            let text = format!("{e:#}");
            let line: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            eprintln!("fwdist: error: {}", line.join(" "));
            ExitCode::FAILURE
        }
    }
}
