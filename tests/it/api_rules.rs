//! The admin API's rules, answer by answer (exact status and JSON body), driven through the
//! router in-process: rollout creation and changes, rollout status from download records,
//! targeting after a yank, device registration limits, roles, unknown endpoints.

use axum::http::Method;
use serde_json::json;

use crate::helpers::image;
use crate::helpers::oneshot::api;

#[tokio::test]
async fn rollout_requests_that_break_a_rule_get_the_exact_reason() {
    let app = api().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    app.publish("iq2", "1.1.0", 2, &image(1000, 2)).await;
    app.create_device("aa:bb:cc:10:00:01", "iq2").await;
    app.create_device("aa:bb:cc:10:00:02", "iq3").await;
    let (status, body) = app.post("/api/v1/releases/iq2/1.1.0/yank", json!({})).await;
    assert_eq!(status, 200, "{body}");
    for (req, want) in [
        (
            json!({"model": "iq2", "version": "1.0.0"}),
            "give percent, phases or devices",
        ),
        (
            json!({"model": "iq2", "version": "9.9.9", "percent": 5}),
            "no release iq2 9.9.9",
        ),
        (
            json!({"model": "iq2", "version": "1.1.0", "percent": 5}),
            "release iq2 1.1.0 is yanked",
        ),
        (
            json!({"model": "iq2", "version": "1.0.0", "percent": 100.5}),
            "percent must be between 0 and 100, got 100.5",
        ),
        (
            json!({"model": "iq2", "version": "1.0.0", "devices": ["aa:bb:cc:10:00:09"]}),
            "no such device: aa:bb:cc:10:00:09",
        ),
        (
            json!({"model": "iq2", "version": "1.0.0", "devices": ["AA-BB-CC-10-00-02"]}),
            "device aa:bb:cc:10:00:02 is a iq3, not a iq2",
        ),
        (
            json!({"model": "IQ2", "version": "1.0.0", "percent": 5}),
            "invalid model \"IQ2\": expected [a-z0-9][a-z0-9-]{0,31}",
        ),
    ] {
        let (status, body) = app.post("/api/v1/rollouts", req.clone()).await;
        assert_eq!((status, body), (422, json!({ "error": want })), "{req}");
    }

    let id = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 10}))
        .await;
    let path = format!("/api/v1/rollouts/{id}");
    for (change, want) in [
        (
            json!({}),
            "give percent, phase, state, success_threshold, failure_threshold and/or min_phase_secs",
        ),
        (
            json!({"percent": -1}),
            "percent must be between 0 and 100, got -1",
        ),
        (
            json!({"state": "bogus"}),
            "invalid state \"bogus\": expected active, paused or aborted",
        ),
    ] {
        let (status, body) = app.patch(&path, change.clone()).await;
        assert_eq!((status, body), (422, json!({ "error": want })), "{change}");
    }
    let (status, body) = app.patch(&path, json!({"state": "aborted"})).await;
    assert_eq!((status, &body["state"]), (200, &json!("aborted")), "{body}");
    let (status, body) = app.patch(&path, json!({"state": "active"})).await;
    let want = format!("rollout {id} is aborted; create a new rollout instead");
    assert_eq!((status, body), (409, json!({ "error": want })));
    // Aborting again is allowed (idempotent), and a percent change of an aborted rollout is not.
    assert_eq!(app.patch(&path, json!({"state": "aborted"})).await.0, 200);
    assert_eq!(app.patch(&path, json!({"percent": 50})).await.0, 409);
    for bad in ["abc", "0", "-3", "999999"] {
        let (status, body) = app.get(&format!("/api/v1/rollouts/{bad}")).await;
        let want = format!("no rollout {bad}");
        assert_eq!((status, body), (404, json!({ "error": want })));
    }
}

#[tokio::test]
async fn rollout_status_counts_the_image_downloads_of_the_devices_it_selects() {
    let app = api().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 3)).await;
    let [a, b, c, d] = [
        "aa:bb:cc:11:00:01",
        "aa:bb:cc:11:00:02",
        "aa:bb:cc:11:00:03",
        "aa:bb:cc:11:00:04",
    ];
    for id in [a, b, c, d] {
        app.create_device(id, "iq2").await;
    }
    let id = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "devices": [a, b, c]}))
        .await;
    // a: one complete download. b: cut at 400 bytes, then resumed to the end (REST 400).
    // c: cut, never finished; its manifest reads do not count. d: not selected, complete.
    app.record(a, "1.0.0", "firmware.bin", 0, 1000, 1000).await;
    app.record(b, "1.0.0", "firmware.bin", 0, 400, 1000).await;
    app.record(b, "1.0.0", "firmware.bin", 400, 600, 1000).await;
    app.record(c, "1.0.0", "firmware.bin", 0, 10, 1000).await;
    app.record(c, "1.0.0", "manifest.json", 0, 300, 300).await;
    app.record(d, "1.0.0", "firmware.bin", 0, 1000, 1000).await;
    let (status, body) = app.get(&format!("/api/v1/rollouts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["status"],
        json!({"targeted": 3, "started": 3, "completed": 2, "aborted_only": 1,
               "states": {"pending": 0, "downloading": 1, "downloaded": 2, "installed": 0, "failed": 0}}),
        "{body}"
    );
    // The list shows the same status.
    let (_, list) = app.get("/api/v1/rollouts").await;
    assert_eq!(list["items"][0]["status"], body["status"], "{list}");
}

#[tokio::test]
async fn a_yanked_release_targets_no_one_and_the_older_rollout_takes_over() {
    let app = api().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 4)).await;
    app.publish("iq2", "1.1.0", 2, &image(1000, 5)).await;
    let dev = "aa:bb:cc:12:00:01";
    app.create_device(dev, "iq2").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
        .await;
    let newer = app
        .rollout(json!({"model": "iq2", "version": "1.1.0", "devices": [dev]}))
        .await;
    assert_eq!(app.target_of(dev).await, "1.1.0");
    let (status, body) = app
        .patch(&format!("/api/v1/rollouts/{newer}"), json!({"state": "paused"}))
        .await;
    assert_eq!((status, &body["state"]), (200, &json!("paused")), "{body}");
    assert_eq!(
        app.target_of(dev).await,
        "1.0.0",
        "a paused rollout targets no one"
    );
    app.patch(&format!("/api/v1/rollouts/{newer}"), json!({"state": "active"}))
        .await;
    let (status, body) = app.post("/api/v1/releases/iq2/1.1.0/yank", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["yanked_at"].is_string(), "{body}");
    assert_eq!(app.target_of(dev).await, "1.0.0", "yanked: never served");
    let (status, body) = app.post("/api/v1/releases/iq2/7.0.0/yank", json!({})).await;
    assert_eq!((status, body), (404, json!({"error": "no release iq2 7.0.0"})));
}

#[tokio::test]
async fn device_registration_rules() {
    let app = api().await;
    let (status, body) = app
        .post(
            "/api/v1/devices",
            json!({"id": "AA-BB-CC-13-00-01", "model": "iq2", "labels": ["site-a"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "aa:bb:cc:13:00:01");
    assert_eq!(body["labels"], json!(["site-a"]));
    assert_eq!(body["secret"].as_str().map(str::len), Some(43), "{body}");
    let (status, body) = app
        .post("/api/v1/devices", json!({"id": "aabbcc130001", "model": "iq2"}))
        .await;
    assert_eq!(
        (status, body),
        (409, json!({"error": "device aa:bb:cc:13:00:01 already exists"}))
    );
    let limits = "labels: at most 32, each 1-64 characters";
    for labels in [json!([""]), json!(["x".repeat(65)]), json!(vec!["l"; 33])] {
        let (status, body) = app
            .post(
                "/api/v1/devices",
                json!({"id": "aa:bb:cc:13:00:02", "model": "iq2", "labels": labels}),
            )
            .await;
        assert_eq!((status, body), (422, json!({ "error": limits })));
    }
    let (status, body) = app
        .post("/api/v1/devices/aa:bb:cc:13:00:09/disable", json!({}))
        .await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "no such device: aa:bb:cc:13:00:09"}))
    );
    let (status, body) = app
        .post("/api/v1/devices/aa:bb:cc:13:00:01/disable", json!({}))
        .await;
    assert_eq!((status, &body["enabled"]), (200, &json!(false)), "{body}");
}

#[tokio::test]
async fn each_role_gets_exactly_its_rights() {
    let app = api().await;
    let create = json!({"id": "aa:bb:cc:14:00:01", "model": "iq2"});
    let (status, body) = app.call(Method::GET, "/api/v1/releases", None, None).await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "missing or invalid bearer token"}))
    );
    let (status, _) = app
        .call(Method::GET, "/api/v1/releases", Some("fwd_not-a-token"), None)
        .await;
    assert_eq!(status, 401);
    for token in [&app.viewer, &app.publisher] {
        let (status, body) = app
            .call(Method::POST, "/api/v1/devices", Some(token), Some(create.clone()))
            .await;
        assert_eq!(
            (status, body),
            (403, json!({"error": "this needs the admin role"}))
        );
        let (status, body) = app.call(Method::GET, "/api/v1/devices", Some(token), None).await;
        assert_eq!((status, &body["items"]), (200, &json!([])));
    }
    // Publishing needs the publisher role; the admin role includes it.
    let (status, body) = app.upload("iq2", "1.0.0", 1, &image(100, 6)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&app.publisher),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body),
        (403, json!({"error": "this needs the admin role"}))
    );
    let (status, body) = app.get("/api/v1/nope").await;
    assert_eq!((status, body), (404, json!({"error": "no such endpoint"})));
}

#[tokio::test]
async fn a_cohort_selects_its_labels_its_listed_devices_and_devices_registered_later() {
    let app = api().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 7)).await;
    for (id, label) in [
        ("aa:bb:cc:1b:00:01", "site-a"),
        ("aa:bb:cc:1b:00:02", "site-b"),
        ("aa:bb:cc:1b:00:03", "site-b"),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/devices",
                json!({"id": id, "model": "iq2", "labels": [label, "building-1"]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let id = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100,
                        "labels": ["site-a", "building-1"], "devices": ["aa:bb:cc:1b:00:02"]}))
        .await;
    assert_eq!(
        app.target_of("aa:bb:cc:1b:00:01").await,
        "1.0.0",
        "carries both labels"
    );
    assert_eq!(app.target_of("aa:bb:cc:1b:00:02").await, "1.0.0", "listed");
    assert_eq!(
        app.target_of("aa:bb:cc:1b:00:03").await,
        serde_json::Value::Null,
        "other site"
    );
    for (id, labels) in [
        ("aa:bb:cc:1b:00:04", json!(["building-1", "site-a"])),
        ("aa:bb:cc:1b:00:05", json!(["site-a"])),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/devices",
                json!({"id": id, "model": "iq2", "labels": labels}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(
        app.target_of("aa:bb:cc:1b:00:04").await,
        "1.0.0",
        "registered later, joins"
    );
    assert_eq!(
        app.target_of("aa:bb:cc:1b:00:05").await,
        serde_json::Value::Null,
        "one label short"
    );
    let (_, r) = app.get(&format!("/api/v1/rollouts/{id}")).await;
    assert_eq!(r["status"]["targeted"], 3, "{r}");
    assert_eq!(r["labels"], json!(["site-a", "building-1"]), "{r}");
    let (_, page) = app
        .get(&format!("/api/v1/rollouts/{id}/devices?state=pending"))
        .await;
    let mut ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["device"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["aa:bb:cc:1b:00:01", "aa:bb:cc:1b:00:02", "aa:bb:cc:1b:00:04"]
    );
    let (_, listed) = app.get("/api/v1/devices?label=site-b").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2), "{listed}");
    let (status, body) = app
        .get(&format!("/api/v1/rollouts/{id}/devices?state=gone"))
        .await;
    assert_eq!(status, 400, "{body}");
}
