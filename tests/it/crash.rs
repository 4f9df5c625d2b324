//! `kill -9` of a serving, publishing server (issue 15's crash rounds, short form; the long
//! form with 200 IQs and ≥ 20 rounds is `bench/crash.sh`): after each restart every download
//! an IQ got its `226` for has its `complete` record, every upload is listed whole and
//! verified or absent, the store holds no release without its row, and SQLite's integrity
//! check passes. On PostgreSQL too (`FWDIST_TEST_DB=postgres`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fwdist_iq::client::{ClientConfig, FtpsClient};
use tokio::sync::watch;

use crate::helpers::{TestApp, image, random_u64, sha256_hex, spawn_app_with_env};
use crate::metrics::{get, scrape};

const IMAGE: usize = 96 * 1024;

/// `CRASH_<name>` from the environment (`bench/crash.sh` sets them), else `default`.
fn knob(name: &str, default: usize) -> usize {
    std::env::var(format!("CRASH_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Devices whose `226` arrived, each with the instant the test saw it (after the reply).
type Delivered = Arc<Mutex<Vec<(String, Instant)>>>;

fn client(app: &TestApp) -> ClientConfig {
    ClientConfig {
        addr: app.ftp_addr,
        server_name: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        tls: crate::ftp_client::client_config(app, None),
        sessions: fwdist_iq::resume::shared_store(),
        timeout: Duration::from_secs(10),
        pause_before_handshake: Duration::ZERO,
        bind_ip: None,
    }
}

/// One IQ downloading the image over and over, reconnecting after any failure, until `stop`.
async fn iq(
    cfg: ClientConfig,
    id: String,
    secret: String,
    delivered: Delivered,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        tokio::select! {
            _ = downloads(&cfg, &id, &secret, &delivered) => tokio::time::sleep(Duration::from_millis(20)).await,
            _ = stop.changed() => return,
        }
    }
}

/// One session's downloads, each noted in `delivered` once its `226` came; ends at the first
/// failure (the server was killed).
async fn downloads(
    cfg: &ClientConfig,
    id: &str,
    secret: &str,
    delivered: &Delivered,
) -> fwdist_iq::client::ClientError {
    let mut c = match FtpsClient::open(cfg, id, secret).await {
        Ok((c, _)) => c,
        Err(e) => return e,
    };
    loop {
        let mut sink = tokio::io::sink();
        match c
            .retr("/releases/1.0.0/firmware.bin", 0, IMAGE as u64, &mut sink)
            .await
        {
            Ok((n, _)) if n == IMAGE as u64 => {
                delivered.lock().unwrap().push((id.to_owned(), Instant::now()))
            }
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// Uploads a signed release; `model/version` and when the 201 came, if it came.
async fn upload(
    http: reqwest::Client,
    url: String,
    token: String,
    s: crate::helpers::Signed,
) -> Option<(String, Instant)> {
    use reqwest::multipart::{Form, Part};
    let m = s.manifest_json();
    let form = Form::new()
        .part("manifest", Part::bytes(s.manifest).file_name("manifest.json"))
        .part("signature", Part::bytes(s.sig).file_name("manifest.json.sig"))
        .part("image", Part::bytes(s.image).file_name("firmware.bin"));
    let r = http
        .post(&url)
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .ok()?;
    (r.status() == 201).then(|| {
        (
            format!(
                "{}/{}",
                m["model"].as_str().unwrap_or(""),
                m["version"].as_str().unwrap_or("")
            ),
            Instant::now(),
        )
    })
}

/// The database's write lock, held by a connection of the test's own.
enum DbLock {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl DbLock {
    async fn take(db_url: &str) -> DbLock {
        use sqlx::Connection as _;
        if db_url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(db_url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE downloads IN EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .unwrap();
            DbLock::Pg(c)
        } else {
            let mut c = sqlx::SqliteConnection::connect(db_url).await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut c).await.unwrap();
            DbLock::Sqlite(c)
        }
    }

    async fn release(self) {
        match self {
            DbLock::Sqlite(mut c) => drop(sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap()),
            DbLock::Pg(mut c) => drop(sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap()),
        }
    }
}

/// Canonical device id: hex digits only, lower case.
fn canon(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_hexdigit)
        .flat_map(char::to_lowercase)
        .collect()
}

/// `complete` records of the image, per device, read straight from the database.
async fn complete_records(db_url: &str) -> HashMap<String, i64> {
    use sqlx::Row as _;
    let sql = "SELECT device, COUNT(*) AS n FROM downloads \
               WHERE outcome = 'complete' AND version = '1.0.0' AND file = 'firmware.bin' GROUP BY device";
    let rows = if db_url.starts_with("postgres") {
        let mut c: sqlx::PgConnection = sqlx::Connection::connect(db_url).await.unwrap();
        sqlx::query(sql)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<String, _>("device"), r.get::<i64, _>("n")))
            .collect::<Vec<_>>()
    } else {
        let mut c: sqlx::SqliteConnection = sqlx::Connection::connect(db_url).await.unwrap();
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(check, "ok", "SQLite integrity check after kill -9");
        sqlx::query(sql)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<String, _>("device"), r.get::<i64, _>("n")))
            .collect()
    };
    rows.into_iter().map(|(d, n)| (canon(&d), n)).collect()
}

/// `model/version` of every release directory in the local store.
fn stored_releases(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for model in std::fs::read_dir(root.join("releases")).unwrap().flatten() {
        for version in std::fs::read_dir(model.path()).unwrap().flatten() {
            found.insert(format!(
                "{}/{}",
                model.file_name().to_string_lossy(),
                version.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Checks every release row against its stored image; returns `model/version` of each.
async fn verified_releases(app: &TestApp) -> BTreeSet<String> {
    let (status, body) = app.get("/api/v1/releases").await;
    assert_eq!(status, 200, "{body}");
    let mut listed = BTreeSet::new();
    for r in body["items"].as_array().unwrap() {
        let (model, version) = (r["model"].as_str().unwrap(), r["version"].as_str().unwrap());
        let file = r["file"].as_str().unwrap();
        let path = app.path(&format!("firmware-store/releases/{model}/{version}/{file}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{} is listed but {e}", path.display()));
        assert_eq!(
            bytes.len() as u64,
            r["size"].as_u64().unwrap(),
            "{model} {version} size"
        );
        assert_eq!(
            sha256_hex(&bytes),
            r["sha256"].as_str().unwrap(),
            "{model} {version} digest"
        );
        listed.insert(format!("{model}/{version}"));
    }
    listed
}

#[tokio::test]
async fn kill_9_mid_traffic_loses_no_record_and_no_release() {
    let (iqs, rounds, per_round) = (knob("IQS", 24), knob("ROUNDS", 3), knob("UPLOADS", 3));
    let limit = (iqs + 8).to_string();
    let mut app = spawn_app_with_env(&[("FWDIST_FTPS__MAX_SESSIONS_PER_IP", &limit)]).await;
    app.fleet(iqs, "aa:bb:cc:15:00", &image(IMAGE, 15)).await;
    let creds: Vec<(String, String)> = std::fs::read_to_string(app.path("creds.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(',').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    assert_eq!(creds.len(), iqs);
    // Uploads to race the kills: `per_round` at once, one model each, signed ahead.
    let mut uploads = Vec::new();
    for round in 0..rounds as u64 {
        let mut batch = Vec::new();
        for slot in 0..per_round as u64 {
            let img = image(2 * 1024 * 1024, 1000 * slot + round);
            batch.push(
                app.sign(
                    "release.key",
                    &format!("up{slot}"),
                    &format!("1.0.{round}"),
                    round + 1,
                    &img,
                )
                .await,
            );
        }
        uploads.push(batch);
    }
    let mut published = BTreeSet::new();
    let mut cut = 0;
    // 226s seen before a kill, per device, over all rounds (records accumulate too).
    let mut told: HashMap<String, i64> = HashMap::new();
    let mut lost = 0i64;
    for (round, batch) in uploads.iter().enumerate() {
        let delivered: Delivered = Arc::default();
        let (stop_tx, stop) = watch::channel(false);
        let cfg = client(&app);
        let tasks: Vec<_> = creds
            .iter()
            .map(|(id, secret)| {
                tokio::spawn(iq(
                    cfg.clone(),
                    id.clone(),
                    secret.clone(),
                    delivered.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let uploaders: Vec<_> = batch
            .iter()
            .cloned()
            .map(|s| {
                let (http, url, token) = (
                    app.http.clone(),
                    app.url("/api/v1/releases"),
                    app.publisher_token.clone(),
                );
                // Started at random moments so that kills land before, during and after them.
                let wait = Duration::from_millis(random_u64() % 2500);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    upload(http, url, token, s).await
                })
            })
            .collect();
        // A random moment 1–2.5 s in; from round 1 on, something else then holds the
        // database's write lock for 0.5–1.5 s more before the kill (a backup, a slow disk):
        // records queue behind it, which is when a 226 sent before its record's commit would
        // be lost.
        let held = (round > 0).then(|| Duration::from_millis(500 + random_u64() % 1000));
        tokio::time::sleep(Duration::from_millis(1000 + random_u64() % 1500)).await;
        let lock = match held {
            Some(d) => {
                let lock = DbLock::take(&app.db_url).await;
                tokio::time::sleep(d).await;
                Some(lock)
            }
            None => None,
        };
        let killed_at = Instant::now();
        app.kill9();
        if let Some(lock) = lock {
            lock.release().await;
        }
        stop_tx.send(true).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        for u in uploaders {
            match u.await.unwrap() {
                Some((release, at)) if at < killed_at => {
                    published.insert(release);
                }
                _ => cut += 1,
            }
        }
        app.restart().await;

        // Every 226 the IQs saw before the kill has its record.
        let mut this_round = 0;
        for (id, at) in delivered.lock().unwrap().iter() {
            if *at < killed_at {
                *told.entry(canon(id)).or_default() += 1;
                this_round += 1;
            }
        }
        assert!(
            this_round > 0,
            "round {round}: no download completed before the kill"
        );
        let told_total: i64 = told.values().sum();
        let recorded = complete_records(&app.db_url).await;
        let missing: i64 = told
            .iter()
            .map(|(d, n)| (n - recorded.get(d).copied().unwrap_or(0)).max(0))
            .sum();
        lost += missing;
        assert_eq!(
            missing, 0,
            "round {round}: {missing} of {told_total} downloads told 226 have no record"
        );

        // Releases: every answered upload listed, everything listed whole; no store orphan.
        let listed = verified_releases(&app).await;
        for p in &published {
            assert!(
                listed.contains(p),
                "round {round}: {p} was answered 201 but is not listed"
            );
        }
        let stored = stored_releases(&app.path("firmware-store"));
        assert_eq!(stored, listed, "round {round}: store and release rows differ");
        let incoming = std::fs::read_dir(app.path("firmware-store/.incoming"))
            .unwrap()
            .count();
        assert_eq!(incoming, 0, "round {round}: staged uploads left after restart");
    }
    let delivered_before_kills: i64 = told.values().sum();
    eprintln!(
        "crash rounds: {rounds} kills, {iqs} IQs, {delivered_before_kills} downloads told 226 before a kill, {lost} records lost, {} uploads answered 201, {cut} cut by the kill (each listed whole or absent)",
        published.len()
    );
    // Records written ahead of their 226: the 226s waited for their commit.
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_record_waits_total{result=\"failed\"}"), 0.0);
}

#[tokio::test]
async fn a_release_left_without_its_row_is_removed_at_start() {
    let mut app = spawn_app_with_env(&[]).await;
    app.publish("iq2", "1.0.0", 1, &image(4096, 16)).await;
    let releases = app.path("firmware-store/releases");
    // A publish cut short between the directory rename and the row insert leaves this.
    copy_dir(&releases.join("iq2/1.0.0"), &releases.join("iq2/1.1.0"));
    // Not a release's name: never touched.
    std::fs::create_dir_all(releases.join("iq2/notes")).unwrap();
    app.restart().await;
    assert!(!releases.join("iq2/1.1.0").exists(), "the orphan is gone");
    assert!(
        releases.join("iq2/1.0.0/firmware.bin").exists(),
        "the published release stays"
    );
    assert!(
        releases.join("iq2/notes").exists(),
        "what is not a release is left alone"
    );
    let m = scrape(&app).await;
    assert_eq!(get(&m, "fwdist_store_orphans_removed_total"), 1.0);
    assert!(
        app.log().contains("has no database row"),
        "the removal is logged:\n{}",
        app.log()
    );
    // The version can be published for real afterwards.
    app.publish("iq2", "1.1.0", 2, &image(4096, 17)).await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        std::fs::copy(e.path(), &target).unwrap();
    }
}
