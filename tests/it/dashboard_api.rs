//! The endpoints the dashboard added (issue 13), against a real server: `/fleet` counts
//! models, installed versions, silent devices and activity; `/sites` names each failure with
//! the rule that fixes it and the doctor command; `/rollouts/{id}/history` samples a rollout's
//! counts and marks each phase. Also the helpers the dashboard's browser test shares.

use std::fs;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, image, spawn_app};
use crate::raw_ctl::RawCtl;

/// Publishes iq2 1.0.0 and imports `n` devices `<prefix>:XX`; `id,secret` lines in
/// `creds.csv`.
pub async fn fleet(app: &TestApp, n: usize, prefix: &str) {
    app.publish("iq2", "1.0.0", 1, &image(64 * 1024, 13)).await;
    let csv: String = (0..n)
        .map(|i| format!("{prefix}:{i:02x},iq2,site-{}\n", i % 3))
        .collect();
    fs::write(app.path("fleet.csv"), csv).unwrap();
    let out = app
        .cli(&["devices", "import", "fleet.csv", "--config", "fwdist.toml"])
        .await;
    out.assert_ok();
    fs::write(app.path("creds.csv"), &out.stdout).unwrap();
}

/// One pass of every device through `fwdist simulate` (the staged-rollout tests' runner).
pub async fn simulate(app: &TestApp, n: usize, report: &str) {
    crate::staged::simulate(app, n, report).await;
}

/// Polls `GET path` until `pred` holds (20 s).
pub async fn wait_api(app: &TestApp, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {v}");
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Leaves a passive offer unused (a firewall that drops the port, as the server sees it):
/// the client address then shows on the Sites page. Takes the 5 s data-connection timeout.
pub async fn unused_offer(app: &TestApp, id: &str, secret: &str) {
    let mut ctl = RawCtl::login(app, id, secret).await;
    let (code, text) = ctl.cmd("PASV").await;
    assert_eq!(code, 227, "{text}");
    let (code, text) = ctl.cmd("RETR /target/manifest.json").await;
    assert_eq!(code, 150, "{text}");
    let (code, text) = ctl.reply().await;
    assert_eq!(code, 425, "{text}");
}

pub fn creds(app: &TestApp, line: usize) -> (String, String) {
    let csv = fs::read_to_string(app.path("creds.csv")).unwrap();
    let l = csv.lines().skip(1).nth(line).unwrap(); // after the `id,secret` header
    let (id, secret) = l.split_once(',').unwrap();
    (id.to_owned(), secret.to_owned())
}

#[tokio::test]
async fn fleet_counts_models_versions_silent_devices_and_activity() {
    let app = spawn_app().await;
    app.publish("iq2", "1.0.0", 1, &image(4096, 1)).await;
    for (mac, model) in [
        ("aa:bb:cc:32:00:01", "iq2"),
        ("aa:bb:cc:32:00:02", "iq2"),
        ("aa:bb:cc:32:00:03", "iq3"),
    ] {
        app.create_device(mac, model).await;
    }
    for (mac, outcome) in [
        ("aa:bb:cc:32:00:01", "installed"),
        ("aa:bb:cc:32:00:02", "failed"),
    ] {
        let (status, body) = app
            .post(
                &format!("/api/v1/devices/{mac}/reports"),
                json!({"version": "1.0.0", "outcome": outcome}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, f) = app.get("/api/v1/fleet?stale_days=1").await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["devices"], 3, "{f}");
    assert_eq!(
        f["models"],
        json!([
            {"model": "iq2", "devices": 2, "versions": [{"version": null, "devices": 1}, {"version": "1.0.0", "devices": 1}]},
            {"model": "iq3", "devices": 1, "versions": [{"version": null, "devices": 1}]},
        ]),
        "{f}"
    );
    assert_eq!(f["stale"]["days"], 1);
    assert_eq!(f["stale"]["devices"], 1, "only the one that never reported: {f}");
    assert_eq!(
        f["stale"]["listed"],
        json!([{"id": "aa:bb:cc:32:00:03", "model": "iq3", "last_report_at": null}])
    );
    let hours = f["last_24h"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(f["last_7d"].as_array().unwrap().len(), 7);
    assert_eq!(hours[23]["failed_reports"], 1, "this hour's failed report: {f}");
    let failed: u64 = hours.iter().map(|b| b["failed_reports"].as_u64().unwrap()).sum();
    assert_eq!(failed, 1);
    // The counts follow a newer install and a deletion (another `stale_days`: not the
    // answer reused from above).
    app.publish("iq2", "1.1.0", 2, &image(4096, 3)).await;
    let (status, body) = app
        .post(
            "/api/v1/devices/aa:bb:cc:32:00:01/reports",
            json!({"version": "1.1.0", "outcome": "installed"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = app
        .request(
            Method::DELETE,
            "/api/v1/devices/aa:bb:cc:32:00:03",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, f) = app.get("/api/v1/fleet?stale_days=2").await;
    assert_eq!(
        f["models"],
        json!([{"model": "iq2", "devices": 2, "versions": [{"version": null, "devices": 1}, {"version": "1.1.0", "devices": 1}]}]),
        "{f}"
    );
    assert_eq!(
        (&f["devices"], &f["stale"]["devices"]),
        (&json!(2), &json!(0)),
        "{f}"
    );
    // Bad values are 400s naming the parameter.
    for bad in ["0", "366", "x"] {
        let (status, body) = app.get(&format!("/api/v1/fleet?stale_days={bad}")).await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({"error": format!("invalid stale_days {bad:?}: expected 1-365")})
            )
        );
    }
    // A reporter token reads nothing.
    let reporter = app.create_token("ks", "reporter").await;
    let (status, _) = app
        .request(Method::GET, "/api/v1/fleet", Some(&reporter), None)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn sites_name_the_failure_its_rule_and_the_doctor_command() {
    let app = spawn_app().await;
    fleet(&app, 1, "aa:bb:cc:33:00").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
        .await;
    let (status, none) = app.get("/api/v1/sites").await;
    assert_eq!((status, none), (200, json!({"total": 0, "items": []})));
    let (dev, secret) = creds(&app, 0);
    unused_offer(&app, &dev, &secret).await;
    let sites = wait_api(&app, "/api/v1/sites", |s| s["total"] == 1).await;
    let site = &sites["items"][0];
    assert_eq!(site["client_ip"], "127.0.0.1", "{sites}");
    assert_eq!(site["passive_offers_unused"], 1, "{sites}");
    let (first, last) = app.passive;
    let problem = &site["problems"][0];
    assert_eq!(problem["kind"], "passive_offer_unused", "{sites}");
    assert_eq!(
        problem["fix"],
        format!(
            "allow outbound tcp  127.0.0.1:{first}-{last}  FTPS passive data from the IQs (every port of it)"
        )
    );
    assert!(
        problem["what"]
            .as_str()
            .unwrap()
            .starts_with("1 passive offer got no data connection within 5 s (last: port "),
        "{sites}"
    );
    let (_, nr) = app.get("/api/v1/network-requirements").await;
    assert_eq!(site["doctor"], nr["check"]);
    let (status, body) = app.get("/api/v1/sites?limit=0").await;
    assert_eq!((status, body), (400, json!({"error": "limit must be 1-1000"})));
}

#[tokio::test]
async fn history_samples_the_counts_and_marks_each_phase() {
    let app = spawn_app().await;
    app.publish("iq2", "1.0.0", 1, &image(4096, 2)).await;
    let macs: Vec<String> = (0..4).map(|i| format!("aa:bb:cc:34:00:{i:02x}")).collect();
    for m in &macs {
        app.create_device(m, "iq2").await;
    }
    let id = app
        .rollout(
            json!({"model": "iq2", "version": "1.0.0", "phases": [50, 100], "success_threshold": 0.5,
            // A listed device: phase 0 selects someone, so it waits for its report.
            "devices": [macs[0]]}),
        )
        .await;
    let first = wait_api(&app, &format!("/api/v1/rollouts/{id}/history"), |h| {
        !h["points"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(first["rollout"], id);
    assert_eq!(first["success_threshold"], 0.5);
    assert_eq!(first["points"][0]["phase"], 0, "{first}");
    assert_eq!(first["points"][0]["state"], "active", "{first}");
    assert_eq!(
        first["phases"],
        json!([{"phase": 0, "percent": 50.0, "at": first["points"][0]["at"]}])
    );
    // Every selected device installs: the rollout opens phase 1, and the history shows it.
    let (_, members) = app.get(&format!("/api/v1/rollouts/{id}/devices")).await;
    for m in members["items"].as_array().unwrap() {
        let (status, body) = app
            .post(
                &format!("/api/v1/devices/{}/reports", m["device"].as_str().unwrap()),
                json!({"version": "1.0.0", "outcome": "installed"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let h = wait_api(&app, &format!("/api/v1/rollouts/{id}/history"), |h| {
        h["phases"].as_array().unwrap().len() == 2
    })
    .await;
    let last = h["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["phase"], &last["percent"]),
        (&json!(1), &json!(100.0)),
        "{h}"
    );
    let sum: u64 = ["pending", "downloading", "downloaded", "installed", "failed"]
        .iter()
        .map(|k| last[k].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 4, "the whole fleet is selected in phase 1: {h}");
    let (status, body) = app.get("/api/v1/rollouts/424242/history").await;
    assert_eq!((status, body), (404, json!({"error": "no rollout 424242"})));
}
