//! Few passive ports, many IQs (issue 4): the per-address session limit (`421`), passive
//! ports handed out in turn with `425` when all are taken, offers nobody connects to being
//! withdrawn (never a hang), data-channel TLS failures, the diagnostics that count all of
//! that, and the built-in probe account `fwdist doctor` uses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::ftps::device_with_release;
use crate::helpers::{TestApp, spawn_app, spawn_app_binary, spawn_app_with_env};
use crate::raw_ctl::{RawCtl, TlsStream};

/// `PASV` → the announced port, without connecting to it.
async fn pasv_port(ctl: &mut RawCtl<TlsStream>) -> Result<u16, (u32, String)> {
    let (code, text) = ctl.cmd("PASV").await;
    if code != 227 {
        return Err((code, text));
    }
    let inner = &text[text.find('(').unwrap() + 1..text.find(')').unwrap()];
    let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().unwrap()).collect();
    Ok(n[4] * 256 + n[5])
}

async fn first_line(addr: SocketAddr) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .expect("a first line within 10 s")
        .unwrap();
    line
}

#[tokio::test]
async fn a_busy_address_gets_421_before_the_greeting_and_is_counted() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__MAX_SESSIONS_PER_IP", "2")]).await;
    let a = RawCtl::connect(app.ftp_addr).await;
    let _b = RawCtl::connect(app.ftp_addr).await;
    let line = first_line(app.ftp_addr).await;
    assert!(
        line.starts_with("421 "),
        "third session from one address: {line:?}"
    );
    // The slot comes back when a session ends.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = first_line(app.ftp_addr).await;
        if line.starts_with("220") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never came back: {line:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = app.get("/api/v1/diagnostics").await;
    assert_eq!(status, 200, "{body}");
    let row = body["client_ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("127.0.0.1 in {body}"));
    assert!(row["sessions_refused"].as_u64().unwrap() >= 1, "{body}");
}

#[tokio::test]
async fn a_passive_offer_nobody_connects_to_gets_425_and_a_second_miss_ends_the_session() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__DATA_CONNECT_TIMEOUT_SECS", "1")]).await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:20:00:01").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let port = pasv_port(&mut ctl).await.unwrap();
    // libunftp answers 150 at once and, on its own, would then leave the IQ waiting for a
    // 226 until its idle timeout.
    let (code, text) = ctl.cmd("RETR /releases/1.0.0/manifest.json").await;
    assert_eq!(code, 150, "{text}");
    let (code, text) = ctl.reply().await;
    assert_eq!(
        text.trim(),
        "425 No data connection arrived on the passive port in time",
        "{code}"
    );
    assert_eq!(ctl.cmd("NOOP").await.0, 200, "one miss leaves the session usable");
    let items = app.wait_downloads("device=aabbcc200001", |i| !i.is_empty()).await;
    assert_eq!(
        items[0]["outcome"], "aborted",
        "the RETR is recorded all the same: {items:?}"
    );
    assert_eq!(items[0]["bytes"], 0, "{items:?}");
    let (status, body) = app.get("/api/v1/devices/aabbcc200001").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["diagnostics"]["passive_offers_unused"], 1, "{body}");
    assert_eq!(body["diagnostics"]["last_unused_port"], port, "{body}");
    let (_, diag) = app.get("/api/v1/diagnostics").await;
    assert_eq!(diag["devices"][0]["key"], "aa:bb:cc:20:00:01", "{diag}");
    // A second offer left unused closes the session: it cannot sit on passive ports.
    pasv_port(&mut ctl).await.unwrap();
    let (code, _) = ctl.cmd("RETR /releases/1.0.0/manifest.json").await;
    assert_eq!(code, 150);
    let (code, text) = ctl.reply().await;
    assert_eq!(
        text.trim(),
        "425 No data connection arrived on the passive port in time",
        "{code}"
    );
    let (code, text) = ctl.reply().await;
    assert_eq!(text.trim(), "421 Session closed by the server", "{code}");
    assert!(ctl.try_cmd("NOOP").await.is_err(), "closed after the second miss");
}

async fn restart_with_passive(app: &mut TestApp, ports: u16) {
    app.passive = (app.passive.0, app.passive.0 + ports - 1);
    app.write_config();
    app.restart().await;
}

#[tokio::test]
async fn ports_go_round_robin_and_a_fully_offered_range_queues_then_says_425() {
    let mut app = spawn_app().await;
    restart_with_passive(&mut app, 2).await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:20:00:02").await;
    let mut a = RawCtl::login(&app, &id, &secret).await;
    let mut b = RawCtl::login(&app, &id, &secret).await;
    let mut c = RawCtl::login(&app, &id, &secret).await;
    let pa = pasv_port(&mut a).await.unwrap();
    let pb = pasv_port(&mut b).await.unwrap();
    assert_ne!(pa, pb, "two outstanding offers never share a port");
    let range = app.passive.0..=app.passive.1;
    assert!(range.contains(&pa) && range.contains(&pb));
    // Both ports are offered: C's PASV waits for one (3 s), then gets a transient 425.
    let t = Instant::now();
    let (code, text) = pasv_port(&mut c).await.unwrap_err();
    assert_eq!(code, 425, "every port has an offer outstanding: {text}");
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "queued first: {:?}",
        t.elapsed()
    );
    // A and B never connect: their offers are withdrawn after 5 s and C's next PASV, queued
    // meanwhile, gets a port.
    let pc = pasv_port(&mut c).await.expect("a port is free again");
    assert!(pc == pa || pc == pb, "{pc}");
}

#[tokio::test]
async fn one_passive_port_serves_a_fleet_in_turn() {
    let mut app = spawn_app().await;
    restart_with_passive(&mut app, 1).await;
    app.fleet(8, "aa:bb:cc:21:00", &crate::helpers::image(64 << 10, 5))
        .await;
    let server = app.ftp_addr.to_string();
    let out = app
        .cli(&[
            "simulate",
            "--server",
            &server,
            "--devices",
            "creds.csv",
            "-n",
            "40",
            "-c",
            "8",
            "--retries",
            "20",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("40 ok, 0 failed"), "{}", out.stdout);
}

#[tokio::test]
async fn a_failed_tls_handshake_on_the_data_channel_is_counted_and_answered_425() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__DATA_CONNECT_TIMEOUT_SECS", "2")]).await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:20:00:03").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let mut data = ctl.pasv().await;
    let (code, text) = ctl.cmd("RETR /releases/1.0.0/manifest.json").await;
    assert_eq!(code, 150, "{text}");
    data.write_all(b"this is not a TLS ClientHello\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), data.read_to_end(&mut sink)).await;
    let (code, text) = ctl.reply().await;
    assert_eq!(
        text.trim(),
        "425 Data connection refused: TLS handshake failed",
        "{code}"
    );
    assert_eq!(ctl.cmd("NOOP").await.0, 200, "the session is not wedged");
    let (_, body) = app.get("/api/v1/devices/aabbcc200003").await;
    assert_eq!(body["diagnostics"]["data_tls_failures"], 1, "{body}");
    assert!(!app.log().contains("panicked"), "no panic anywhere");
}

#[tokio::test]
async fn the_probe_account_reads_only_probe_bin_and_learns_the_range() {
    let app = spawn_app().await;
    device_with_release(&app, "aa:bb:cc:20:00:04").await;
    let mut ctl = RawCtl::login(&app, "probe", "probe").await;
    let (code, text) = ctl.cmd("SITE PORTS").await;
    assert_eq!(code, 200, "{text}");
    let want = format!("passive={}-{}", app.passive.0, app.passive.1);
    assert!(text.contains(&want), "{text}");
    let data = ctl.pasv().await;
    let (code, text) = ctl.cmd("RETR /probe.bin").await;
    assert_eq!(code, 150, "{text}");
    let mut tls = ctl.data_tls(data).await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(ctl.reply().await.0, 226);
    assert_eq!(got.len(), fwdist_release::probe::SIZE);
    assert_eq!(hex(&Sha256::digest(&got)), fwdist_release::probe::sha256_hex());
    for path in ["target/manifest.json", "/releases", "../probe.bin.x"] {
        let (code, _) = ctl.cmd(&format!("SIZE {path}")).await;
        assert_eq!(code, 550, "probe must not see {path}");
    }
    assert!(ctl.cmd("STOR /probe.bin").await.0 >= 400, "no upload either");
}

#[tokio::test]
async fn the_probe_account_can_be_disabled() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__PROBE_ENABLED", "false")]).await;
    let (code, text) = RawCtl::login_reply(&app, "probe", "probe").await;
    assert_eq!(code, 530, "{text}");
}

#[tokio::test]
async fn a_download_after_epsv_records_its_data_port() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:20:00:05").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let (code, text) = ctl.cmd("EPSV").await;
    assert_eq!(code, 229, "{text}");
    let port: u16 = text
        .split('|')
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("EPSV reply: {text}"));
    let data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (code, text) = ctl.cmd("RETR /releases/1.0.0/manifest.json").await;
    assert_eq!(code, 150, "{text}");
    let mut tls = ctl.data_tls(data).await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(ctl.reply().await.0, 226);
    let items = app
        .wait_downloads("device=aabbcc200005", |items| !items.is_empty())
        .await;
    assert_eq!(items[0]["data_port"], port, "{items:?}");
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_at_once() {
    let app = spawn_app_binary().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:20:00:06").await;
    let mut idle = RawCtl::login(&app, &id, &secret).await;
    let started = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &app.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let (code, text) = idle.reply().await;
    assert_eq!(text.trim(), "421 Session closed by the server", "{code}");
    assert!(idle.try_reply().await.is_err(), "the idle session is closed");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle sessions must not hold shutdown for the grace period: {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{}/status", app.pid())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/status", app.pid()))
            .unwrap_or_default()
            .contains("zombie")
    {
        assert!(Instant::now() < deadline, "the server did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
