//! A real headless Chromium for the dashboard's tests, driven over W3C WebDriver by
//! Debian's `chromedriver` — our own small client over reqwest (a few commands: session,
//! navigate, find, click, type, execute, screenshot, logs), so the suite needs no WebDriver
//! crate.
//!
//! [`Browser::start`] starts `chromedriver --port=0` and reads the port it bound from its
//! first lines; the browser runs headless, sandbox off (the tests run as root in CI), in a
//! profile of its own, with every background service off and a resolver that resolves
//! nothing: it cannot reach any host but loopback, whatever a page asks for. Dropping the
//! `Browser` ends the session (so chromedriver closes Chromium) and kills chromedriver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    profile: tempfile::TempDir,
}

/// An element of the page, as WebDriver names it.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a Chromium session (`chromium` and `chromedriver` are the
    /// paths of the programs).
    pub async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let mut driver = Command::new(chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let stdout = driver.stdout.take().expect("chromedriver stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(rest.trim_end_matches('.').trim().parse::<u16>().ok());
                    break;
                }
            }
            // Keep reading so chromedriver never blocks on a full pipe.
            for _ in lines {}
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(p)) => p,
            other => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver did not say its port: {other:?}");
            }
        };
        let profile = tempfile::Builder::new()
            .prefix("fwdist-chromium-")
            .tempdir()
            .unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http,
            profile,
        };
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1300".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"
                .to_owned(),
            "--metrics-recording-only".to_owned(),
            "--no-proxy-server".to_owned(),
            // Nothing but loopback resolves: the browser cannot reach another host.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_owned(),
            format!("--user-data-dir={}", b.profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer = b.command(reqwest::Method::POST, "/session", Some(caps)).await;
        b.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        b
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method.clone(), path, body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| json!(e.to_string()))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| json!(e.to_string()))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if ok { Ok(value) } else { Err(value) }
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, &self.at("/url"), Some(json!({"url": url})))
            .await;
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let body = json!({"using": "css selector", "value": css});
        let v = self
            .try_command(reqwest::Method::POST, &self.at("/element"), Some(body))
            .await
            .ok()?;
        v[ELEMENT].as_str().map(|s| Element(s.to_owned()))
    }

    /// Waits up to 20 s for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() >= deadline {
                let page = self
                    .try_command(
                        reqwest::Method::POST,
                        &self.at("/execute/sync"),
                        Some(json!({"script": "return location.href + '\\n' + document.body.innerHTML", "args": []})),
                    )
                    .await;
                panic!(
                    "no {css} on the page within 20 s; errors: {:?}; page: {page:?}",
                    self.script_errors().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `script` (a function body returning a value) until `pred` holds for its value,
    /// for up to 20 s; returns the value.
    pub async fn wait_script(&self, script: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.exec(script).await;
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{script} stayed {v} for 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, e: &Element) {
        self.command(
            reqwest::Method::POST,
            &self.at(&format!("/element/{}/click", e.0)),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        let path = self.at(&format!("/element/{}/value", e.0));
        self.command(
            reqwest::Method::POST,
            &self.at(&format!("/element/{}/clear", e.0)),
            Some(json!({})),
        )
        .await;
        self.command(reqwest::Method::POST, &path, Some(json!({"text": text})))
            .await;
    }

    pub async fn text(&self, e: &Element) -> String {
        let v = self
            .command(
                reqwest::Method::GET,
                &self.at(&format!("/element/{}/text", e.0)),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` as the body of a function in the page; its return value.
    pub async fn exec(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// What the dashboard's own error hook collected (script errors, rejections, CSP).
    pub async fn script_errors(&self) -> Value {
        self.try_command(
            reqwest::Method::POST,
            &self.at("/execute/sync"),
            Some(json!({"script": "return window.fwdistErrors || null", "args": []})),
        )
        .await
        .unwrap_or(Value::Null)
    }

    /// The browser's console log since the last call (chromedriver's log endpoint).
    pub async fn console(&self) -> Vec<Value> {
        let v = self
            .command(
                reqwest::Method::POST,
                &self.at("/se/log"),
                Some(json!({"type": "browser"})),
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self
            .command(reqwest::Method::GET, &self.at("/screenshot"), None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver close Chromium; a blocking request, since
        // drop cannot await. Then chromedriver itself goes.
        if !self.session.is_empty()
            && let Some(addr) = self.base.strip_prefix("http://")
            && let Ok(mut s) = TcpStream::connect(addr)
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let req = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if s.write_all(req.as_bytes()).is_ok() {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where the dashboard's screenshots are kept in the repository.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
}
