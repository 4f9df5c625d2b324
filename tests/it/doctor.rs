//! `fwdist doctor HOST:PORT` against the real server: every step and every passive port of
//! a healthy server (a range, and one port: `passive_ports = "same"`), then each way it says an update cannot work (exit 1), and bad
//! arguments (exit 2). Blocked-by-firewall ports are tested separately with network
//! namespaces; here a misannounced PASV address makes every data connection fail.
//!
//! Trust: the system's roots by default (the machine's real store for the refusal; a store
//! named by `SSL_CERT_FILE`, which rustls-native-certs reads instead, for the success and
//! for an empty store), `--ca` pinned instead, and `--insecure` going on past a refused
//! certificate (exit 4 at best).

use std::net::TcpListener;

use serde_json::Value;

use crate::helpers::{CliOutput, TestApp, run_cli, run_cli_with_env, spawn_app, spawn_app_with_env};

const WORKS: i32 = 0;
const BROKEN: i32 = 1;
const BAD_ARGUMENTS: i32 = 2;
const UNTRUSTED: i32 = 4;

/// The dev server's self-signed certificate, refused by a store that does not hold it.
const SELF_SIGNED_REFUSED: &str = "CN=rcgen self signed cert: untrusted: unknown issuer: it is \
    self-signed, so none of the system's trust roots vouches for it (pin it with --ca FILE)";

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
    assert_eq!(report["passive_mode"], "range");
    assert_eq!(report["passive_range"], serde_json::json!([first, last]));
    let ports = report["ports"].as_array().unwrap();
    assert_eq!(ports.len(), passive_ports(&app).count(), "{report:#}");
    assert!(ports.iter().all(|p| p["result"] == "ok"), "{report:#}");
    assert_eq!(report["rules"], serde_json::json!([]));
}

#[tokio::test]
async fn doctor_passes_a_one_port_server_over_its_control_port() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__PASSIVE_PORTS", "same")]).await;
    let port = app.ftp_addr.port();
    let out = doctor(&app, &[]).await;
    assert_exit(&out, WORKS);
    assert_exact(
        &out,
        "passive-range",
        &format!("ok   passive-range: one port: data connections use the control port {port} (SITE PORTS)"),
    );
    let port_lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.get(5..).is_some_and(|r| r.starts_with("port ")))
        .collect();
    assert_eq!(port_lines.len(), 1, "one port line:\n{}", out.stdout);
    assert_line(&out, "ok  ", &format!("port {port}"), "sha256 ok");
    assert_exact(
        &out,
        "summary",
        &format!("ok   summary: an IQ update works from here: one port, {port}, carries control and data"),
    );
    assert!(
        !out.stdout.contains("FAIL") && !out.stdout.contains("warn"),
        "{}",
        out.stdout
    );

    let out = doctor(&app, &["--json"]).await;
    assert_exit(&out, WORKS);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "works");
    assert_eq!(report["passive_mode"], "same", "{report:#}");
    assert_eq!(report["passive_range"], serde_json::json!([port, port]));
    let ports = report["ports"].as_array().unwrap();
    assert!(
        ports.len() == 1 && ports[0]["port"] == port && ports[0]["result"] == "ok",
        "{report:#}"
    );
    assert_eq!(report["untested"], serde_json::json!([]));

    // A range on the command line cannot make it hand out other ports: said, and ignored.
    let out = doctor(&app, &["--passive-ports", "50000-50003"]).await;
    assert_exit(&out, WORKS);
    assert_line(
        &out,
        "warn",
        "passive-range",
        "--passive-ports 50000-50003 ignored: this server hands out no other port",
    );
    assert_line(&out, "ok  ", &format!("port {port}"), "sha256 ok");
    assert!(!out.stdout.contains("port 50000"), "{}", out.stdout);
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

    // With --insecure past an untrusted certificate, the network problem outranks it (exit
    // 1), and both are said.
    let server = app.ftp_addr.to_string();
    let other = other_ca(&app);
    let out = app.cli(&["doctor", &server, "--ca", &other, "--insecure"]).await;
    assert_exit(&out, BROKEN);
    assert_line(&out, "FAIL", "certificate", "NOT trusted");
    for p in passive_ports(&app) {
        assert_line(&out, "FAIL", &format!("port {p}"), "is blocked");
    }
    assert_line(
        &out,
        "FAIL",
        "summary",
        "no passive port works; the certificate is NOT trusted either (--insecure went on past it)",
    );
}

#[tokio::test]
async fn doctor_refuses_bad_arguments_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(path.join("empty.pem"), "").unwrap();
    for args in [
        &["doctor", "no-port", "--ca", "empty.pem"][..],
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
        help.stdout.contains("Exit codes")
            && help.stdout.contains("3  updates work but degraded")
            && help
                .stdout
                .contains("4  only with --insecure: the certificate is NOT trusted")
            && help.stdout.contains("system's trust roots"),
        "{}",
        help.stdout
    );
}

/// The exact line of `step`.
fn assert_exact(out: &CliOutput, step: &str, want: &str) {
    assert_eq!(
        line(out, step),
        want,
        "in:\n{}\nstderr: {}",
        out.stdout,
        out.stderr
    );
}

/// The store rustls-native-certs reads: only `file` (no directory).
fn store(file: &str) -> [(&'static str, Option<&str>); 2] {
    [("SSL_CERT_FILE", Some(file)), ("SSL_CERT_DIR", None)]
}

/// A CA of its own name that never issued the server's certificate, as PEM in the app dir.
fn other_ca(app: &TestApp) -> String {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "some other CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let path = app.path("other-ca.pem");
    std::fs::write(&path, p.self_signed(&key).unwrap().pem()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn doctor_trusts_the_system_roots_by_default() {
    let app = spawn_app().await;
    let server = app.ftp_addr.to_string();

    // The machine's own store (as installed: .ci/run makes sure it has one) does not hold
    // the dev server's self-signed certificate: refused, and the run stops there.
    let platform = [("SSL_CERT_FILE", None), ("SSL_CERT_DIR", None)];
    let out = app.cli_with_env(&["doctor", &server], &platform).await;
    assert_exit(&out, BROKEN);
    assert_exact(
        &out,
        "tls",
        "ok   tls: AUTH TLS accepted; the handshake stopped at the certificate",
    );
    assert_exact(
        &out,
        "certificate",
        &format!("FAIL certificate: {SELF_SIGNED_REFUSED}"),
    );
    assert_exact(
        &out,
        "summary",
        "FAIL summary: an IQ update cannot work from here (see the FAIL above)",
    );
    assert!(
        !out.stdout.contains("login"),
        "stops at the certificate:\n{}",
        out.stdout
    );

    // A store that holds it (SSL_CERT_FILE replaces the platform's): every step passes.
    let ca = app.path("certs/server.crt").display().to_string();
    let out = app.cli_with_env(&["doctor", &server], &store(&ca)).await;
    assert_exit(&out, WORKS);
    assert_line(
        &out,
        "ok  ",
        "certificate",
        "CN=rcgen self signed cert: chains to the system's trust roots, valid for 127.0.0.1, expires ",
    );
    for p in passive_ports(&app) {
        assert_line(&out, "ok  ", &format!("port {p}"), "sha256 ok");
    }
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
    let out = app
        .cli_with_env(&["doctor", &server, "--json"], &store(&ca))
        .await;
    assert_exit(&out, WORKS);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["roots"], "system");
    assert_eq!(report["insecure"], false);
    assert_eq!(report["verdict"], "works");
}

#[tokio::test]
async fn doctor_says_in_one_line_when_the_system_store_has_no_usable_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(path.join("empty.pem"), "").unwrap();
    let empty = path.join("empty.pem").display().to_string();
    let missing = path.join("missing.pem").display().to_string();
    for (file, insecure) in [(&empty, false), (&missing, false), (&empty, true)] {
        let mut args = vec!["doctor", "127.0.0.1:9"];
        if insecure {
            args.push("--insecure");
        }
        let out = run_cli_with_env(path, &args, &store(file)).await;
        assert_exit(&out, BAD_ARGUMENTS);
        let want = format!(
            "fwdist doctor: no usable trust roots in the system's certificate store (SSL_CERT_FILE={file}"
        );
        assert!(
            out.stderr.trim().lines().count() == 1
                && out.stderr.starts_with(&want)
                && out.stderr.contains("give the server's CA with --ca FILE"),
            "{}\nstderr: {}",
            out.args,
            out.stderr
        );
        assert_eq!(out.stdout, "", "nothing was checked");
    }
}

#[tokio::test]
async fn doctor_insecure_shows_the_certificate_problem_and_runs_the_rest() {
    let app = spawn_app().await;
    let server = app.ftp_addr.to_string();
    let other = other_ca(&app);
    let out = app
        .cli_with_env(&["doctor", &server, "--insecure"], &store(&other))
        .await;
    assert_exit(&out, UNTRUSTED);
    assert_line(&out, "ok  ", "tls", "AUTH TLS, ");
    assert_exact(
        &out,
        "certificate",
        &format!(
            "FAIL certificate: NOT trusted, an IQ would refuse it (going on: --insecure): \
             {SELF_SIGNED_REFUSED}"
        ),
    );
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
    assert_exact(
        &out,
        "summary",
        &format!(
            "FAIL summary: an IQ update cannot work from here until the certificate is trusted (see \
             the certificate FAIL above); the rest, checked because of --insecure: all {} passive \
             ports pass",
            passive_ports(&app).count()
        ),
    );

    let out = app
        .cli_with_env(&["doctor", &server, "--insecure", "--json"], &store(&other))
        .await;
    assert_exit(&out, UNTRUSTED);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "untrusted");
    assert_eq!(report["exit_code"], UNTRUSTED);
    assert_eq!(report["insecure"], true);
    let ports = report["ports"].as_array().unwrap();
    assert!(
        ports.len() == passive_ports(&app).count() && ports.iter().all(|p| p["result"] == "ok"),
        "{report:#}"
    );
}

#[tokio::test]
async fn doctor_with_ca_and_insecure_pins_and_goes_on() {
    let app = spawn_app().await;
    let server = app.ftp_addr.to_string();
    let other = other_ca(&app);

    // Pinned to the right CA: nothing to go past; --insecure changes nothing.
    let out = app
        .cli(&["doctor", &server, "--ca", "certs/server.crt", "--insecure"])
        .await;
    assert_exit(&out, WORKS);
    assert_line(
        &out,
        "ok  ",
        "certificate",
        "CN=rcgen self signed cert: chains to --ca, valid for 127.0.0.1",
    );
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);

    // Pinned to a CA that did not issue it: refused even though the system store would not
    // matter, and the run stops there...
    let refused = "CN=rcgen self signed cert: untrusted: not issued by a certificate in --ca (it is \
                   self-signed: wrong --ca, or a TLS-inspecting middlebox)";
    let out = app.cli(&["doctor", &server, "--ca", &other]).await;
    assert_exit(&out, BROKEN);
    assert_exact(&out, "certificate", &format!("FAIL certificate: {refused}"));
    assert!(!out.stdout.contains("login"), "{}", out.stdout);

    // ...unless --insecure: the same problem said, the rest checked, exit 4.
    let out = app.cli(&["doctor", &server, "--ca", &other, "--insecure"]).await;
    assert_exit(&out, UNTRUSTED);
    assert_exact(
        &out,
        "certificate",
        &format!("FAIL certificate: NOT trusted, an IQ would refuse it (going on: --insecure): {refused}"),
    );
    assert_line(&out, "ok  ", "login", "probe");
    for p in passive_ports(&app) {
        assert_line(&out, "ok  ", &format!("port {p}"), "sha256 ok");
    }
    assert_line(&out, "FAIL", "summary", "until the certificate is trusted");
}
