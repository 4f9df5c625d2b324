//! Stock clients a customer might point at the server: curl (OpenSSL) and python's ftplib.

use std::fs;

use serde_json::json;

use crate::helpers::{CliOutput, MIB, TestApp, image, run_program, sha256_hex, spawn_app};

/// A published, targeted release and a device: (image, manifest, device id, secret).
async fn setup(app: &TestApp, mac: &str, size: usize) -> (Vec<u8>, Vec<u8>, String, String) {
    let rel = app.publish("iq2", "1.0.0", 1, &image(size, 71)).await;
    let dev = app.create_device(mac, "iq2").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "devices": [dev.id]}))
        .await;
    (rel.image, rel.manifest, dev.id, dev.secret)
}

/// curl exit codes that mean "TLS/transport trouble" (worth one more try because of the
/// libunftp AUTH TLS race), as opposed to an answer from the server.
fn curl_transport_failure(out: &CliOutput) -> bool {
    [
        "curl: (35)",
        "curl: (56)",
        "curl: (7)",
        "curl: (28)",
        "curl: (55)",
        "curl: (8)",
    ]
    .iter()
    .any(|c| out.stderr.contains(c))
}

async fn curl(app: &TestApp, user: &str, pass: &str, path: &str, out: &str, tls: bool) -> CliOutput {
    let url = format!("ftp://127.0.0.1:{}{path}", app.ftp_addr.port());
    let creds = format!("{user}:{pass}");
    let cert = app.cert_path().display().to_string();
    let mut args = vec![
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "60",
        "--disable-epsv",
        "-u",
        &creds,
        "-o",
        out,
    ];
    if tls {
        args.extend(["--ssl-reqd", "--cacert", &cert]);
    }
    args.push(&url);
    let mut result = run_program(app.dir.path(), "curl", &args).await;
    for _ in 0..3 {
        if result.success || !curl_transport_failure(&result) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        result = run_program(app.dir.path(), "curl", &args).await;
    }
    result
}

#[tokio::test]
async fn curl_downloads_over_explicit_ftps() {
    let app = spawn_app().await;
    let (img, manifest, id, secret) = setup(&app, "aa:bb:cc:07:00:01", 2 * MIB + 99).await;
    let out = curl(
        &app,
        "aa-bb-cc-07-00-01",
        &secret,
        "/releases/1.0.0/firmware.bin",
        "curl.bin",
        true,
    )
    .await;
    assert!(out.success, "curl download: {}", out.stderr);
    assert_eq!(
        sha256_hex(&fs::read(app.path("curl.bin")).unwrap()),
        sha256_hex(&img),
        "curl got the image"
    );
    // curl splits -u at the first colon, so the colon form of the MAC cannot be used here.
    let user = id.replace(':', "");
    let out = curl(
        &app,
        &user,
        &secret,
        "/target/manifest.json",
        "curl-manifest.json",
        true,
    )
    .await;
    assert!(out.success, "curl target manifest: {}", out.stderr);
    assert_eq!(fs::read(app.path("curl-manifest.json")).unwrap(), manifest);
    app.wait_downloads(&format!("device={id}"), |i| {
        i.iter().any(|r| {
            r["file"] == "firmware.bin" && r["outcome"] == "complete" && r["bytes"] == img.len() as u64
        })
    })
    .await;

    let out = curl(
        &app,
        &user,
        "wrong-secret",
        "/releases/1.0.0/firmware.bin",
        "bad.bin",
        true,
    )
    .await;
    assert!(
        !out.success && out.stderr.contains("(67)"),
        "wrong secret: login denied (67): {}",
        out.stderr
    );
    let out = curl(
        &app,
        &user,
        &secret,
        "/releases/1.0.0/firmware.bin",
        "plain.bin",
        false,
    )
    .await;
    assert!(!out.success, "plain FTP must be refused: {}", out.stderr);
    assert!(
        !app.path("plain.bin").exists() || fs::read(app.path("plain.bin")).unwrap().is_empty(),
        "no bytes without TLS"
    );
}

/// Python's ftplib as an IQ would use it against a server that binds data connections to
/// their session (fwdist, vsftpd's `require_ssl_reuse`): each data connection resumes the
/// control connection's TLS session (`session=`). No retry: fwdist has no AUTH TLS race.
pub const FTPLIB_REUSING: &str = r#"
import ftplib, io, ssl, sys

class ReusingFTP_TLS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size
"#;

const FTPLIB_SCRIPT: &str = r#"
host, port, user, pw, path, offset, out, cafile = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
ftp = ReusingFTP_TLS(context=ctx, timeout=60)
ftp.connect(host, int(port))
ftp.auth()
ftp.login(user, pw)
ftp.prot_p()
ftp.voidcmd("TYPE I")
size = ftp.size(path)
with open(out, "wb") as f:
    ftp.retrbinary("RETR " + path, f.write, rest=int(offset) if int(offset) else None)
ftp.quit()
print(size)
"#;

#[tokio::test]
async fn python_ftplib_resumes_with_rest() {
    let app = spawn_app().await;
    let (img, _, id, secret) = setup(&app, "aa:bb:cc:07:00:02", 3 * MIB).await;
    fs::write(app.path("fetch.py"), format!("{FTPLIB_REUSING}{FTPLIB_SCRIPT}")).unwrap();
    let port = app.ftp_addr.port().to_string();
    let cert = app.cert_path().display().to_string();
    for (offset, out) in [(0usize, "py-full.bin"), (1_000_000, "py-tail.bin")] {
        let off = offset.to_string();
        let args = [
            "fetch.py",
            "127.0.0.1",
            &port,
            "AABBCC070002",
            &secret,
            "/releases/1.0.0/firmware.bin",
            &off,
            out,
            &cert,
        ];
        let res = run_program(app.dir.path(), "python3", &args).await;
        assert!(
            res.success,
            "ftplib (offset {offset}): {}\n{}",
            res.stdout, res.stderr
        );
        assert_eq!(res.stdout.trim(), img.len().to_string(), "SIZE via ftplib");
        let got = fs::read(app.path(out)).unwrap();
        assert_eq!(got.len(), img.len() - offset, "bytes from offset {offset}");
        assert!(
            got == img[offset..],
            "ftplib bytes from offset {offset} match the image"
        );
    }
    let items = app
        .wait_downloads(&format!("device={id}&limit=50"), |i| {
            i.iter()
                .any(|r| r["offset"] == 1_000_000 && r["outcome"] == "complete")
        })
        .await;
    let r = items.iter().find(|r| r["offset"] == 1_000_000).unwrap();
    assert_eq!(r["bytes"], (img.len() - 1_000_000) as u64, "{r}");
    assert_eq!(r["client_ip"], "127.0.0.1", "{r}");
}
