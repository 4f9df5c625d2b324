//! `fwdist doctor HOST:PORT` against the real server: every step and every passive port of
//! a healthy server, then each way it says an update cannot work (exit 1), and bad
//! arguments (exit 2). Blocked-by-firewall ports are tested separately with network
//! namespaces; here a misannounced PASV address makes every data connection fail.

use std::net::TcpListener;

use serde_json::Value;

use crate::helpers::{CliOutput, TestApp, run_cli, spawn_app, spawn_app_with_env};

const WORKS: i32 = 0;
const BROKEN: i32 = 1;
const BAD_ARGUMENTS: i32 = 2;

async fn doctor(app: &TestApp, extra: &[&str]) -> CliOutput {
    let server = app.ftp_addr.to_string();
    let mut args = vec!["doctor", &server, "--ca", "certs/server.crt"];
    args.extend_from_slice(extra);
    app.cli(&args).await
}

fn assert_exit(out: &CliOutput, want: i32) {
    assert_eq!(
        out.code,
        Some(want),
        "{}\nstdout: {}\nstderr: {}",
        out.args,
        out.stdout,
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// The line of `step`, e.g. `ok   login: ...`.
fn line<'a>(out: &'a CliOutput, step: &str) -> &'a str {
    let needle = format!(" {step}: ");
    out.stdout
        .lines()
        .find(|l| l.get(4..).is_some_and(|rest| rest.starts_with(&needle)))
        .unwrap_or_else(|| panic!("no {step:?} line in:\n{}", out.stdout))
}

fn assert_line(out: &CliOutput, status: &str, step: &str, contains: &str) {
    let l = line(out, step);
    assert!(
        l.starts_with(status) && l.contains(contains),
        "expected `{status} {step}: …{contains}…`, got {l:?} in:\n{}",
        out.stdout
    );
}

fn passive_ports(app: &TestApp) -> std::ops::RangeInclusive<u16> {
    app.passive.0..=app.passive.1
}

#[tokio::test]
async fn doctor_passes_every_step_and_every_passive_port_of_a_healthy_server() {
    let app = spawn_app().await;
    let out = doctor(&app, &[]).await;
    assert_exit(&out, WORKS);
    for step in ["dns", "tcp", "greeting", "tls", "certificate", "login", "summary"] {
        assert_line(&out, "ok  ", step, "");
    }
    assert_line(&out, "ok  ", "greeting", "220 ");
    assert_line(&out, "ok  ", "login", "probe");
    let (first, last) = app.passive;
    assert_line(
        &out,
        "ok  ",
        "passive-range",
        &format!("{first}-{last} (SITE PORTS)"),
    );
    for p in passive_ports(&app) {
        assert_line(&out, "ok  ", &format!("port {p}"), "sha256 ok");
    }
    assert!(
        !out.stdout.contains("FAIL") && !out.stdout.contains("warn"),
        "{}",
        out.stdout
    );

    // The same as JSON, for scripts.
    let out = doctor(&app, &["--json"]).await;
    assert_exit(&out, WORKS);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "works");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["passive_range"], serde_json::json!([first, last]));
    let ports = report["ports"].as_array().unwrap();
    assert_eq!(ports.len(), passive_ports(&app).count(), "{report:#}");
    assert!(ports.iter().all(|p| p["result"] == "ok"), "{report:#}");
    assert_eq!(report["rules"], serde_json::json!([]));
}

#[tokio::test]
async fn doctor_with_device_credentials_logs_in_as_the_device() {
    let app = spawn_app().await;
    let dev = app.create_device("aa:bb:cc:0d:00:01", "iq2").await;
    let out = doctor(&app, &["--device", &dev.id, &format!("--secret={}", dev.secret)]).await;
    assert_exit(&out, WORKS);
    assert_line(&out, "ok  ", "login", &dev.id);
    for p in passive_ports(&app) {
        assert_line(&out, "ok  ", &format!("port {p}"), "directory listing over TLS");
    }

    let out = doctor(&app, &["--device", &dev.id, "--secret", "not-the-secret"]).await;
    assert_exit(&out, BROKEN);
    assert_line(&out, "ok  ", "certificate", "");
    assert_line(&out, "FAIL", "login", "wrong --device or --secret");
    assert_line(&out, "FAIL", "summary", "cannot work");
    assert!(
        !out.stdout.contains("port "),
        "stops at the login:\n{}",
        out.stdout
    );
}

#[tokio::test]
async fn doctor_says_when_the_probe_account_is_disabled() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__PROBE_ENABLED", "false")]).await;
    let out = doctor(&app, &[]).await;
    assert_exit(&out, BROKEN);
    assert_line(&out, "FAIL", "login", "the probe is disabled on this server");
}

#[tokio::test]
async fn doctor_names_the_tcp_step_when_nothing_listens_on_the_port() {
    let app = spawn_app().await;
    let free = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = app
        .cli(&["doctor", &free.to_string(), "--ca", "certs/server.crt"])
        .await;
    assert_exit(&out, BROKEN);
    assert_line(&out, "ok  ", "dns", "");
    assert_line(
        &out,
        "FAIL",
        "tcp",
        &format!("outbound TCP to {free} is blocked (refused"),
    );
    assert_line(&out, "FAIL", "tcp", &format!("tcp dport {} accept", free.port()));
    assert!(!out.stdout.contains("greeting"), "{}", out.stdout);
}

#[tokio::test]
async fn doctor_flags_a_pasv_address_that_is_not_the_servers() {
    // The server announces an address it does not listen on: every data connection an IQ
    // makes to the announced address fails, so no passive port works.
    let app = spawn_app_with_env(&[("FWDIST_FTPS__PUBLIC_HOST", "127.0.0.3")]).await;
    let out = doctor(&app, &[]).await;
    assert_exit(&out, BROKEN);
    assert_line(&out, "warn", "pasv-address", "PASV announces 127.0.0.3");
    for p in passive_ports(&app) {
        assert_line(
            &out,
            "FAIL",
            &format!("port {p}"),
            &format!("outbound TCP to 127.0.0.3:{p} is blocked"),
        );
        let rule = format!("ip daddr 127.0.0.3 tcp dport {p} accept");
        assert!(out.stdout.contains(&rule), "no rule {rule:?} in:\n{}", out.stdout);
    }
    assert_line(&out, "FAIL", "summary", "ftps.public_host");
}

#[tokio::test]
async fn doctor_refuses_bad_arguments_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(path.join("empty.pem"), "").unwrap();
    for args in [
        &["doctor", "no-port", "--ca", "empty.pem"][..],
        &["doctor", "127.0.0.1:2121"],
        &["doctor", "127.0.0.1:2121", "--ca", "empty.pem"],
        &["doctor", "127.0.0.1:2121", "--ca", "missing.pem"],
        &[
            "doctor",
            "127.0.0.1:2121",
            "--ca",
            "empty.pem",
            "--passive-ports",
            "9-1",
        ],
        &[
            "doctor",
            "127.0.0.1:2121",
            "--ca",
            "empty.pem",
            "--device",
            "not-a-mac",
            "--secret",
            "s",
        ],
    ] {
        let out = run_cli(path, args).await;
        assert_exit(&out, BAD_ARGUMENTS);
        assert!(!out.stderr.trim().is_empty(), "{}: no message", out.args);
    }
    let help = run_cli(path, &["doctor", "--help"]).await;
    assert!(
        help.stdout.contains("Exit codes") && help.stdout.contains("3  updates work but degraded"),
        "{}",
        help.stdout
    );
}
