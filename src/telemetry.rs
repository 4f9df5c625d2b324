//! Logging setup: `tracing` to standard error, filtered by `RUST_LOG`
//! (default `info,unftp=warn`). libunftp's own slog records arrive through
//! [`crate::ftps::log`] under the `unftp` target. libunftp also instruments its functions
//! with `tracing` spans that carry `Debug` dumps of whole sessions: the log output never shows
//! them; only the data-channel guard ([`crate::ftps::datachan_guard`]) reads three of them.
//!
//! `fwdist serve` must install this: without the guard layer every transfer is refused.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

use crate::ftps::datachan_guard::{DataChannelTap, install_panic_hook, is_tapped_span};

pub const DEFAULT_FILTER: &str = "info,unftp=warn";

/// Installs the global subscriber; a second call is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A target directive is more specific than a bare level, so this holds whatever RUST_LOG says.
    let filter = match "libunftp=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .with_filter(filter);
    let guard = DataChannelTap.with_filter(filter_fn(is_tapped_span));
    if tracing_subscriber::registry()
        .with(fmt)
        .with(guard)
        .try_init()
        .is_ok()
    {
        install_panic_hook();
    }
}
