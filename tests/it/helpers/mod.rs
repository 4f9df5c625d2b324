//! The test harness: start the server in a temp dir (this file) — in-process on port 0 by
//! default, or as the real `fwdist serve` process when a test needs its log, its pid or its
//! environment — drive its admin API and CLI (`api`), run programs (`process`), make and
//! check data (`data`), run FTPS client programs (`clients`).
#![allow(dead_code)]

mod api;
pub mod browser;
pub mod clients;
mod data;
pub mod oneshot;
mod process;
pub mod seaweed;
pub mod system;

pub use api::{Signed, assert_client_error};
pub use data::{image, rfc3339, sha256_hex, snapshot};
pub use process::{CliOutput, run_cli, run_cli_with_env, run_program};

use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_fwdist");
pub const MIB: usize = 1024 * 1024;
const PASSIVE_PORTS: u16 = 8;

/// A running server in its own directory, stopped on drop. A process server's log is
/// printed on drop when `TEST_LOG` is set or the test is failing; an in-process server logs
/// to the test's stderr when `TEST_LOG` is set.
pub struct TestApp {
    pub dir: TempDir,
    pub ftp_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub passive: (u16, u16),
    pub admin_token: String,
    pub publisher_token: String,
    pub viewer_token: String,
    pub http: reqwest::Client,
    /// The server's database (`FWDIST_DB__URL` when a test sets it: nodes that share one).
    pub db_url: String,
    server: Option<Server>,
    mode: Mode,
    env: Vec<(String, String)>,
    /// The `[store]` table instead of the local store's `root` (object storage).
    store_toml: Option<String>,
    _ports: PortLock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    InProcess,
    Process,
}

enum Server {
    Process(Child),
    InProcess(InProcess),
}

/// `fwdist::app::App` on a runtime (and thread) of its own, so nothing a test blocks on can
/// stall it, and nothing it does shares the test's runtime.
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

/// The server in-process on port 0: for tests that drive it only over its sockets.
pub async fn spawn_app() -> TestApp {
    spawn(Mode::InProcess, &[]).await
}

/// The real `fwdist serve` process: for tests that read its log, signal it or measure it.
pub async fn spawn_app_binary() -> TestApp {
    spawn(Mode::Process, &[]).await
}

/// The real process, with extra environment variables (configuration overrides included).
pub async fn spawn_app_with_env(env: &[(&str, &str)]) -> TestApp {
    spawn(Mode::Process, env).await
}

/// The real process in one-port mode (`ftps.passive_ports = "same"`: passive replies name the
/// control port), with extra environment variables.
pub async fn spawn_app_one_port_with_env(env: &[(&str, &str)]) -> TestApp {
    let mut all = vec![("FWDIST_FTPS__PASSIVE_PORTS", "same")];
    all.extend_from_slice(env);
    spawn(Mode::Process, &all).await
}

/// The real process in one-port mode.
pub async fn spawn_app_one_port() -> TestApp {
    spawn_app_one_port_with_env(&[]).await
}

/// The server in-process with this `[store]` table instead of a local store (e.g.
/// [`seaweed::SeaweedFs::store_toml`]); the database stays a SQLite file in the temp dir.
pub async fn spawn_app_with_store(store_toml: String) -> TestApp {
    spawn_with(Mode::InProcess, &[], Some(store_toml)).await
}

/// The real process with its own `[store]` table and extra environment variables (a node of
/// several over one bucket).
pub async fn spawn_app_with_store_and_env(store_toml: String, env: &[(&str, &str)]) -> TestApp {
    spawn_with(Mode::Process, env, Some(store_toml)).await
}

async fn spawn(mode: Mode, env: &[(&str, &str)]) -> TestApp {
    spawn_with(mode, env, None).await
}

async fn spawn_with(mode: Mode, env: &[(&str, &str)], store_toml: Option<String>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        fwdist::telemetry::init();
    }
    let dir = tempfile::Builder::new().prefix("fwdist-it-").tempdir().unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (passive, ports) = free_passive_ports();
    let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
    let db_url = env
        .iter()
        .find(|(k, _)| *k == "FWDIST_DB__URL")
        .map_or_else(|| db_url(dir.path()), |(_, v)| (*v).to_owned());
    let mut app = TestApp {
        db_url,
        dir,
        ftp_addr: unbound,
        api_addr: unbound,
        passive,
        admin_token: String::new(),
        publisher_token: String::new(),
        viewer_token: String::new(),
        http,
        server: None,
        mode,
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        store_toml,
        _ports: ports,
    };
    app.write_config();
    app.start().await;
    app.admin_token = app.create_token("it-admin", "admin").await;
    app.publisher_token = app.create_token("it-publisher", "publisher").await;
    app.viewer_token = app.create_token("it-viewer", "viewer").await;
    app
}

/// The test configuration, with paths under `root` (or relative to the server's working
/// directory when `root` is empty). Port 0 binds any free port.
pub fn config_toml_at(
    root: &Path,
    ftp_addr: SocketAddr,
    api_addr: SocketAddr,
    passive: (u16, u16),
) -> String {
    let r = |p: &str| root.join(p).display().to_string();
    format!(
        r#"node = "test-node"
[ftps]
listen = "{ftp_addr}"
passive_ports = "{}-{}"
public_host = "127.0.0.1"
cert = "{}"
key = "{}"
idle_timeout_secs = 60
max_failed_logins = 3
lockout_secs = 60
[admin]
listen = "{api_addr}"
[store]
root = "{}"
[db]
url = "{}"
[signing]
trusted_keys = "{}"
"#,
        passive.0,
        passive.1,
        r("certs/server.crt"),
        r("certs/server.key"),
        r("firmware-store"),
        db_url(root),
        r("certs/release-keys"),
    )
}

/// Whether the tests run on PostgreSQL (`FWDIST_TEST_DB=postgres`, with
/// `FWDIST_TEST_PG_URL` naming a server where databases can be created:
/// `tests/services/postgres.sh` starts one) instead of a SQLite file per test.
pub fn on_postgres() -> bool {
    std::env::var("FWDIST_TEST_DB").is_ok_and(|v| v == "postgres")
}

/// The database URL of the server whose files are under `root`: a SQLite file there, or on
/// PostgreSQL a database of its own, named after `root` (so the same root always gets the
/// same database) or new for every call when `root` is relative.
pub fn db_url(root: &Path) -> String {
    if !on_postgres() {
        return format!("sqlite://{}", root.join("firmware-store/fwdist.sqlite").display());
    }
    pg_database(root)
}

/// A PostgreSQL database on `FWDIST_TEST_PG_URL`'s server (created if new): named after
/// `root`, or new when `root` is relative.
pub fn pg_database(root: &Path) -> String {
    let admin = std::env::var("FWDIST_TEST_PG_URL")
        .expect("FWDIST_TEST_DB=postgres needs FWDIST_TEST_PG_URL (tests/services/postgres.sh start)");
    let name = if root.as_os_str().is_empty() {
        format!("t_{:016x}", random_u64())
    } else {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&root, &mut h);
        format!("t_{:016x}", h.finish())
    };
    let (server, _) = admin
        .rsplit_once('/')
        .expect("FWDIST_TEST_PG_URL ends in /DATABASE");
    static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut created = CREATED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !created.contains(&name) {
        let out = Command::new("psql")
            .args([admin.as_str(), "-qAtc", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("psql runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("already exists"),
            "CREATE DATABASE {name}: {err}"
        );
        created.push(name.clone());
    }
    format!("{server}/{name}")
}

/// The test configuration with paths relative to the server's working directory.
pub fn config_toml(ftp_addr: SocketAddr, api_addr: SocketAddr, passive: (u16, u16)) -> String {
    config_toml_at(Path::new(""), ftp_addr, api_addr, passive)
}

pub fn random_u64() -> u64 {
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

/// A block of `PASSIVE_PORTS` ports for a passive range, held like [`free_ports`]'s.
pub fn free_passive_ports() -> ((u16, u16), PortLock) {
    let (_, _, passive, lock) = free_ports();
    (passive, lock)
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

    /// The server's log (a process server only: an in-process one logs to stderr).
    pub fn log(&self) -> String {
        assert_eq!(
            self.mode,
            Mode::Process,
            "the log of an in-process server is not kept: use spawn_app_binary"
        );
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        match &self.server {
            Some(Server::Process(child)) => child.id(),
            _ => panic!("no server process: use spawn_app_binary"),
        }
    }

    /// The FTPS certificate: `certs/server.crt`, or what `FWDIST_FTPS__CERT` names (a node
    /// that shares another's).
    pub fn cert_path(&self) -> PathBuf {
        match self.env.iter().find(|(k, _)| k == "FWDIST_FTPS__CERT") {
            Some((_, v)) => PathBuf::from(v),
            None => self.path("certs/server.crt"),
        }
    }

    /// Writes `fwdist.toml` for the current passive range; the control and API ports are 0
    /// (chosen at every start).
    pub fn write_config(&self) {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = config_toml_at(self.dir.path(), any, any, self.passive);
        if let Some(store) = &self.store_toml {
            let root = format!("[store]\nroot = \"{}\"\n", self.path("firmware-store").display());
            assert!(config.contains(&root), "the test config has a [store] root line");
            config = config.replace(&root, &format!("[store]\n{store}"));
        }
        fs::write(self.path("fwdist.toml"), config).unwrap();
    }

    async fn start(&mut self) {
        let started = match self.mode {
            Mode::InProcess => self.start_in_process().await,
            Mode::Process => self.start_process().await,
        };
        if let Err(e) = started {
            panic!("{e}");
        }
    }

    async fn start_in_process(&mut self) -> Result<(), String> {
        let cfg = fwdist::config::Config::load(Some(&self.path("fwdist.toml"))).map_err(|e| e.to_string())?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fwdist-in-process".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    match fwdist::app::App::build(cfg).await {
                        Ok(app) => {
                            let _ = ready_tx.send(Ok((app.ftp_addr(), app.api_addr())));
                            let stopped = async {
                                let _ = stop_rx.await;
                            };
                            if let Err(e) = app.run_until_stopped(stopped).await {
                                eprintln!("in-process fwdist failed: {e:#}");
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                        }
                    }
                });
                let _ = done_tx.send(());
            })
            .unwrap();
        let ready = tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap();
        self.server = Some(Server::InProcess(InProcess {
            stop: Some(stop),
            done,
        }));
        match ready {
            Ok(Ok((ftp, api))) => {
                (self.ftp_addr, self.api_addr) = (ftp, api);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("in-process fwdist did not start: {e}")),
            Err(_) => Err("in-process fwdist did not start within 30 s".into()),
        }
    }

    async fn start_process(&mut self) -> Result<(), String> {
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
        let already = self.log().len();
        self.server = Some(Server::Process(cmd.spawn().expect("spawn fwdist serve")));
        self.wait_ready(already).await
    }

    /// Waits for the process to log the addresses it bound, then for `/healthz`.
    async fn wait_ready(&mut self, log_from: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut bound = None;
        loop {
            let Some(Server::Process(child)) = self.server.as_mut() else {
                unreachable!("a process server")
            };
            if let Some(status) = child.try_wait().unwrap() {
                self.server = None;
                return Err(format!(
                    "fwdist serve exited early with {status}; log:\n{}",
                    self.log()
                ));
            }
            if bound.is_none() {
                bound = bound_addresses(self.log().get(log_from..).unwrap_or_default());
                if let Some((ftp, api)) = bound {
                    (self.ftp_addr, self.api_addr) = (ftp, api);
                }
            }
            if bound.is_some() && self.admin_tls() {
                // The harness's client speaks no TLS: the test checks `/healthz` itself.
                if tokio::net::TcpStream::connect(self.api_addr).await.is_ok() && self.cert_path().exists() {
                    return Ok(());
                }
            } else if bound.is_some() {
                let url = format!("http://{}/healthz", self.api_addr);
                if let Ok(resp) = self.http.get(&url).timeout(Duration::from_secs(2)).send().await
                    && resp.status() == 200
                    && self.cert_path().exists()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "fwdist serve not healthy after 30 s; log:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the admin API speaks HTTPS (`admin.cert` set in the environment).
    fn admin_tls(&self) -> bool {
        self.env.iter().any(|(k, _)| k == "FWDIST_ADMIN__CERT")
    }

    fn stop(&mut self) {
        match self.server.take() {
            None => {}
            Some(Server::InProcess(mut s)) => {
                if let Some(stop) = s.stop.take() {
                    let _ = stop.send(());
                }
                // The grace period is 10 s; the runtime is dropped (aborting what is left)
                // right after.
                let _ = s.done.recv_timeout(Duration::from_secs(20));
            }
            Some(Server::Process(mut child)) => {
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
        }
    }

    /// SIGKILL: the process dies where it stands, no shutdown path runs; returns once it is
    /// reaped. [`TestApp::restart`] starts it again.
    pub fn kill9(&mut self) {
        match self.server.take() {
            Some(Server::Process(mut child)) => {
                child.kill().expect("SIGKILL fwdist serve");
                child.wait().expect("reap fwdist serve");
            }
            _ => panic!("no server process: use spawn_app_binary"),
        }
    }

    /// Stops the server (SIGTERM for a process) and starts it again on the same directory
    /// and configuration; the control and API ports may change (see `ftp_addr`, `api_addr`).
    pub async fn restart(&mut self) {
        self.stop();
        self.start().await;
    }
}

/// `ftp_addr=… api_addr=…` of the `fwdist serving` log line.
fn bound_addresses(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log.lines().find(|l| l.contains("fwdist serving"))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    Some((field("ftp_addr=")?, field("api_addr=")?))
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
        if self.mode == Mode::Process && (std::env::var_os("TEST_LOG").is_some() || std::thread::panicking())
        {
            eprintln!(
                "===== fwdist server log ({}) =====\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}
