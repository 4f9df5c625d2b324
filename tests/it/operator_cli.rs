//! The operator CLI (SPEC §12) end to end against a real server: a release engineer's
//! session (keygen, sign, publish, rollout create/show/pause/resume/phase/abort/list) and an
//! admin's (devices add, pin, unpin, report, token list/revoke), each answer in words, each
//! refusal one line with the API's status and reason and a non-zero exit.

use std::fs;

use crate::helpers::{CliOutput, TestApp, image, spawn_app};

async fn op(app: &TestApp, token: &str, args: &[&str]) -> CliOutput {
    let server = format!("http://{}", app.api_addr);
    app.cli_with_env(
        args,
        &[("FWDIST_SERVER", Some(&server)), ("FWDIST_TOKEN", Some(token))],
    )
    .await
}

/// `fwdist report` of an installed 1.0.0 for aa:bb:cc:41:00:02.
const INSTALLED_REPORT: &[&str] = &[
    "report",
    "--device",
    "aa:bb:cc:41:00:02",
    "--version",
    "1.0.0",
    "--outcome",
    "installed",
];

fn failed_with(out: &CliOutput, want: &str) {
    out.assert_failed(true);
    assert!(out.stderr.contains(want), "want {want:?} in: {}", out.stderr);
}

#[tokio::test]
async fn a_release_engineers_session_with_the_cli() {
    let app = spawn_app().await;
    let key = app.trusted_key("release").await;
    let signed = app.sign(&key, "iq2", "1.0.0", 1, &image(300_000, 1)).await;
    let dir = signed.dir.display().to_string();
    let admin = app.admin_token.clone();

    let out = op(&app, &app.publisher_token, &["publish", &dir]).await;
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], "checked iq2 1.0.0 (sequence 1, 300000 bytes); uploading",
        "plain progress off a terminal"
    );
    assert!(
        lines[1].starts_with("published iq2 1.0.0 (sequence 1, 300000 bytes, sha256 "),
        "{}",
        out.stdout
    );
    let again = op(
        &app,
        &app.publisher_token,
        &["publish", &dir, "--pub", "release.pub"],
    )
    .await;
    again.assert_ok();
    assert_eq!(
        again.stdout.lines().last(),
        Some("already published with the same bytes: iq2 1.0.0 (sequence 1)")
    );

    // Refusals: the local check before any upload, the server's 4xx after.
    let tampered = app.sign(&key, "iq2", "1.1.0", 2, &image(1000, 2)).await;
    fs::write(tampered.dir.join("firmware.bin"), image(1000, 3)).unwrap();
    let out = op(
        &app,
        &app.publisher_token,
        &["publish", &tampered.dir.display().to_string()],
    )
    .await;
    failed_with(&out, "firmware.bin: sha256 is ");
    let stale = app.sign(&key, "iq2", "0.9.0", 1, &image(1000, 4)).await;
    let out = op(
        &app,
        &app.publisher_token,
        &["publish", &stale.dir.display().to_string()],
    )
    .await;
    failed_with(
        &out,
        "422 Unprocessable Entity: sequence 1 is not above the last sequence of model iq2 (1)",
    );
    let out = op(&app, "fwd_not-a-token", &["publish", &dir]).await;
    failed_with(&out, "401 Unauthorized: missing or invalid bearer token");
    let out = app
        .cli_with_env(&["publish", &dir], &[("FWDIST_TOKEN", None)])
        .await;
    failed_with(&out, "no API token: give --token or set FWDIST_TOKEN");
    let out = op(&app, &app.viewer_token, &["publish", &dir]).await;
    failed_with(&out, "403 Forbidden: this needs the publisher role");

    // A staged rollout, steered.
    app.create_device("aa:bb:cc:40:00:01", "iq2").await;
    let out = op(
        &app,
        &admin,
        &[
            "rollout",
            "create",
            "--model",
            "iq2",
            "--version",
            "1.0.0",
            "--phases",
            "10,50,100",
            "--min-phase-secs",
            "3600",
        ],
    )
    .await;
    out.assert_ok();
    let first = out.stdout.lines().next().unwrap_or_default().to_owned();
    assert!(first.starts_with("created rollout "), "{}", out.stdout);
    assert!(
        first.ends_with(": iq2 1.0.0 at 10%, phase 0 of [10, 50, 100], active"),
        "{first}"
    );
    let id: String = first["created rollout ".len()..]
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let show = op(&app, &app.viewer_token, &["rollout", "show", &id]).await;
    show.assert_ok();
    assert!(show.stdout.contains("  pending "), "{}", show.stdout);
    assert!(show.stdout.contains("min phase 3600 s"), "{}", show.stdout);
    let paused = op(&app, &admin, &["rollout", "pause", &id]).await;
    paused.assert_ok();
    assert!(paused.stdout.contains(", paused"), "{}", paused.stdout);
    assert!(
        paused.stdout.contains("  paused: paused by it-admin"),
        "{}",
        paused.stdout
    );
    let resumed = op(&app, &admin, &["rollout", "resume", &id]).await;
    assert!(
        resumed.stdout.trim_end().ends_with(", active"),
        "{}",
        resumed.stdout
    );
    let phased = op(&app, &admin, &["rollout", "phase", &id, "1"]).await;
    phased.assert_ok();
    assert!(
        phased.stdout.contains("at 50%, phase 1 of [10, 50, 100]"),
        "{}",
        phased.stdout
    );
    let back = op(&app, &admin, &["rollout", "phase", &id, "0"]).await;
    failed_with(&back, "409 Conflict: ");
    let out = op(&app, &app.viewer_token, &["rollout", "pause", &id]).await;
    failed_with(&out, "403 Forbidden: this needs the admin role");
    let aborted = op(&app, &admin, &["rollout", "abort", &id]).await;
    assert!(
        aborted.stdout.trim_end().ends_with(", aborted"),
        "{}",
        aborted.stdout
    );
    let list = op(
        &app,
        &app.viewer_token,
        &["rollout", "list", "--state", "aborted"],
    )
    .await;
    list.assert_ok();
    let rows: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    assert!(rows[1].split_whitespace().collect::<Vec<_>>()[..4] == [id.as_str(), "iq2", "1.0.0", "aborted"]);
    let json = op(&app, &app.viewer_token, &["rollout", "show", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["state"], "aborted");
    let out = op(&app, &app.viewer_token, &["rollout", "show", "99999"]).await;
    failed_with(&out, "404 Not Found: ");
    let out = app
        .cli_with_env(
            &["rollout", "list"],
            &[
                ("FWDIST_SERVER", Some("http://127.0.0.1:9")),
                ("FWDIST_TOKEN", Some("x")),
            ],
        )
        .await;
    failed_with(&out, "http://127.0.0.1:9: cannot connect");
}

#[tokio::test]
async fn an_admins_session_with_the_cli() {
    let app = spawn_app().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    let admin = app.admin_token.clone();
    let out = op(
        &app,
        &admin,
        &[
            "devices",
            "add",
            "--model",
            "iq2",
            "--label",
            "site-a",
            "AA-BB-CC-41-00-01",
            "aabbcc410002",
        ],
    )
    .await;
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].starts_with("aa:bb:cc:41:00:01,"), "{}", lines[0]);
    assert!(lines[1].starts_with("aa:bb:cc:41:00:02,"), "{}", lines[1]);
    let (_, dev) = app.get("/api/v1/devices/aa:bb:cc:41:00:01").await;
    assert_eq!(dev["labels"], serde_json::json!(["site-a"]));
    let out = op(&app, &admin, &["devices", "add", "--model", "iq2", "not-a-mac"]).await;
    out.assert_failed(true);
    let out = op(
        &app,
        &admin,
        &["devices", "add", "--model", "iq2", "aa:bb:cc:41:00:01"],
    )
    .await;
    failed_with(
        &out,
        "device aa:bb:cc:41:00:01: 409 Conflict: device aa:bb:cc:41:00:01 already exists",
    );

    let pinned = op(
        &app,
        &admin,
        &[
            "devices",
            "pin",
            "aa:bb:cc:41:00:01",
            "1.0.0",
            "--reason",
            "ticket 9",
        ],
    )
    .await;
    pinned.assert_ok();
    assert_eq!(
        pinned.stdout.trim(),
        "pinned aa:bb:cc:41:00:01 to 1.0.0 until unpinned"
    );
    let (_, dev) = app.get("/api/v1/devices/aa:bb:cc:41:00:01").await;
    assert_eq!(dev["target"]["source"], "pin");
    let out = op(&app, &admin, &["devices", "pin", "aa:bb:cc:41:00:01", "7.7.7"]).await;
    failed_with(
        &out,
        "422 Unprocessable Entity: no release 7.7.7 of model iq2 to pin to",
    );
    let out = op(&app, &admin, &["devices", "unpin", "aa:bb:cc:41:00:01"]).await;
    out.assert_ok();
    assert_eq!(
        app.get("/api/v1/devices/aa:bb:cc:41:00:01").await.1["target"],
        serde_json::Value::Null
    );

    // A crafted MAC cannot reach another endpoint: ids are checked before any URL is built.
    for args in [
        vec!["devices", "unpin", "../tokens/1#"],
        vec!["devices", "pin", "../releases/iq2/1.0.0/yank#", "1.0.0"],
        vec![
            "report",
            "--device",
            "x/../aa:bb:cc:41:00:01/secret#",
            "--version",
            "1.0.0",
            "--outcome",
            "installed",
        ],
    ] {
        let out = op(&app, &admin, &args).await;
        failed_with(&out, "invalid device id");
    }
    assert_eq!(app.get("/api/v1/whoami").await.0, 200, "no token was revoked");
    let (_, rel) = app.get("/api/v1/releases/iq2/1.0.0").await;
    assert_eq!(rel["yanked"], false, "no release was yanked");
    let out = op(
        &app,
        &admin,
        &[
            "rollout",
            "create",
            "--model",
            "iq2",
            "--version",
            "1.0.0",
            "--percent",
            "NaN",
        ],
    )
    .await;
    out.assert_failed(false);
    assert!(out.stderr.contains("is not a finite number"), "{}", out.stderr);

    let reporter = app.create_token("ks-backend", "reporter").await;
    let out = op(&app, &reporter, INSTALLED_REPORT).await;
    out.assert_ok();
    assert!(
        out.stdout.starts_with("report ")
            && out
                .stdout
                .trim_end()
                .ends_with("stored: aa:bb:cc:41:00:02 1.0.0 installed"),
        "{}",
        out.stdout
    );
    let out = op(
        &app,
        &reporter,
        &[
            "report",
            "--device",
            "aa:bb:cc:41:00:02",
            "--version",
            "9.9.9",
            "--outcome",
            "failed",
        ],
    )
    .await;
    failed_with(&out, "422 Unprocessable Entity: ");

    let list = op(&app, &admin, &["token", "list"]).await;
    list.assert_ok();
    assert!(!list.stdout.contains(&reporter), "a token printed by token list");
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains("ks-backend"))
        .unwrap()
        .to_owned();
    let id = row.split_whitespace().next().unwrap().to_owned();
    let out = op(&app, &admin, &["token", "revoke", &id]).await;
    out.assert_ok();
    let out = op(&app, &reporter, INSTALLED_REPORT).await;
    failed_with(&out, "401 Unauthorized");
    let out = op(&app, &admin, &["token", "revoke", &id]).await;
    failed_with(&out, "404 Not Found: no such token");
}
