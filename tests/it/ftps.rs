//! What a device can and cannot do over FTPS: TLS and login rules, the read-only virtual
//! tree, path traversal, and which releases each device sees.

use serde_json::json;

use crate::ftp_client::{assert_code, bye, code, list_names, login, retr_all, retr_partial, secure};
use crate::helpers::{TestApp, image, snapshot, spawn_app};
use crate::raw_ctl::RawCtl;

pub async fn device_with_release(app: &TestApp, mac: &str) -> (String, String) {
    app.publish("iq2", "1.0.0", 1, &image(64 * 1024, 7)).await;
    let dev = app.create_device(mac, "iq2").await;
    (dev.id, dev.secret)
}

#[tokio::test]
async fn unknown_wrong_secret_and_disabled_devices_get_530() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:01:00:02").await;
    for user in ["AA:BB:CC:01:00:02", "aa-bb-cc-01-00-02", "aabbcc010002"] {
        let s = login(&app, user, &secret)
            .await
            .unwrap_or_else(|e| panic!("login as {user}: {e}"));
        bye(s).await;
    }
    assert_code(login(&app, &id, "not-the-secret").await, 530, "wrong secret");
    assert_code(
        login(&app, "aa:bb:cc:99:99:99", &secret).await,
        530,
        "unknown device",
    );
    assert_code(
        login(&app, "not-a-mac", &secret).await,
        530,
        "malformed device id",
    );

    let other = app.create_device("aa:bb:cc:01:00:03", "iq2").await;
    let s = login(&app, &other.id, &other.secret)
        .await
        .expect("login before disable");
    bye(s).await;
    let (status, body) = app
        .post("/api/v1/devices/aa-bb-cc-01-00-03/disable", json!({}))
        .await;
    assert!((200..300).contains(&status), "disable: {status} {body}");
    assert_code(
        login(&app, &other.id, &other.secret).await,
        530,
        "disabled device",
    );
}

#[tokio::test]
async fn repeated_failures_lock_out_that_device_from_that_ip() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:01:00:04").await;
    let bystander = app.create_device("aa:bb:cc:01:00:05", "iq2").await;
    for i in 0..3 {
        assert_code(login(&app, &id, &format!("wrong-{i}")).await, 530, "wrong secret");
    }
    assert_code(
        login(&app, &id, &secret).await,
        530,
        "right secret during lockout (max_failed_logins = 3)",
    );
    login(&app, &bystander.id, &bystander.secret)
        .await
        .expect("another device is not locked out");
}

#[tokio::test]
async fn device_tree_is_read_only() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:01:00:06").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "devices": [id]}))
        .await;
    let store = app.path("firmware-store");
    let before = snapshot(&store);
    let mut s = login(&app, &id, &secret).await.expect("login");
    let listing = list_names(&mut s, "/releases/1.0.0").await.unwrap();

    let mut raw = RawCtl::login(&app, &id, &secret).await;
    let mut wrong = Vec::new();
    for path in [
        "/releases/1.0.0/evil.bin",
        "/releases/1.0.0/firmware.bin",
        "/target/manifest.json",
        "/evil.bin",
    ] {
        let reply = raw.stor(path).await;
        if reply != 550 {
            wrong.push(format!("STOR {path} -> {reply}"));
        }
    }
    for cmd in [
        "DELE /releases/1.0.0/firmware.bin",
        "DELE /target/manifest.json",
        "MKD /releases/9.9.9",
        "MKD /newdir",
        "RMD /releases/1.0.0",
        "RMD /releases",
        "RNFR /releases/1.0.0/firmware.bin",
        "RNFR /releases/1.0.0",
        "RNFR /releases/1.0.0/missing.bin",
    ] {
        let (reply, text) = raw.cmd(cmd).await;
        // libunftp 0.24 answers RNFR itself (350 when the path exists; it only asks the
        // backend for metadata), so the refusal lands on RNTO: accept exactly that pair.
        if reply == 350 && cmd.starts_with("RNFR") && !cmd.contains("missing") {
            let (reply, text) = raw.cmd("RNTO /releases/1.0.0/x.bin").await;
            if reply != 550 {
                wrong.push(format!("RNTO after {cmd} -> {}", text.trim()));
            }
        } else if reply != 550 {
            wrong.push(format!("{cmd} -> {}", text.trim()));
        }
    }
    assert!(
        wrong.is_empty(),
        "mutating commands must get 550; these did not: {wrong:#?}"
    );
    let port = s
        .custom_command("PORT 127,0,0,1,117,48", &[suppaftp::Status::CommandOk])
        .await;
    assert!(
        port.as_ref().err().and_then(code).is_some_and(|c| c >= 500),
        "active mode is off: {port:?}"
    );

    assert_eq!(
        list_names(&mut s, "/releases/1.0.0").await.unwrap(),
        listing,
        "listing unchanged"
    );
    assert_eq!(list_names(&mut s, "/releases").await.unwrap(), vec!["1.0.0"]);
    assert_eq!(snapshot(&store), before, "nothing changed in the store");
    assert!(
        !snapshot(app.dir.path()).keys().any(|p| p.ends_with("evil.bin")),
        "no file was written"
    );
}

#[tokio::test]
async fn no_path_escapes_the_device_root() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:01:00:07").await;
    let abs_db = app.path("firmware-store/fwdist.sqlite").display().to_string();
    let abs_key = app.path("certs/server.key").display().to_string();
    let mut s = login(&app, &id, &secret).await.expect("login");
    let paths = [
        "../../fwdist.sqlite",
        "/../firmware-store/fwdist.sqlite",
        "/../fwdist.toml",
        "/releases/../../certs/server.key",
        "/releases/1.0.0/../../../etc/passwd",
        "/releases/1.0.0/../../../firmware-store/fwdist.sqlite",
        "%2e%2e/%2e%2e/fwdist.toml",
        "/releases/%2e%2e/%2e%2e/certs/server.key",
        "..\\..\\fwdist.toml",
        "\\..\\..\\certs\\server.key",
        "/releases\\..\\..\\fwdist.toml",
        "/etc/passwd",
        "fwdist.toml",
        "firmware-store/fwdist.sqlite",
        abs_db.as_str(),
        abs_key.as_str(),
    ];
    for path in paths {
        let (bytes, result) = retr_partial(&mut s, path).await;
        assert!(bytes.is_empty(), "RETR {path} returned {} bytes", bytes.len());
        assert_code(result, 550, &format!("RETR {path}"));
        assert!(s.size(path).await.is_err(), "SIZE {path} must fail");
    }
    // Walking up from a subdirectory stays inside the root, too.
    s.cwd("/releases/1.0.0").await.expect("CWD into a release");
    assert_code(
        retr_all(&mut s, "../../../fwdist.toml").await,
        550,
        "relative RETR after CWD",
    );
    let _ = s.cwd("../../../..").await;
    assert_code(retr_all(&mut s, "fwdist.toml").await, 550, "RETR after CWD ..");
    assert_code(
        retr_all(&mut s, "certs/server.key").await,
        550,
        "RETR after CWD ..",
    );
    let top = list_names(&mut s, "/..").await.unwrap_or_default();
    assert!(
        !top.iter()
            .any(|n| n == "certs" || n == "firmware-store" || n == "fwdist.toml"),
        "LIST /.. : {top:?}"
    );
    // The session still works afterwards.
    s.cwd("/").await.unwrap();
    assert_eq!(
        retr_all(&mut s, "/releases/1.0.0/firmware.bin")
            .await
            .unwrap()
            .len(),
        64 * 1024
    );
}

#[tokio::test]
async fn devices_see_only_their_model_and_their_target() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:01:00:08").await;
    app.publish("iq3", "9.9.9", 1, &image(10_000, 9)).await;
    let iq3 = app.create_device("aa:bb:cc:01:00:09", "iq3").await;
    let iq4 = app.create_device("aa:bb:cc:01:00:0a", "iq4").await;
    app.rollout(json!({"model": "iq3", "version": "9.9.9", "percent": 100}))
        .await;

    // iq2 device: no rollout of its model → no target, but its model's releases are listed.
    let mut s = login(&app, &id, &secret).await.expect("login iq2");
    assert_code(
        retr_all(&mut s, "/target/manifest.json").await,
        550,
        "untargeted manifest",
    );
    assert_code(
        retr_all(&mut s, "/target/manifest.json.sig").await,
        550,
        "untargeted signature",
    );
    assert_eq!(list_names(&mut s, "/releases").await.unwrap(), vec!["1.0.0"]);
    let files = list_names(&mut s, "/releases/1.0.0").await.unwrap();
    assert_eq!(files, vec!["firmware.bin", "manifest.json", "manifest.json.sig"]);
    let mlsd = s.mlsd(Some("/releases/1.0.0")).await.expect("MLSD");
    assert!(mlsd.iter().any(|l| l.ends_with("firmware.bin")), "MLSD: {mlsd:?}");
    assert_code(
        retr_all(&mut s, "/releases/9.9.9/firmware.bin").await,
        550,
        "other model's release",
    );
    assert!(
        s.size("/releases/9.9.9/manifest.json").await.is_err(),
        "SIZE of other model's file"
    );
    let feat = s.feat().await.expect("FEAT");
    for f in ["REST", "SIZE", "MDTM", "MLSD"] {
        assert!(
            feat.keys().any(|k| k.eq_ignore_ascii_case(f)),
            "FEAT lacks {f}: {feat:?}"
        );
    }

    // iq3 device: targeted by percent 100, sees only 9.9.9.
    let mut s = login(&app, &iq3.id, &iq3.secret).await.expect("login iq3");
    assert_eq!(list_names(&mut s, "/releases").await.unwrap(), vec!["9.9.9"]);
    let m: serde_json::Value =
        serde_json::from_slice(&retr_all(&mut s, "/target/manifest.json").await.unwrap()).unwrap();
    assert_eq!(m["version"], "9.9.9");
    assert_code(
        retr_all(&mut s, "/releases/1.0.0/firmware.bin").await,
        550,
        "iq2 release from iq3",
    );

    // iq4 device: nothing at all.
    let mut s = login(&app, &iq4.id, &iq4.secret).await.expect("login iq4");
    assert!(
        list_names(&mut s, "/releases")
            .await
            .unwrap_or_default()
            .is_empty()
    );
    assert_code(retr_all(&mut s, "/target/manifest.json").await, 550, "iq4 target");
}

#[tokio::test]
async fn a_yanked_release_is_served_to_no_one() {
    let app = spawn_app().await;
    let (id, secret) = device_with_release(&app, "aa:bb:cc:01:00:0b").await;
    let newer = app.publish("iq2", "1.1.0", 2, &image(50_000, 11)).await;
    app.rollout(json!({"model": "iq2", "version": "1.1.0", "percent": 100}))
        .await;
    let mut s = login(&app, &id, &secret).await.expect("login");
    assert_eq!(
        retr_all(&mut s, "/target/manifest.json").await.unwrap(),
        newer.manifest
    );
    assert_eq!(
        list_names(&mut s, "/releases").await.unwrap(),
        vec!["1.0.0", "1.1.0"]
    );
    bye(s).await;

    let (status, body) = app.post("/api/v1/releases/iq2/1.1.0/yank", json!({})).await;
    assert!((200..300).contains(&status), "yank: {status} {body}");
    let mut s = login(&app, &id, &secret).await.expect("login after yank");
    assert_eq!(list_names(&mut s, "/releases").await.unwrap(), vec!["1.0.0"]);
    assert_code(
        retr_all(&mut s, "/releases/1.1.0/firmware.bin").await,
        550,
        "yanked image",
    );
    assert_code(
        retr_all(&mut s, "/releases/1.1.0/manifest.json").await,
        550,
        "yanked manifest",
    );
    let target = retr_all(&mut s, "/target/manifest.json").await;
    assert!(
        target.as_ref().map_or(true, |m| *m != newer.manifest),
        "target still names the yanked release"
    );
    assert_code(target, 550, "target of a yanked release");
    // The connection-level TLS helper works without login too (sanity for `secure`).
    drop(secure(&app, Default::default()).await.expect("TLS without login"));
}
