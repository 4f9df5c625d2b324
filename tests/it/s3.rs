//! Releases in S3-compatible object storage (`store.url = "s3://…"`, SPEC §13) against a real
//! SeaweedFS (see `helpers::seaweed`): published over the API, downloaded and resumed over
//! FTPS, never overwritten, and nothing left behind by a refused upload. Skipped when `weed`
//! is missing, a failure under `FWDIST_SYSTEM_TESTS=require`.

use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fwdist::domain::{Model, Version};
use fwdist::secret::Secret;
use fwdist::store::s3::{S3Location, S3Settings, STALE_AFTER};
use fwdist::store::{self, FileRef, ReleaseFiles, ReleaseStore, S3Store, StoreError};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::json;
use tokio::io::AsyncReadExt as _;

use crate::helpers::clients::ftplib_get;
use crate::helpers::seaweed::{ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFs};
use crate::helpers::{
    MIB, config_toml_at, free_ports, image, run_cli_with_env, sha256_hex, spawn_app_with_store,
};

const IMAGE: &str = "/releases/1.0.0/firmware.bin";

#[tokio::test]
async fn a_release_in_s3_is_downloaded_and_resumed_over_ftps_and_never_overwritten() {
    let Some(weed) = SeaweedFs::start("s3 publish, download and resume").await else {
        return;
    };
    let app = spawn_app_with_store(weed.store_toml("site-a")).await;
    // Three parts up (8 MiB each), three read windows down.
    let img = image(20 * MIB + 123, 91);
    app.publish("iq2", "1.0.0", 1, &img).await;
    let dir = "site-a/releases/iq2/1.0.0";
    let keys = vec![
        format!("{dir}/firmware.bin"),
        format!("{dir}/manifest.json"),
        format!("{dir}/manifest.json.sig"),
    ];
    assert_eq!(
        weed.keys("site-a").await,
        keys,
        "the release's objects, and nothing staged"
    );
    let client = weed.client();
    let stored = ObjectPath::from(keys[0].as_str());
    let before = client.head(&stored).await.unwrap();
    assert_eq!(before.size, img.len() as u64);

    let dev = app.create_device("aa:bb:cc:12:00:01", "iq2").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "devices": [dev.id]}))
        .await;
    // From the start, and resumed (REST) inside the second read window.
    for (offset, out) in [(0usize, "full.bin"), (9_000_001, "tail.bin")] {
        let res = ftplib_get(&app, &dev.id, &dev.secret, IMAGE, offset, out).await;
        assert!(
            res.success,
            "ftplib from {offset}: {}\n{}",
            res.stdout, res.stderr
        );
        let got = fs::read(app.path(out)).unwrap();
        assert_eq!(got.len(), img.len() - offset, "bytes from {offset}");
        assert_eq!(
            sha256_hex(&got),
            sha256_hex(&img[offset..]),
            "bytes from {offset}"
        );
    }

    let other = app.sign("release.key", "iq2", "1.0.0", 2, &image(MIB, 92)).await;
    let (status, body) = app.upload(&app.publisher_token, &other).await;
    assert_eq!(status, 409, "same version, other bytes: {body}");
    let after = client.head(&stored).await.unwrap();
    assert_eq!(
        (after.e_tag, after.last_modified, after.size),
        (before.e_tag, before.last_modified, before.size),
        "the stored image is untouched"
    );
    assert_eq!(weed.keys("site-a").await, keys, "nothing added, nothing staged");
    let res = ftplib_get(&app, &dev.id, &dev.secret, IMAGE, 0, "again.bin").await;
    assert!(res.success, "{}", res.stderr);
    assert_eq!(
        sha256_hex(&fs::read(app.path("again.bin")).unwrap()),
        sha256_hex(&img)
    );
}

#[tokio::test]
async fn refused_and_oversized_uploads_leave_nothing_in_the_bucket() {
    let Some(weed) = SeaweedFs::start("s3 refused uploads").await else {
        return;
    };
    let store = format!("{}max_image_bytes = {}\n", weed.store_toml("small"), 3 * MIB);
    let app = spawn_app_with_store(store).await;
    let key = app.trusted_key("release").await;

    let big = app.sign(&key, "iq2", "1.0.0", 1, &image(5 * MIB, 1)).await;
    let (status, body) = app.upload(&app.publisher_token, &big).await;
    assert_eq!(status, 413, "over store.max_image_bytes: {body}");
    let signed = app.sign(&key, "iq2", "1.0.0", 1, &image(MIB, 2)).await;
    let (status, body) = app
        .upload_parts(
            &app.publisher_token,
            &signed.manifest,
            &signed.sig,
            &image(MIB, 3),
        )
        .await;
    assert_eq!(status, 422, "image other than the manifest's: {body}");
    let (status, body) = app
        .upload_parts(
            &app.publisher_token,
            &signed.manifest,
            b"not a signature",
            &signed.image,
        )
        .await;
    assert_eq!(status, 422, "bad signature: {body}");

    assert_eq!(
        weed.keys("small").await,
        Vec::<String>::new(),
        "nothing stored or staged"
    );
    // The oversized upload's multipart upload is aborted when it is dropped, in the
    // background: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while weed.pending_uploads().await > 0 {
        assert!(Instant::now() < deadline, "a multipart upload was left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list) = app.get("/api/v1/releases").await;
    assert_eq!(list["items"], json!([]), "{list}");
}

fn settings(weed: &SeaweedFs, prefix: &str) -> S3Settings {
    S3Settings {
        location: S3Location::parse(&format!("s3://{BUCKET}/{prefix}")).unwrap(),
        endpoint: Some(weed.endpoint.clone()),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: Secret::from_client(SECRET_KEY),
        session_token: None,
    }
}

/// Stages `image` and commits it as iq2 `version`, as a node's publish does (without the
/// database row).
async fn commit(store: &Arc<dyn ReleaseStore>, version: &str, image: &[u8]) -> Result<(), StoreError> {
    let mut staged = store::stage(store, 1 << 30).await?;
    staged.write(image).await?;
    let staged = staged.finish().await?;
    let (model, version) = (Model::parse("iq2").unwrap(), Version::parse(version).unwrap());
    let manifest = format!("manifest of {}", sha256_hex(image));
    let files = ReleaseFiles {
        model: &model,
        version: &version,
        file: "fw.bin",
        manifest: manifest.as_bytes(),
        signature: b"sig",
    };
    staged.commit(&files).await
}

async fn read(store: &Arc<dyn ReleaseStore>, version: &str, offset: u64, len: u64) -> Vec<u8> {
    let (model, version) = (Model::parse("iq2").unwrap(), Version::parse(version).unwrap());
    let file = FileRef {
        model: &model,
        version: &version,
        file: "fw.bin",
    };
    let mut out = Vec::new();
    let mut r = store.open_range(file, offset, len).await.unwrap();
    r.read_to_end(&mut out).await.unwrap();
    out
}

async fn open(weed: &SeaweedFs, prefix: &str, stale_after: Duration) -> Arc<dyn ReleaseStore> {
    Arc::new(
        S3Store::open_with(&settings(weed, prefix), stale_after)
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn nodes_sharing_a_bucket_never_overwrite_a_claim_and_replace_only_old_orphans() {
    let Some(weed) = SeaweedFs::start("s3 claims and orphans").await else {
        return;
    };
    let node1 = open(&weed, "shared", STALE_AFTER).await;
    let node2 = open(&weed, "shared", STALE_AFTER).await;
    commit(&node1, "1.0.0", b"first image").await.unwrap();
    let err = commit(&node2, "1.0.0", b"other image").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists(m) if m.contains("another node")),
        "a younger claim is another node's publish: {err}"
    );
    assert_eq!(read(&node2, "1.0.0", 0, 11).await, b"first image");
    assert_eq!(read(&node2, "1.0.0", 6, 5).await, b"image");
    assert_eq!(read(&node2, "1.0.0", 11, 0).await, b"");
    assert_eq!(
        weed.keys("shared/incoming").await,
        Vec::<String>::new(),
        "node 2's staging removed"
    );
    let missing = Version::parse("9.9.9").unwrap();
    let model = Model::parse("iq2").unwrap();
    let gone = FileRef {
        model: &model,
        version: &missing,
        file: "fw.bin",
    };
    assert!(matches!(
        node1.open_range(gone, 0, 5).await,
        Err(StoreError::Missing(_))
    ));
    assert!(matches!(
        node1.open_range(gone, 0, 0).await,
        Err(StoreError::Missing(_))
    ));

    // A claim older than the orphan age, with no row (the caller checked), is replaced.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = open(&weed, "shared", Duration::from_secs(1)).await;
    commit(&late, "1.0.0", b"second image").await.unwrap();
    assert_eq!(read(&node1, "1.0.0", 0, 12).await, b"second image");

    // Staged uploads: a young one (another node's, in flight) survives a start, an old one
    // does not.
    let client = weed.client();
    let staged = ObjectPath::from("shared/incoming/0123456789abcdef01234567");
    client
        .put(&staged, PutPayload::from_static(b"half"))
        .await
        .unwrap();
    open(&weed, "shared", STALE_AFTER).await;
    assert_eq!(weed.keys("shared/incoming").await, vec![staged.to_string()]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    open(&weed, "shared", Duration::from_secs(1)).await;
    assert_eq!(weed.keys("shared/incoming").await, Vec::<String>::new());
}

#[tokio::test]
async fn a_wrong_secret_stops_the_start_with_the_bucket_named_and_the_secret_not() {
    let Some(weed) = SeaweedFs::start("s3 wrong secret").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (_, _, passive, _ports) = free_ports();
    let root = format!(
        "[store]\nroot = \"{}\"\n",
        dir.path().join("firmware-store").display()
    );
    let wrong = weed.store_toml("x").replace(SECRET_KEY, "wrong-secret-value");
    let config = config_toml_at(dir.path(), any, any, passive).replace(&root, &format!("[store]\n{wrong}"));
    fs::write(dir.path().join("fwdist.toml"), config).unwrap();
    let out = run_cli_with_env(
        dir.path(),
        &["serve", "--config", "fwdist.toml"],
        &[("RUST_LOG", Some("debug"))],
    )
    .await;
    assert!(!out.success, "a wrong key must stop the start: {}", out.stderr);
    assert!(
        out.stderr
            .contains("fwdist: error: opening the firmware store at s3://fwdist-it/x"),
        "{}",
        out.stderr
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains("wrong-secret-value"), "the secret leaked: {text}");
    }
}
