//! The `fwdist` binary: parse the command line, run it (see [`fwdist::cli::run`]), and turn a
//! failure into one `fwdist: error: ...` line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser as _;
use fwdist::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fwdist: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
