//! Release-engineer commands (SPEC §2, §3): keygen, sign, verify — checked independently
//! with openssl.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::helpers::{CliOutput, image, rfc3339, run_cli, run_program, sha256_hex};

async fn openssl(dir: &Path, args: &[&str]) -> CliOutput {
    run_program(dir, "openssl", args).await
}

#[tokio::test]
async fn keygen_writes_keys_that_openssl_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_cli(dir, &["keygen", "--out", "release"]).await.assert_ok();
    let mode = fs::metadata(dir.join("release.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private key mode");
    let pub_pem = fs::read_to_string(dir.join("release.pub")).unwrap();
    assert!(
        pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"),
        "SPKI PEM: {pub_pem}"
    );
    let derived = openssl(dir, &["pkey", "-in", "release.key", "-pubout"]).await;
    derived.assert_ok();
    assert_eq!(
        derived.stdout.trim(),
        pub_pem.trim(),
        "openssl derives the same public key"
    );
    let text = openssl(dir, &["pkey", "-in", "release.key", "-noout", "-text"]).await;
    assert!(
        text.assert_ok().stdout.contains("ED25519"),
        "an ed25519 key: {}",
        text.stdout
    );
}

#[tokio::test]
async fn sign_writes_a_manifest_that_openssl_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_cli(dir, &["keygen", "--out", "release"]).await.assert_ok();
    fs::create_dir(dir.join("build")).unwrap();
    let img = image(1_234_567, 61);
    fs::write(dir.join("build/firmware.bin"), &img).unwrap();
    let args = [
        "sign",
        "--key",
        "release.key",
        "--model",
        "iq2",
        "--version",
        "2.4.1",
        "--sequence",
        "42",
        "--expires",
        "2099-11-24T00:00:00Z",
        "--notes",
        "hello notes",
        "build/firmware.bin",
    ];
    run_cli(dir, &args).await.assert_ok();
    let manifest_bytes = fs::read(dir.join("build/manifest.json")).unwrap();
    let m: Value = serde_json::from_slice(&manifest_bytes).expect("manifest is JSON");
    assert_eq!(m["schema"], 1, "{m}");
    assert_eq!(m["model"], "iq2", "{m}");
    assert_eq!(m["version"], "2.4.1", "{m}");
    assert_eq!(m["sequence"], 42, "{m}");
    assert_eq!(m["file"], "firmware.bin", "{m}");
    assert_eq!(m["size"], img.len() as u64, "{m}");
    assert_eq!(m["sha256"], sha256_hex(&img), "lowercase hex sha256: {m}");
    assert_eq!(m["notes"], "hello notes", "{m}");
    let created = rfc3339(&m["created_at"], "created_at");
    assert!(
        (time::OffsetDateTime::now_utc() - created).abs() < time::Duration::minutes(10),
        "created_at is now"
    );
    assert_eq!(
        rfc3339(&m["expires_at"], "expires_at"),
        rfc3339(&json!("2099-11-24T00:00:00Z"), "x")
    );

    let env: Value = serde_json::from_slice(&fs::read(dir.join("build/manifest.json.sig")).unwrap()).unwrap();
    let sigs = env["signatures"]
        .as_array()
        .unwrap_or_else(|| panic!("signatures array: {env}"));
    assert_eq!(sigs.len(), 1, "{env}");
    openssl(
        dir,
        &[
            "pkey",
            "-pubin",
            "-in",
            "release.pub",
            "-outform",
            "DER",
            "-out",
            "release.der",
        ],
    )
    .await
    .assert_ok();
    let keyid = sha256_hex(&fs::read(dir.join("release.der")).unwrap());
    assert_eq!(sigs[0]["keyid"], keyid, "keyid = sha256 of the SPKI DER");
    let sig = B64
        .decode(sigs[0]["sig"].as_str().unwrap())
        .expect("base64 signature");
    assert_eq!(sig.len(), 64, "ed25519 signature length");
    fs::write(dir.join("sig.bin"), &sig).unwrap();
    let verify = [
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "release.pub",
        "-rawin",
        "-in",
        "build/manifest.json",
        "-sigfile",
        "sig.bin",
    ];
    let out = openssl(dir, &verify).await;
    assert!(
        out.success,
        "openssl verifies the signature: {} {}",
        out.stdout, out.stderr
    );
    // Negative control: openssl rejects the same signature over other bytes.
    fs::write(dir.join("other.json"), [&manifest_bytes[..], b" "].concat()).unwrap();
    let mut other = verify;
    other[7] = "other.json";
    assert!(!openssl(dir, &other).await.success, "openssl check is meaningful");

    run_cli(dir, &["verify", "--pub", "release.pub", "build"])
        .await
        .assert_ok();

    // --out DIR: manifest names the image's own file name.
    fs::write(dir.join("build/fw-2.5.0.img"), &img[..1000]).unwrap();
    let args = [
        "sign",
        "--key",
        "release.key",
        "--model",
        "iq2",
        "--version",
        "2.5.0",
        "--sequence",
        "43",
        "--out",
        "out",
        "build/fw-2.5.0.img",
    ];
    run_cli(dir, &args).await.assert_ok();
    let m: Value = serde_json::from_slice(&fs::read(dir.join("out/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["file"], "fw-2.5.0.img", "{m}");
    assert_eq!(m["size"], 1000, "{m}");
    assert!(
        m.get("expires_at").is_none_or(Value::is_null),
        "no --expires, no expiry: {m}"
    );
    fs::copy(dir.join("build/fw-2.5.0.img"), dir.join("out/fw-2.5.0.img")).unwrap();
    run_cli(dir, &["verify", "--pub", "release.pub", "out"])
        .await
        .assert_ok();
}

#[tokio::test]
async fn verify_rejects_every_kind_of_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_cli(dir, &["keygen", "--out", "release"]).await.assert_ok();
    run_cli(dir, &["keygen", "--out", "other"]).await.assert_ok();
    fs::create_dir(dir.join("rel")).unwrap();
    let img = image(100_000, 62);
    fs::write(dir.join("rel/firmware.bin"), &img).unwrap();
    let args = [
        "sign",
        "--key",
        "release.key",
        "--model",
        "iq2",
        "--version",
        "1.0.0",
        "--sequence",
        "1",
        "rel/firmware.bin",
    ];
    run_cli(dir, &args).await.assert_ok();
    run_cli(dir, &["verify", "--pub", "release.pub", "rel"])
        .await
        .assert_ok();
    let manifest = fs::read(dir.join("rel/manifest.json")).unwrap();

    run_cli(dir, &["verify", "--pub", "other.pub", "rel"])
        .await
        .assert_failed(true);

    let mut flipped = img.clone();
    flipped[50_000] ^= 0x80;
    fs::write(dir.join("rel/firmware.bin"), &flipped).unwrap();
    run_cli(dir, &["verify", "--pub", "release.pub", "rel"])
        .await
        .assert_failed(true);
    fs::write(dir.join("rel/firmware.bin"), &img[..img.len() - 1]).unwrap();
    run_cli(dir, &["verify", "--pub", "release.pub", "rel"])
        .await
        .assert_failed(true);
    fs::remove_file(dir.join("rel/firmware.bin")).unwrap();
    run_cli(dir, &["verify", "--pub", "release.pub", "rel"])
        .await
        .assert_failed(true);
    fs::write(dir.join("rel/firmware.bin"), &img).unwrap();

    let text = String::from_utf8(manifest.clone())
        .unwrap()
        .replace("\"1.0.0\"", "\"1.0.9\"");
    fs::write(dir.join("rel/manifest.json"), text).unwrap();
    run_cli(dir, &["verify", "--pub", "release.pub", "rel"])
        .await
        .assert_failed(true);
    fs::write(dir.join("rel/manifest.json"), &manifest).unwrap();
    fs::write(dir.join("rel/manifest.json.sig"), b"{\"signatures\": 7}").unwrap();
    run_cli(dir, &["verify", "--pub", "release.pub", "rel"])
        .await
        .assert_failed(true);
    run_cli(dir, &["verify", "--pub", "missing.pub", "rel"])
        .await
        .assert_failed(true);
    run_cli(dir, &["verify", "--pub", "release.pub", "no-such-dir"])
        .await
        .assert_failed(true);
}
