//! Rollouts (SPEC §6 "Targeting"): by device list, by stable percent, state changes. Pure
//! API and targeting logic: driven through the router in-process (`helpers::oneshot`).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::oneshot::{Api, api};
use crate::helpers::{assert_client_error, image};

async fn target_of(app: &Api, id: &str) -> Value {
    app.target_of(id).await
}

async fn rollout(app: &Api, id: i64) -> Value {
    let (status, body) = app.get(&format!("/api/v1/rollouts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_device_list_rollout_targets_exactly_those_devices() {
    let app = api().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    let ids = ["aa:bb:cc:03:00:01", "aa:bb:cc:03:00:02", "aa:bb:cc:03:00:03"];
    for id in ids {
        app.create_device(id, "iq2").await;
    }
    let (status, r) = app
        .post(
            "/api/v1/rollouts",
            json!({"model": "iq2", "version": "1.0.0", "devices": ["AA-BB-CC-03-00-01"]}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_i64().expect("rollout id");
    let r = rollout(&app, id).await;
    assert_eq!(r["model"], "iq2", "{r}");
    assert_eq!(r["version"], "1.0.0", "{r}");
    assert_eq!(r["devices"], json!(["aa:bb:cc:03:00:01"]), "canonical ids: {r}");
    assert_eq!(r["state"], "active", "{r}");
    assert!(r["created_at"].is_string(), "{r}");
    assert_eq!(
        r["status"],
        json!({"targeted": 1, "started": 0, "completed": 0, "aborted_only": 0,
               "states": {"pending": 1, "downloading": 0, "downloaded": 0, "installed": 0, "failed": 0}}),
        "{r}"
    );
    assert_eq!(target_of(&app, ids[0]).await, "1.0.0");
    assert_eq!(target_of(&app, ids[1]).await, Value::Null);
    assert_eq!(target_of(&app, ids[2]).await, Value::Null);

    let (status, body) = app
        .patch(&format!("/api/v1/rollouts/{id}"), json!({"state": "paused"}))
        .await;
    assert!((200..300).contains(&status), "pause: {status} {body}");
    assert_eq!(rollout(&app, id).await["state"], "paused");
    let (status, body) = app
        .patch(&format!("/api/v1/rollouts/{id}"), json!({"state": "active"}))
        .await;
    assert!((200..300).contains(&status), "resume: {status} {body}");
    assert_eq!(target_of(&app, ids[0]).await, "1.0.0");
    let (status, body) = app
        .patch(&format!("/api/v1/rollouts/{id}"), json!({"state": "aborted"}))
        .await;
    assert!((200..300).contains(&status), "abort: {status} {body}");
    assert_eq!(rollout(&app, id).await["state"], "aborted");
    assert_eq!(
        target_of(&app, ids[0]).await,
        Value::Null,
        "an aborted rollout targets no one"
    );

    let (status, body) = app
        .patch(&format!("/api/v1/rollouts/{id}"), json!({"state": "bogus"}))
        .await;
    assert_client_error(status, &body, "bad state");
    let (status, list) = app.get("/api/v1/rollouts").await;
    assert_eq!(status, 200, "{list}");
    assert!(
        list["items"].as_array().unwrap().iter().any(|x| x["id"] == id),
        "{list}"
    );
}

#[tokio::test]
async fn percent_rollouts_are_stable_and_only_grow() {
    let app = api().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 2)).await;
    let ids: Vec<String> = (0..20).map(|i| format!("aa:bb:cc:04:00:{i:02x}")).collect();
    for id in &ids {
        app.create_device(id, "iq2").await;
    }
    app.create_device("aa:bb:cc:04:01:00", "iq3").await;
    let id = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 0}))
        .await;

    let mut previous = BTreeSet::new();
    for percent in [0, 30, 60, 100] {
        if percent > 0 {
            let (status, body) = app
                .patch(&format!("/api/v1/rollouts/{id}"), json!({"percent": percent}))
                .await;
            assert!((200..300).contains(&status), "percent {percent}: {status} {body}");
        }
        let mut selected = BTreeSet::new();
        for dev in &ids {
            if target_of(&app, dev).await == "1.0.0" {
                selected.insert(dev.clone());
            }
        }
        let r = rollout(&app, id).await;
        assert_eq!(r["percent"].as_f64(), Some(f64::from(percent)), "{r}");
        assert_eq!(
            r["status"]["targeted"],
            selected.len(),
            "targeted count at {percent}%: {r}"
        );
        assert!(
            selected.is_superset(&previous),
            "raising the percent only adds devices ({percent}%)"
        );
        match percent {
            0 => assert!(selected.is_empty(), "0% selects no one"),
            100 => assert_eq!(
                selected.len(),
                ids.len(),
                "100% selects every device of the model"
            ),
            _ => {}
        }
        previous = selected;
    }
    assert_eq!(
        target_of(&app, "aa:bb:cc:04:01:00").await,
        Value::Null,
        "other model untouched"
    );

    for bad in [json!(101), json!(-1), json!("ten")] {
        let (status, body) = app
            .patch(&format!("/api/v1/rollouts/{id}"), json!({"percent": bad}))
            .await;
        assert_client_error(status, &body, &format!("percent {bad}"));
    }
    let (status, body) = app
        .post(
            "/api/v1/rollouts",
            json!({"model": "iq2", "version": "1.0.0", "percent": 150}),
        )
        .await;
    assert_client_error(status, &body, "create with percent 150");
}

#[tokio::test]
async fn the_newest_active_rollout_wins() {
    let app = api().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 3)).await;
    app.publish("iq2", "1.1.0", 2, &image(1000, 4)).await;
    let (a, b) = ("aa:bb:cc:05:00:01", "aa:bb:cc:05:00:02");
    app.create_device(a, "iq2").await;
    app.create_device(b, "iq2").await;
    app.rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 100}))
        .await;
    let newer = app
        .rollout(json!({"model": "iq2", "version": "1.1.0", "devices": [a]}))
        .await;
    assert_eq!(target_of(&app, a).await, "1.1.0");
    assert_eq!(target_of(&app, b).await, "1.0.0");
    let (status, body) = app
        .patch(&format!("/api/v1/rollouts/{newer}"), json!({"state": "aborted"}))
        .await;
    assert!((200..300).contains(&status), "abort: {status} {body}");
    assert_eq!(
        target_of(&app, a).await,
        "1.0.0",
        "falls back to the older active rollout"
    );
}
