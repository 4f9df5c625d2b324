//! `fwdist fetch`, the reference IQ, against the real server: an update end to end, and
//! each refusal with its exit code (0 updated, 10 no update, 20 refused, 30 network failure,
//! 31 login refused).

use std::fs;

use serde_json::json;

use crate::helpers::clients::{Iq, assert_exit, fetch, fetch_from};
use crate::helpers::{TestApp, image, sha256_hex, spawn_app};

const UPDATED: i32 = 0;
const NO_UPDATE: i32 = 10;
const REFUSED: i32 = 20;
const NETWORK: i32 = 30;
const LOGIN: i32 = 31;

/// A device of `iq2` that trusts the server's release key, with 1.0.0 published.
async fn setup(app: &TestApp, mac: &str, img: &[u8]) -> Iq {
    app.publish("iq2", "1.0.0", 1, img).await;
    let dev = app.create_device(mac, "iq2").await;
    Iq {
        id: dev.id,
        secret: dev.secret,
        trust: app.iq_trust(),
    }
}

#[tokio::test]
async fn fetch_updates_once_then_reports_no_update() {
    let app = spawn_app().await;
    let img = image(3 << 20, 11);
    let iq = setup(&app, "aa:bb:cc:0f:00:01", &img).await;
    assert_exit(
        &fetch(&app, &iq, "iq2", "st").await,
        NO_UPDATE,
        "no release is targeted",
    );
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "devices": [iq.id]}))
        .await;
    assert_exit(
        &fetch(&app, &iq, "iq2", "st").await,
        UPDATED,
        "updated to 1.0.0 (sequence 1)",
    );
    assert_eq!(
        sha256_hex(&fs::read(app.path("st/firmware.bin")).unwrap()),
        sha256_hex(&img)
    );
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(app.path("st/state.json")).unwrap()).unwrap();
    assert_eq!(state["sequence"], 1);
    assert_exit(
        &fetch(&app, &iq, "iq2", "st").await,
        NO_UPDATE,
        "already installed",
    );
    // The server recorded the complete image download.
    app.wait_downloads(&format!("device={}", iq.id), |items| {
        items
            .iter()
            .any(|d| d["file"] == "firmware.bin" && d["outcome"] == "complete" && d["bytes"] == img.len())
    })
    .await;
}

#[tokio::test]
async fn fetch_refuses_what_it_must_not_install() {
    let app = spawn_app().await;
    let img = image(1 << 20, 12);
    let iq = setup(&app, "aa:bb:cc:0f:00:02", &img).await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
        .await;

    // Another model.
    assert_exit(&fetch(&app, &iq, "iq3", "st-model").await, REFUSED, "model iq2");
    // A signature by a key this IQ does not trust.
    app.cli(&["keygen", "--out", "other"]).await.assert_ok();
    fs::create_dir_all(app.path("other-trust")).unwrap();
    fs::copy(app.path("other.pub"), app.path("other-trust/other.pub")).unwrap();
    let stranger = Iq {
        id: iq.id.clone(),
        secret: iq.secret.clone(),
        trust: "other-trust".into(),
    };
    assert_exit(
        &fetch(&app, &stranger, "iq2", "st-key").await,
        REFUSED,
        "no signature by a trusted key",
    );
    // Rollback: this IQ already runs sequence 5.
    fs::create_dir_all(app.path("st-rollback")).unwrap();
    fs::write(
        app.path("st-rollback/state.json"),
        r#"{"version":"5.0.0","sequence":5,"sha256":null}"#,
    )
    .unwrap();
    assert_exit(&fetch(&app, &iq, "iq2", "st-rollback").await, REFUSED, "rollback");
    // Bytes on the server that do not match the signed manifest.
    let stored = app.path("firmware-store/releases/iq2/1.0.0/firmware.bin");
    let mut bytes = fs::read(&stored).unwrap();
    bytes[1000] ^= 0xff;
    let mut perms = fs::metadata(&stored).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&stored, perms).unwrap();
    fs::write(&stored, &bytes).unwrap();
    assert_exit(&fetch(&app, &iq, "iq2", "st-hash").await, REFUSED, "sha256");
    assert!(!app.path("st-hash/firmware.bin").exists(), "nothing installed");
    assert!(
        !app.path("st-hash/download.part").exists(),
        "the bad download is discarded"
    );
}

#[tokio::test]
async fn fetch_refuses_an_expired_manifest() {
    let app = spawn_app().await;
    let key = app.trusted_key("release").await;
    fs::create_dir_all(app.path("b")).unwrap();
    fs::write(app.path("b/firmware.bin"), image(4096, 13)).unwrap();
    // Long enough to sign and upload on a loaded machine (the server refuses an expired
    // upload), short enough to wait out.
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let soon = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let args = [
        "sign",
        "--key",
        &key,
        "--model",
        "iq2",
        "--version",
        "1.0.0",
        "--sequence",
        "1",
        "--expires",
        &soon,
        "b/firmware.bin",
    ];
    app.cli(&args).await.assert_ok();
    let m = fs::read(app.path("b/manifest.json")).unwrap();
    let s = fs::read(app.path("b/manifest.json.sig")).unwrap();
    let i = fs::read(app.path("b/firmware.bin")).unwrap();
    let (status, body) = app.upload_parts(&app.publisher_token, &m, &s, &i).await;
    assert_eq!(status, 201, "{body}");
    let dev = app.create_device("aa:bb:cc:0f:00:03", "iq2").await;
    let iq = Iq {
        id: dev.id,
        secret: dev.secret,
        trust: app.iq_trust(),
    };
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
        .await;
    let left = expires - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(500);
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
    assert_exit(&fetch(&app, &iq, "iq2", "st").await, REFUSED, "expired");
}

#[tokio::test]
async fn fetch_resumes_a_cut_download_from_the_bytes_on_disk() {
    let app = spawn_app().await;
    let img = image(4 << 20, 14);
    let iq = setup(&app, "aa:bb:cc:0f:00:04", &img).await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "devices": [iq.id]}))
        .await;
    // A previous attempt was cut after 1,500,000 bytes.
    fs::create_dir_all(app.path("st")).unwrap();
    fs::write(app.path("st/download.part"), &img[..1_500_000]).unwrap();
    assert_exit(
        &fetch(&app, &iq, "iq2", "st").await,
        UPDATED,
        "resumed from byte 1500000",
    );
    assert_eq!(
        sha256_hex(&fs::read(app.path("st/firmware.bin")).unwrap()),
        sha256_hex(&img)
    );
    let items = app
        .wait_downloads(&format!("device={}", iq.id), |items| {
            items
                .iter()
                .any(|d| d["file"] == "firmware.bin" && d["offset"] == 1_500_000)
        })
        .await;
    let rec = items.iter().find(|d| d["file"] == "firmware.bin").unwrap();
    assert_eq!(rec["bytes"], img.len() - 1_500_000);
    assert_eq!(rec["outcome"], "complete");
}

#[tokio::test]
async fn fetch_reports_login_and_network_failures_distinctly() {
    let app = spawn_app().await;
    let iq = setup(&app, "aa:bb:cc:0f:00:05", &image(1024, 15)).await;
    let wrong = Iq {
        secret: "not-the-secret".into(),
        id: iq.id.clone(),
        trust: iq.trust.clone(),
    };
    assert_exit(&fetch(&app, &wrong, "iq2", "st").await, LOGIN, "530");
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = fetch_from(&app, &closed.to_string(), &iq, "iq2", "st", "1").await;
    assert_exit(&out, NETWORK, "network failure");
}
