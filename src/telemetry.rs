//! Logging setup: `tracing` to standard error, filtered by `RUST_LOG`
//! (default `info,unftp=warn`). libunftp's own slog records arrive (bridged by the FTPS
//! front) under the `unftp` target. libunftp also instruments its functions
//! with `tracing` spans that carry `Debug` dumps of whole sessions: the log output never shows
//! them. Nothing here is needed for correctness: a server without it logs nothing, that is all.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

pub const DEFAULT_FILTER: &str = "info,unftp=warn";

/// Installs the global subscriber; a second call is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A target directive is more specific than a bare level, so this holds whatever RUST_LOG says.
    // rustls warns per connection when a client sends an IP address as SNI (every IQ that is
    // configured with the server's address does, as RFC 6066 forbids but clients do): noise
    // that would drown real warnings. Its handshake failures are reported by the front itself.
    let filter = ["libunftp=off", "rustls::msgs::handshake=error"]
        .into_iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, EnvFilter::add_directive);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(fmt).try_init();
}
