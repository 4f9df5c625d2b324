//! Admin API and release helpers on [`TestApp`].

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::{CliOutput, TestApp, random_u64, run_cli, run_cli_with_env};

impl TestApp {
    // ---- CLI ----

    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        run_cli(self.dir.path(), args).await
    }

    /// [`Self::cli`] with environment changes (`None` removes a variable).
    pub async fn cli_with_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> CliOutput {
        run_cli_with_env(self.dir.path(), args, env).await
    }

    /// A token made through the same service `fwdist token create` uses, on the server's
    /// database (the CLI command itself is tested in `cli`).
    pub async fn create_token(&self, name: &str, role: &str) -> String {
        let role = fwdist::domain::Role::parse(role).unwrap();
        let db = fwdist::db::Db::connect(&self.db_url).await.unwrap();
        let (_, token) = fwdist::services::tokens::Tokens::new(db.clone())
            .create(name, role, "cli")
            .await
            .unwrap();
        db.close().await;
        token.expose().to_owned()
    }

    /// A token made by `fwdist token create` next to the server.
    pub async fn cli_token(&self, name: &str, role: &str) -> String {
        let out = self
            .cli(&[
                "token",
                "create",
                "--name",
                name,
                "--role",
                role,
                "--config",
                "fwdist.toml",
            ])
            .await;
        out.assert_ok();
        out.stdout
            .split_whitespace()
            .last()
            .expect("token printed")
            .to_string()
    }

    /// `keygen --out <name>` in the app dir and trust the public key. Returns the key path.
    pub async fn trusted_key(&self, name: &str) -> String {
        self.cli(&["keygen", "--out", name]).await.assert_ok();
        fs::create_dir_all(self.path("certs/release-keys")).unwrap();
        fs::copy(
            self.path(&format!("{name}.pub")),
            self.path(&format!("certs/release-keys/{name}.pub")),
        )
        .unwrap();
        format!("{name}.key")
    }

    /// `iq-trust`, a directory holding the trusted release key (`release.pub`, made by
    /// [`Self::publish`]) as an IQ keeps it; returns its name, relative to the app's directory.
    pub fn iq_trust(&self) -> String {
        fs::create_dir_all(self.path("iq-trust")).unwrap();
        fs::copy(self.path("release.pub"), self.path("iq-trust/release.pub")).unwrap();
        "iq-trust".into()
    }

    /// Signs `image` (stored as `firmware.bin` in a fresh build dir) with `key`.
    pub async fn sign(&self, key: &str, model: &str, version: &str, seq: u64, image: &[u8]) -> Signed {
        let rel = format!("build/{model}-{version}-{seq}-{:x}", random_u64());
        let dir = self.path(&rel);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("firmware.bin"), image).unwrap();
        let seq = seq.to_string();
        let img = format!("{rel}/firmware.bin");
        let args = [
            "sign",
            "--key",
            key,
            "--model",
            model,
            "--version",
            version,
            "--sequence",
            &seq,
            &img,
        ];
        self.cli(&args).await.assert_ok();
        Signed {
            manifest: fs::read(dir.join("manifest.json")).unwrap(),
            sig: fs::read(dir.join("manifest.json.sig")).unwrap(),
            image: image.to_vec(),
            dir,
        }
    }

    /// Signs with the trusted key `release` (created on first use) and uploads; asserts 201.
    pub async fn publish(&self, model: &str, version: &str, seq: u64, image: &[u8]) -> Signed {
        if !self.path("certs/release-keys/release.pub").exists() {
            self.trusted_key("release").await;
        }
        let signed = self.sign("release.key", model, version, seq, image).await;
        let (status, body) = self.upload(&self.publisher_token, &signed).await;
        assert_eq!(status, 201, "publish {model} {version}: {body}");
        signed
    }

    // ---- admin API ----

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api_addr, path)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        read_response(req.send().await.expect("admin API request")).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(Method::GET, path, Some(&self.admin_token), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(Method::POST, path, Some(&self.admin_token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(Method::PATCH, path, Some(&self.admin_token), Some(body))
            .await
    }

    pub async fn upload(&self, token: &str, s: &Signed) -> (u16, Value) {
        self.upload_parts(token, &s.manifest, &s.sig, &s.image).await
    }

    pub async fn upload_parts(&self, token: &str, manifest: &[u8], sig: &[u8], image: &[u8]) -> (u16, Value) {
        use reqwest::multipart::{Form, Part};
        let form = Form::new()
            .part(
                "manifest",
                Part::bytes(manifest.to_vec()).file_name("manifest.json"),
            )
            .part(
                "signature",
                Part::bytes(sig.to_vec()).file_name("manifest.json.sig"),
            )
            .part("image", Part::bytes(image.to_vec()).file_name("firmware.bin"));
        let req = self
            .http
            .post(self.url("/api/v1/releases"))
            .bearer_auth(token)
            .multipart(form);
        read_response(req.send().await.expect("upload request")).await
    }

    pub async fn create_device(&self, mac: &str, model: &str) -> DeviceCreds {
        let (status, body) = self
            .post(
                "/api/v1/devices",
                json!({"id": mac, "model": model, "labels": []}),
            )
            .await;
        assert_eq!(status, 201, "create device {mac}: {body}");
        DeviceCreds {
            id: body["id"].as_str().unwrap().to_string(),
            secret: body["secret"]
                .as_str()
                .expect("secret in create answer")
                .to_string(),
        }
    }

    /// A fleet for `fwdist simulate`: `iq2` 1.0.0 (`img`) published and rolled out to 100 %,
    /// `n` devices `<mac_prefix>:XX` imported, their `id,secret` lines in `creds.csv`.
    pub async fn fleet(&self, n: usize, mac_prefix: &str, img: &[u8]) {
        self.publish("iq2", "1.0.0", 1, img).await;
        let csv: String = (0..n).map(|i| format!("{mac_prefix}:{i:02x},iq2\n")).collect();
        fs::write(self.path("fleet.csv"), csv).unwrap();
        let out = self
            .cli(&["devices", "import", "fleet.csv", "--config", "fwdist.toml"])
            .await;
        out.assert_ok();
        fs::write(self.path("creds.csv"), &out.stdout).unwrap();
        self.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
            .await;
    }

    /// Creates a rollout; asserts 201 and returns its id.
    pub async fn rollout(&self, body: Value) -> i64 {
        let (status, answer) = self.post("/api/v1/rollouts", body.clone()).await;
        assert_eq!(status, 201, "create rollout {body}: {answer}");
        answer["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("rollout id: {answer}"))
    }

    /// Polls `GET /api/v1/downloads?<query>` (records are written in batches) until `pred`
    /// holds for its items; panics after 10 s with the last answer.
    pub async fn wait_downloads(&self, query: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.get(&format!("/api/v1/downloads?{query}")).await;
            assert_eq!(status, 200, "downloads?{query}: {body}");
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if pred(&items) {
                return items;
            }
            if Instant::now() > deadline {
                panic!("downloads?{query} never matched; last answer: {body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn read_response(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Asserts a 4xx answer with the JSON error shape `{"error": "<non-empty>"}`.
pub fn assert_client_error(status: u16, body: &Value, what: &str) {
    assert!(
        (400..500).contains(&status),
        "{what}: expected 4xx, got {status}: {body}"
    );
    let msg = body.get("error").and_then(Value::as_str);
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "{what}: expected {{\"error\": ...}}, got {body}"
    );
}

pub struct DeviceCreds {
    pub id: String,
    pub secret: String,
}

#[derive(Clone)]
pub struct Signed {
    pub dir: PathBuf,
    pub manifest: Vec<u8>,
    pub sig: Vec<u8>,
    pub image: Vec<u8>,
}

impl Signed {
    pub fn manifest_json(&self) -> Value {
        serde_json::from_slice(&self.manifest).unwrap()
    }
}
