//! The FTPS front that owns its sockets (issue 14): honest records of cut downloads, `REST`
//! past the end, no Nagle stall, no AUTH TLS race, and the holes a hostile client found —
//! long lines, stalled TLS, wedged and stolen data connections, port hogs, a disabled device's
//! open session, `USER` in the log — each shown to do no harm.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{MIB, TestApp, image, run_program, spawn_app, spawn_app_binary, spawn_app_with_env};
use crate::raw_ctl::{RawCtl, TlsStream, tls_connect};

const IMG: usize = 4 * MIB;

async fn device_with_image(app: &TestApp, mac: &str) -> (String, String) {
    app.publish("iq2", "1.0.0", 1, &image(IMG, 11)).await;
    let dev = app.create_device(mac, "iq2").await;
    (dev.id, dev.secret)
}

/// `PASV`, then a TCP connection to the announced port with a small receive buffer, so that
/// what the client's TCP stack acknowledges stays close to what it read.
async fn pasv_small(ctl: &mut RawCtl<TlsStream>) -> TcpStream {
    let addr = ctl.pasv_addr().await;
    let s = TcpSocket::new_v4().unwrap();
    // The kernel doubles it and keeps a floor of about 2 KiB: the window stays far below
    // the 6 KiB of TLS framing the last cut leaves unread.
    s.set_recv_buffer_size(1024).unwrap();
    s.connect(addr).await.unwrap()
}

/// RETR with `REST offset`, reading `keep` raw bytes of the TLS stream, then a reset.
async fn cut_download(app: &TestApp, id: &str, secret: &str, offset: u64, keep: u64) {
    let mut ctl = RawCtl::login(app, id, secret).await;
    if offset > 0 {
        assert_eq!(ctl.cmd(&format!("REST {offset}")).await.0, 350);
    }
    let data = pasv_small(&mut ctl).await;
    let (code, text) = ctl.cmd("RETR /releases/1.0.0/firmware.bin").await;
    assert_eq!(code, 150, "{text}");
    let tls = ctl.data_tls(data).await.unwrap();
    // Keep reading below TLS: the cut lands on a raw byte, as a dropped link would.
    let (mut tcp, _) = tls.into_inner();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1024];
    while got < keep {
        let want = usize::try_from(keep - got).unwrap().min(buf.len());
        let n = tcp.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "the server closed early at {got}");
        got += n as u64;
    }
    tcp.set_zero_linger().unwrap();
    drop(tcp);
    let (code, text) = ctl.reply().await;
    assert_eq!(code, 426, "a cut transfer is not a 226: {text}");
}

#[tokio::test]
async fn cut_downloads_are_recorded_aborted_with_what_the_iq_acknowledged() {
    let app = spawn_app().await;
    let (id, secret) = device_with_image(&app, "aa:bb:cc:0e:00:01").await;
    let size = IMG as u64;
    let cuts = [
        (0u64, 1u64),
        (0, size / 2),
        (0, size - 1024),
        (1_000_000, 1_500_000),
    ];
    for (offset, keep) in cuts {
        cut_download(&app, &id, &secret, offset, keep).await;
    }
    let items = app
        .wait_downloads(&format!("device={id}&limit=10"), |i| i.len() >= cuts.len())
        .await;
    let mut rows: Vec<_> = items.iter().rev().collect();
    rows.truncate(cuts.len());
    for ((offset, keep), r) in cuts.iter().zip(rows) {
        assert_eq!(r["outcome"], "aborted", "cut at {keep} (offset {offset}): {r}");
        assert_eq!(r["offset"], *offset, "{r}");
        let bytes = r["bytes"].as_u64().unwrap();
        assert!(
            bytes + 64 * 1024 >= *keep && bytes <= keep + 64 * 1024,
            "cut after {keep} raw bytes (offset {offset}) recorded {bytes}: {r}"
        );
    }
}

#[tokio::test]
async fn rest_at_or_past_the_end_is_refused_with_554_and_recorded_never() {
    let app = spawn_app().await;
    let (id, secret) = device_with_image(&app, "aa:bb:cc:0e:00:02").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    for offset in [IMG as u64, IMG as u64 + 1] {
        assert_eq!(ctl.cmd(&format!("REST {offset}")).await.0, 350);
        let (code, text) = ctl.cmd("RETR /releases/1.0.0/firmware.bin").await;
        assert_eq!(
            text.trim(),
            format!("554 Restart offset {offset} is at or past the end of the file ({IMG} bytes)"),
            "{code}"
        );
    }
    let (code, text) = ctl.cmd("REST 18446744073709551615").await;
    assert_eq!(code, 501, "an offset that cannot be stored is refused: {text}");
    let (code, _) = ctl.cmd("REST -1").await;
    assert_eq!(code, 501);
    // The restart offset was cleared: a plain RETR sends the whole file.
    let data = ctl.pasv().await;
    assert_eq!(ctl.cmd("RETR /releases/1.0.0/firmware.bin").await.0, 150);
    let mut tls = ctl.data_tls(data).await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), IMG);
    assert_eq!(ctl.reply().await.0, 226);
    let items = app
        .wait_downloads(&format!("device={id}"), |i| !i.is_empty())
        .await;
    assert_eq!(items.len(), 1, "only the real transfer is recorded: {items:?}");
    assert_eq!(items[0]["outcome"], "complete");
    assert_eq!(items[0]["offset"], 0);
}

/// A client that never sets TCP_NODELAY and acknowledges late: with Nagle on the server's
/// sockets every `226` would wait for the ACK of the `150` (a delayed ACK, 40 ms on Linux).
#[tokio::test]
async fn small_transfers_do_not_wait_for_delayed_acks() {
    let app = spawn_app().await;
    let (id, secret) = crate::ftps::device_with_release(&app, "aa:bb:cc:0e:00:03").await;
    app.rollout(serde_json::json!({"model": "iq2", "version": "1.0.0", "devices": [id]}))
        .await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let mut times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let data = ctl.pasv().await;
        assert_eq!(ctl.cmd("RETR /target/manifest.json").await.0, 150);
        let mut tls = ctl.data_tls(data).await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(ctl.reply().await.0, 226);
        times.push(t.elapsed());
    }
    times.sort();
    // A stall is in every transfer (each waits for a delayed ACK, >= 40 ms), so even the
    // fastest would show it; the fastest is also what a loaded machine leaves unbiased.
    let fastest = times[0];
    assert!(
        fastest < Duration::from_millis(35),
        "the fastest PASV+RETR of a small file took {fastest:?} (a delayed-ACK stall is >= 40 ms): {times:?}"
    );
}

const AUTH_LOOP: &str = r#"
import ftplib, ssl, sys
host, port, cafile, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=cafile)
failed = 0
for i in range(n):
    try:
        f = ftplib.FTP_TLS(context=ctx, timeout=10)
        f.connect(host, port)
        f.auth()
        f.voidcmd("NOOP")
        f.quit()
    except Exception as e:
        failed += 1
        print("attempt", i, "failed:", repr(e), file=sys.stderr)
print(failed)
"#;

#[tokio::test]
async fn auth_tls_never_fails_on_the_first_attempt() {
    let app = spawn_app().await;
    std::fs::write(app.path("auth_loop.py"), AUTH_LOOP).unwrap();
    let port = app.ftp_addr.port().to_string();
    let cert = app.cert_path().display().to_string();
    let out = run_program(
        app.dir.path(),
        "python3",
        &["auth_loop.py", "127.0.0.1", &port, &cert, "200"],
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "0", "failed AUTH TLS upgrades: {}", out.stderr);
}

#[tokio::test]
async fn a_command_line_without_end_is_cut_off_before_and_after_tls() {
    let app = spawn_app().await;
    let (id, secret) = crate::ftps::device_with_release(&app, "aa:bb:cc:0e:00:04").await;
    let mut plain = RawCtl::connect(app.ftp_addr).await;
    let (code, text) = plain.try_cmd(&"A".repeat(64 * 1024)).await.unwrap();
    assert_eq!(text.trim(), "500 Command line too long; closing", "{code}");
    assert!(plain.try_reply().await.is_err(), "closed");
    let mut tls = RawCtl::login(&app, &id, &secret).await;
    let (code, text) = tls
        .try_cmd(&format!("SIZE /{}", "x".repeat(10_000)))
        .await
        .unwrap();
    assert_eq!(text.trim(), "500 Command line too long; closing", "{code}");
    assert!(tls.try_reply().await.is_err(), "closed");
    // The server is fine and its memory did not grow with the line.
    RawCtl::login(&app, &id, &secret).await;
}

#[tokio::test]
async fn a_stalled_tls_upgrade_is_reaped_and_gives_its_slot_back() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__MAX_SESSIONS_PER_IP", "2")]).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = RawCtl::connect(app.ftp_addr).await;
        assert_eq!(c.cmd("AUTH TLS").await.0, 234);
        stalled.push(c);
    }
    let started = Instant::now();
    for mut c in stalled {
        // Nothing is sent: the server must give up on the handshake and close.
        assert!(c.try_reply().await.is_err(), "a stalled handshake is closed");
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The address got its slots back.
    RawCtl::connect(app.ftp_addr).await;
}

#[tokio::test]
async fn a_data_connection_that_never_starts_tls_gets_425_not_a_wedge() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__DATA_CONNECT_TIMEOUT_SECS", "1")]).await;
    let (id, secret) = crate::ftps::device_with_release(&app, "aa:bb:cc:0e:00:05").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let _silent = ctl.pasv().await;
    assert_eq!(ctl.cmd("RETR /releases/1.0.0/firmware.bin").await.0, 150);
    let (code, text) = ctl.reply().await;
    assert_eq!(
        text.trim(),
        "425 Data connection refused: no TLS handshake in time",
        "{code}"
    );
    assert_eq!(ctl.cmd("NOOP").await.0, 200, "the session still answers");
}

#[tokio::test]
async fn a_stranger_at_the_same_address_cannot_take_the_data_connection() {
    let app = spawn_app().await;
    let (id, secret) = device_with_image(&app, "aa:bb:cc:0e:00:06").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let port = ctl.pasv_addr().await.port();
    // The intruder connects first and completes a TLS handshake of its own (no login).
    let intruder = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut intruder = tls_connect(&app, intruder).await.unwrap();
    let device = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(ctl.cmd("RETR /releases/1.0.0/firmware.bin").await.0, 150);
    let mut stolen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), intruder.read_to_end(&mut stolen)).await;
    assert!(stolen.is_empty(), "the intruder got {} bytes", stolen.len());
    let mut tls = ctl.data_tls(device).await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), IMG, "the device gets its image");
    assert_eq!(ctl.reply().await.0, 226);
    let (_, body) = app.get("/api/v1/devices/aabbcc0e0006").await;
    assert_eq!(body["diagnostics"]["data_connections_unbound"], 1, "{body}");
}

#[tokio::test]
async fn a_connection_from_another_host_is_dropped_and_gets_nothing() {
    let app = spawn_app().await;
    let (id, secret) = device_with_image(&app, "aa:bb:cc:0e:00:08").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let port = ctl.pasv_addr().await.port();
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let device = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(ctl.cmd("RETR /releases/1.0.0/firmware.bin").await.0, 150);
    let mut tls = ctl.data_tls(device).await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), IMG, "the device gets its image");
    assert_eq!(ctl.reply().await.0, 226);
    let mut stolen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), other.read_to_end(&mut stolen)).await;
    assert!(stolen.is_empty(), "the other host got {} bytes", stolen.len());
    // Logged, not counted: any host could otherwise fill the per-address table.
    let (_, diag) = app.get("/api/v1/diagnostics").await;
    assert!(
        !diag["client_ips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "127.0.0.2"),
        "{diag}"
    );
}

#[tokio::test]
async fn python_ftplib_without_session_reuse_gets_a_clear_425() {
    let app = spawn_app().await;
    let (_, secret) = crate::ftps::device_with_release(&app, "aa:bb:cc:0e:00:07").await;
    let script = r#"
import ftplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
f = ftplib.FTP_TLS(context=ctx, timeout=20)
f.connect("127.0.0.1", int(sys.argv[1])); f.login("aa:bb:cc:0e:00:07", sys.argv[2]); f.prot_p()
try:
    f.retrbinary("RETR /releases/1.0.0/manifest.json", lambda b: None)
    print("transferred")
except ftplib.error_temp as e:
    print(e)
"#;
    std::fs::write(app.path("plain_ftplib.py"), script).unwrap();
    let port = app.ftp_addr.port().to_string();
    let cert = app.cert_path().display().to_string();
    let out = run_program(
        app.dir.path(),
        "python3",
        &["plain_ftplib.py", &port, &secret, &cert],
    )
    .await;
    assert_eq!(
        out.stdout.trim(),
        "425 Data connection refused: it must resume this control connection's TLS session",
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn probe_sessions_cannot_hog_the_passive_ports() {
    let mut app = spawn_app().await;
    app.passive = (app.passive.0, app.passive.0 + 3);
    app.write_config();
    app.restart().await;
    let (id, secret) = crate::ftps::device_with_release(&app, "aa:bb:cc:0e:00:08").await;
    // 16 probe sessions from 127.0.0.1 all ask for a passive port and never connect.
    let mut hogs = Vec::new();
    for _ in 0..16 {
        hogs.push(tokio::spawn({
            let addr = app.ftp_addr;
            let cert = app.cert_path();
            async move {
                let mut c = crate::raw_ctl::login_at(addr, &cert, "probe", "probe").await;
                for _ in 0..6 {
                    let _ = c.try_cmd("PASV").await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Meanwhile a device from another address updates, several times over.
    for _ in 0..3 {
        let mut ctl = crate::raw_ctl::login_from(&app, "127.0.0.2", &id, &secret).await;
        let data = ctl.pasv().await;
        assert_eq!(ctl.cmd("RETR /releases/1.0.0/firmware.bin").await.0, 150);
        let mut tls = ctl.data_tls(data).await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(ctl.reply().await.0, 226);
        assert_eq!(got.len(), 64 * 1024);
    }
    for h in hogs {
        h.abort();
    }
}

#[tokio::test]
async fn disabling_a_device_closes_its_open_session_mid_download() {
    let app = spawn_app().await;
    let (id, secret) = device_with_image(&app, "aa:bb:cc:0e:00:09").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let data = pasv_small(&mut ctl).await;
    assert_eq!(ctl.cmd("RETR /releases/1.0.0/firmware.bin").await.0, 150);
    let mut tls = ctl.data_tls(data).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    tls.read_exact(&mut buf).await.unwrap();
    let (status, body) = app
        .post(&format!("/api/v1/devices/{id}/disable"), serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (code, text) = ctl.reply().await;
    assert!(code == 421 || code == 426, "{text}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(
        (rest.len() as u64) < IMG as u64 - 64 * 1024,
        "the transfer was stopped"
    );
    let items = app
        .wait_downloads(&format!("device={id}"), |i| !i.is_empty())
        .await;
    assert_eq!(items[0]["outcome"], "aborted", "{items:?}");
}

#[tokio::test]
async fn what_a_client_types_as_user_never_reaches_the_log() {
    let app = spawn_app_binary().await;
    let (id, secret) = crate::ftps::device_with_release(&app, "aa:bb:cc:0e:00:0a").await;
    // A client that swapped user and password.
    let (code, _) = RawCtl::login_reply(&app, &secret, &id).await;
    assert_eq!(code, 530);
    let (code, _) = RawCtl::login_reply(&app, "AA-BB-CC-0E-00-0A", "wrong").await;
    assert_eq!(code, 530);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = app.log();
    assert!(!log.contains(&secret), "the secret typed as USER is in the log");
    assert!(!log.contains("AA-BB-CC-0E-00-0A"), "USER is logged as typed");
}

/// Reads from a raw control connection must stay exact: a reply is never split from its
/// command by the relay (one command at a time).
#[tokio::test]
async fn pipelined_commands_get_their_own_replies_in_order() {
    let app = spawn_app().await;
    let (id, secret) = crate::ftps::device_with_release(&app, "aa:bb:cc:0e:00:0b").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    ctl.send_raw("NOOP\r\nSIZE /releases/1.0.0/manifest.json\r\nSIZE /nope\r\nPWD\r\n")
        .await;
    assert_eq!(ctl.reply().await.0, 200);
    assert_eq!(ctl.reply().await.0, 213);
    assert_eq!(ctl.reply().await.0, 550);
    assert_eq!(ctl.reply().await.0, 257);
    let _ = ctl.try_cmd("QUIT").await;
    let mut w = TcpStream::connect(app.ftp_addr).await.unwrap();
    let _ = w.write_all(b"QUIT\r\n").await;
}

/// The front serves `RETR` itself, so it must join paths to the directory exactly as libunftp
/// keeps it (`CWD` joins, `CDUP` pops, `..` resolves within the device tree).
#[tokio::test]
async fn retr_follows_cwd_and_cdup_as_libunftp_does() {
    let app = spawn_app().await;
    let (id, secret) = crate::ftps::device_with_release(&app, "aa:bb:cc:0e:00:0c").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    for (cwds, path, want) in [
        (vec!["CWD /releases/1.0.0"], "manifest.json", 226),
        (
            vec!["CWD /releases/1.0.0", "CDUP", "CWD 1.0.0"],
            "manifest.json",
            226,
        ),
        (
            vec!["CWD /releases", "CWD 1.0.0", "CWD .."],
            "1.0.0/manifest.json",
            226,
        ),
        (
            vec!["CWD /releases/1.0.0"],
            "../../../../releases/1.0.0/manifest.json",
            226,
        ),
        (vec!["CWD /releases/1.0.0"], "firmware.bin.x", 550),
        (vec!["CWD /nope"], "releases/1.0.0/manifest.json", 226),
    ] {
        ctl.cmd("CWD /").await;
        for c in &cwds {
            ctl.cmd(c).await;
        }
        let data = ctl.pasv().await;
        let (code, text) = ctl.cmd(&format!("RETR {path}")).await;
        if want == 550 {
            assert_eq!(code, 550, "{cwds:?} RETR {path}: {text}");
            continue;
        }
        assert_eq!(code, 150, "{cwds:?} RETR {path}: {text}");
        let mut tls = ctl.data_tls(data).await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(ctl.reply().await.0, 226, "{cwds:?} RETR {path}");
        assert!(got.starts_with(b"{"), "{cwds:?} RETR {path} got a manifest");
    }
}
