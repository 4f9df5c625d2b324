//! Stock clients a customer might point at the server: curl (OpenSSL) and python's ftplib.

use std::fs;

use serde_json::json;

use crate::helpers::clients::{curl, ftplib_get};
use crate::helpers::{MIB, TestApp, image, sha256_hex, spawn_app};

/// A published, targeted release and a device: (image, manifest, device id, secret).
async fn setup(app: &TestApp, mac: &str, size: usize) -> (Vec<u8>, Vec<u8>, String, String) {
    let rel = app.publish("iq2", "1.0.0", 1, &image(size, 71)).await;
    let dev = app.create_device(mac, "iq2").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "devices": [dev.id]}))
        .await;
    (rel.image, rel.manifest, dev.id, dev.secret)
}

#[tokio::test]
async fn curl_downloads_over_explicit_ftps() {
    let app = spawn_app().await;
    let (img, manifest, id, secret) = setup(&app, "aa:bb:cc:07:00:01", 2 * MIB + 99).await;
    let out = curl(
        &app,
        "aa-bb-cc-07-00-01",
        &secret,
        "/releases/1.0.0/firmware.bin",
        "curl.bin",
        true,
    )
    .await;
    assert!(out.success, "curl download: {}", out.stderr);
    assert_eq!(
        sha256_hex(&fs::read(app.path("curl.bin")).unwrap()),
        sha256_hex(&img),
        "curl got the image"
    );
    // curl splits -u at the first colon, so the colon form of the MAC cannot be used here.
    let user = id.replace(':', "");
    let out = curl(
        &app,
        &user,
        &secret,
        "/target/manifest.json",
        "curl-manifest.json",
        true,
    )
    .await;
    assert!(out.success, "curl target manifest: {}", out.stderr);
    assert_eq!(fs::read(app.path("curl-manifest.json")).unwrap(), manifest);
    app.wait_downloads(&format!("device={id}"), |i| {
        i.iter().any(|r| {
            r["file"] == "firmware.bin" && r["outcome"] == "complete" && r["bytes"] == img.len() as u64
        })
    })
    .await;

    let out = curl(
        &app,
        &user,
        "wrong-secret",
        "/releases/1.0.0/firmware.bin",
        "bad.bin",
        true,
    )
    .await;
    assert!(
        !out.success && out.stderr.contains("(67)"),
        "wrong secret: login denied (67): {}",
        out.stderr
    );
    let out = curl(
        &app,
        &user,
        &secret,
        "/releases/1.0.0/firmware.bin",
        "plain.bin",
        false,
    )
    .await;
    assert!(!out.success, "plain FTP must be refused: {}", out.stderr);
    assert!(
        !app.path("plain.bin").exists() || fs::read(app.path("plain.bin")).unwrap().is_empty(),
        "no bytes without TLS"
    );
}

#[tokio::test]
async fn python_ftplib_resumes_with_rest() {
    let app = spawn_app().await;
    let (img, _, id, secret) = setup(&app, "aa:bb:cc:07:00:02", 3 * MIB).await;
    for (offset, out) in [(0usize, "py-full.bin"), (1_000_000, "py-tail.bin")] {
        let path = "/releases/1.0.0/firmware.bin";
        let res = ftplib_get(&app, "AABBCC070002", &secret, path, offset, out).await;
        assert!(
            res.success,
            "ftplib (offset {offset}): {}\n{}",
            res.stdout, res.stderr
        );
        assert_eq!(res.stdout.trim(), img.len().to_string(), "SIZE via ftplib");
        let got = fs::read(app.path(out)).unwrap();
        assert_eq!(got.len(), img.len() - offset, "bytes from offset {offset}");
        assert!(
            got == img[offset..],
            "ftplib bytes from offset {offset} match the image"
        );
    }
    let items = app
        .wait_downloads(&format!("device={id}&limit=50"), |i| {
            i.iter()
                .any(|r| r["offset"] == 1_000_000 && r["outcome"] == "complete")
        })
        .await;
    let r = items.iter().find(|r| r["offset"] == 1_000_000).unwrap();
    assert_eq!(r["bytes"], (img.len() - 1_000_000) as u64, "{r}");
    assert_eq!(r["client_ip"], "127.0.0.1", "{r}");
}
