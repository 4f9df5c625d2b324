//! What the server logs at its default level for things that are normal: an IQ polling with
//! no update (`550` on `/target`), a client that sends an IP address as SNI, a refused login
//! (one WARN, without the secret). Real binary, real clients (the reference IQ, openssl).

use crate::helpers::{image, run_program, spawn_app_with_env};

/// `fwdist fetch` as device `id` of `iq2`, trusting `iq-trust`.
async fn fetch(
    app: &crate::helpers::TestApp,
    id: &str,
    secret: &str,
    extra: &[&str],
) -> crate::helpers::CliOutput {
    let server = app.ftp_addr.to_string();
    let mut args = vec![
        "fetch", "--server", &server, "--device", id, secret, "--model", "iq2", "--trust", "iq-trust",
        "--state", "iq-state",
    ];
    args.extend_from_slice(extra);
    app.cli(&args).await
}

#[tokio::test]
async fn normal_polls_and_ip_address_sni_do_not_warn() {
    let app = spawn_app_with_env(&[("RUST_LOG", fwdist::telemetry::DEFAULT_FILTER)]).await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    let dev = app.create_device("aa:bb:cc:34:00:01", "iq2").await;
    app.iq_trust();
    // No rollout: every poll is a no-update.
    for _ in 0..3 {
        let out = fetch(&app, &dev.id, &format!("--secret={}", dev.secret), &[]).await;
        assert_eq!(out.code, Some(10), "no update: {}\n{}", out.stdout, out.stderr);
    }
    // openssl sends the IP address as SNI when told to, as some IQ TLS stacks do.
    let port = app.ftp_addr.port().to_string();
    let connect = format!("127.0.0.1:{port}");
    let res = run_program(
        app.dir.path(),
        "sh",
        &[
            "-c",
            &format!(
                "echo QUIT | openssl s_client -connect {connect} -starttls ftp -servername 127.0.0.1 -CAfile {} -verify_return_error",
                app.cert_path().display()
            ),
        ],
    )
    .await;
    assert!(
        res.stdout.contains("Verify return code: 0 (ok)"),
        "{}\n{}",
        res.stdout,
        res.stderr
    );
    // A wrong secret is worth one WARN, and the secret is never logged.
    let out = fetch(&app, &dev.id, "--secret=wrong-secret-xyz", &["--attempts", "1"]).await;
    assert_eq!(out.code, Some(31), "{}\n{}", out.stdout, out.stderr);

    let log = app.log();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN "))
        .filter(|l| !l.contains("self-signed TLS certificate for development"))
        .collect();
    // Only the refused login warns (once per attempt the client made).
    assert!(!warns.is_empty(), "the refused login warns");
    assert!(
        warns.iter().all(|w| w.contains("login refused: wrong secret")),
        "only the refused login warns:\n{}",
        warns.join("\n")
    );
    assert!(!log.contains("Illegal SNI"), "rustls' SNI warning is not logged");
    assert!(!log.contains("wrong-secret-xyz"), "a secret in the log");
    assert!(!log.contains(&dev.secret), "a secret in the log");
    for token in [&app.admin_token, &app.publisher_token, &app.viewer_token] {
        assert!(!log.contains(token.as_str()), "an API token in the log");
    }
}

/// `ftps.idle_timeout_secs` counts the IQ's silence, not libunftp's: a download longer than
/// the timeout keeps its session (the IQ can still upload its report after the `226`), and a
/// session then left silent is closed with `421`.
#[tokio::test]
async fn a_download_longer_than_the_idle_timeout_keeps_its_session() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__IDLE_TIMEOUT_SECS", "2")]).await;
    app.publish("iq2", "1.0.0", 1, &image(640 << 10, 3)).await;
    let dev = app.create_device("aa:bb:cc:34:00:02", "iq2").await;
    let script = format!(
        "{}{}",
        crate::helpers::clients::FTPLIB_REUSING,
        r#"
import socket, time
host, port, user, pw, cafile = sys.argv[1:]
class Slow(ReusingFTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = super().ntransfercmd(cmd, rest)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        return conn, size
ctx = ssl.create_default_context(cafile=cafile)
ftp = Slow(context=ctx, timeout=30)
ftp.connect(host, int(port)); ftp.auth(); ftp.login(user, pw); ftp.prot_p()
ftp.voidcmd("TYPE I")
t = time.monotonic()
print(ftp.retrbinary("RETR /releases/1.0.0/firmware.bin", lambda b: time.sleep(0.005), blocksize=16384))
print("took %.1f" % (time.monotonic() - t))
time.sleep(1)
print(ftp.voidcmd("NOOP"))
time.sleep(4)
try:
    print(ftp.voidcmd("NOOP"))
except ftplib.Error as e:
    print(e)
"#
    );
    std::fs::write(app.path("slow.py"), script).unwrap();
    let port = app.ftp_addr.port().to_string();
    let cert = app.cert_path().display().to_string();
    let res = run_program(
        app.dir.path(),
        "python3",
        &["slow.py", "127.0.0.1", &port, &dev.id, &dev.secret, &cert],
    )
    .await;
    assert!(res.success, "{}\n{}", res.stdout, res.stderr);
    let lines: Vec<&str> = res.stdout.lines().collect();
    assert!(lines[0].starts_with("226"), "{}", res.stdout);
    let took: f64 = lines[1].trim_start_matches("took ").parse().unwrap();
    assert!(took > 2.5, "the download must outlast the idle timeout: {took} s");
    assert!(
        lines[2].starts_with("200"),
        "the session survived the download: {}",
        res.stdout
    );
    assert_eq!(
        lines[3], "421 Idle timeout; closing control connection",
        "{}",
        res.stdout
    );
}
