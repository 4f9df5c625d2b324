//! Install reports (SPEC §7): `STOR /report.json` over the device's own FTPS session and
//! `POST /devices/{id}/reports` for the reporter role; what is refused stores nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::ftps::device_with_release;
use crate::helpers::{TestApp, spawn_app};
use crate::raw_ctl::RawCtl;

async fn reports_of(app: &TestApp, id: &str) -> (Value, Vec<Value>) {
    let (status, dev) = app.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(status, 200, "{dev}");
    let reports = dev["reports"].as_array().cloned().unwrap_or_default();
    (dev["installed_version"].clone(), reports)
}

#[tokio::test]
async fn an_iq_reports_over_its_own_session_and_bad_reports_store_nothing() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:16:00:01").await;
    app.publish("iq3", "9.0.0", 1, b"other model").await;
    let mut ctl = RawCtl::login(&app, &id, &secret).await;
    let big = format!(
        r#"{{"version": "1.0.0", "outcome": "installed", "detail": "{}"}}"#,
        "x".repeat(5000)
    );
    for (body, want) in [
        (
            &b"{not json"[..],
            "550 report is not valid: key must be a string at line 1 column 2; nothing stored\r\n",
        ),
        (
            br#"{"version": "1.0.0", "outcome": "installed", "extra": 1}"#,
            "550 report is not valid: unknown field `extra`, expected one of `version`, `outcome`, `detail` at line 1 column 52; nothing stored\r\n",
        ),
        (
            br#"{"version": "9.0.0", "outcome": "installed"}"#,
            "550 no release iq2 9.0.0; nothing stored\r\n",
        ),
        (
            br#"{"version": "1.0.0", "outcome": "bricked"}"#,
            "550 invalid outcome \"bricked\": expected installed or failed; nothing stored\r\n",
        ),
        (
            big.as_bytes(),
            "552 Report is larger than 4096 bytes; nothing stored\r\n",
        ),
    ] {
        let (_, reply) = ctl.stor_bytes("/report.json", body).await;
        assert_eq!(reply, want);
    }
    assert_eq!(
        reports_of(&app, &id).await,
        (Value::Null, vec![]),
        "nothing stored"
    );
    // Any other path: read, discarded, refused; the session goes on.
    let (_, reply) = ctl
        .stor_bytes("/releases/1.0.0/firmware.bin", &[7u8; 100_000])
        .await;
    assert_eq!(reply, "550 Permission denied\r\n");

    let (_, reply) = ctl
        .stor_bytes(
            "/report.json",
            br#"{"version": "1.0.0", "outcome": "failed", "detail": "flash error 7"}"#,
        )
        .await;
    assert!(
        reply.starts_with("226 Report ") && reply.ends_with(" stored\r\n"),
        "{reply}"
    );
    assert_eq!(
        reports_of(&app, &id).await.0,
        Value::Null,
        "failed installs nothing"
    );
    ctl.cmd("CWD /releases").await;
    let (_, reply) = ctl
        .stor_bytes(
            "../report.json",
            br#"{"version": "1.0.0", "outcome": "installed"}"#,
        )
        .await;
    assert!(reply.starts_with("226 "), "{reply}");
    let (installed, reports) = reports_of(&app, &id).await;
    assert_eq!(installed, "1.0.0");
    assert_eq!(reports.len(), 2);
    let r = &reports[0];
    assert_eq!(
        (
            &r["device"],
            &r["version"],
            &r["outcome"],
            &r["source"],
            &r["client_ip"],
            &r["node"],
            &r["detail"]
        ),
        (
            &json!(id),
            &json!("1.0.0"),
            &json!("installed"),
            &json!("ftps"),
            &json!("127.0.0.1"),
            &json!("test-node"),
            &Value::Null
        ),
        "{r}"
    );
    assert_eq!(reports[1]["detail"], "flash error 7");
    assert!(ctl.cmd("NOOP").await.0 == 200, "the session is still fine");

    // The probe account has no report to make.
    let mut probe = RawCtl::login(&app, "probe", "probe").await;
    let (_, reply) = probe
        .stor_bytes("/report.json", br#"{"version": "1.0.0", "outcome": "installed"}"#)
        .await;
    assert_eq!(reply, "550 Permission denied\r\n");
    // Without PROT P there is no data connection to send one over.
    let (code, _) = ctl.cmd("PROT C").await;
    assert_eq!(code, 200);
    let (code, text) = ctl.cmd("PASV").await;
    assert_eq!(
        (code, text.as_str()),
        (534, "534 A TLS connection is required on the data channel\r\n")
    );
    assert_eq!(reports_of(&app, &id).await.1.len(), 2);
}

#[tokio::test]
async fn the_reporter_token_posts_reports_and_nothing_else() {
    let app = spawn_app().await;
    let (id, _) = device_with_release(&app, "aa:bb:cc:16:00:02").await;
    let reporter = app.create_token("ks-backend", "reporter").await;
    let path = format!("/api/v1/devices/{id}/reports");
    let body = json!({"version": "1.0.0", "outcome": "installed", "detail": "via KS"});
    let (status, r) = app
        .request(Method::POST, &path, Some(&reporter), Some(body.clone()))
        .await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        (&r["source"], &r["client_ip"], &r["outcome"]),
        (&json!("api"), &json!("127.0.0.1"), &json!("installed"))
    );
    for (method, p) in [
        (Method::GET, "/api/v1/devices".to_string()),
        (Method::GET, format!("/api/v1/devices/{id}")),
        (Method::GET, "/api/v1/releases".to_string()),
        (Method::GET, "/api/v1/downloads".to_string()),
    ] {
        let (status, body) = app.request(method, &p, Some(&reporter), None).await;
        assert_eq!(
            (status, &body),
            (403, &json!({"error": "this needs the viewer role"})),
            "{p}"
        );
    }
    for (p, b) in [
        (
            "/api/v1/devices",
            json!({"id": "aa:bb:cc:16:00:09", "model": "iq2"}),
        ),
        (
            "/api/v1/rollouts",
            json!({"model": "iq2", "version": "1.0.0", "percent": 100}),
        ),
    ] {
        let (status, body) = app.request(Method::POST, p, Some(&reporter), Some(b)).await;
        assert_eq!(
            (status, &body),
            (403, &json!({"error": "this needs the admin role"})),
            "{p}"
        );
    }
    let (status, _) = app
        .request(Method::POST, &path, Some(&app.viewer_token), Some(body.clone()))
        .await;
    assert_eq!(status, 403, "a viewer cannot report");
    let (status, _) = app
        .request(Method::POST, &path, Some(&app.admin_token), Some(body))
        .await;
    assert_eq!(status, 201, "an admin can");
    for (b, want) in [
        (
            json!({"version": "1.0.0"}),
            "report is not valid: missing field `outcome` at line 1 column 19",
        ),
        (
            json!({"version": "2.0.0", "outcome": "installed"}),
            "no release iq2 2.0.0",
        ),
        (
            json!({"version": "1.0.0", "outcome": "failed", "detail": "d".repeat(1025)}),
            "detail is longer than 1024 bytes",
        ),
        (
            json!({"version": "1.0.0", "outcome": "failed", "detail": "d".repeat(5000)}),
            "report is larger than 4096 bytes",
        ),
    ] {
        let (status, body) = app.request(Method::POST, &path, Some(&reporter), Some(b)).await;
        assert_eq!((status, body), (422, json!({ "error": want })));
    }
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/devices/aa:bb:cc:16:00:99/reports",
            Some(&reporter),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "no such device: aa:bb:cc:16:00:99"}))
    );
    let (_, dev) = app.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(dev["reports"].as_array().map(Vec::len), Some(2), "{dev}");
}

/// Stock Python ftplib (with the session reuse every fwdist client needs) uploads a report,
/// and a refused upload gives it a `550`, not a reset connection.
const FTPLIB_REPORT: &str = r#"
host, port, user, pw, cafile = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
ftp = ReusingFTP_TLS(context=ctx, timeout=60)
ftp.connect(host, int(port))
ftp.auth()
ftp.login(user, pw)
ftp.prot_p()
try:
    ftp.storbinary("STOR /releases/1.0.0/firmware.bin", io.BytesIO(b"x" * 60000))  # under the 64 KiB a refusal drains
    print("stored?!")
except ftplib.error_perm as e:
    print("refused:", e)
print(ftp.storbinary("STOR /report.json", io.BytesIO(b'{"version": "1.0.0", "outcome": "installed"}')))
ftp.quit()
"#;

#[tokio::test]
async fn python_ftplib_uploads_a_report_and_sees_a_refusal_as_550() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:16:00:03").await;
    std::fs::write(
        app.path("report.py"),
        format!("{}{FTPLIB_REPORT}", crate::helpers::clients::FTPLIB_REUSING),
    )
    .unwrap();
    let port = app.ftp_addr.port().to_string();
    let cert = app.cert_path().display().to_string();
    let out = crate::helpers::run_program(
        app.dir.path(),
        "python3",
        &["report.py", "127.0.0.1", &port, &id, &secret, &cert],
    )
    .await;
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "refused: 550 Permission denied");
    assert!(
        lines[1].starts_with("226 Report ") && lines[1].ends_with(" stored"),
        "{}",
        out.stdout
    );
    assert_eq!(reports_of(&app, &id).await.0, "1.0.0");
}
