//! The operator's surface against a real server: device lifecycle (enable, new secret,
//! delete, lockouts per device and address), pins, token listing and revocation, `/whoami`
//! and the audit log. Logins go through Python's ftplib, bound to chosen loopback addresses
//! so that a lockout from one address can be told from another.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, image, run_program, spawn_app};

/// Logs in from `source` as `user`/`pw`; prints `ok` or the server's reply code.
const LOGIN_PY: &str = r#"
import ftplib, ssl, sys
host, port, user, pw, source, cafile = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cafile)
ftp = ftplib.FTP_TLS(context=ctx, timeout=30, source_address=(source, 0))
ftp.connect(host, int(port))
ftp.auth()
try:
    ftp.login(user, pw)
    print("ok")
    ftp.quit()
except ftplib.error_perm as e:
    print(str(e)[:3])
"#;

pub async fn login(app: &TestApp, user: &str, pw: &str, source: &str) -> String {
    std::fs::write(app.path("login.py"), LOGIN_PY).unwrap();
    let port = app.ftp_addr.port().to_string();
    let cert = app.cert_path().display().to_string();
    let res = run_program(
        app.dir.path(),
        "python3",
        &["login.py", "127.0.0.1", &port, user, pw, source, &cert],
    )
    .await;
    assert!(res.success, "ftplib login: {}\n{}", res.stdout, res.stderr);
    res.stdout.trim().to_owned()
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    app.request(Method::DELETE, path, Some(&app.admin_token), None)
        .await
}

async fn put(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.request(Method::PUT, path, Some(&app.admin_token), Some(body))
        .await
}

async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/v1/audit?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn lifecycle_enable_rotate_delete_and_per_address_lockouts() {
    let app = spawn_app().await;
    let dev = app.create_device("aa:bb:cc:30:00:01", "iq2").await;
    let path = "/api/v1/devices/aa:bb:cc:30:00:01";

    // Disable, then enable again: the same secret works.
    let (status, body) = app.post(&format!("{path}/disable"), json!({})).await;
    assert_eq!((status, &body["enabled"]), (200, &json!(false)), "{body}");
    assert_eq!(login(&app, &dev.id, &dev.secret, "127.0.0.1").await, "530");
    let (status, body) = app.post(&format!("{path}/enable"), json!({})).await;
    assert_eq!((status, &body["enabled"]), (200, &json!(true)), "{body}");
    assert_eq!(login(&app, &dev.id, &dev.secret, "127.0.0.1").await, "ok");

    // Three wrong secrets from 127.0.0.2 lock that address out (the test config's
    // max_failed_logins); the right secret still works from 127.0.0.3.
    for _ in 0..3 {
        assert_eq!(login(&app, &dev.id, "wrong", "127.0.0.2").await, "530");
    }
    assert_eq!(
        login(&app, &dev.id, &dev.secret, "127.0.0.2").await,
        "530",
        "locked from .2"
    );
    assert_eq!(
        login(&app, &dev.id, &dev.secret, "127.0.0.3").await,
        "ok",
        "not from .3"
    );
    let (_, shown) = app.get(path).await;
    let lockouts = shown["lockouts"].as_array().unwrap();
    assert_eq!(lockouts.len(), 1, "{shown}");
    assert_eq!(lockouts[0]["client_ip"], "127.0.0.2");
    crate::helpers::rfc3339(&lockouts[0]["until"], "until");
    let (status, _) = delete(&app, &format!("{path}/lockout")).await;
    assert_eq!(status, 204);
    assert_eq!(app.get(path).await.1["lockouts"], json!([]));
    assert_eq!(
        login(&app, &dev.id, &dev.secret, "127.0.0.2").await,
        "ok",
        "cleared"
    );

    // A new secret closes the sessions open with the old one.
    let mut open = crate::raw_ctl::RawCtl::login(&app, &dev.id, &dev.secret).await;
    assert_eq!(open.cmd("NOOP").await.0, 200);
    // A new secret: the old one is refused at once, the new one works, a lockout is cleared.
    for _ in 0..3 {
        assert_eq!(login(&app, &dev.id, "wrong", "127.0.0.4").await, "530");
    }
    let (status, rotated) = app.post(&format!("{path}/secret"), json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["id"], "aa:bb:cc:30:00:01");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, dev.secret);
    assert_eq!(
        login(&app, &dev.id, &dev.secret, "127.0.0.1").await,
        "530",
        "old secret"
    );
    assert_eq!(
        login(&app, &dev.id, &new_secret, "127.0.0.4").await,
        "ok",
        "new secret, lockout gone"
    );

    // Delete: its open session ends, it can no longer log in, GET is 404, its records stay.
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    let mut open = crate::raw_ctl::RawCtl::login(&app, &dev.id, &new_secret).await;
    assert_eq!(open.cmd("NOOP").await.0, 200);
    let (status, _) = delete(&app, path).await;
    assert_eq!(status, 204);
    match tokio::time::timeout(std::time::Duration::from_secs(5), open.try_cmd("NOOP")).await {
        Ok(Ok((code, text))) => assert_eq!(code, 421, "the session after delete: {text}"),
        Ok(Err(_)) => {}
        Err(_) => panic!("the deleted device's session is still open"),
    }
    assert_eq!(login(&app, &dev.id, &new_secret, "127.0.0.1").await, "530");
    assert_eq!(app.get(path).await.0, 404);
    assert_eq!(delete(&app, path).await.0, 404, "deleting twice");
    let (status, listed) = app.get("/api/v1/devices").await;
    assert_eq!((status, listed["items"].as_array().map(Vec::len)), (200, Some(0)));
    // The same MAC can be registered again (a replaced unit keeps its MAC).
    app.create_device("aa:bb:cc:30:00:01", "iq2").await;

    let actions: Vec<(String, String)> = audit(&app, "limit=1000")
        .await
        .iter()
        .filter(|e| e["target"] == "aa:bb:cc:30:00:01")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .rev()
        .collect();
    let want: Vec<(String, String)> = [
        "device.create",
        "device.disable",
        "device.enable",
        "device.unlock",
        "device.secret",
        "device.delete",
        "device.create",
    ]
    .iter()
    .map(|a| ((*a).to_owned(), "it-admin".to_owned()))
    .collect();
    assert_eq!(actions, want);
    let everything = app.get("/api/v1/audit?limit=1000").await.1.to_string();
    for secret in [&dev.secret, &new_secret, &app.admin_token] {
        assert!(!everything.contains(secret.as_str()), "a secret in the audit log");
    }
}

#[tokio::test]
async fn a_pin_beats_the_rollouts_until_it_expires_or_is_removed() {
    let app = spawn_app().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    app.publish("iq2", "1.1.0", 2, &image(1000, 2)).await;
    app.publish("iq3", "3.0.0", 1, &image(1000, 3)).await;
    app.create_device("aa:bb:cc:31:00:01", "iq2").await;
    let rollout = app
        .rollout(json!({"model": "iq2", "version": "1.1.0", "percent": 100}))
        .await;
    let path = "/api/v1/devices/aa:bb:cc:31:00:01";
    let target = |v: Value| v["target"].clone();
    assert_eq!(
        target(app.get(path).await.1),
        json!({"version": "1.1.0", "source": "rollout", "rollout": rollout})
    );

    for (body, want) in [
        (
            json!({"version": "9.9.9"}),
            "no release 9.9.9 of model iq2 to pin to",
        ),
        (
            json!({"version": "3.0.0"}),
            "no release 3.0.0 of model iq2 to pin to",
        ),
        (
            json!({"version": "1.0.0", "expires_at": "2020-01-01T00:00:00Z"}),
            "expires_at is not in the future",
        ),
        (
            json!({"version": "1.0.0", "expires_at": "tomorrow"}),
            "expires_at must be an RFC 3339 time, got \"tomorrow\"",
        ),
    ] {
        let (status, answer) = put(&app, &format!("{path}/pin"), body.clone()).await;
        assert_eq!((status, answer), (422, json!({ "error": want })), "{body}");
    }
    let (status, _) = put(
        &app,
        "/api/v1/devices/aa:bb:cc:31:00:09/pin",
        json!({"version": "1.0.0"}),
    )
    .await;
    assert_eq!(status, 404);

    // Pinned: the pin decides, whatever the rollout says, and the device view shows it.
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, pin) = put(
        &app,
        &format!("{path}/pin"),
        json!({"version": "1.0.0", "reason": "ticket 4711", "expires_at": expires}),
    )
    .await;
    assert_eq!(status, 200, "{pin}");
    let (_, dev) = app.get(path).await;
    assert_eq!(
        target(dev.clone()),
        json!({"version": "1.0.0", "source": "pin", "rollout": null})
    );
    assert_eq!(dev["pin"]["version"], "1.0.0");
    assert_eq!(dev["pin"]["reason"], "ticket 4711");
    assert_eq!(dev["pin"]["set_by"], "it-admin");
    assert_eq!(dev["pin"]["holds"], true);

    // It expires on time: the rollout decides again (polled: the clock, not a sleep, decides).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, dev) = app.get(path).await;
        if dev["target"]["source"] == "rollout" {
            assert_eq!(dev["pin"]["holds"], false, "{dev}");
            let left = crate::helpers::rfc3339(&dev["pin"]["expires_at"], "expires_at");
            assert!(
                time::OffsetDateTime::now_utc() >= left,
                "the pin ended before it expired"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pin never expired: {dev}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // A pin to a release that is yanked afterwards no longer holds; removing it is audited.
    assert_eq!(
        put(&app, &format!("{path}/pin"), json!({"version": "1.0.0"}))
            .await
            .0,
        200
    );
    assert_eq!(target(app.get(path).await.1)["source"], "pin");
    assert_eq!(
        app.post("/api/v1/releases/iq2/1.0.0/yank", json!({})).await.0,
        200
    );
    assert_eq!(target(app.get(path).await.1)["source"], "rollout");
    let (status, answer) = put(&app, &format!("{path}/pin"), json!({"version": "1.0.0"})).await;
    assert_eq!(
        (status, answer),
        (
            422,
            json!({"error": "release iq2/1.0.0 is yanked: a device cannot be pinned to it"})
        )
    );
    assert_eq!(delete(&app, &format!("{path}/pin")).await.0, 204);
    assert_eq!(delete(&app, &format!("{path}/pin")).await.0, 404, "no pin left");
    assert_eq!(app.get(path).await.1["pin"], Value::Null);

    let pins: Vec<Value> = audit(&app, "limit=1000")
        .await
        .into_iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("pin.")))
        .collect();
    assert_eq!(pins.len(), 3, "{pins:?}");
    assert_eq!(pins[0]["action"], "pin.clear");
    assert_eq!(pins[2]["detail"]["reason"], "ticket 4711");
    assert_eq!(pins[2]["detail"]["version"], "1.0.0");
    let yank = audit(&app, "action=release.yank").await;
    assert_eq!(yank.len(), 1);
    assert_eq!(yank[0]["target"], "iq2/1.0.0");
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_a_revoked_one_is_refused_at_once() {
    let app = spawn_app().await;
    let ops = app.create_token("ops", "viewer").await;
    let (status, me) = app.request(Method::GET, "/api/v1/whoami", Some(&ops), None).await;
    assert_eq!(
        (status, me),
        (200, json!({"name": "ops", "role": "viewer", "can": ["read"]}))
    );
    let reporter = app.create_token("ks", "reporter").await;
    let (_, me) = app
        .request(Method::GET, "/api/v1/whoami", Some(&reporter), None)
        .await;
    assert_eq!(me["can"], json!(["report"]));
    assert_eq!(
        app.request(Method::GET, "/api/v1/whoami", Some("fwd_nope"), None)
            .await
            .0,
        401
    );

    let (status, list) = app.get("/api/v1/tokens").await;
    assert_eq!(status, 200, "{list}");
    let text = list.to_string();
    for t in [&ops, &reporter, &app.admin_token] {
        assert!(!text.contains(t.as_str()), "a token in the listing");
    }
    let items = list["items"].as_array().unwrap();
    let mine = items.iter().find(|t| t["name"] == "ops").unwrap();
    assert_eq!(mine["role"], "viewer");
    assert!(mine["last_used_at"].is_string(), "whoami used it: {mine}");
    crate::helpers::rfc3339(&mine["created_at"], "created_at");
    let unused = items.iter().find(|t| t["name"] == "it-publisher").unwrap();
    assert_eq!(unused["last_used_at"], Value::Null);

    // Only admins list or revoke.
    assert_eq!(
        app.request(Method::GET, "/api/v1/tokens", Some(&ops), None)
            .await
            .0,
        403
    );
    let id = mine["id"].as_i64().unwrap();
    let (status, _) = app
        .request(Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&ops), None)
        .await;
    assert_eq!(status, 403);
    assert_eq!(delete(&app, &format!("/api/v1/tokens/{id}")).await.0, 204);
    assert_eq!(
        app.request(Method::GET, "/api/v1/releases", Some(&ops), None)
            .await
            .0,
        401
    );
    assert_eq!(delete(&app, &format!("/api/v1/tokens/{id}")).await.0, 404);
    assert_eq!(delete(&app, "/api/v1/tokens/x").await.0, 404);

    let revoked = audit(&app, "action=token.revoke").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["target"], "token/ops");
    assert_eq!(revoked[0]["actor"], "it-admin");
    let created = audit(&app, "action=token.create").await;
    assert!(
        created
            .iter()
            .any(|e| e["target"] == "token/ops" && e["actor"] == "cli"),
        "{created:?}"
    );
    let (status, body) = app.get("/api/v1/audit?action=token.destroy").await;
    assert_eq!(status, 400, "{body}");
    // The audit log is the admin's.
    assert_eq!(
        app.request(Method::GET, "/api/v1/audit", Some(&app.viewer_token), None)
            .await
            .0,
        403
    );
}

/// Every action of SPEC §10 happens once; each is in the log with its actor, its target and a
/// JSON object as detail, and no secret or token appears anywhere in it.
#[tokio::test]
async fn every_change_and_every_automatic_step_is_audited_without_secrets() {
    let app = spawn_app().await;
    let ops = app.create_token("ops", "viewer").await; // token.create (actor cli)
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await; // release.publish
    app.publish("iq2", "1.1.0", 2, &image(1000, 2)).await;
    let a = app.create_device("aa:bb:cc:33:00:01", "iq2").await; // device.create
    let b = app.create_device("aa:bb:cc:33:00:02", "iq2").await;
    let path = "/api/v1/devices/aa:bb:cc:33:00:02";
    assert_eq!(app.post(&format!("{path}/disable"), json!({})).await.0, 200);
    assert_eq!(app.post(&format!("{path}/enable"), json!({})).await.0, 200);
    let (_, rotated) = app.post(&format!("{path}/secret"), json!({})).await;
    assert_eq!(delete(&app, &format!("{path}/lockout")).await.0, 204);
    assert_eq!(
        put(&app, &format!("{path}/pin"), json!({"version": "1.1.0"}))
            .await
            .0,
        200
    );
    assert_eq!(delete(&app, &format!("{path}/pin")).await.0, 204);
    // A staged rollout that advances by itself, then pauses by itself.
    let id = app
        .rollout(
            json!({"model": "iq2", "version": "1.0.0", "devices": ["aa:bb:cc:33:00:01"],
                        "phases": [1, 100], "success_threshold": 1.0, "failure_threshold": 0.5}),
        )
        .await;
    let report = |dev: &'static str, outcome: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .post(
                    &format!("/api/v1/devices/{dev}/reports"),
                    json!({"version": "1.0.0", "outcome": outcome}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
    };
    report("aa:bb:cc:33:00:01", "installed").await;
    let wait = |action: &'static str| {
        let app = &app;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while audit(app, &format!("action={action}")).await.is_empty() {
                assert!(std::time::Instant::now() < deadline, "no {action} entry");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    wait("rollout.advance").await;
    report("aa:bb:cc:33:00:02", "failed").await;
    wait("rollout.pause").await;
    assert_eq!(
        app.patch(
            &format!("/api/v1/rollouts/{id}"),
            json!({"failure_threshold": 0.9})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        app.post("/api/v1/releases/iq2/1.1.0/yank", json!({})).await.0,
        200
    );
    assert_eq!(delete(&app, path).await.0, 204);
    let (_, tokens) = app.get("/api/v1/tokens").await;
    let ops_id = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ops")
        .unwrap()["id"]
        .clone();
    assert_eq!(delete(&app, &format!("/api/v1/tokens/{ops_id}")).await.0, 204);

    let log = audit(&app, "limit=1000").await;
    let want = [
        ("token.create", "cli", "token/ops"),
        ("release.publish", "it-publisher", "iq2/1.0.0"),
        ("device.create", "it-admin", "aa:bb:cc:33:00:01"),
        ("device.disable", "it-admin", "aa:bb:cc:33:00:02"),
        ("device.enable", "it-admin", "aa:bb:cc:33:00:02"),
        ("device.secret", "it-admin", "aa:bb:cc:33:00:02"),
        ("device.unlock", "it-admin", "aa:bb:cc:33:00:02"),
        ("pin.set", "it-admin", "aa:bb:cc:33:00:02"),
        ("pin.clear", "it-admin", "aa:bb:cc:33:00:02"),
        ("rollout.create", "it-admin", "rollout/"),
        ("rollout.advance", "fwdist", "rollout/"),
        ("rollout.pause", "fwdist", "rollout/"),
        ("rollout.update", "it-admin", "rollout/"),
        ("release.yank", "it-admin", "iq2/1.1.0"),
        ("device.delete", "it-admin", "aa:bb:cc:33:00:02"),
        ("token.revoke", "it-admin", "token/ops"),
    ];
    for (action, actor, target) in want {
        let e = log
            .iter()
            .find(|e| e["action"] == action && e["target"].as_str().is_some_and(|t| t.starts_with(target)))
            .unwrap_or_else(|| panic!("no {action} on {target} in {log:#?}"));
        assert_eq!(e["actor"], actor, "{e}");
        assert!(e["detail"].is_object(), "{e}");
        crate::helpers::rfc3339(&e["at"], "at");
    }
    let text = serde_json::to_string(&log).unwrap();
    let secret = rotated["secret"].as_str().unwrap();
    for s in [
        a.secret.as_str(),
        b.secret.as_str(),
        secret,
        ops.as_str(),
        app.admin_token.as_str(),
    ] {
        assert!(!text.contains(s), "a secret or token in the audit log");
    }
}
