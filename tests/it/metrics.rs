//! `/metrics` (SPEC §11): each of fwdist's families moves when its event happens, against the
//! real server binary, with IQs played by Python's ftplib and raw sockets; `/healthz` stays
//! 200 while the prober's own address has every session slot taken.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::clients::FTPLIB_REUSING;
use crate::helpers::{TestApp, image, run_program, spawn_app_with_env};

/// `name{labels}` → value, as the Prometheus text says.
pub async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The series' value; a series that is not served at all fails the test (a zero must be
/// an exported zero, not a missing family).
pub fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key)
        .copied()
        .unwrap_or_else(|| panic!("{key} is not served"))
}

/// Polls until `key` satisfies `pred`; returns the scrape.
async fn wait_for(app: &TestApp, key: &str, pred: impl Fn(f64) -> bool) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(app).await;
        if pred(get(&m, key)) {
            return m;
        }
        assert!(Instant::now() < deadline, "{key} never matched: {}", get(&m, key));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `get.py HOST PORT USER PW PATH MODE CAFILE`: MODE `all` downloads, `cut` drops the
/// connection after the first block, `pasv` asks for a passive port and never connects.
const GET_PY: &str = r#"
host, port, user, pw, path, mode, cafile = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
ftp = ReusingFTP_TLS(context=ctx, timeout=30)
ftp.connect(host, int(port))
ftp.auth()
ftp.login(user, pw)
ftp.prot_p()
ftp.voidcmd("TYPE I")
if mode == "pasv":
    print(ftp.sendcmd("PASV"))
    import time; time.sleep(3)
    sys.exit(0)
if mode == "cut":
    conn = ftp.transfercmd("RETR " + path)
    conn.recv(65536)
    conn.close()
    ftp.sock.close()
    sys.exit(0)
n = [0]
ftp.retrbinary("RETR " + path, lambda b: n.__setitem__(0, n[0] + len(b)))
ftp.quit()
print(n[0])
"#;

async fn py(app: &TestApp, user: &str, pw: &str, mode: &str) {
    std::fs::write(app.path("get.py"), format!("{FTPLIB_REUSING}{GET_PY}")).unwrap();
    let port = app.ftp_addr.port().to_string();
    let cert = app.cert_path().display().to_string();
    let path = "/releases/1.0.0/firmware.bin";
    let res = run_program(
        app.dir.path(),
        "python3",
        &["get.py", "127.0.0.1", &port, user, pw, path, mode, &cert],
    )
    .await;
    assert!(res.success, "get.py {mode}: {}\n{}", res.stdout, res.stderr);
}

async fn greeting(app: &TestApp) -> (BufReader<TcpStream>, String) {
    let s = TcpStream::connect(app.ftp_addr).await.unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    (r, line)
}

#[tokio::test]
async fn every_fwdist_family_moves_when_its_event_happens() {
    let app = spawn_app_with_env(&[
        ("FWDIST_FTPS__DATA_CONNECT_TIMEOUT_SECS", "1"),
        ("FWDIST_FTPS__MAX_SESSIONS_PER_IP", "4"),
    ])
    .await;
    let img = image(4 << 20, 7);
    app.publish("iq2", "1.0.0", 1, &img).await;
    app.publish("iq2", "2.0.0", 2, &image(1000, 8)).await;
    let dev = app.create_device("aa:bb:cc:32:00:01", "iq2").await;
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_rollouts{state=\"active\"}"), 0.0);
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
        .await;
    app.rollout(
        json!({"model": "iq2", "version": "2.0.0", "percent": 100, "start_at": "2099-01-01T00:00:00Z"}),
    )
    .await;
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_rollouts{state=\"active\"}"), 1.0);
    assert_eq!(get(&m, "fwdist_rollouts{state=\"scheduled\"}"), 1.0);

    // A complete download and a cut one: records, outcomes and acknowledged bytes.
    py(&app, &dev.id, &dev.secret, "all").await;
    let m = wait_for(&app, "fwdist_downloads_total{outcome=\"complete\"}", |v| v == 1.0).await;
    assert_eq!(get(&m, "fwdist_download_bytes_total"), img.len() as f64);
    py(&app, &dev.id, &dev.secret, "cut").await;
    let m = wait_for(&app, "fwdist_downloads_total{outcome=\"aborted\"}", |v| v == 1.0).await;
    let bytes = get(&m, "fwdist_download_bytes_total") - img.len() as f64;
    // What the IQ acknowledged before the cut (within 64 KiB, so possibly nothing), never all.
    assert!(
        (0.0..img.len() as f64).contains(&bytes),
        "the cut download's bytes: {bytes}"
    );

    // A passive offer never used.
    py(&app, &dev.id, &dev.secret, "pasv").await;
    wait_for(&app, "fwdist_passive_offers_unused_total", |v| v == 1.0).await;

    // A report over the API.
    let (status, body) = app
        .post(
            "/api/v1/devices/aa:bb:cc:32:00:01/reports",
            json!({"version": "1.0.0", "outcome": "installed"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let m = scrape(&app).await;
    assert_eq!(
        get(&m, "fwdist_reports_total{outcome=\"installed\",source=\"api\"}"),
        1.0
    );

    // Sessions open now; a plaintext command; the per-address limit; health all the while.
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_ftps_sessions"), 0.0);
    let mut held = Vec::new();
    for _ in 0..4 {
        let (r, line) = greeting(&app).await;
        assert!(line.starts_with("220"), "{line}");
        held.push(r);
    }
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_ftps_sessions"), 4.0);
    let (_, refused) = greeting(&app).await;
    assert!(refused.starts_with("421"), "{refused}");
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_ftps_refused_total{reason=\"421\"}"), 1.0);
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "healthz with every slot of 127.0.0.1 taken");
    held[0].get_mut().write_all(b"USER x\r\n").await.unwrap();
    let mut line = String::new();
    held[0].read_line(&mut line).await.unwrap();
    assert!(line.starts_with("534"), "{line}");
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_ftps_refused_total{reason=\"plaintext\"}"), 1.0);
    drop(held);
    wait_for(&app, "fwdist_ftps_sessions", |v| v == 0.0).await;

    // A lockout refusal (the test config locks after 3 failures).
    for _ in 0..3 {
        assert_eq!(
            crate::operator::login(&app, &dev.id, "wrong", "127.0.0.5").await,
            "530"
        );
    }
    assert_eq!(
        crate::operator::login(&app, &dev.id, &dev.secret, "127.0.0.5").await,
        "530"
    );
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_ftps_refused_total{reason=\"lockout\"}"), 1.0);

    // The record queue: while the database is locked by another process, a finished
    // download waits in the queue; it drains once the lock goes.
    let mut locker = if crate::helpers::on_postgres() {
        // The records' table locked against writes for 6 s by another session.
        let url = crate::helpers::db_url(app.dir.path());
        tokio::process::Command::new("psql")
            .args([
                url.as_str(),
                "-qAt",
                "-c",
                "BEGIN",
                "-c",
                "LOCK TABLE downloads IN EXCLUSIVE MODE",
            ])
            .args([
                "-c",
                "SELECT 'locked'",
                "-c",
                "SELECT pg_sleep(6)",
                "-c",
                "COMMIT",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    } else {
        let db = app.path("firmware-store/fwdist.sqlite").display().to_string();
        let lock = format!(
            "import sqlite3, time\nc = sqlite3.connect({db:?}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(6)\nc.execute('COMMIT')\n"
        );
        std::fs::write(app.path("lock.py"), lock).unwrap();
        tokio::process::Command::new("python3")
            .arg(app.path("lock.py"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut out = BufReader::new(locker.stdout.take().unwrap());
    let mut said = String::new();
    out.read_line(&mut said).await.unwrap();
    assert_eq!(said.trim(), "locked");
    py(&app, &dev.id, &dev.secret, "all").await;
    wait_for(&app, "fwdist_record_queue_depth", |v| v == 1.0).await;
    assert!(locker.wait().await.unwrap().success());
    wait_for(&app, "fwdist_record_queue_depth", |v| v == 0.0).await;
    let m = wait_for(&app, "fwdist_downloads_total{outcome=\"complete\"}", |v| v == 2.0).await;

    // The API's own requests, and libunftp's families beside ours.
    assert!(get(&m, "fwdist_api_requests_total{method=\"POST\",status=\"2xx\"}") >= 5.0);
    assert!(
        m.keys().any(|k| k.starts_with("ftp_")),
        "libunftp's families are served too"
    );
}
