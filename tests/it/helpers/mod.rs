//! The test harness: start `fwdist serve` in a temp dir (this file), drive its admin API and
//! CLI (`api`), run programs (`process`), make and check data (`data`).
#![allow(dead_code)]

mod api;
mod data;
mod process;
pub mod system;

pub use api::{Signed, assert_client_error};
pub use data::{image, rfc3339, sha256_hex, snapshot};
pub use process::{CliOutput, run_cli, run_program};

use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_fwdist");
pub const MIB: usize = 1024 * 1024;
const PASSIVE_PORTS: u16 = 8;

/// A running server in its own directory. Killed on drop; its log is printed on drop when
/// `TEST_LOG` is set or the test is failing.
pub struct TestApp {
    pub dir: TempDir,
    pub ftp_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub passive: (u16, u16),
    pub admin_token: String,
    pub publisher_token: String,
    pub viewer_token: String,
    pub http: reqwest::Client,
    child: Option<Child>,
    env: Vec<(String, String)>,
    _ports: PortLock,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_env(&[]).await
}

/// Like [`spawn_app`], with extra environment variables for the server process.
pub async fn spawn_app_with_env(env: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::Builder::new().prefix("fwdist-it-").tempdir().unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (ftp_addr, api_addr, passive, ports) = free_ports();
    let mut app = TestApp {
        dir,
        ftp_addr,
        api_addr,
        passive,
        admin_token: String::new(),
        publisher_token: String::new(),
        viewer_token: String::new(),
        http,
        child: None,
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        _ports: ports,
    };
    // Ports are reserved by "bind, then drop", so a parallel test can still grab one before
    // the server binds it. Only then is a fresh set of ports worth a second try.
    let mut failures = Vec::new();
    for attempt in 0..3 {
        if attempt > 0 {
            (app.ftp_addr, app.api_addr, app.passive, app._ports) = free_ports();
        }
        app.write_config();
        match app.try_start().await {
            Ok(()) => break,
            Err(e) if e.contains("exited early") && attempt < 2 => failures.push(e),
            Err(e) => panic!("{e}\nearlier attempts: {failures:#?}"),
        }
    }
    app.admin_token = app.create_token("it-admin", "admin").await;
    app.publisher_token = app.create_token("it-publisher", "publisher").await;
    app.viewer_token = app.create_token("it-viewer", "viewer").await;
    app
}

/// The test configuration (paths relative to the server's working directory).
pub fn config_toml(ftp_addr: SocketAddr, api_addr: SocketAddr, passive: (u16, u16)) -> String {
    format!(
        r#"node = "test-node"
[ftps]
listen = "{ftp_addr}"
passive_ports = "{}-{}"
public_host = "127.0.0.1"
cert = "certs/server.crt"
key = "certs/server.key"
idle_timeout_secs = 60
max_failed_logins = 3
lockout_secs = 60
[admin]
listen = "{api_addr}"
[store]
root = "firmware-store"
[db]
url = "sqlite://firmware-store/fwdist.sqlite"
[signing]
trusted_keys = "certs/release-keys"
"#,
        passive.0, passive.1
    )
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A block of ports below Linux's ephemeral range (so no outgoing connection can take one)
/// that can all be bound right now: control, admin API, then `PASSIVE_PORTS` passive ports.
///
/// Tests run in parallel processes, so a block is also claimed with an OS file lock (released
/// when the returned [`PortLock`] is dropped or the process dies); two tests never share one.
pub fn free_ports() -> (SocketAddr, SocketAddr, (u16, u16), PortLock) {
    let block = PASSIVE_PORTS + 2;
    let lock_dir = std::env::temp_dir().join("fwdist-it-ports");
    fs::create_dir_all(&lock_dir).unwrap();
    for _ in 0..500 {
        let base = 20000 + (random_u64() % u64::from(12000 / block)) as u16 * block;
        let file = fs::File::create(lock_dir.join(format!("{base}.lock"))).unwrap();
        if file.try_lock().is_err() {
            continue;
        }
        if (base..base + block).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
            return (
                addr(base),
                addr(base + 1),
                (base + 2, base + block - 1),
                PortLock(file),
            );
        }
    }
    panic!("no free block of ports found");
}

/// Holds a block of ports for one test (see [`free_ports`]).
pub struct PortLock(fs::File);

impl TestApp {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn log_path(&self) -> PathBuf {
        self.path("server.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn cert_path(&self) -> PathBuf {
        self.path("certs/server.crt")
    }

    pub fn write_config(&self) {
        let config = config_toml(self.ftp_addr, self.api_addr, self.passive);
        fs::write(self.path("fwdist.toml"), config).unwrap();
    }

    async fn start(&mut self) {
        if let Err(e) = self.try_start().await {
            panic!("{e}");
        }
    }

    async fn try_start(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", "fwdist.toml"])
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("IT_SERVER_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FWDIST_")) {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.child = Some(cmd.spawn().expect("spawn fwdist serve"));
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/healthz", self.api_addr);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "fwdist serve exited early with {status}; log:\n{}",
                    self.log()
                ));
            }
            if let Ok(resp) = self.http.get(&url).timeout(Duration::from_secs(2)).send().await
                && resp.status() == 200
                && self.cert_path().exists()
            {
                // The answer must have come from our child, not from whoever else holds the port.
                if self.child.as_mut().unwrap().try_wait().unwrap().is_none() {
                    return Ok(());
                }
                continue;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "fwdist serve not healthy after 30 s; log:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM first so a graceful shutdown path is exercised, SIGKILL if it hangs.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server (SIGTERM) and starts it again on the same directory and ports.
    pub async fn restart(&mut self) {
        self.stop();
        self.start().await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("TEST_LOG").is_some() || std::thread::panicking() {
            eprintln!(
                "===== fwdist server log ({}) =====\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}
