//! The admin HTTP API (SPEC §6): auth and roles, devices, release uploads, rollouts, downloads.

use reqwest::Method;
use serde_json::{Value, json};

use crate::ftp_client::{bye, login, retr_all};
use crate::helpers::{assert_client_error, image, sha256_hex, spawn_app};

#[tokio::test]
async fn tokens_are_required_and_roles_enforced() {
    let app = spawn_app().await;
    for token in [None, Some("bogus"), Some("")] {
        let (status, body) = app.request(Method::GET, "/api/v1/releases", token, None).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        assert_client_error(status, &body, "401 body");
    }
    let resp = app
        .http
        .get(app.url("/api/v1/devices"))
        .header("Authorization", format!("Basic {}", app.admin_token));
    assert_eq!(resp.send().await.unwrap().status(), 401, "non-Bearer scheme");

    let viewer = Some(app.viewer_token.as_str());
    let publisher = Some(app.publisher_token.as_str());
    let (status, body) = app.request(Method::GET, "/api/v1/releases", viewer, None).await;
    assert_eq!(status, 200, "viewer reads: {body}");
    assert!(
        body["items"].is_array() && body.get("next").is_some(),
        "list shape: {body}"
    );

    app.trusted_key("release").await;
    let signed = app.sign("release.key", "iq2", "1.0.0", 1, &image(1000, 1)).await;
    let (status, body) = app.upload(&app.viewer_token, &signed).await;
    assert_eq!(status, 403, "viewer uploads: {body}");
    assert_client_error(status, &body, "403 body");
    let device = json!({"id": "aa:bb:cc:02:00:01", "model": "iq2"});
    let (status, body) = app
        .request(Method::POST, "/api/v1/devices", publisher, Some(device.clone()))
        .await;
    assert_eq!(status, 403, "publisher creates a device: {body}");
    let (status, _) = app
        .request(Method::POST, "/api/v1/devices", viewer, Some(device))
        .await;
    assert_eq!(status, 403, "viewer creates a device");
    let (status, body) = app.upload(&app.publisher_token, &signed).await;
    assert_eq!(status, 201, "publisher uploads: {body}");
    let (status, _) = app
        .request(
            Method::POST,
            "/api/v1/releases/iq2/1.0.0/yank",
            publisher,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403, "publisher yanks");
    let rollout = json!({"model": "iq2", "version": "1.0.0", "percent": 100});
    let (status, _) = app
        .request(Method::POST, "/api/v1/rollouts", publisher, Some(rollout))
        .await;
    assert_eq!(status, 403, "publisher creates a rollout");
    let (status, _) = app.request(Method::GET, "/api/v1/downloads", viewer, None).await;
    assert_eq!(status, 200, "viewer reads downloads");
}

/// True if any key anywhere in `v` mentions a secret or a hash of one.
fn leaks_secret_fields(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            let k = k.to_lowercase();
            k.contains("secret") || k.contains("hash") || k.contains("password") || leaks_secret_fields(v)
        }),
        Value::Array(a) => a.iter().any(leaks_secret_fields),
        _ => false,
    }
}

#[tokio::test]
async fn devices_are_registered_once_and_their_secret_shown_once() {
    let app = spawn_app().await;
    let (status, created) = app
        .post(
            "/api/v1/devices",
            json!({"id": "AA:BB:CC:0D:0E:0F", "model": "iq2", "labels": ["lab"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "aa:bb:cc:0d:0e:0f", "canonical id");
    assert_eq!(created["model"], "iq2");
    let secret = created["secret"]
        .as_str()
        .expect("secret shown at creation")
        .to_string();
    assert!(secret.len() >= 16, "a secret worth the name: {secret:?}");
    let (status, bare) = app
        .post("/api/v1/devices", json!({"id": "aabbcc0d0e10", "model": "iq2"}))
        .await;
    assert_eq!(status, 201, "{bare}");
    assert_eq!(bare["id"], "aa:bb:cc:0d:0e:10");
    assert_ne!(bare["secret"], created["secret"], "secrets are per device");

    for form in ["aa:bb:cc:0d:0e:0f", "AA-BB-CC-0D-0E-0F", "aabbcc0d0e0f"] {
        let (status, dev) = app.get(&format!("/api/v1/devices/{form}")).await;
        assert_eq!(status, 200, "GET {form}: {dev}");
        assert_eq!(dev["id"], "aa:bb:cc:0d:0e:0f");
        assert_eq!(dev["model"], "iq2");
        assert!(
            dev.get("target").is_some_and(Value::is_null),
            "no target yet: {dev}"
        );
        assert!(dev["downloads"].is_array(), "downloads listed: {dev}");
        assert!(
            !dev.to_string().contains(&secret) && !leaks_secret_fields(&dev),
            "GET shows no secret: {dev}"
        );
        let (status, again) = app
            .post("/api/v1/devices", json!({"id": form, "model": "iq2"}))
            .await;
        assert_eq!(status, 409, "duplicate {form}: {again}");
        assert_client_error(status, &again, "duplicate");
    }
    let (status, list) = app.get("/api/v1/devices?model=iq2").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(
        ids.contains(&"aa:bb:cc:0d:0e:0f") && ids.contains(&"aa:bb:cc:0d:0e:10"),
        "{list}"
    );
    assert!(
        !list.to_string().contains(&secret) && !leaks_secret_fields(&list),
        "list shows no secret: {list}"
    );
    let (_, other) = app.get("/api/v1/devices?model=iq3").await;
    assert_eq!(other["items"], json!([]), "{other}");
    let (status, body) = app.get("/api/v1/devices/aa:bb:cc:00:00:99").await;
    assert_eq!(status, 404, "{body}");
    assert_client_error(status, &body, "unknown device");
}

#[tokio::test]
async fn bad_requests_get_json_4xx_errors_never_5xx() {
    let app = spawn_app().await;
    for (body, what) in [
        (json!({"id": "zz:zz:zz:zz:zz:zz", "model": "iq2"}), "bad MAC"),
        (json!({"id": "aa:bb:cc:dd:ee", "model": "iq2"}), "short MAC"),
        (
            json!({"id": "aa:bb-cc:dd:ee:ff", "model": "iq2"}),
            "mixed separators",
        ),
        (json!({"id": "aa:bb:cc:dd:ee:ff", "model": "IQ 2"}), "bad model"),
        (json!({"id": "aa:bb:cc:dd:ee:ff", "model": ""}), "empty model"),
    ] {
        let (status, answer) = app.post("/api/v1/devices", body).await;
        assert_eq!(status, 422, "{what}: {answer}");
        assert_client_error(status, &answer, what);
    }
    let (status, answer) = app.post("/api/v1/devices", json!({"model": "iq2"})).await;
    assert_client_error(status, &answer, "missing id");
    let send_raw = |path: &'static str, ct: &'static str, body: &'static str| {
        let req = app
            .http
            .post(app.url(path))
            .bearer_auth(&app.admin_token)
            .header("content-type", ct)
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&resp.text().await.unwrap()).unwrap_or(Value::Null),
            )
        }
    };
    for (path, ct, body) in [
        ("/api/v1/devices", "application/json", "{not json"),
        ("/api/v1/devices", "text/plain", "hello"),
        ("/api/v1/rollouts", "application/json", "[1,2,3]"),
        ("/api/v1/releases", "multipart/form-data; boundary=xyz", "garbage"),
        ("/api/v1/releases", "application/json", "{}"),
    ] {
        let (status, answer) = send_raw(path, ct, body).await;
        assert_client_error(status, &answer, &format!("POST {path} ({ct}) {body:?}"));
    }
    let (status, answer) = app
        .post(
            "/api/v1/rollouts",
            json!({"model": "iq2", "version": "9.9.9", "percent": 10}),
        )
        .await;
    assert_eq!(status, 422, "rollout of an unknown release: {answer}");
    assert_client_error(status, &answer, "unknown release");
    let (status, answer) = app.get("/api/v1/releases/iq2/9.9.9").await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = app.get("/api/v1/rollouts/999999").await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = app.get("/api/v1/downloads?limit=abc").await;
    assert_client_error(status, &answer, "bad limit");
}

#[tokio::test]
async fn health_and_metrics_need_no_token() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("text/plain"),
        "Prometheus text content type: {ct:?}"
    );
}

#[tokio::test]
async fn network_requirements_name_the_exact_ports() {
    let app = spawn_app().await;
    let (status, body) = app
        .request(
            Method::GET,
            "/api/v1/network-requirements",
            Some(&app.viewer_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    for port in [app.ftp_addr.port(), app.passive.0, app.passive.1] {
        assert!(
            text.contains(&port.to_string()),
            "network requirements name port {port}: {body}"
        );
    }
    let (status, _) = app
        .request(Method::GET, "/api/v1/network-requirements", None, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn downloads_are_paginated_newest_first() {
    let app = spawn_app().await;
    let img = image(20_000, 3);
    app.publish("iq2", "1.0.0", 1, &img).await;
    let dev = app.create_device("aa:bb:cc:02:00:09", "iq2").await;
    let mut s = login(&app, &dev.id, &dev.secret).await.expect("login");
    for _ in 0..3 {
        assert_eq!(
            sha256_hex(&retr_all(&mut s, "/releases/1.0.0/firmware.bin").await.unwrap()),
            sha256_hex(&img)
        );
    }
    bye(s).await;
    let q = "device=AA-BB-CC-02-00-09&model=iq2&version=1.0.0";
    let all = app.wait_downloads(q, |i| i.len() >= 3).await;
    let all_ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(all_ids.len(), 3, "{all:?}");
    assert!(
        all_ids.windows(2).all(|w| w[0] > w[1]),
        "newest first: {all_ids:?}"
    );
    assert!(
        all.iter()
            .all(|r| r["device"] == "aa:bb:cc:02:00:09" && r["outcome"] == "complete"),
        "{all:?}"
    );

    let mut paged = Vec::new();
    let mut path = format!("/api/v1/downloads?{q}&limit=1");
    for _ in 0..6 {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1, "limit=1 honoured: {page}");
        paged.extend(items.iter().map(|r| r["id"].as_i64().unwrap()));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/downloads?{q}&limit=1&after={next}"),
            None => break,
        }
    }
    assert_eq!(paged, all_ids, "pages walk the same records in the same order");
    for (q, n) in [
        ("model=iq3", 0),
        ("version=2.0.0", 0),
        ("device=aa:bb:cc:00:00:00", 0),
        ("model=iq2", 3),
    ] {
        let (_, page) = app.get(&format!("/api/v1/downloads?{q}")).await;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(n), "{q}: {page}");
    }
}
