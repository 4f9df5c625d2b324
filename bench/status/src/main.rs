//! Seeds DEVICES devices and RECORDS download records into a fresh fwdist database through
//! fwdist's own database layer and services (the same code paths the server runs), then times
//! the endpoints SPEC §8 needs fast and those the dashboard's pages call (issue 13), through
//! the real router, and an IQ login's target lookup.
//!
//! Usage: `status DIR DEVICES RECORDS` (DIR: an empty directory for the database).
//! Prints one line per phase of the seeding and a p50/p99 table.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use fwdist::db::downloads::DownloadRecord;
use fwdist::db::releases::NewRelease;
use fwdist::domain::{DeviceId, Model, Outcome, Role, Sha256Digest, Version, now_ms};
use fwdist::secret::SecretHash;
use fwdist::services::rollouts::{NewRollout, RULES};
use tower::ServiceExt as _;

const RELEASES: u64 = 10;
const IMAGE: u64 = 4 * 1024 * 1024;

fn device(i: u64) -> DeviceId {
    let b = i.to_be_bytes();
    DeviceId::from_bytes([0x02, 0x00, b[4], b[5], b[6], b[7]])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pcts(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (ms(at(0.5)), ms(at(0.99)))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 4, "usage: status DIR DEVICES RECORDS");
    let dir = std::path::PathBuf::from(&args[1]);
    let n: u64 = args[2].parse().expect("DEVICES");
    let records: u64 = args[3].parse().expect("RECORDS");
    // FWDIST_BENCH_DB_URL names another database (a fresh, empty PostgreSQL one for the
    // scale-out comparison); the default is a fresh SQLite file in DIR.
    let db_url = std::env::var("FWDIST_BENCH_DB_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/fwdist.sqlite", dir.display()));
    let cfg_text = format!(
        "[ftps]\nlisten = \"127.0.0.1:0\"\npassive_ports = \"60000-60007\"\ncert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[store]\nroot = \"{d}/store\"\n[db]\nurl = \"{db_url}\"\n\
         [signing]\ntrusted_keys = \"{d}/keys\"\n",
        d = dir.display(),
        db_url = db_url
    );
    println!("database: {}", db_url.split('@').next_back().unwrap_or(&db_url));
    std::fs::write(dir.join("fwdist.toml"), cfg_text).expect("config");
    let cfg = fwdist::config::Config::load(Some(&dir.join("fwdist.toml"))).expect("config");
    let app = fwdist::app::App::build(cfg).await.expect("app");
    let db = app.db().clone();
    let s = app.services().clone();
    let model = Model::parse("iq2").expect("model");

    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        // 1,000 sites: `site-K` cohorts of about n/1000 devices.
        batch.push((device(i), model.clone(), vec![format!("site-{}", i % 1000)], SecretHash([7; 32])));
        if batch.len() == 10_000 || i + 1 == n {
            db.insert_devices(&batch, "bench").await.expect("devices");
            batch.clear();
        }
    }
    println!("seed: {n} devices in {:.1} s", t.elapsed().as_secs_f64());

    let versions: Vec<Version> = (0..RELEASES).map(|v| Version::parse(&format!("1.0.{v}")).expect("v")).collect();
    for (k, v) in versions.iter().enumerate() {
        let sha = Sha256Digest([k as u8; 32]);
        db.insert_release(&NewRelease {
            model: &model,
            version: v,
            sequence: k as u64 + 1,
            file: "firmware.bin",
            size: IMAGE,
            sha256: &sha,
            manifest: b"{}",
            signature: b"{}",
        }, &fwdist::db::audit::AuditEntry::new("bench", "release.publish", format!("iq2/{v}"), serde_json::json!({})))
        .await
        .expect("release");
    }
    let current = versions.last().expect("a release").clone();

    // The big rollout of the current release over the whole fleet, and 49 cohort rollouts
    // (one site each) of it: 50 rollouts to list.
    let t = Instant::now();
    let big = s
        .rollouts
        .create(
            &NewRollout {
                model: Some(model.clone()),
                version: Some(current.clone()),
                phases: Some(vec![1.0, 10.0, 50.0, 100.0]),
                ..NewRollout::default()
            },
            "bench",
        )
        .await
        .expect("rollout");
    println!("seed: rollout {} over {n} devices in {:.1} s", big.id, t.elapsed().as_secs_f64());
    for k in 0..49 {
        s.rollouts
            .create(
                &NewRollout {
                    model: Some(model.clone()),
                    version: Some(current.clone()),
                    percent: Some(100.0),
                    labels: vec![format!("site-{k}")],
                    ..NewRollout::default()
                },
                "bench",
            )
            .await
            .expect("cohort rollout");
    }
    // Open phase 3 (100 %) so every device is selected for the timings.
    s.rollouts
        .change(big.id, &fwdist::services::rollouts::Change { phase: Some(3), ..Default::default() }, "bench")
        .await
        .expect("phase");

    // Download records, in the recorder's batches: one in ten of the current release.
    let t = Instant::now();
    let now = now_ms();
    let mut batch = Vec::with_capacity(1000);
    for r in 0..records {
        let dev = device((r * 7919) % n);
        let current_release = r % 10 == 0;
        let version = if current_release { current.clone() } else { versions[(r % (RELEASES - 1)) as usize].clone() };
        let complete = r % 3 != 0;
        batch.push(DownloadRecord {
            device: dev,
            model: model.clone(),
            version,
            file: "firmware.bin".into(),
            offset: 0,
            bytes: if complete { IMAGE } else { IMAGE / 2 },
            size: IMAGE,
            outcome: if complete { Outcome::Complete } else { Outcome::Aborted },
            started_at: now,
            finished_at: now,
            client_ip: "192.0.2.1".into(),
            data_port: Some(60000),
            node: "bench".into(),
        });
        if batch.len() == 1000 || r + 1 == records {
            db.insert_downloads(&batch, &RULES).await.expect("records");
            batch.clear();
        }
        if (r + 1) % 1_000_000 == 0 {
            println!("seed: {} records in {:.0} s", r + 1, t.elapsed().as_secs_f64());
        }
    }
    println!("seed: {records} records in {:.1} s", t.elapsed().as_secs_f64());
    // 1 % of the fleet reports failed, 20 % installed.
    let t = Instant::now();
    let mut failed = 0;
    for i in (0..n).step_by(5) {
        let outcome = if i % 100 == 0 { "failed" } else { "installed" };
        failed += u64::from(outcome == "failed");
        let body = format!(r#"{{"version": "{current}", "outcome": "{outcome}"}}"#);
        s.reports
            .submit(&device(i), Some(&model), body.as_bytes(), fwdist::services::reports::Source::Api, "192.0.2.1".into())
            .await
            .expect("report");
    }
    println!("seed: {} reports ({failed} failed) in {:.1} s", n / 5, t.elapsed().as_secs_f64());

    // The dashboard's plot: a long rollout's samples (the endpoint reads at most 5,000).
    for k in 0..5000i64 {
        let c = |x: i64| u64::try_from(x).unwrap_or(0);
        let sample = fwdist::db::samples::Sample {
            at: now - (5000 - k) * 60_000,
            state: "active".into(),
            phase: Some(usize::try_from(k / 1250).unwrap_or(0)),
            percent_bp: 10_000,
            pending: c(n as i64 - k * 200).min(n),
            downloading: 100,
            downloaded: 200,
            installed: c(k * 200).min(n),
            failed: c(k),
        };
        db.insert_sample(big.id, &sample).await.expect("sample");
    }

    let token = s.tokens.create("bench", Role::Viewer, "bench").await.expect("token").1;
    let admin = s.tokens.create("bench-admin", Role::Admin, "bench").await.expect("token").1;
    let router = app.router();
    let get_as = |path: String, token: String| {
        let router = router.clone();
        async move {
            let req = Request::builder()
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request");
            let t = Instant::now();
            let resp = router.oneshot(req).await.expect("answer");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
            assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&body));
            (t.elapsed(), body)
        }
    };
    let get = |path: String| get_as(path, token.expose().to_owned());
    let (_, body) = get(format!("/api/v1/rollouts/{}", big.id)).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    println!("status of rollout {}: {}", big.id, v["status"]);
    let mut table = Vec::new();
    for (name, path, calls) in [
        ("GET /rollouts/{id}", format!("/api/v1/rollouts/{}", big.id), 200),
        ("GET /rollouts?limit=50", "/api/v1/rollouts?limit=50".to_owned(), 50),
        (
            "GET /rollouts/{id}/devices?state=failed&limit=100",
            format!("/api/v1/rollouts/{}/devices?state=failed&limit=100", big.id),
            100,
        ),
    ] {
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            times.push(get(path.clone()).await.0);
        }
        let (p50, p99) = pcts(times);
        table.push(format!("| {name} | {calls} | {p50:.2} | {p99:.2} |"));
    }
    // The dashboard's pages: each call as its page makes it. `/fleet` is reused for 30 s per
    // `stale_days`, so its uncached cost is timed with a different value each call.
    let one = fwdist::domain::DeviceId::to_string(&device(n / 2));
    let pages: Vec<(String, String, usize, String)> = vec![
        ("GET /fleet (uncached)".into(), String::new(), 30, token.expose().to_owned()),
        ("GET /fleet (cached)".into(), "/api/v1/fleet?stale_days=7".into(), 50, token.expose().to_owned()),
        ("GET /rollouts?limit=100".into(), "/api/v1/rollouts?limit=100".into(), 20, token.expose().to_owned()),
        ("GET /rollouts/{id}/history (5,000 samples)".into(), format!("/api/v1/rollouts/{}/history", big.id), 50, token.expose().to_owned()),
        ("GET /sites".into(), "/api/v1/sites".into(), 50, token.expose().to_owned()),
        ("GET /devices?model=iq2&limit=50".into(), "/api/v1/devices?model=iq2&limit=50".into(), 50, token.expose().to_owned()),
        ("GET /devices?label=site-7&limit=50".into(), "/api/v1/devices?label=site-7&limit=50".into(), 20, token.expose().to_owned()),
        ("GET /devices/{id}".into(), format!("/api/v1/devices/{one}"), 50, token.expose().to_owned()),
        ("GET /releases?model=iq2&limit=100".into(), "/api/v1/releases?model=iq2&limit=100".into(), 50, token.expose().to_owned()),
        ("GET /audit?limit=100".into(), "/api/v1/audit?limit=100".into(), 50, admin.expose().to_owned()),
    ];
    for (name, path, calls, tok) in pages {
        let mut times = Vec::with_capacity(calls);
        for k in 0..calls {
            let path = if path.is_empty() { format!("/api/v1/fleet?stale_days={}", k + 1) } else { path.clone() };
            times.push(get_as(path, tok.clone()).await.0);
        }
        let (p50, p99) = pcts(times);
        table.push(format!("| {name} | {calls} | {p50:.2} | {p99:.2} |"));
    }
    let mut times = Vec::new();
    for i in 0..500u64 {
        let d = device((i * 104_729) % n);
        let t = Instant::now();
        s.targeting.target_of(&d, &model).await.expect("target");
        times.push(t.elapsed());
    }
    let (p50, p99) = pcts(times);
    table.push(format!("| target lookup of a login (services::targeting) | 500 | {p50:.2} | {p99:.2} |"));
    println!("\n{n} devices, {records} download records, 50 rollouts:\n");
    println!("| endpoint | calls | p50 ms | p99 ms |\n|---|---|---|---|");
    for l in table {
        println!("{l}");
    }
}
