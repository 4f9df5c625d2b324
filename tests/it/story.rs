//! The end-to-end story: publish, register, roll out, download over FTPS, and the download
//! records that follow (complete, resumed, aborted, surviving a restart), and no secret in logs.

use serde_json::{Value, json};

use crate::ftp_client::{Opts, Session, bye, login, login_with, retr_all};
use crate::helpers::{MIB, Signed, TestApp, image, rfc3339, sha256_hex, spawn_app, spawn_app_with_env};

const RECORD_FIELDS: [&str; 14] = [
    "id",
    "device",
    "model",
    "version",
    "file",
    "offset",
    "bytes",
    "size",
    "outcome",
    "started_at",
    "finished_at",
    "client_ip",
    "data_port",
    "node",
];

/// Publishes iq2 1.0.0, registers one device and targets it. Returns (release, device id, secret, rollout id).
async fn targeted_device(app: &TestApp, mac: &str, size: usize) -> (Signed, String, String, i64) {
    let rel = app.publish("iq2", "1.0.0", 1, &image(size, 1)).await;
    let dev = app.create_device(mac, "iq2").await;
    let rollout = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "devices": [mac]}))
        .await;
    (rel, dev.id, dev.secret, rollout)
}

fn firmware_records<'a>(items: &'a [Value], outcome: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|r| r["file"] == "firmware.bin" && r["outcome"] == outcome)
        .collect()
}

/// Checks the §5 record shape and the fields every firmware record of this test shares.
fn check_record(app: &TestApp, r: &Value, device: &str, size: usize) {
    let obj = r
        .as_object()
        .unwrap_or_else(|| panic!("record is not an object: {r}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = RECORD_FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "record fields: {r}");
    assert!(r["id"].is_i64(), "id: {r}");
    assert_eq!(r["device"], device, "{r}");
    assert_eq!(r["model"], "iq2", "{r}");
    assert_eq!(r["version"], "1.0.0", "{r}");
    assert_eq!(r["size"], size as u64, "{r}");
    assert_eq!(r["client_ip"], "127.0.0.1", "{r}");
    assert_eq!(r["node"], "test-node", "{r}");
    let port = r["data_port"]
        .as_u64()
        .unwrap_or_else(|| panic!("data_port: {r}"));
    assert!(
        (app.passive.0 as u64..=app.passive.1 as u64).contains(&port),
        "data_port {port} outside {:?}",
        app.passive
    );
    assert!(
        rfc3339(&r["started_at"], "started_at") <= rfc3339(&r["finished_at"], "finished_at"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn device_downloads_its_target_and_the_download_is_recorded() {
    let app = spawn_app().await;
    let size = 4 * MIB + 4321;
    let (rel, id, secret, rollout) = targeted_device(&app, "AA:BB:CC:00:00:01", size).await;
    assert_eq!(id, "aa:bb:cc:00:00:01");

    let mut s: Session = login(&app, "aa-bb-cc-00-00-01", &secret)
        .await
        .expect("device login");
    assert_eq!(
        retr_all(&mut s, "/target/manifest.json").await.unwrap(),
        rel.manifest,
        "target manifest bytes"
    );
    assert_eq!(
        retr_all(&mut s, "/target/manifest.json.sig").await.unwrap(),
        rel.sig,
        "target signature bytes"
    );
    assert_eq!(
        retr_all(&mut s, "/releases/1.0.0/manifest.json").await.unwrap(),
        rel.manifest
    );
    let got = retr_all(&mut s, "/releases/1.0.0/firmware.bin").await.unwrap();
    let port = s.last_data_port();
    assert_eq!(got.len(), size);
    assert_eq!(sha256_hex(&got), sha256_hex(&rel.image), "downloaded image hash");
    assert_eq!(
        s.size("/releases/1.0.0/firmware.bin").await.unwrap(),
        size,
        "SIZE"
    );
    s.mdtm("/releases/1.0.0/firmware.bin").await.expect("MDTM");
    bye(s).await;

    let items = app
        .wait_downloads("device=aabbcc000001", |i| {
            !firmware_records(i, "complete").is_empty()
        })
        .await;
    let recs = firmware_records(&items, "complete");
    assert_eq!(recs.len(), 1, "one complete image download: {items:?}");
    let r = recs[0];
    check_record(&app, r, &id, size);
    assert_eq!(r["offset"], 0, "{r}");
    assert_eq!(r["bytes"], size as u64, "{r}");
    assert_eq!(
        r["data_port"], port,
        "record data_port is the PASV port the client used: {r}"
    );
    assert!(
        items.iter().any(|r| r["file"] == "manifest.json"),
        "every RETR is recorded, manifests too: {items:?}"
    );

    let (status, body) = app.get(&format!("/api/v1/rollouts/{rollout}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["targeted"], 1, "{body}");
    assert_eq!(body["status"]["started"], 1, "{body}");
    assert_eq!(body["status"]["completed"], 1, "{body}");
    assert_eq!(body["status"]["aborted_only"], 0, "{body}");
    let (status, dev) = app.get("/api/v1/devices/AA-BB-CC-00-00-01").await;
    assert_eq!(status, 200, "{dev}");
    assert_eq!(dev["target"]["version"], "1.0.0", "{dev}");
    assert!(
        dev["downloads"].as_array().is_some_and(|d| !d.is_empty()),
        "device shows its downloads: {dev}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_resumes_and_records_the_offset() {
    let app = spawn_app().await;
    let size = 3 * MIB + 17;
    let (rel, id, secret, _) = targeted_device(&app, "aabbcc000002", size).await;
    let mut s = login(&app, &id, &secret).await.expect("device login");
    s.resume_transfer(1_000_000).await.unwrap();
    let tail = retr_all(&mut s, "/releases/1.0.0/firmware.bin")
        .await
        .expect("REST 1000000 + RETR");
    assert_eq!(tail.len(), size - 1_000_000);
    assert!(
        tail == rel.image[1_000_000..],
        "resumed bytes are the image's tail"
    );
    bye(s).await;

    let items = app
        .wait_downloads(&format!("device={id}"), |i| {
            !firmware_records(i, "complete").is_empty()
        })
        .await;
    let r = firmware_records(&items, "complete")[0];
    check_record(&app, r, &id, size);
    assert_eq!(r["offset"], 1_000_000, "{r}");
    assert_eq!(r["bytes"], (size - 1_000_000) as u64, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_download_is_recorded_as_aborted() {
    let app = spawn_app().await;
    // Bigger than the server's socket send buffer can swallow, and a small client receive
    // buffer, so the server cannot have written the whole image when the client goes away.
    let size = 8 * MIB;
    let (_, id, secret, rollout) = targeted_device(&app, "aa:bb:cc:00:00:03", size).await;
    let mut s = login_with(
        &app,
        &id,
        &secret,
        Opts {
            recv_buf: Some(32 * 1024),
            ..Opts::default()
        },
    )
    .await
    .expect("login");
    let mut stream = s
        .retr_as_stream("/releases/1.0.0/firmware.bin")
        .await
        .expect("RETR");
    let mut buf = vec![0u8; 256 * 1024];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buf)
        .await
        .expect("first bytes");
    drop(stream);
    drop(s);

    let items = app
        .wait_downloads(&format!("device={id}"), |i| {
            !firmware_records(i, "aborted").is_empty()
        })
        .await;
    let r = firmware_records(&items, "aborted")[0];
    check_record(&app, r, &id, size);
    assert_eq!(r["offset"], 0, "{r}");
    let bytes = r["bytes"].as_u64().unwrap();
    assert!(
        bytes < size as u64,
        "aborted record must count only bytes sent: {r}"
    );
    assert!(
        firmware_records(&items, "complete").is_empty(),
        "no complete record: {items:?}"
    );

    let (_, body) = app.get(&format!("/api/v1/rollouts/{rollout}")).await;
    assert_eq!(body["status"]["completed"], 0, "{body}");
    assert_eq!(body["status"]["aborted_only"], 1, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_tokens_devices_and_certificate_survive_a_restart() {
    let mut app = spawn_app().await;
    let (rel, id, secret, _) = targeted_device(&app, "aa:bb:cc:00:00:04", 200_000).await;
    let mut s = login(&app, &id, &secret).await.expect("login");
    retr_all(&mut s, "/releases/1.0.0/firmware.bin").await.unwrap();
    bye(s).await;
    let before = app
        .wait_downloads(&format!("device={id}"), |i| {
            !firmware_records(i, "complete").is_empty()
        })
        .await;
    let cert = std::fs::read(app.cert_path()).unwrap();
    // One more download right before a graceful stop: its queued record must not be lost.
    let mut s = login(&app, &id, &secret).await.expect("login");
    retr_all(&mut s, "/releases/1.0.0/manifest.json").await.unwrap();
    bye(s).await;

    app.restart().await;

    assert_eq!(
        std::fs::read(app.cert_path()).unwrap(),
        cert,
        "the self-signed certificate is reused"
    );
    let (status, body) = app.get(&format!("/api/v1/downloads?device={id}")).await;
    assert_eq!(status, 200, "admin token still valid after restart: {body}");
    let after = body["items"].as_array().cloned().unwrap_or_default();
    let ids = |v: &[Value]| v.iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
    assert!(
        ids(&before).iter().all(|i| ids(&after).contains(i)),
        "records survive a restart: before {before:?}, after {after:?}"
    );
    assert_eq!(
        after.len(),
        before.len() + 1,
        "the record queued at shutdown was written: {after:?}"
    );
    let mut s = login(&app, &id, &secret)
        .await
        .expect("device login after restart");
    assert_eq!(
        retr_all(&mut s, "/target/manifest.json").await.unwrap(),
        rel.manifest
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_tokens_never_reach_the_log() {
    let app = spawn_app_with_env(&[("RUST_LOG", "debug")]).await;
    let (_, id, secret, _) = targeted_device(&app, "aa:bb:cc:00:00:05", 100_000).await;
    let wrong = "NotTheSecret-q8Zx7Kp2";
    assert!(login(&app, &id, wrong).await.is_err(), "wrong secret refused");
    let mut s = login(&app, &id, &secret).await.expect("login");
    retr_all(&mut s, "/target/manifest.json").await.unwrap();
    retr_all(&mut s, "/releases/1.0.0/firmware.bin").await.unwrap();
    bye(s).await;
    app.wait_downloads(&format!("device={id}"), |i| {
        !firmware_records(i, "complete").is_empty()
    })
    .await;
    let (status, _) = app.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(status, 200);

    let log = app.log();
    assert!(
        log.to_lowercase().contains("debug"),
        "RUST_LOG=debug took effect; log:\n{log}"
    );
    for (what, s) in [
        ("device secret", secret.as_str()),
        ("wrong secret", wrong),
        ("admin token", &app.admin_token),
        ("publisher token", &app.publisher_token),
        ("viewer token", &app.viewer_token),
    ] {
        assert!(!log.contains(s), "the server log contains the {what}");
    }
}
