//! The admin dashboard (issue 13), in a real headless Chromium against a real server with a
//! staged rollout driven by `fwdist simulate`: log in (a bad token is refused with a
//! message), the rollout page shows the counts the API shows and plots points, pausing from
//! the page pauses it in the API, a viewer sees no button, no script error, console error or
//! CSP violation, and nothing fetched from another origin. Saves a screenshot of each page
//! under `docs/screenshots/`. Needs Debian's `chromium` and `chromium-driver` (.ci/run
//! installs them); skipped without them unless `FWDIST_SYSTEM_TESTS=require`.
//!
//! Without a browser: the pages' headers and the API's rules around them.

use reqwest::Method;
use serde_json::{Value, json};

use crate::dashboard_api::{creds, fleet, simulate, unused_offer, wait_api};
use crate::helpers::browser::{Browser, screenshot_dir};
use crate::helpers::spawn_app;
use crate::helpers::system::Requirements;

async fn login(b: &Browser, token: &str) {
    let input = b.wait_for("#login-token").await;
    b.type_into(&input, token).await;
    b.click(&b.wait_for("#login-button").await).await;
}

async fn show(b: &Browser, hash: &str, marker: &str, shot: &str) {
    b.exec(&format!("location.hash = {}; return null", json!(hash)))
        .await;
    b.wait_for(marker).await;
    // The page is drawn once its marker is there; its charts are drawn in the same task.
    b.screenshot(&screenshot_dir().join(shot)).await;
}

#[tokio::test]
async fn the_dashboard_in_a_real_browser() {
    let mut req = Requirements::new();
    let chromium = req.program("chromium");
    let chromedriver = req.program("chromedriver");
    if !req.met("the dashboard browser test") {
        return;
    }
    let app = spawn_app().await;
    fleet(&app, 20, "aa:bb:cc:31:00").await;
    let id = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "phases": [50, 100],
            "success_threshold": 0.5, "failure_threshold": 0.6}))
        .await;
    // Phase 0: half the fleet installs, so the rollout opens phase 1 by itself; then a pass
    // with some failures.
    simulate(&app, 20, "installed").await;
    wait_api(&app, &format!("/api/v1/rollouts/{id}"), |r| r["phase"] == 1).await;
    simulate(&app, 20, "mix:0.2").await;
    let (dev, secret) = creds(&app, 0);
    unused_offer(&app, &dev, &secret).await;
    // The counts settle (reports are in), and the samples show both phases.
    let history = wait_api(&app, &format!("/api/v1/rollouts/{id}/history"), |h| {
        h["phases"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert!(history["points"].as_array().unwrap().len() >= 2, "{history}");

    let b = Browser::start(&chromium, &chromedriver).await;
    let origin = format!("http://{}", app.api_addr);
    b.goto(&format!("{origin}/")).await;
    b.wait_for("#login-token").await;
    b.screenshot(&screenshot_dir().join("login.png")).await;

    // A bad token is refused, with a message, and nothing is stored.
    login(&b, "not-a-token").await;
    let msg = b
        .wait_script("return document.querySelector('#login-error').textContent", |v| {
            v.as_str().is_some_and(|s| !s.is_empty())
        })
        .await;
    assert!(msg.as_str().unwrap().contains("refused"), "{msg}");
    assert_eq!(b.exec("return sessionStorage.length").await, 0);
    // Chromium logs the refused /whoami as a failed load; that is the only console error.
    for e in b.console().await.into_iter().filter(|e| e["level"] == "SEVERE") {
        let m = e["message"].as_str().unwrap_or_default();
        assert!(m.contains("/api/v1/whoami") && m.contains("401"), "{e}");
    }

    // The admin logs in; the token is in session storage, not in the URL.
    login(&b, &app.admin_token).await;
    b.wait_for("#nav-audit").await;
    let url = b.exec("return location.href").await;
    assert!(!url.as_str().unwrap().contains(&app.admin_token), "{url}");

    // The rollout page shows the counts the API shows, and plots points.
    b.exec(&format!("location.hash = '#/rollouts/{id}'; return null"))
        .await;
    b.wait_for("#count-targeted").await;
    let (_, r) = app.get(&format!("/api/v1/rollouts/{id}")).await;
    let shown = b
        .wait_script(
            "const c = {}; for (const k of ['pending','downloading','downloaded','installed','failed','targeted']) { \
               const e = document.getElementById('count-' + k); c[k] = e ? Number(e.textContent.replace(/,/g, '')) : null; } return c",
            |c| c["targeted"] == r["status"]["targeted"],
        )
        .await;
    let mut want = r["status"]["states"].clone();
    want["targeted"] = r["status"]["targeted"].clone();
    assert_eq!(shown, want, "the page's counts are the API's: {r}");
    assert_eq!(r["status"]["targeted"], 20, "{r}");
    let points = b
        .wait_script(
            "const p = document.getElementById('plot'); return p ? Number(p.dataset.points) : 0",
            |v| v.as_u64() >= Some(2),
        )
        .await;
    let dots = b
        .exec("return document.querySelectorAll('#plot circle').length")
        .await;
    assert!(
        dots.as_u64() >= points.as_u64(),
        "{dots} dots for {points} points"
    );
    let marks = b
        .exec("return document.querySelectorAll('#plot line.phase').length")
        .await;
    assert_eq!(marks, 2, "both phases are marked");
    b.screenshot(&screenshot_dir().join("rollout.png")).await;

    // Pause from the page, with its confirmation: the API says paused, the page follows.
    b.click(&b.wait_for("#action-pause").await).await;
    b.wait_for("#confirm").await;
    b.screenshot(&screenshot_dir().join("rollout-confirm.png")).await;
    b.click(&b.wait_for("#confirm-yes").await).await;
    wait_api(&app, &format!("/api/v1/rollouts/{id}"), |r| {
        r["state"] == "paused"
    })
    .await;
    b.wait_script(
        "const e = document.getElementById('rollout-state'); return e && e.textContent",
        |v| v == "paused",
    )
    .await;
    b.wait_for("#action-resume").await;

    // Every other page, each with its screenshot.
    show(&b, "#/rollouts", "tr[data-rollout] svg.progress", "rollouts.png").await;
    show(&b, "#/fleet", "#fleet-24h svg.columns", "fleet.png").await;
    let stale = b.text(&b.wait_for("#stale-count").await).await;
    let (_, f) = app.get("/api/v1/fleet").await;
    assert_eq!(stale, f["stale"]["devices"].to_string(), "{f}");
    show(&b, "#/devices?model=iq2", "tbody tr a", "devices.png").await;
    show(
        &b,
        &format!("#/devices/{}", dev.replace(':', "-")),
        "#pin-version",
        "device.png",
    )
    .await;
    let installed = b.text(&b.wait_for("#device-installed").await).await;
    let (_, d) = app.get(&format!("/api/v1/devices/{dev}")).await;
    assert_eq!(
        installed,
        d["installed_version"].as_str().unwrap_or("none reported")
    );
    show(&b, "#/releases", "tbody tr a", "releases.png").await;
    show(&b, "#/releases/iq2/1.0.0", "#manifest-raw", "release.png").await;
    let raw = b.text(&b.wait_for("#manifest-raw").await).await;
    let (_, rel) = app.get("/api/v1/releases/iq2/1.0.0").await;
    assert_eq!(raw.trim(), rel["manifest_raw"].as_str().unwrap().trim());
    show(
        &b,
        "#/sites",
        ".site li[data-kind=passive_offer_unused]",
        "sites.png",
    )
    .await;
    show(&b, "#/audit", "tbody tr", "audit.png").await;

    // No script error, console error or CSP violation; nothing from another origin.
    assert_eq!(b.script_errors().await, json!([]));
    let severe: Vec<Value> = b
        .console()
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    let resources = b
        .exec("return performance.getEntriesByType('resource').map(e => e.name)")
        .await;
    let resources = resources.as_array().unwrap();
    assert!(!resources.is_empty());
    for r in resources {
        let r = r.as_str().unwrap();
        assert!(
            r.starts_with(&format!("{origin}/")) || r.starts_with("data:"),
            "fetched from elsewhere: {r}"
        );
    }

    // A viewer sees the rollout but no button, and no Audit page.
    b.click(&b.wait_for("#logout").await).await;
    login(&b, &app.viewer_token).await;
    b.wait_for("#nav-rollouts").await;
    b.exec(&format!("location.hash = '#/rollouts/{id}'; return null"))
        .await;
    b.wait_for("#count-targeted").await;
    b.wait_for("#plot").await;
    let buttons = b
        .exec("return [...document.querySelectorAll('main button')].map(b => b.id || b.textContent)")
        .await;
    assert_eq!(buttons, json!([]), "a viewer sees no button");
    assert!(b.find("#nav-audit").await.is_none());
    b.screenshot(&screenshot_dir().join("rollout-viewer.png")).await;
    assert_eq!(b.script_errors().await, json!([]));
    let (status, r) = app.get(&format!("/api/v1/rollouts/{id}")).await;
    assert_eq!((status, &r["state"]), (200, &json!("paused")));
}

#[tokio::test]
async fn the_pages_are_served_with_a_strict_policy_and_revalidated() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {h:?}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        for d in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(d), "{path}: {csp}");
        }
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
        let etag = h["etag"].to_str().unwrap().to_owned();
        let again = app
            .http
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let page = app
        .http
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<script src=\"/ui/app.js\""), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from elsewhere"
    );
    // The API's shared rules hold around the pages.
    let (status, body) = app.request(Method::POST, "/", None, None).await;
    assert_eq!(
        (status, body),
        (
            405,
            json!({"error": "method POST is not allowed on /; allowed: GET, HEAD"})
        )
    );
    let (status, body) = app.request(Method::GET, "/ui/nope.js", None, None).await;
    assert_eq!((status, body), (404, json!({"error": "no such endpoint"})));
}
