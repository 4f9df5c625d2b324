//! # fwdist — firmware update distribution server
//!
//! Serves signed, versioned firmware to authenticated IQs over FTPS, and gives release
//! engineers and admins an HTTP API to publish builds, run rollouts and see downloads.
//!
//! # Layout
//! Dependencies point inward: the fronts (`ftps`, `api`, `cli`) use the services
//! (`publish`, `catalog`), which use `store`, `db` and `rollout`, which use `domain`.
//!
//! - [`domain`] — device ids (MACs), models, versions, digests, roles. Depends on nothing.
//! - [`secret`] — server-generated secrets: creation, hashing, constant-time checks.
//! - [`store`] — the firmware store on disk, manifest format, signing. No FTP/HTTP/SQL.
//! - [`rollout`] — pure targeting policy. No I/O.
//! - [`db`] — the metadata database (SQLite; PostgreSQL-ready SQL).
//! - [`diagnostics`] — counters of FTPS failures per device and client IP (firewall clues).
//! - [`publish`] — verify and publish a release atomically.
//! - [`catalog`] — what a device should fetch now (db + rollout policy).
//! - [`network`] — the firewall rules an IQ needs, from the FTPS config. Pure.
//! - [`probe`] — the built-in probe account and file that `fwdist doctor` reads. Pure.
//! - [`ftps`] — the libunftp FTPS front for IQs.
//! - [`iq`] — the reference IQ client (`fwdist fetch`).
//! - [`api`] — the axum admin API.
//! - [`config`], [`telemetry`], [`app`], [`cli`] — the binary's edge.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod diagnostics;
pub mod domain;
pub mod ftps;
pub mod network;
pub mod secret;
pub mod services;
pub mod store;
pub mod telemetry;
