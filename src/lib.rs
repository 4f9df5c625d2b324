//! # fwdist — firmware update distribution server
//!
//! Serves signed, versioned firmware to authenticated IQs over FTPS, and gives release
//! engineers and admins an HTTP API to publish builds, run rollouts and see downloads.
//!
//! # Layout
//! The workspace has three crates: `fwdist-release` (the release format: ids, manifest,
//! signatures, probe facts), `fwdist-iq` (the reference IQ, using only the release format)
//! and this one, the server with the `fwdist` binary. Inside it, dependencies point inward:
//! fronts (`ftps`, `api`, `cli`) → `services` → `store`, `db` → `domain`.
//!
//! - [`domain`] — device ids, models, versions, digests (from `fwdist-release`), roles,
//!   rollout states, outcomes, time. Depends on nothing else here.
//! - [`secret`] — server-generated secrets: creation, hashing, constant-time checks.
//! - [`store`] — the [`store::ReleaseStore`] seam and its implementations: a directory (the
//!   default) and S3-compatible object storage (scale-out). No FTP/HTTP/SQL.
//! - [`db`] — the metadata database behind one `Db` (SQLite backend). Rows, no rules.
//! - [`services`] — the rules: publish, targeting (with its pure policy), rollouts, devices,
//!   tokens. Used alike by the API, the CLI and the FTPS tree.
//! - [`network`] — the firewall rules an IQ needs, from plain values. Pure.
//! - [`diagnostics`] — counters of FTPS failures per device and client IP (firewall clues).
//! - [`ftps`] — the FTPS front for IQs (owns sockets and TLS; libunftp behind it).
//! - [`api`] — the axum admin API: translates HTTP to services; its own listener
//!   (timeouts, connection cap, optional TLS).
//! - [`tls`] — the rustls configuration both fronts start from (PEM files, ring).
//! - [`descriptors`] — the file-descriptor limit and what each front may use of it.
//! - [`config`], [`telemetry`], [`app`], [`cli`] — the binary's edge; `app` wires it all.
//! - `fuzzing` — one check per fuzz target (`fuzz/`), run on the corpus by `cargo test` too.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod descriptors;
pub mod diagnostics;
pub mod domain;
pub mod ftps;
/// Fuzz checks over the real parsers, for `fuzz/` and the corpus test (not an API).
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod network;
pub mod secret;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod tls;
