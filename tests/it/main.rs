//! Black-box integration tests for `fwdist`: every test starts the server in a fresh
//! temporary directory (see `helpers::spawn_app`) and talks to it the way its users do — the
//! CLI, the admin HTTP API, FTPS (suppaftp over rustls), curl and python's ftplib.
//!
//! Set `TEST_LOG=1` to print each server's log after its test (it is always printed when the
//! test fails), and `IT_SERVER_RUST_LOG` to change the servers' `RUST_LOG` (default `info`).

// Test helpers outside `#[test]` fns panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_listener;
mod api;
mod api_rules;
mod cli;
mod cli_usage;
mod crash;
mod dashboard;
mod dashboard_api;
mod doctor;
mod external_clients;
mod fetch;
mod firewall;
mod flushing_tls;
mod front;
mod ftp_client;
mod ftps;
mod fuzz_corpus;
mod helpers;
mod logs;
mod metrics;
mod network_requirements;
mod oneport;
mod openapi;
mod operator;
mod operator_cli;
mod passive;
mod raw_ctl;
mod releases;
mod replies;
mod reports;
mod robustness;
mod rollouts;
mod s3;
mod scaleout;
mod schema;
mod simulate;
mod staged;
mod story;
mod tls;
mod vsftpd;
