//! `fwdist devices import` and a small `fwdist simulate` run: many IQs, zero errors.

use std::fs;

use serde_json::json;

use crate::helpers::{image, spawn_app};

#[tokio::test]
async fn import_is_all_or_nothing_and_prints_secrets_once() {
    let app = spawn_app().await;
    fs::write(
        app.path("fleet.csv"),
        "id,model,labels\naa:bb:cc:10:00:01,iq2,site-a\nAA-BB-CC-10-00-02,iq2\n",
    )
    .unwrap();
    let out = app
        .cli(&["devices", "import", "fleet.csv", "--config", "fwdist.toml"])
        .await;
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "id,secret");
    assert!(lines[2].starts_with("aa:bb:cc:10:00:02,"), "{}", out.stdout);
    let (status, body) = app.get("/api/v1/devices/aabbcc100001").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["labels"], json!(["site-a"]));
    // A file with one known and one new device imports nothing.
    fs::write(
        app.path("more.csv"),
        "aa:bb:cc:10:00:03,iq2\naa:bb:cc:10:00:01,iq2\n",
    )
    .unwrap();
    app.cli(&["devices", "import", "more.csv", "--config", "fwdist.toml"])
        .await
        .assert_failed(true);
    let (status, _) = app.get("/api/v1/devices/aabbcc100003").await;
    assert_eq!(status, 404, "nothing of a failed import is kept");
    // A malformed line names its number.
    fs::write(app.path("bad.csv"), "aa:bb:cc:10:00:04,iq2\nnot-a-mac,iq2\n").unwrap();
    let out = app
        .cli(&["devices", "import", "bad.csv", "--config", "fwdist.toml"])
        .await;
    out.assert_failed(true);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
}

#[tokio::test]
async fn simulated_fleet_updates_without_errors() {
    let app = spawn_app().await;
    app.fleet(10, "aa:bb:cc:11:00", &image(512 << 10, 21)).await;
    let trust = app.iq_trust();
    let server = app.ftp_addr.to_string();
    let out = app
        .cli(&[
            "simulate",
            "--server",
            &server,
            "--devices",
            "creds.csv",
            "-n",
            "30",
            "-c",
            "6",
            "--retries",
            "2",
            "--trust",
            &trust,
            "--source-ips",
            "127.0.0.2-127.0.0.6",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("30 ok, 0 failed"), "{}", out.stdout);
    assert!(out.stdout.contains("errors: none"), "{}", out.stdout);
    // Every session's image download was recorded complete, from the simulated sources.
    let items = app
        .wait_downloads("model=iq2&limit=1000", |items| {
            items
                .iter()
                .filter(|d| d["file"] == "firmware.bin" && d["outcome"] == "complete")
                .count()
                >= 30
        })
        .await;
    let ips: std::collections::BTreeSet<&str> = items
        .iter()
        .filter(|d| d["file"] == "firmware.bin")
        .filter_map(|d| d["client_ip"].as_str())
        .collect();
    assert_eq!(ips.len(), 5, "sessions came from 127.0.0.2-6: {ips:?}");
}

#[tokio::test]
async fn cut_downloads_are_resumed_with_rest_on_a_schedule() {
    let app = spawn_app().await;
    let size = 4 << 20;
    app.fleet(4, "aa:bb:cc:12:00", &image(size, 22)).await;
    let trust = app.iq_trust();
    let server = app.ftp_addr.to_string();
    // 8 sessions at 20/s: the run's length is the schedule's (0.35 s) plus the sessions.
    let out = app
        .cli(&[
            "simulate",
            "--server",
            &server,
            "--devices",
            "creds.csv",
            "--rate",
            "20",
            "--duration",
            "0",
            "-c",
            "4",
            "--cut",
            "0.5",
            "--retries",
            "2",
            "--trust",
            &trust,
        ])
        .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("sessions: 0 ok, 0 failed"),
        "no sessions in 0 s: {}",
        out.stdout
    );
    let out = app
        .cli(&[
            "simulate",
            "--server",
            &server,
            "--devices",
            "creds.csv",
            "--rate",
            "20",
            "--duration",
            "1",
            "-c",
            "4",
            "--cut",
            "0.5",
            "--retries",
            "2",
            "--trust",
            &trust,
            "--report",
            "installed",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("20 ok, 0 failed"), "{}", out.stdout);
    assert!(
        out.stdout.contains("cut downloads: 10 (resumed with REST)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("reports: installed=20"), "{}", out.stdout);
    // Each cut download is an aborted record from 0 and a complete record of the tail from
    // where it stopped (half the image); the others are complete from 0.
    let image_records = |items: &[serde_json::Value], outcome: &str, from_zero: bool| {
        items
            .iter()
            .filter(|d| d["file"] == "firmware.bin" && d["outcome"] == outcome)
            .filter(|d| (d["offset"] == 0) == from_zero)
            .count()
    };
    let items = app
        .wait_downloads("model=iq2&limit=1000", |items| {
            image_records(items, "complete", true) + image_records(items, "complete", false) >= 20
                && image_records(items, "aborted", true) >= 10
        })
        .await;
    assert_eq!(image_records(&items, "complete", false), 10, "resumed tails");
    assert_eq!(image_records(&items, "complete", true), 10, "whole downloads");
    assert_eq!(image_records(&items, "aborted", false), 0);
    for d in items
        .iter()
        .filter(|d| d["file"] == "firmware.bin" && d["offset"] != 0)
    {
        assert_eq!(d["offset"], size / 2, "resumed where the cut stopped: {d}");
        assert_eq!(d["bytes"], size / 2, "{d}");
    }
    for d in items
        .iter()
        .filter(|d| d["file"] == "firmware.bin" && d["outcome"] == "aborted")
    {
        assert!(d["bytes"].as_u64() < Some(size as u64), "{d}");
    }
}
