//! Staged rollouts (SPEC §8) end to end, over real FTPS: simulated IQs download and report,
//! and the server advances or pauses the rollout by itself; label cohorts, bake time,
//! schedules, phase changes, a yank mid-rollout, and the per-device states.

use std::fs;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, image, spawn_app};
use crate::raw_ctl::RawCtl;

/// Publishes iq2 1.0.0 and imports `n` devices `<prefix>:XX` (labels from `label(i)`);
/// their `id,secret` lines go to `creds.csv`.
async fn fleet(app: &TestApp, n: usize, prefix: &str, label: impl Fn(usize) -> &'static str) {
    app.publish("iq2", "1.0.0", 1, &image(64 * 1024, 30)).await;
    let csv: String = (0..n)
        .map(|i| format!("{prefix}:{i:02x},iq2,{}\n", label(i)))
        .collect();
    fs::write(app.path("fleet.csv"), csv).unwrap();
    let out = app
        .cli(&["devices", "import", "fleet.csv", "--config", "fwdist.toml"])
        .await;
    out.assert_ok();
    fs::write(app.path("creds.csv"), &out.stdout).unwrap();
}

/// One pass of every device through `fwdist simulate` (those with no update count apart).
pub async fn simulate(app: &TestApp, n: usize, report: &str) -> String {
    let server = app.ftp_addr.to_string();
    let n = n.to_string();
    let out = app
        .cli(&[
            "simulate",
            "--server",
            &server,
            "--devices",
            "creds.csv",
            "-n",
            &n,
            "-c",
            "10",
            "--report",
            report,
            "--retries",
            "2",
            "--ca",
            "certs/server.crt",
        ])
        .await;
    assert!(out.success, "simulate: {}\n{}", out.stdout, out.stderr);
    out.stdout
}

async fn rollout(app: &TestApp, id: i64) -> Value {
    let (status, r) = app.get(&format!("/api/v1/rollouts/{id}")).await;
    assert_eq!(status, 200, "{r}");
    r
}

/// Polls the rollout until `pred` holds (the automatic steps run every second); panics
/// after 10 s with the last answer.
async fn wait_rollout(app: &TestApp, id: i64, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rollout(app, id).await;
        if pred(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "rollout never got there: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase_line(r: &Value) -> String {
    format!(
        "phase {} ({}%): state {}, targeted {}, states {}",
        r["phase"], r["percent"], r["state"], r["status"]["targeted"], r["status"]["states"]
    )
}

#[tokio::test]
async fn a_staged_rollout_advances_by_itself_to_100_percent() {
    let app = spawn_app().await;
    fleet(&app, 60, "aa:bb:cc:17:00", |_| "").await;
    let id = app
        .rollout(
            json!({"model": "iq2", "version": "1.0.0", "phases": [10, 50, 100], "success_threshold": 0.5}),
        )
        .await;
    let r = rollout(&app, id).await;
    assert_eq!(
        (&r["phases"], &r["phase"], &r["percent"], &r["state"]),
        (
            &json!([10.0, 50.0, 100.0]),
            &json!(0),
            &json!(10.0),
            &json!("active")
        )
    );
    let mut seen = Vec::new();
    for phase in 0..3 {
        let out = simulate(&app, 60, "installed").await;
        let r = wait_rollout(&app, id, |r| {
            if phase < 2 {
                r["phase"].as_u64() > Some(phase)
            } else {
                r["status"]["states"]["installed"] == r["status"]["targeted"]
            }
        })
        .await;
        // The phase just completed, as the server reports it once it advanced.
        seen.push(format!(
            "after pass {}: {} | simulate: {}",
            phase + 1,
            phase_line(&r),
            out.lines()
                .filter(|l| l.starts_with("no update") || l.starts_with("reports"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    println!("{}", seen.join("\n"));
    let r = rollout(&app, id).await;
    assert_eq!(
        (&r["phase"], &r["percent"], &r["state"]),
        (&json!(2), &json!(100.0), &json!("active")),
        "{r}"
    );
    assert_eq!(r["status"]["targeted"], 60, "{r}");
    assert_eq!(r["status"]["states"]["installed"], 60, "{r}");
    let (_, dev) = app.get("/api/v1/devices/aa:bb:cc:17:00:00").await;
    assert_eq!(dev["installed_version"], "1.0.0", "{dev}");
}

#[tokio::test]
async fn twenty_percent_failures_pause_the_rollout_with_its_reason() {
    let app = spawn_app().await;
    fleet(&app, 50, "aa:bb:cc:18:00", |_| "").await;
    let id = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "phases": [100], "failure_threshold": 0.1}))
        .await;
    let out = simulate(&app, 50, "mix:0.2").await;
    let r = wait_rollout(&app, id, |r| r["state"] == "paused").await;
    println!(
        "{} | reason: {} | simulate: {out}",
        phase_line(&r),
        r["paused_reason"]
    );
    let failed = r["status"]["states"]["failed"].as_u64().unwrap();
    // The reason has the counts when it paused (sessions under way still report after).
    let reason = r["paused_reason"].as_str().unwrap();
    let at_pause: u64 = reason
        .strip_prefix("failure threshold: ")
        .and_then(|x| x.split_once(" of 50 selected devices failed ("))
        .and_then(|(n, rest)| rest.ends_with("% ≥ 10%)").then_some(n))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!((5..=failed).contains(&at_pause), "{reason} / {failed} failed now");
    assert_eq!(r["phase"], 0, "no further phase opened: {r}");
    // Paused: nobody is offered the release any more.
    let out = simulate(&app, 50, "installed").await;
    assert!(out.contains("no update: 50 sessions"), "{out}");
    assert_eq!(
        rollout(&app, id).await["status"]["states"]["failed"],
        failed,
        "nothing moved"
    );
    // The failed devices, with what they reported.
    let (status, page) = app
        .get(&format!("/api/v1/rollouts/{id}/devices?state=failed&limit=100"))
        .await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len() as u64, failed);
    for it in items {
        assert_eq!(it["state"], "failed");
        assert_eq!(it["last_report"]["outcome"], "failed", "{it}");
        assert_eq!(it["last_report"]["source"], "ftps", "{it}");
        assert_eq!(it["last_download"]["outcome"], "complete", "{it}");
        assert_eq!(it["last_download"]["file"], "firmware.bin", "{it}");
    }
    // Resuming with failures still over the threshold pauses again at once; raising the
    // threshold in the same PATCH keeps it running.
    let (status, r) = app
        .patch(&format!("/api/v1/rollouts/{id}"), json!({"state": "active"}))
        .await;
    assert_eq!((status, &r["state"]), (200, &json!("paused")), "{r}");
    let (status, r) = app
        .patch(
            &format!("/api/v1/rollouts/{id}"),
            json!({"state": "active", "failure_threshold": 0.5}),
        )
        .await;
    assert_eq!(
        (status, &r["state"], &r["paused_reason"]),
        (200, &json!("active"), &Value::Null),
        "{r}"
    );
}

#[tokio::test]
async fn bake_time_schedules_phase_changes_and_cohorts() {
    let app = spawn_app().await;
    fleet(&app, 20, "aa:bb:cc:19:00", |i| {
        if i % 2 == 0 { "site-a" } else { "site-b" }
    })
    .await;
    let reporter = app.create_token("ks", "reporter").await;
    let report = |id: String| {
        let (app, reporter) = (&app, reporter.clone());
        async move {
            let path = format!("/api/v1/devices/{id}/reports");
            let (status, body) = app
                .request(
                    Method::POST,
                    &path,
                    Some(&reporter),
                    Some(json!({"version": "1.0.0", "outcome": "installed"})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
    };
    // A cohort: only site-a devices are eligible; min_phase_secs holds phase 0.
    let id = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "labels": ["site-a"], "phases": [50, 100], "min_phase_secs": 2}))
        .await;
    let (_, listed) = app.get("/api/v1/devices?label=site-a&limit=100").await;
    let site_a: Vec<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(site_a.len(), 10);
    let opened = Instant::now();
    for d in &site_a {
        report(d.clone()).await;
    }
    let r = rollout(&app, id).await;
    if opened.elapsed() < Duration::from_millis(1500) {
        assert_eq!(r["phase"], 0, "bake time holds the phase: {r}");
    }
    let r = wait_rollout(&app, id, |r| r["phase"] == 1).await;
    assert!(
        opened.elapsed() >= Duration::from_secs(2),
        "not before the bake time"
    );
    assert_eq!(r["status"]["targeted"], 10, "site-b is not in the cohort: {r}");
    let (_, b) = app.get("/api/v1/devices/aa:bb:cc:19:00:01").await;
    assert_eq!(b["target"], Value::Null, "{b}");
    // Phases only go forward; percent does not apply to a phased rollout.
    let path = format!("/api/v1/rollouts/{id}");
    let (status, body) = app.patch(&path, json!({"phase": 0})).await;
    assert_eq!(
        (status, body),
        (
            409,
            json!({"error": format!("rollout {id} is at phase 1; phases only go forward")})
        )
    );
    let (status, _) = app.patch(&path, json!({"percent": 30})).await;
    assert_eq!(status, 422);

    // A scheduled rollout selects nobody until its start.
    let start = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let start = start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    app.publish("iq2", "1.1.0", 2, &image(1000, 31)).await;
    let later = app
        .rollout(json!({"model": "iq2", "version": "1.1.0", "percent": 100, "start_at": start}))
        .await;
    let r = rollout(&app, later).await;
    assert_eq!(
        (&r["state"], &r["status"]["targeted"]),
        (&json!("scheduled"), &json!(0)),
        "{r}"
    );
    let (_, b) = app.get("/api/v1/devices/aa:bb:cc:19:00:01").await;
    assert_eq!(b["target"], Value::Null, "not yet: {b}");
    let (_, list) = app.get("/api/v1/rollouts?state=scheduled").await;
    let ids: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&json!(later)], "{list}");
    let (status, body) = app.get("/api/v1/rollouts?state=soon").await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "invalid state \"soon\": expected scheduled, active, paused or aborted"})
        )
    );
    wait_rollout(&app, later, |r| r["state"] == "active").await;
    let (_, b) = app.get("/api/v1/devices/aa:bb:cc:19:00:01").await;
    assert_eq!(b["target"]["version"], "1.1.0", "started on time: {b}");
    let (status, _) = app
        .patch(&format!("/api/v1/rollouts/{later}"), json!({"phase": 1}))
        .await;
    assert_eq!(status, 422, "no phases");
}

#[tokio::test]
async fn a_yank_mid_rollout_gives_the_next_download_550() {
    let app = spawn_app().await;
    fleet(&app, 2, "aa:bb:cc:1a:00", |_| "").await;
    let creds = fs::read_to_string(app.path("creds.csv")).unwrap();
    let (id, secret) = creds.lines().nth(1).unwrap().split_once(',').unwrap();
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "phases": [100]}))
        .await;
    let mut ctl = RawCtl::login(&app, id, secret).await;
    assert_eq!(ctl.cmd("SIZE /target/manifest.json").await.0, 213);
    let (status, _) = app.post("/api/v1/releases/iq2/1.0.0/yank", json!({})).await;
    assert_eq!(status, 200);
    let _data = ctl.pasv().await;
    let (code, text) = ctl.cmd("RETR /releases/1.0.0/firmware.bin").await;
    assert_eq!((code, text.as_str()), (550, "550 File not found\r\n"));
    assert_eq!(ctl.cmd("SIZE /target/manifest.json").await.0, 550);
}
