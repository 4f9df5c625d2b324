//! The admin listener under abuse (issue 10), over real sockets against the real binary:
//! slowloris and idle connections are closed, the connection cap holds without touching
//! FTPS, `admin.cert`/`admin.key` make the API HTTPS only, and a descriptor limit too low for
//! the configured caps stops the server at start. The finer cases (a handler at work, a
//! stalled body or response, draining) are unit tests in `src/api/listener.rs`.

use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{BIN, config_toml_at, run_program, spawn_app_with_env};
use crate::raw_ctl::RawCtl;

/// Generous: every deadline the tests configure is a few seconds.
const CLOSED_WITHIN: Duration = Duration::from_secs(15);

/// Reads until the server closes the connection (EOF or reset) and returns what it sent;
/// fails if it is still open after [`CLOSED_WITHIN`].
async fn until_closed(s: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + CLOSED_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {CLOSED_WITHIN:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One `GET` on a kept-alive connection: its status and body, or why there was none.
async fn get(s: &mut TcpStream, path: &str) -> Result<(u16, String), String> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: fwdist\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
            if text.len() >= end + 4 + len {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("no status in {head:?}"))?;
                return Ok((status, text[end + 4..end + 4 + len].to_owned()));
            }
        }
        let n = tokio::time::timeout(CLOSED_WITHIN, s.read(&mut buf))
            .await
            .map_err(|_| format!("no answer; got {text:?}"))?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed; got {text:?}"));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with_env(&[("FWDIST_ADMIN__HEADER_TIMEOUT_SECS", "2")]).await;
    let (mut r, mut w) = TcpStream::connect(app.api_addr).await.unwrap().into_split();
    // One header byte a second: the head would take over two minutes.
    let dribble = tokio::spawn(async move {
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: fwdist\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(100)
        );
        for b in head.bytes() {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let got = until_closed(&mut r).await;
    dribble.abort();
    let got = String::from_utf8_lossy(&got);
    assert!(!got.contains(" 200 "), "the request was never whole: {got:?}");
    // The server is fine.
    let mut s = TcpStream::connect(app.api_addr).await.unwrap();
    assert_eq!(get(&mut s, "/healthz").await.unwrap().0, 200);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    // The header timeout (60 s) is far past the deadline below: what closes is the idle one.
    let app = spawn_app_with_env(&[
        ("FWDIST_ADMIN__HEADER_TIMEOUT_SECS", "60"),
        ("FWDIST_ADMIN__IDLE_TIMEOUT_SECS", "2"),
    ])
    .await;
    let mut silent = TcpStream::connect(app.api_addr).await.unwrap();
    let mut kept_alive = TcpStream::connect(app.api_addr).await.unwrap();
    assert_eq!(get(&mut kept_alive, "/healthz").await.unwrap().0, 200);
    let (a, b) = tokio::join!(until_closed(&mut silent), until_closed(&mut kept_alive));
    assert!(a.is_empty() && b.is_empty(), "closed without an answer");
}

#[tokio::test]
async fn past_the_connection_cap_connections_are_closed_unanswered_and_ftps_still_logs_in() {
    let mut app = spawn_app_with_env(&[
        ("FWDIST_ADMIN__MAX_CONNECTIONS", "4"),
        ("FWDIST_ADMIN__HEADER_TIMEOUT_SECS", "60"),
    ])
    .await;
    let dev = app.create_device("aa:bb:cc:10:00:01", "iq2").await;
    // The harness's client keeps its connection alive: drop it, so the test holds every slot.
    app.http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut held = Vec::new();
    let deadline = Instant::now() + CLOSED_WITHIN;
    // One address may hold a quarter of the slots (here 1): four addresses fill them.
    let from = |i: usize| {
        let addr = app.api_addr;
        async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(std::net::SocketAddr::from((
                [127, 0, 0, u8::try_from(i).unwrap()],
                0,
            )))
            .unwrap();
            s.connect(addr).await.unwrap()
        }
    };
    while held.len() < 4 {
        let mut s = from(held.len() + 1).await;
        match get(&mut s, "/healthz").await {
            Ok((200, _)) => held.push(s),
            other => {
                // The dropped client's connection may not be closed yet.
                assert!(Instant::now() < deadline, "slot {}: {other:?}", held.len() + 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // A second one from an address that holds its share is closed unanswered.
    let mut again = from(2).await;
    let _ = again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: fwdist\r\n\r\n")
        .await;
    assert!(
        until_closed(&mut again).await.is_empty(),
        "an address over its share"
    );
    // A fifth connection, from an address holding nothing, is closed unanswered: the cap.
    let mut fifth = from(9).await;
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: fwdist\r\n\r\n")
        .await;
    let got = until_closed(&mut fifth).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // FTPS does not share the admin API's slots.
    RawCtl::login(&app, &dev.id, &dev.secret).await;
    assert_eq!(
        get(&mut held[0], "/healthz").await.unwrap().0,
        200,
        "held ones still served"
    );
    drop(held);
    // The slots come back.
    let deadline = Instant::now() + CLOSED_WITHIN;
    loop {
        let mut s = TcpStream::connect(app.api_addr).await.unwrap();
        match get(&mut s, "/healthz").await {
            Ok((200, _)) => break,
            other => assert!(Instant::now() < deadline, "after release: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = app.log();
    assert!(log.contains("admin API at its connection cap"), "{log}");
    assert!(
        log.contains("file descriptor budget") && log.contains("admin_connections=4"),
        "{log}"
    );
}

#[tokio::test]
async fn with_a_certificate_the_api_speaks_https_only() {
    let files = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (files.path().join("admin.crt"), files.path().join("admin.key"));
    fs::write(&cert, ck.cert.pem()).unwrap();
    fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let app = spawn_app_with_env(&[("FWDIST_ADMIN__CERT", cert), ("FWDIST_ADMIN__KEY", key)]).await;
    let port = app.api_addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/healthz");
    let out = run_program(
        app.dir.path(),
        "curl",
        &[
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "--cacert",
            cert,
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_code} %{http_version}",
            &url,
        ],
    )
    .await;
    assert!(out.success, "curl: {}", out.stderr);
    assert!(out.stdout.ends_with("\n200 1.1"), "{}", out.stdout);
    assert!(out.stdout.contains(r#""status":"ok""#), "{}", out.stdout);
    // Plain HTTP on the same port gets no HTTP answer.
    let mut s = TcpStream::connect(app.api_addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: fwdist\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut s).await;
    assert!(!got.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&got));
    let plain = format!("http://127.0.0.1:{port}/healthz");
    let out = run_program(
        app.dir.path(),
        "curl",
        &["-sS", "--noproxy", "*", "--max-time", "10", &plain],
    )
    .await;
    assert!(!out.success, "plain HTTP answered: {}", out.stdout);
    assert!(!app.log().contains("without TLS"), "{}", app.log());
}

#[tokio::test]
async fn beyond_loopback_without_tls_is_a_warning() {
    let app = spawn_app_with_env(&[("FWDIST_ADMIN__LISTEN", "0.0.0.0:0")]).await;
    let log = app.log();
    assert!(
        log.contains("WARN") && log.contains("beyond loopback without TLS"),
        "{log}"
    );
}

#[tokio::test]
async fn a_descriptor_limit_too_low_for_the_caps_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = config_toml_at(dir.path(), any, any, (40000, 40007));
    fs::write(dir.path().join("fwdist.toml"), config).unwrap();
    // `ulimit -n` in sh sets the soft and the hard limit: fwdist cannot raise it.
    let script = format!("ulimit -n 200 && exec '{BIN}' serve --config fwdist.toml");
    let out = run_program(dir.path(), "sh", &["-c", &script]).await;
    assert!(!out.success, "started at 200 descriptors: {}", out.stderr);
    assert!(
        out.stderr.contains("(RLIMIT_NOFILE) is 200")
            && out.stderr.contains("admin.max_connections = 256")
            && out.stderr.contains("set admin.max_connections to 2 or less"),
        "{}",
        out.stderr
    );
    assert!(
        !dir.path().join("firmware-store").exists(),
        "refused before anything was made"
    );
}

/// A client that writes a whole oversized upload before it reads still gets the `413`: the
/// server refuses the body unread, and its close lingers (reads and drops the rest) instead
/// of resetting the connection under the answer.
#[tokio::test]
async fn an_upload_written_whole_before_reading_still_gets_its_413() {
    let app = spawn_app_with_env(&[("FWDIST_STORE__MAX_IMAGE_BYTES", "1000")]).await;
    let body = vec![b'x'; 8 << 20];
    let head = format!(
        "POST /api/v1/releases HTTP/1.1\r\nHost: fwdist\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n",
        app.publisher_token,
        body.len()
    );
    let s = TcpStream::connect(app.api_addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    // Writes the head and all 8 MiB (the server drains what it does not read), then reads.
    let writer = tokio::spawn(async move {
        w.write_all(head.as_bytes()).await.unwrap();
        let sent = w.write_all(&body).await;
        (w, sent)
    });
    let (_w, sent) = writer.await.unwrap();
    assert!(sent.is_ok(), "the whole body could be written: {sent:?}");
    let got = String::from_utf8_lossy(&until_closed(&mut r).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 413"), "the answer arrived: {got:?}");
    assert!(got.contains("\"error\""), "a JSON error: {got:?}");
}
