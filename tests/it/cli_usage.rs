//! The CLI's edges (SPEC §2): `--help`, clean failures without panics, `token create` next to
//! a running server, and `serve` refusing a busy port with a clear error.

use std::fs;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{config_toml, free_ports, image, run_cli, spawn_app};

#[tokio::test]
async fn bad_input_fails_cleanly_without_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for cmd in [
        &["--help"][..],
        &["serve", "--help"],
        &["keygen", "--help"],
        &["sign", "--help"],
        &["verify", "--help"],
        &["token", "create", "--help"],
    ] {
        run_cli(dir, cmd).await.assert_ok();
    }
    // Usage errors (clap may print a usage block): non-zero, no panic.
    for args in [
        &["frobnicate"][..],
        &["sign"],
        &["keygen"],
        &["token", "create", "--name", "x"],
        &["sign", "--sequence", "abc"],
    ] {
        run_cli(dir, args).await.assert_failed(false);
    }
    run_cli(dir, &["keygen", "--out", "release"]).await.assert_ok();
    fs::write(dir.join("fw.bin"), image(1000, 63)).unwrap();
    let sign = |key: &'static str,
                model: &'static str,
                version: &'static str,
                seq: &'static str,
                img: &'static str| {
        [
            "sign",
            "--key",
            key,
            "--model",
            model,
            "--version",
            version,
            "--sequence",
            seq,
            img,
        ]
    };
    // User errors: exactly one line on stderr.
    for args in [
        sign("missing.key", "iq2", "1.0.0", "1", "fw.bin"),
        sign("release.pub", "iq2", "1.0.0", "1", "fw.bin"),
        sign("fw.bin", "iq2", "1.0.0", "1", "fw.bin"),
        sign("release.key", "iq2", "1.0.0", "1", "missing.bin"),
        sign("release.key", "IQ 2", "1.0.0", "1", "fw.bin"),
        sign("release.key", "iq2", "one.two", "1", "fw.bin"),
    ] {
        run_cli(dir, &args).await.assert_failed(true);
    }
    let expires = [
        "sign",
        "--key",
        "release.key",
        "--model",
        "iq2",
        "--version",
        "1.0.0",
        "--sequence",
        "1",
        "--expires",
        "tomorrow",
        "fw.bin",
    ];
    run_cli(dir, &expires).await.assert_failed(true);
    run_cli(
        dir,
        &[
            "token",
            "create",
            "--name",
            "x",
            "--role",
            "root",
            "--config",
            "fwdist.toml",
        ],
    )
    .await
    .assert_failed(false);
    run_cli(dir, &["serve", "--config", "does-not-exist.toml"])
        .await
        .assert_failed(true);
}

#[tokio::test]
async fn token_create_works_while_the_server_runs() {
    let app = spawn_app().await;
    let token = app.cli_token("ci-bot", "viewer").await;
    assert!(token.len() >= 16, "token: {token:?}");
    let (status, body) = app
        .request(Method::GET, "/api/v1/releases", Some(&token), None)
        .await;
    assert_eq!(status, 200, "new viewer token reads: {body}");
    let (status, _) = app
        .request(
            Method::POST,
            "/api/v1/devices",
            Some(&token),
            Some(json!({"id": "aa:bb:cc:06:00:01", "model": "iq2"})),
        )
        .await;
    assert_eq!(status, 403, "viewer token cannot write");
    let admin = app.cli_token("ci-admin", "admin").await;
    assert_ne!(admin, token, "tokens are unique");
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/devices",
            Some(&admin),
            Some(json!({"id": "aa:bb:cc:06:00:01", "model": "iq2"})),
        )
        .await;
    assert_eq!(status, 201, "new admin token writes: {body}");
    for entry in fs::read_dir(app.path("firmware-store")).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("fwdist.sqlite") {
            let db = fs::read(entry.path()).unwrap();
            assert!(
                !db.windows(token.len()).any(|w| w == token.as_bytes()),
                "token stored in clear in {entry:?}"
            );
        }
    }
    let out = app
        .cli(&[
            "token",
            "create",
            "--name",
            "bad",
            "--role",
            "superuser",
            "--config",
            "fwdist.toml",
        ])
        .await;
    out.assert_failed(false);
}

#[tokio::test]
async fn serve_on_a_busy_port_exits_with_a_clear_error() {
    for busy in ["ftps", "admin"] {
        let tmp = tempfile::tempdir().unwrap();
        let (ftp, api, passive, _ports) = free_ports();
        let taken = if busy == "ftps" { ftp } else { api };
        let _holder = std::net::TcpListener::bind(taken).unwrap();
        fs::write(tmp.path().join("fwdist.toml"), config_toml(ftp, api, passive)).unwrap();
        let out = run_cli(tmp.path(), &["serve", "--config", "fwdist.toml"]).await;
        let ctx = format!(
            "{busy} port {taken} busy:\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        assert!(!out.success, "{ctx}");
        assert!(!out.stderr.contains("panicked"), "no panic: {ctx}");
        let last = out.stderr.trim().lines().last().unwrap_or_default();
        assert!(
            last.contains(&taken.port().to_string()),
            "last stderr line names the port: {ctx}"
        );
    }
}
