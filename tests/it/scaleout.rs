//! Scale-out (SPEC §13): two `fwdist serve` nodes over one PostgreSQL database and one S3
//! bucket (a real SeaweedFS) behind a real
//! HAProxy that balances the control port and the shared passive range by source address
//! and sends PROXY v1 headers (`ftps.proxy_protocol`). Publish on one node; an IQ downloads
//! and resumes through the balancer; its records carry its own address (not the balancer's)
//! and the serving node; a rollout paused through the other node stops the serving node
//! offering it within a second; the serving node is killed mid-download and the IQ's resumed
//! retry completes on the other one; every record is in PostgreSQL with its node.
//!
//! The nodes listen on two loopback addresses (127.0.0.11, 127.0.0.12) with the same ports,
//! as two machines would; HAProxy listens on 127.0.0.1 and connects from 127.0.0.2, and the
//! IQ connects from 127.0.0.1, so a record naming 127.0.0.2 would be the balancer's.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::seaweed::SeaweedFs;
use crate::helpers::system::Requirements;
use crate::helpers::{
    TestApp, free_ports, image, pg_database, run_program, sha256_hex, spawn_app_with_store_and_env,
};

const NODE_IPS: [&str; 2] = ["127.0.0.11", "127.0.0.12"];
const BALANCER_SOURCE: &str = "127.0.0.2";

/// HAProxy in the foreground, killed when dropped.
struct Balancer(Child);

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy_config(ctl: u16, passive: (u16, u16)) -> String {
    let servers: String = NODE_IPS
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            // No port: a connection goes to the port it came in on (control or passive).
            format!(
                "    server n{} {ip} send-proxy source {BALANCER_SOURCE} check port {ctl} inter 200ms fall 1 rise 1\n",
                i + 1
            )
        })
        .collect();
    format!(
        "global\n    maxconn 2000\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 120s\n    timeout server 120s\n    retries 2\n    option redispatch\n\
         frontend iqs\n    bind 127.0.0.1:{ctl}\n    bind 127.0.0.1:{}-{}\n    default_backend nodes\n\
         backend nodes\n    balance source\n{servers}",
        passive.0, passive.1
    )
}

/// Waits until something accepts on `addr`.
async fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// curl through the balancer: `path` into `out` in `app`'s directory, with `extra` options.
async fn curl(
    app: &TestApp,
    ctl: u16,
    user: &str,
    pass: &str,
    path: &str,
    out: &str,
    extra: &[&str],
) -> crate::helpers::CliOutput {
    let url = format!("ftp://127.0.0.1:{ctl}{path}");
    let creds = format!("{user}:{pass}");
    let cert = app.cert_path().display().to_string();
    let mut args = vec![
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "60",
        "--disable-epsv",
        "--ssl-reqd",
        "--cacert",
        &cert,
        "-u",
        &creds,
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    run_program(app.dir.path(), "curl", &args).await
}

fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn records(app: &TestApp, device: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/api/v1/downloads?device={device}&limit=100"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_behind_haproxy_share_one_database_and_either_serves_any_iq() {
    let mut req = Requirements::new();
    req.env(
        "FWDIST_TEST_PG_URL",
        "a PostgreSQL server: tests/services/postgres.sh start",
    );
    let haproxy = req.program("haproxy");
    if !req.met("the scale-out test") {
        return;
    }
    let Some(s3) = SeaweedFs::start("the scale-out test").await else {
        return;
    };
    let store = s3.store_toml("scaleout");
    let (ctl_addr, _, passive, _ports) = free_ports();
    let ctl = ctl_addr.port();
    let pg = pg_database(Path::new(""));
    let range = format!("{}-{}", passive.0, passive.1);
    let env = |i: usize| {
        vec![
            ("FWDIST_NODE".to_owned(), format!("node-{}", i + 1)),
            ("FWDIST_DB__URL".to_owned(), pg.clone()),
            ("FWDIST_FTPS__LISTEN".to_owned(), format!("{}:{ctl}", NODE_IPS[i])),
            ("FWDIST_FTPS__PASSIVE_PORTS".to_owned(), range.clone()),
            ("FWDIST_FTPS__PUBLIC_HOST".to_owned(), "127.0.0.1".to_owned()),
            ("FWDIST_FTPS__PUBLIC_PORT".to_owned(), ctl.to_string()),
            ("FWDIST_FTPS__PROXY_PROTOCOL".to_owned(), "true".to_owned()),
        ]
    };
    let n1 = spawn_app_with_store_and_env(store.clone(), &refs(&env(0))).await;
    // Node 2: the same certificate and release keys as node 1, the same bucket.
    let mut e2 = env(1);
    let p = |rel: &str| n1.path(rel).display().to_string();
    e2.extend([
        ("FWDIST_FTPS__CERT".to_owned(), p("certs/server.crt")),
        ("FWDIST_FTPS__KEY".to_owned(), p("certs/server.key")),
        ("FWDIST_SIGNING__TRUSTED_KEYS".to_owned(), p("certs/release-keys")),
    ]);
    let n2 = spawn_app_with_store_and_env(store, &refs(&e2)).await;
    fs::write(n1.path("haproxy.cfg"), haproxy_config(ctl, passive)).unwrap();
    let _balancer = Balancer(
        Command::new(&haproxy)
            .args(["-db", "-f"])
            .arg(n1.path("haproxy.cfg"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts"),
    );
    wait_listening(&format!("127.0.0.1:{ctl}")).await;

    // Published and rolled out through node 1; the device made there too.
    let img = image(24 * 1024 * 1024, 1300);
    n1.publish("sx1", "1.0.0", 1, &img).await;
    let dev = n1.create_device("aa:bb:cc:13:00:01", "sx1").await;
    let rollout = n1
        .rollout(json!({"model": "sx1", "version": "1.0.0", "percent": 100}))
        .await;
    let user = dev.id.replace(':', "");
    let path = "/releases/1.0.0/firmware.bin";

    // A whole download through the balancer, then a resumed one.
    let out = curl(&n1, ctl, &user, &dev.secret, path, "whole.bin", &[]).await;
    assert!(out.success, "download through the balancer: {}", out.stderr);
    assert_eq!(
        sha256_hex(&fs::read(n1.path("whole.bin")).unwrap()),
        sha256_hex(&img)
    );
    fs::write(n1.path("part.bin"), &img[..1_000_000]).unwrap();
    let out = curl(&n1, ctl, &user, &dev.secret, path, "part.bin", &["-C", "-"]).await;
    assert!(
        out.success,
        "resumed download through the balancer: {}",
        out.stderr
    );
    assert_eq!(
        sha256_hex(&fs::read(n1.path("part.bin")).unwrap()),
        sha256_hex(&img)
    );
    // Any node answers for the records: both are in the one database, with the serving
    // node and the IQ's own address.
    let recs = n2
        .wait_downloads(&format!("device={}&limit=100", dev.id), |items| {
            items
                .iter()
                .filter(|r| r["file"] == "firmware.bin" && r["outcome"] == "complete")
                .count()
                == 2
        })
        .await;
    let image_recs: Vec<&Value> = recs.iter().filter(|r| r["file"] == "firmware.bin").collect();
    for r in &recs {
        assert_eq!(
            r["client_ip"], "127.0.0.1",
            "the IQ's address, not the balancer's ({BALANCER_SOURCE}): {r}"
        );
    }
    let serving = image_recs[0]["node"].as_str().unwrap().to_owned();
    assert!(
        image_recs.iter().all(|r| r["node"] == serving.as_str()),
        "balance source keeps the IQ on one node: {recs:?}"
    );
    assert!(image_recs.iter().any(|r| r["offset"] == 1_000_000), "{recs:?}");
    let (serving_app, other_app) = if serving == "node-1" {
        (&n1, &n2)
    } else {
        (&n2, &n1)
    };
    let other = if serving == "node-1" { "node-2" } else { "node-1" };

    // Paused through the other node: the serving node stops offering it within a second
    // (SPEC 6: `/target/...` answers 550 while the rollout is paused).
    let out = curl(
        serving_app,
        ctl,
        &user,
        &dev.secret,
        "/target/manifest.json",
        "target.json",
        &[],
    )
    .await;
    assert!(
        out.success,
        "the target is offered before the pause: {}",
        out.stderr
    );
    let (status, body) = other_app
        .patch(&format!("/api/v1/rollouts/{rollout}"), json!({"state": "paused"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let paused = Instant::now();
    let refused = loop {
        let out = curl(
            serving_app,
            ctl,
            &user,
            &dev.secret,
            "/target/manifest.json",
            "target.json",
            &[],
        )
        .await;
        if !out.success || paused.elapsed() > Duration::from_secs(1) {
            break out;
        }
    };
    let took = paused.elapsed();
    // curl's words for a 550 to RETR.
    assert!(
        !refused.success && refused.stderr.contains("(78)"),
        "still offered {took:?} after the pause: {}",
        refused.stderr
    );
    assert!(
        took <= Duration::from_secs(1),
        "the pause took {took:?} to reach {serving}"
    );
    let (status, body) = other_app
        .patch(&format!("/api/v1/rollouts/{rollout}"), json!({"state": "active"}))
        .await;
    assert_eq!(status, 200, "{body}");

    // The serving node dies mid-download; the IQ's resumed retry completes on the other.
    let _ = fs::remove_file(n1.path("killed.bin"));
    let slow = {
        let url = format!("ftp://127.0.0.1:{ctl}{path}");
        let creds = format!("{user}:{}", dev.secret);
        tokio::process::Command::new("curl")
            .current_dir(n1.dir.path())
            .args([
                "-sS",
                "--noproxy",
                "*",
                "--disable-epsv",
                "--ssl-reqd",
                "--limit-rate",
                "2M",
                "--cacert",
            ])
            .arg(n1.cert_path())
            .args(["-u", &creds, "-o", "killed.bin", &url])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::metadata(n1.path("killed.bin")).map_or(0, |m| m.len()) < 2_000_000 {
        assert!(Instant::now() < deadline, "the slow download never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = serving_app.pid();
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut slow = slow;
    let status = slow.wait().await.unwrap();
    assert!(!status.success(), "the download was cut by the kill");
    let got = fs::metadata(n1.path("killed.bin")).unwrap().len();
    assert!(got < img.len() as u64, "cut short: {got}");
    // The balancer notices (health checks every 200 ms); the retry resumes on the other node.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = curl(
            other_app,
            ctl,
            &user,
            &dev.secret,
            path,
            &n1.path("killed.bin").display().to_string(),
            &["-C", "-"],
        )
        .await;
        if out.success || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.success, "the retry after the kill: {}", out.stderr);
    assert_eq!(
        sha256_hex(&fs::read(n1.path("killed.bin")).unwrap()),
        sha256_hex(&img),
        "resumed to the whole image"
    );
    let recs = other_app
        .wait_downloads(&format!("device={}&limit=100", dev.id), |items| {
            items
                .iter()
                .any(|r| r["node"] == other && r["file"] == "firmware.bin" && r["outcome"] == "complete")
        })
        .await;
    let resumed = recs
        .iter()
        .find(|r| r["node"] == other && r["file"] == "firmware.bin")
        .unwrap();
    assert!(
        resumed["offset"].as_u64().unwrap() >= got.min(2_000_000) / 2,
        "it resumed: {resumed}"
    );
    assert_eq!(resumed["client_ip"], "127.0.0.1", "{resumed}");

    // Every record in PostgreSQL names its node.
    let mut c: sqlx::PgConnection = sqlx::Connection::connect(&pg).await.unwrap();
    let by_node: Vec<(String, i64)> =
        sqlx::query_as("SELECT node, COUNT(*) FROM downloads GROUP BY node ORDER BY node")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(by_node.len(), 2, "records of both nodes: {by_node:?}");
    assert!(
        by_node
            .iter()
            .all(|(n, k)| (n == "node-1" || n == "node-2") && *k > 0),
        "{by_node:?}"
    );
    let listed = records(other_app, &dev.id).await;
    assert_eq!(
        listed.len() as i64,
        by_node.iter().map(|x| x.1).sum::<i64>(),
        "the API shows what the database holds"
    );
}
