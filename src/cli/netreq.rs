//! `fwdist network-requirements`: what an IQ's network must allow, from the configuration
//! `serve` would use (the file plus `FWDIST_*` variables). Needs no running server.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::Config;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};

use crate::network::{Chain, Format, NetworkRequirements};

#[derive(Debug, clap::Args)]
pub struct NetReqArgs {
    /// TOML config file, as for `serve`; without it, built-in defaults and FWDIST_* variables apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output format: text (a few lines), json (as the API answers), nftables (`nft -f FILE`)
    /// or iptables (`iptables-restore --noflush < FILE`).
    #[arg(long, default_value = "text", value_parser = PossibleValuesParser::new(Format::NAMES).try_map(|s| Format::parse(&s)))]
    pub format: Format,
    /// Chain for the nftables/iptables rules (default forward / FORWARD: the site's gateway;
    /// `output` for a firewall on the IQ host itself).
    #[arg(long)]
    pub chain: Option<Chain>,
}

/// Prints the requirements to stdout.
///
/// # Errors
/// An invalid configuration (as one line) or a failed write to stdout.
pub fn run(args: &NetReqArgs) -> anyhow::Result<()> {
    let cfg = Config::load(args.config.as_deref()).map_err(|e| anyhow::anyhow!(one_line(&e.to_string())))?;
    let req = NetworkRequirements::new(&cfg.ftps.network_site()?);
    let out = req.render(args.format, args.chain.as_ref())?;
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}

/// Configuration errors (TOML syntax errors especially) can span lines; the CLI prints one.
fn one_line(msg: &str) -> String {
    msg.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_errors_become_one_line() {
        assert_eq!(one_line("a: b\n  |\n1 | x = \n\n"), "a: b | 1 | x =");
    }
}
