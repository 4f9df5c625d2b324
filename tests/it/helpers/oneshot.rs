//! The admin API without sockets: the whole app built in-process (never served) and its
//! router driven with `tower::ServiceExt::oneshot`, for tests of the API's rules. Releases
//! are signed in-process with `fwdist_release`; download records are written straight to the
//! database, as the FTPS recorder would.

use std::fs;

use axum::body::Body;
use axum::http::{Method, Request, header};
use fwdist::app::App;
use fwdist::db::downloads::DownloadRecord;
use fwdist::domain::{DeviceId, Model, Outcome, Sha256Digest, Version, now_ms};
use fwdist_release::manifest::Manifest;
use fwdist_release::signing::{self, Ed25519SigningKey as SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tower::ServiceExt as _;

use super::config_toml_at;

pub struct Api {
    pub dir: TempDir,
    pub app: App,
    pub admin: String,
    pub publisher: String,
    pub viewer: String,
    key: SigningKey,
}

/// A fresh app in a temp dir, with a trusted release key and one token per role.
pub async fn api() -> Api {
    let dir = tempfile::Builder::new().prefix("fwdist-api-").tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    fs::write(
        dir.path().join("fwdist.toml"),
        config_toml_at(dir.path(), any, any, (60000, 60007)),
    )
    .unwrap();
    let cfg = fwdist::config::Config::load(Some(&dir.path().join("fwdist.toml"))).unwrap();
    let key = signing::generate_key().unwrap();
    let (_, public) = signing::encode_key_pair(&key).unwrap();
    fs::create_dir_all(dir.path().join("certs/release-keys")).unwrap();
    fs::write(dir.path().join("certs/release-keys/release.pub"), public).unwrap();
    let app = App::build(cfg).await.unwrap();
    let token = |name: &'static str, role| {
        let tokens = app.services().tokens.clone();
        async move {
            tokens
                .create(name, role, "cli")
                .await
                .unwrap()
                .1
                .expose()
                .to_owned()
        }
    };
    use fwdist::domain::Role;
    let (admin, publisher, viewer) = (
        token("admin", Role::Admin).await,
        token("publisher", Role::Publisher).await,
        token("viewer", Role::Viewer).await,
    );
    Api {
        dir,
        app,
        admin,
        publisher,
        viewer,
        key,
    }
}

impl Api {
    /// One request; the answer's status and JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    async fn send(&self, req: Request<Body>) -> (u16, Value) {
        let resp = self.app.router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, Some(&self.admin), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(&self.admin), Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PATCH, path, Some(&self.admin), Some(body))
            .await
    }

    /// Signs `image` as `model` `version` (sequence `seq`, file `firmware.bin`) and uploads
    /// it as the publisher; returns the answer.
    pub async fn upload(&self, model: &str, version: &str, seq: u64, image: &[u8]) -> (u16, Value) {
        let manifest = Manifest {
            schema: 1,
            model: Model::parse(model).unwrap(),
            version: Version::parse(version).unwrap(),
            sequence: seq,
            file: "firmware.bin".into(),
            size: image.len() as u64,
            sha256: Sha256Digest(Sha256::digest(image).into()),
            created_at: time::OffsetDateTime::now_utc(),
            expires_at: None,
            notes: None,
        }
        .to_bytes()
        .unwrap();
        let sig = signing::sign_manifest(&self.key, &manifest).unwrap();
        let boundary = "fwdist-test-boundary";
        let mut body = Vec::new();
        for (name, bytes) in [
            ("manifest", &manifest[..]),
            ("signature", &sig[..]),
            ("image", image),
        ] {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/releases")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.publisher))
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// [`Api::upload`], asserting 201.
    pub async fn publish(&self, model: &str, version: &str, seq: u64, image: &[u8]) {
        let (status, body) = self.upload(model, version, seq, image).await;
        assert_eq!(status, 201, "publish {model} {version}: {body}");
    }

    pub async fn create_device(&self, id: &str, model: &str) {
        let (status, body) = self
            .post("/api/v1/devices", json!({"id": id, "model": model}))
            .await;
        assert_eq!(status, 201, "create device {id}: {body}");
    }

    /// Creates a rollout; asserts 201 and returns its id.
    pub async fn rollout(&self, body: Value) -> i64 {
        let (status, answer) = self.post("/api/v1/rollouts", body.clone()).await;
        assert_eq!(status, 201, "create rollout {body}: {answer}");
        answer["id"].as_i64().unwrap()
    }

    /// The version a device should fetch now, `Null` for none.
    pub async fn target_of(&self, id: &str) -> Value {
        let (status, dev) = self.get(&format!("/api/v1/devices/{id}")).await;
        assert_eq!(status, 200, "{dev}");
        assert!(dev.get("target").is_some(), "device has a target field: {dev}");
        dev["target"]["version"].clone()
    }

    /// Writes a download record as the FTPS recorder would: `bytes` of `file` from `offset`.
    pub async fn record(&self, device: &str, version: &str, file: &str, offset: u64, bytes: u64, size: u64) {
        let now = now_ms();
        let complete = offset + bytes == size;
        let r = DownloadRecord {
            device: DeviceId::parse(device).unwrap(),
            model: Model::parse("iq2").unwrap(),
            version: Version::parse(version).unwrap(),
            file: file.into(),
            offset,
            bytes,
            size,
            outcome: if complete {
                Outcome::Complete
            } else {
                Outcome::Aborted
            },
            started_at: now,
            finished_at: now,
            client_ip: "192.0.2.1".into(),
            data_port: Some(60000),
            node: "test-node".into(),
        };
        self.app
            .db()
            .insert_downloads(&[r], &fwdist::services::rollouts::RULES)
            .await
            .unwrap();
    }
}
