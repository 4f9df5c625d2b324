//! Release uploads (`POST /api/v1/releases`): verification, immutability, sequence rules.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_client_error, image, run_program, sha256_hex, snapshot, spawn_app};

async fn release_count(app: &TestApp) -> usize {
    let (status, body) = app.get("/api/v1/releases").await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_release_is_published_listed_and_immutable() {
    let app = spawn_app().await;
    app.trusted_key("release").await;
    let img = image(300_000, 21);
    let signed = app.sign("release.key", "iq2", "1.0.0", 3, &img).await;
    let (status, rel) = app.upload(&app.publisher_token, &signed).await;
    assert_eq!(status, 201, "{rel}");
    for (k, v) in [
        ("model", json!("iq2")),
        ("version", json!("1.0.0")),
        ("sequence", json!(3)),
        ("file", json!("firmware.bin")),
    ] {
        assert_eq!(rel[k], v, "{k}: {rel}");
    }
    assert_eq!(rel["size"], img.len() as u64, "{rel}");
    assert_eq!(rel["sha256"], sha256_hex(&img), "{rel}");
    assert_eq!(rel["yanked"], false, "{rel}");
    assert!(rel["created_at"].is_string(), "{rel}");
    assert_eq!(
        rel["manifest"],
        signed.manifest_json(),
        "release carries its manifest"
    );

    let (status, one) = app.get("/api/v1/releases/iq2/1.0.0").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["sha256"], rel["sha256"]);
    assert_eq!(one["manifest"], signed.manifest_json());
    let (_, list) = app.get("/api/v1/releases?model=iq2").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["next"], Value::Null, "{list}");
    let (_, list) = app.get("/api/v1/releases?model=iq3").await;
    assert_eq!(list["items"], json!([]), "{list}");

    let (status, again) = app.upload(&app.publisher_token, &signed).await;
    assert_eq!(status, 200, "identical re-upload is idempotent: {again}");
    assert_eq!(again["sha256"], rel["sha256"]);
    assert_eq!(release_count(&app).await, 1);

    let other = app
        .sign("release.key", "iq2", "1.0.0", 4, &image(300_000, 22))
        .await;
    let (status, body) = app.upload(&app.publisher_token, &other).await;
    assert_eq!(status, 409, "same model+version, other bytes: {body}");
    assert_client_error(status, &body, "409");
    let (_, one) = app.get("/api/v1/releases/iq2/1.0.0").await;
    assert_eq!(
        one["sha256"],
        sha256_hex(&img),
        "the published bytes did not change"
    );
    assert_eq!(one["sequence"], 3);

    let (status, body) = app.post("/api/v1/releases/iq2/1.0.0/yank", json!({})).await;
    assert!((200..300).contains(&status), "yank: {status} {body}");
    let (_, one) = app.get("/api/v1/releases/iq2/1.0.0").await;
    assert_eq!(one["yanked"], true, "{one}");
    let (status, body) = app.post("/api/v1/releases/iq2/7.7.7/yank", json!({})).await;
    assert_eq!(status, 404, "yank unknown: {body}");
}

#[tokio::test]
async fn uploads_failing_verification_store_nothing() {
    let app = spawn_app().await;
    app.trusted_key("release").await;
    let releases_dir = app.path("firmware-store/releases");
    let before = snapshot(&releases_dir);
    let img = image(200_000, 31);
    let good = app.sign("release.key", "iq2", "1.0.0", 1, &img).await;
    let (m, sig) = (&good.manifest, &good.sig);

    let mut flipped = img.clone();
    flipped[123_456] ^= 0x01;
    let mut longer = img.clone();
    longer.push(0);
    let shorter = &img[..img.len() - 1];
    let mut bad_manifest = good.manifest_json();
    bad_manifest["sequence"] = json!(2);
    let bad_manifest = serde_json::to_vec(&bad_manifest).unwrap();
    let envelope: Value = serde_json::from_slice(sig).unwrap();
    let mut zero_sig = envelope.clone();
    zero_sig["signatures"][0]["sig"] = json!(B64.encode([0u8; 64]));
    let zero_sig = serde_json::to_vec(&zero_sig).unwrap();
    let mut no_sigs = envelope.clone();
    no_sigs["signatures"] = json!([]);
    let no_sigs = serde_json::to_vec(&no_sigs).unwrap();
    let mut reformatted = good.manifest_json().to_string().into_bytes();
    reformatted.push(b'\n');

    let untrusted_key = {
        app.cli(&["keygen", "--out", "untrusted"]).await.assert_ok();
        "untrusted.key"
    };
    let untrusted = app.sign(untrusted_key, "iq2", "1.0.0", 1, &img).await;

    // (what, manifest, signature, image)
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a [u8]);
    let cases: [Case; 8] = [
        ("one flipped image byte (sha256 mismatch)", m, sig, &flipped),
        ("image one byte longer", m, sig, &longer),
        ("image one byte shorter", m, sig, shorter),
        ("manifest changed after signing", &bad_manifest, sig, &img),
        (
            "manifest re-serialised (signature covers exact bytes)",
            &reformatted,
            sig,
            &img,
        ),
        ("signature of zeros", m, &zero_sig, &img),
        ("empty signature list", m, &no_sigs, &img),
        (
            "signed by an untrusted key",
            &untrusted.manifest,
            &untrusted.sig,
            &img,
        ),
    ];
    for (what, manifest, signature, image) in cases {
        let (status, body) = app
            .upload_parts(&app.publisher_token, manifest, signature, image)
            .await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_client_error(status, &body, what);
        assert_eq!(release_count(&app).await, 0, "{what}: nothing listed");
        assert_eq!(snapshot(&releases_dir), before, "{what}: nothing stored");
    }

    use reqwest::multipart::{Form, Part};
    let form = Form::new()
        .part("manifest", Part::bytes(m.clone()))
        .part("image", Part::bytes(img.clone()));
    let resp = app
        .http
        .post(app.url("/api/v1/releases"))
        .bearer_auth(&app.publisher_token)
        .multipart(form);
    let resp = resp.send().await.unwrap();
    assert_eq!(resp.status(), 400, "missing signature part");
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
    assert_client_error(400, &body, "missing part");
    assert_eq!(snapshot(&releases_dir), before, "nothing stored");

    let (status, body) = app.upload(&app.publisher_token, &good).await;
    assert_eq!(status, 201, "the genuine upload still works afterwards: {body}");
}

#[tokio::test]
async fn sequence_must_grow_per_model() {
    let app = spawn_app().await;
    app.publish("iq2", "1.0.0", 5, &image(1000, 41)).await;
    for seq in [5, 4] {
        let s = app
            .sign("release.key", "iq2", "1.1.0", seq, &image(1000, 42))
            .await;
        let (status, body) = app.upload(&app.publisher_token, &s).await;
        assert_eq!(status, 422, "sequence {seq} after 5: {body}");
        assert_client_error(status, &body, "sequence");
    }
    app.publish("iq2", "1.1.0", 6, &image(1000, 42)).await;
    app.publish("iq3", "0.1.0", 1, &image(1000, 43)).await;
    let (_, list) = app.get("/api/v1/releases?model=iq2").await;
    let versions: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["version"].as_str())
        .collect();
    assert_eq!(versions, vec!["1.1.0", "1.0.0"], "newest first: {list}");
}

/// The hex sha256 of the SPKI DER of a PEM public key, computed by openssl.
pub async fn openssl_keyid(app: &TestApp, pub_pem: &str) -> String {
    let der = app.path("keyid.der").display().to_string();
    run_program(
        app.dir.path(),
        "openssl",
        &["pkey", "-pubin", "-in", pub_pem, "-outform", "DER", "-out", &der],
    )
    .await
    .assert_ok();
    sha256_hex(&std::fs::read(&der).unwrap())
}

#[tokio::test]
async fn an_envelope_with_an_extra_untrusted_signature_is_accepted() {
    let app = spawn_app().await;
    app.trusted_key("release").await;
    // The second key comes from openssl, so this test does not depend on `fwdist keygen`.
    run_program(
        app.dir.path(),
        "openssl",
        &["genpkey", "-algorithm", "ed25519", "-out", "rotated.key"],
    )
    .await
    .assert_ok();
    run_program(
        app.dir.path(),
        "openssl",
        &["pkey", "-in", "rotated.key", "-pubout", "-out", "rotated.pub"],
    )
    .await
    .assert_ok();
    let img = image(5000, 51);
    let good = app.sign("release.key", "iq2", "1.0.0", 1, &img).await;
    let manifest_path = good.dir.join("manifest.json").display().to_string();
    let sig_path = app.path("rotated.sig").display().to_string();
    let args = [
        "pkeyutl",
        "-sign",
        "-inkey",
        "rotated.key",
        "-rawin",
        "-in",
        &manifest_path,
        "-out",
        &sig_path,
    ];
    run_program(app.dir.path(), "openssl", &args).await.assert_ok();
    let extra = json!({"keyid": openssl_keyid(&app, "rotated.pub").await, "sig": B64.encode(std::fs::read(&sig_path).unwrap())});
    let mut envelope: Value = serde_json::from_slice(&good.sig).unwrap();
    envelope["signatures"]
        .as_array_mut()
        .unwrap()
        .insert(0, extra.clone());
    let (status, body) = app
        .upload_parts(
            &app.publisher_token,
            &good.manifest,
            &serde_json::to_vec(&envelope).unwrap(),
            &img,
        )
        .await;
    assert_eq!(
        status, 201,
        "one trusted signature among several suffices: {body}"
    );
    let only_untrusted = serde_json::to_vec(&json!({"signatures": [extra]})).unwrap();
    let s2 = app.sign("release.key", "iq2", "1.0.1", 2, &img).await;
    let (status, body) = app
        .upload_parts(&app.publisher_token, &s2.manifest, &only_untrusted, &img)
        .await;
    assert_eq!(
        status, 422,
        "only an untrusted signature (over another manifest): {body}"
    );
}
