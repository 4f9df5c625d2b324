//! What must hold when things go wrong or grow large: idle sessions, a crash mid-upload, a
//! big upload's memory, and the PASV host coming from the configuration.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use tokio::io::AsyncReadExt as _;

use crate::helpers::image;
use crate::helpers::spawn_app_with_env;
use crate::raw_ctl::RawCtl;

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn idle_sessions_are_closed_after_the_configured_timeout() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__IDLE_TIMEOUT_SECS", "1")]).await;
    let dev = app.create_device("aa:bb:cc:0a:00:01", "iq2").await;
    let mut ctl = RawCtl::login(&app, &dev.id, &dev.secret).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The server has said goodbye (the relay keeps the idle clock) and closed.
    match tokio::time::timeout(Duration::from_secs(5), ctl.try_cmd("NOOP")).await {
        Ok(Ok((code, text))) => assert!(
            code == 421 && text.contains("Idle timeout; closing control connection"),
            "after the idle timeout: {text}"
        ),
        Ok(Err(closed)) => assert!(
            closed.contains("closed") || closed.contains("reading"),
            "{closed}"
        ),
        Err(_) => panic!("the idle session was not closed"),
    }
}

#[tokio::test]
async fn pasv_announces_the_configured_public_host() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__PUBLIC_HOST", "127.0.0.9")]).await;
    let dev = app.create_device("aa:bb:cc:0a:00:02", "iq2").await;
    let mut ctl = RawCtl::login(&app, &dev.id, &dev.secret).await;
    let (code, text) = ctl.cmd("PASV").await;
    assert_eq!(code, 227, "{text}");
    assert!(
        text.contains("(127,0,0,9,"),
        "PASV must announce ftps.public_host: {text}"
    );
    let port_part = text.split('(').nth(1).unwrap().trim_end_matches(|c| c != ')');
    let n: Vec<u16> = port_part
        .trim_end_matches(')')
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    let port = n[4] * 256 + n[5];
    assert!(
        (app.passive.0..=app.passive.1).contains(&port),
        "port {port} outside {:?}",
        app.passive
    );
}

#[tokio::test]
async fn a_crash_mid_upload_leaves_no_release_visible() {
    let mut app = spawn_app_with_env(&[]).await;
    let img = image(8 << 20, 7);
    let key = app.trusted_key("release").await;
    let signed = app.sign(&key, "iq2", "1.0.0", 1, &img).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let form = Form::new()
        .part(
            "manifest",
            Part::bytes(signed.manifest.clone()).file_name("manifest.json"),
        )
        .part(
            "signature",
            Part::bytes(signed.sig.clone()).file_name("manifest.json.sig"),
        )
        .part("image", Part::stream(body).file_name("firmware.bin"));
    let req = app
        .http
        .post(app.url("/api/v1/releases"))
        .bearer_auth(&app.publisher_token)
        .multipart(form);
    let upload = tokio::spawn(async move { req.send().await });
    // Half the image, then wait until the server has streamed some of it to disk.
    for chunk in img[..4 << 20].chunks(256 << 10) {
        tx.send(Ok(chunk.to_vec())).await.unwrap();
    }
    let incoming = app.path("firmware-store/.incoming");
    let mut seen = false;
    for _ in 0..100 {
        let staged: u64 = walk_sizes(&incoming);
        if staged > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the upload never reached the staging area");
    std::process::Command::new("kill")
        .args(["-KILL", &app.pid().to_string()])
        .status()
        .unwrap();
    drop(tx);
    let _ = upload.await;
    app.restart().await;

    let (status, body) = app.get("/api/v1/releases").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        0,
        "no release after a crash: {body}"
    );
    assert!(
        !app.path("firmware-store/releases/iq2/1.0.0").exists(),
        "no release directory"
    );
    assert_eq!(walk_sizes(&incoming), 0, "the half upload is wiped at start");
    // And the same upload, whole, succeeds afterwards.
    let (status, body) = app.upload(&app.publisher_token, &signed).await;
    assert_eq!(status, 201, "{body}");
}

fn walk_sizes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_sizes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

#[tokio::test]
async fn a_large_upload_is_streamed_not_buffered() {
    let app = spawn_app_with_env(&[]).await;
    let size = 128 << 20;
    let img = image(size, 3);
    let key = app.trusted_key("release").await;
    let signed = app.sign(&key, "iq2", "1.0.0", 1, &img).await;
    drop(img);
    let before = vm_hwm_kib(app.pid());
    let (status, body) = app.upload(&app.publisher_token, &signed).await;
    assert_eq!(status, 201, "{body}");
    let after = vm_hwm_kib(app.pid());
    let grew_mib = (after.saturating_sub(before)) / 1024;
    assert!(
        grew_mib < 48,
        "peak RSS grew {grew_mib} MiB for a 128 MiB upload ({before} -> {after} KiB)"
    );

    // A device downloads it whole, and the server still holds no copy in memory.
    let dev = app.create_device("aa:bb:cc:0a:00:03", "iq2").await;
    let mut ctl = RawCtl::login(&app, &dev.id, &dev.secret).await;
    let data = ctl.pasv().await;
    let (code, text) = ctl.cmd("RETR /releases/1.0.0/firmware.bin").await;
    assert_eq!(code, 150, "{text}");
    let mut tls = ctl.data_tls(data).await.unwrap();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = tls.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    assert_eq!(got, size as u64);
    let after_download = vm_hwm_kib(app.pid());
    assert!(
        (after_download.saturating_sub(before)) / 1024 < 64,
        "download grew RSS to {after_download} KiB"
    );
}

/// `ftps.max_sessions` holds across addresses: past it a connection gets `421` at once, and
/// a slot given back is free again.
#[tokio::test]
async fn the_server_wide_session_cap_refuses_with_421_and_frees_slots() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__MAX_SESSIONS", "2")]).await;
    let greet = |from: [u8; 4]| {
        let addr = app.ftp_addr;
        async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(std::net::SocketAddr::from((from, 0))).unwrap();
            let mut c = s.connect(addr).await.unwrap();
            let mut buf = vec![0u8; 128];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            (c, String::from_utf8_lossy(&buf[..n]).into_owned())
        }
    };
    let (a, first) = greet([127, 0, 0, 1]).await;
    let (_b, second) = greet([127, 0, 0, 2]).await;
    assert!(
        first.starts_with("220") && second.starts_with("220"),
        "{first}{second}"
    );
    let (_, third) = greet([127, 0, 0, 3]).await;
    assert_eq!(third, "421 Too many sessions; try again later\r\n");
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_c, again) = greet([127, 0, 0, 3]).await;
        if again.starts_with("220") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back: {again}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
