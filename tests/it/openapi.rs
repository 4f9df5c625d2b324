//! The OpenAPI document (SPEC §11) and the rules every endpoint shares (SPEC §6): the
//! document is served without a token and is valid OpenAPI 3.1 by an independent validator;
//! it lists exactly the endpoints of the SPEC, each routed, each with the role it enforces;
//! real answers fit its schemas; an unknown query parameter is a 400 naming it on every
//! endpoint; 404, 405, 413, 415 and extractor 400s answer `{"error": ...}`; filters filter;
//! times are RFC 3339.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use axum::body::Body;
use axum::http::{Method, Request, header};
use fwdist::domain::Role;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::helpers::oneshot::{Api, api};
use crate::helpers::{image, rfc3339, spawn_app_with_env};

/// Every endpoint of SPEC §6–§11, and the document itself: the document must list exactly
/// these (method, path) pairs.
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/releases"),
    ("GET", "/api/v1/releases"),
    ("GET", "/api/v1/releases/{model}/{version}"),
    ("POST", "/api/v1/releases/{model}/{version}/yank"),
    ("POST", "/api/v1/devices"),
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/devices/{id}"),
    ("DELETE", "/api/v1/devices/{id}"),
    ("POST", "/api/v1/devices/{id}/disable"),
    ("POST", "/api/v1/devices/{id}/enable"),
    ("POST", "/api/v1/devices/{id}/secret"),
    ("DELETE", "/api/v1/devices/{id}/lockout"),
    ("PUT", "/api/v1/devices/{id}/pin"),
    ("DELETE", "/api/v1/devices/{id}/pin"),
    ("POST", "/api/v1/devices/{id}/reports"),
    ("GET", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{id}"),
    ("POST", "/api/v1/rollouts"),
    ("PATCH", "/api/v1/rollouts/{id}"),
    ("GET", "/api/v1/rollouts"),
    ("GET", "/api/v1/rollouts/{id}"),
    ("GET", "/api/v1/rollouts/{id}/devices"),
    ("GET", "/api/v1/rollouts/{id}/history"),
    ("GET", "/api/v1/downloads"),
    ("GET", "/api/v1/network-requirements"),
    ("GET", "/api/v1/diagnostics"),
    ("GET", "/api/v1/sites"),
    ("GET", "/api/v1/fleet"),
    ("GET", "/api/v1/whoami"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
];

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

/// One operation of the document.
struct Op {
    method: String,
    path: String,
    op: Value,
}

fn operations(doc: &Value) -> Vec<Op> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m.to_lowercase()) {
                out.push(Op {
                    method: m.to_owned(),
                    path: path.clone(),
                    op: op.clone(),
                });
            }
        }
    }
    out
}

/// A path with its parameters filled in: ids that name nothing, but are well-formed.
fn concrete(path: &str) -> String {
    path.replace("{model}", "iq2")
        .replace("{version}", "9.9.9")
        .replace("{id}", "999999")
}

fn takes_json(op: &Value) -> bool {
    op["requestBody"]["content"].get("application/json").is_some()
}

/// The answer's status, headers and raw body.
async fn raw(
    app: &Api,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let resp = app
        .app
        .router()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, headers, bytes.to_vec())
}

/// Like [`raw`], the body as JSON (a non-JSON body fails the test: every answer here is JSON).
async fn json_call(
    app: &Api,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, axum::http::HeaderMap, Value) {
    let (ct, bytes) = match body {
        Some(b) => (Some("application/json"), b.to_string().into_bytes()),
        None => (None, Vec::new()),
    };
    let (status, headers, bytes) = raw(app, method, path, token, ct, bytes).await;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: {status} with a body that is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, headers, value)
}

async fn document(app: &Api) -> (Vec<u8>, Value) {
    let (status, headers, bytes) = raw(app, "GET", "/api/v1/openapi.json", None, None, Vec::new()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let doc = serde_json::from_slice(&bytes).unwrap();
    (bytes, doc)
}

/// Runs a Python program with `args`; its standard output on success, the test fails
/// otherwise. The validator is `openapi-spec-validator` from PyPI (.ci/run installs it).
fn python(program: &str, args: &[&std::path::Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "python failed ({}):\n{stdout}\n{stderr}\n(the tests need `pip install openapi-spec-validator`, as .ci/run does)",
        out.status
    );
    stdout
}

#[tokio::test]
async fn the_document_is_served_without_a_token_is_valid_openapi_3_1_and_deterministic() {
    let app = api().await;
    let (bytes, doc) = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let file = app.dir.path().join("openapi.json");
    std::fs::write(&file, &bytes).unwrap();
    let out = python(
        "import sys\n\
         from openapi_spec_validator import validate\n\
         from openapi_spec_validator.readers import read_from_filename\n\
         spec, _ = read_from_filename(sys.argv[1])\n\
         validate(spec)\n\
         print('valid', spec['openapi'])\n",
        &[&file],
    );
    assert!(out.starts_with("valid 3.1"), "{out}");
    // The same bytes from a second request and from a second server.
    assert_eq!(document(&app).await.0, bytes);
    let other = api().await;
    assert_eq!(
        document(&other).await.0,
        bytes,
        "a second server serves the same document"
    );
    // And what the library builds for tools is that document.
    let built = serde_json::to_value(fwdist::api::openapi_document(1 << 30)).unwrap();
    assert_eq!(built, doc);
}

#[tokio::test]
async fn the_document_lists_exactly_the_endpoints_and_the_router_routes_each_of_them() {
    let app = api().await;
    let (_, doc) = document(&app).await;
    let documented: BTreeSet<(String, String)> =
        operations(&doc).into_iter().map(|o| (o.method, o.path)).collect();
    let spec: BTreeSet<(String, String)> = SPEC_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        documented.difference(&spec).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented, not in the SPEC"
    );
    assert_eq!(
        spec.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "in the SPEC, not documented"
    );
    // Each documented operation is routed: it answers something other than our 404 for an
    // unknown route and other than 405.
    for o in operations(&doc) {
        let body = takes_json(&o.op).then(|| json!({}));
        let path = concrete(&o.path);
        let (status, _, answer) = if o.path == "/metrics" {
            let (s, h, _) = raw(&app, &o.method, &path, Some(&app.admin), None, Vec::new()).await;
            (s, h, Value::Null)
        } else {
            json_call(&app, &o.method, &path, Some(&app.admin), body).await
        };
        assert_ne!(status, 405, "{} {path}: {answer}", o.method);
        assert_ne!(
            answer,
            json!({"error": "no such endpoint"}),
            "{} {path}: {status}",
            o.method
        );
    }
    // And no path has a method the document does not list: every other one is a 405 whose
    // `Allow` and error name the documented ones.
    let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (m, p) in &documented {
        by_path.entry(p.clone()).or_default().push(m.clone());
    }
    for (path, methods) in &by_path {
        let mut allowed: Vec<&str> = METHODS
            .into_iter()
            .filter(|m| methods.iter().any(|d| d == m))
            .collect();
        if let Some(i) = allowed.iter().position(|m| *m == "GET") {
            allowed.insert(i + 1, "HEAD");
        }
        let allow = allowed.join(", ");
        for m in METHODS.into_iter().filter(|m| !methods.iter().any(|d| d == m)) {
            let (status, headers, body) = json_call(&app, m, &concrete(path), Some(&app.admin), None).await;
            assert_eq!(
                (status, body),
                (
                    405,
                    json!({"error": format!("method {m} is not allowed on {path}; allowed: {allow}")})
                ),
                "{m} {path}"
            );
            assert_eq!(headers[header::ALLOW], allow.as_str(), "{m} {path}");
        }
    }
}

#[tokio::test]
async fn every_operation_declares_its_role_and_enforces_exactly_it() {
    let app = api().await;
    let (_, doc) = document(&app).await;
    let reporter = app
        .app
        .services()
        .tokens
        .create("reporter", Role::Reporter, "cli")
        .await
        .unwrap()
        .1
        .expose()
        .to_owned();
    let tokens = [
        (Role::Viewer, app.viewer.clone()),
        (Role::Publisher, app.publisher.clone()),
        (Role::Admin, app.admin.clone()),
        (Role::Reporter, reporter),
    ];
    for o in operations(&doc) {
        let what = format!("{} {}", o.method, o.path);
        let role = o.op["x-fwdist-role"]
            .as_str()
            .unwrap_or_else(|| panic!("{what} declares no x-fwdist-role"));
        let description = o.op["description"].as_str().unwrap_or_default();
        let path = concrete(&o.path);
        let body = takes_json(&o.op).then(|| json!({}));
        let call = |token: Option<String>| {
            let (method, path, body) = (o.method.clone(), path.clone(), body.clone());
            let app = &app;
            async move {
                let (status, _, _) = raw(
                    app,
                    &method,
                    &path,
                    token.as_deref(),
                    body.as_ref().map(|_| "application/json"),
                    body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
                )
                .await;
                status
            }
        };
        if role == "none" {
            assert!(description.contains("No token needed"), "{what}: {description}");
            assert!(o.op.get("security").is_none(), "{what}");
            assert_ne!(call(None).await, 401, "{what} needs no token");
            continue;
        }
        assert_eq!(o.op["security"], json!([{"bearer": []}]), "{what}");
        assert_eq!(call(None).await, 401, "{what} without a token");
        assert_eq!(
            call(Some("not-a-token".into())).await,
            401,
            "{what} with a bad token"
        );
        assert!(o.op["responses"].get("401").is_some(), "{what} documents 401");
        if role == "any" {
            for (r, t) in &tokens {
                assert_ne!(call(Some(t.clone())).await, 403, "{what} as {r:?}");
            }
            continue;
        }
        let needed = Role::parse(role).unwrap_or_else(|e| panic!("{what}: {}", e.0));
        assert!(
            description.contains(&format!("Role: `{role}`")),
            "{what}: {description}"
        );
        assert!(o.op["responses"].get("403").is_some(), "{what} documents 403");
        for (r, t) in &tokens {
            let status = call(Some(t.clone())).await;
            if r.allows(needed) {
                assert!(status != 403 && status != 401, "{what} as {r:?}: {status}");
            } else {
                assert_eq!(status, 403, "{what} as {r:?}");
            }
        }
    }
}

/// `#/components/responses/X` or an inline response, resolved.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/responses/").unwrap();
            &doc["components"]["responses"][name]
        }
        None => v,
    }
}

#[tokio::test]
async fn every_client_error_in_the_document_is_the_error_object() {
    let app = api().await;
    let (_, doc) = document(&app).await;
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        (
            &error["type"],
            &error["required"],
            &error["properties"]["error"]["type"]
        ),
        (&json!("object"), &json!(["error"]), &json!("string")),
        "{error}"
    );
    assert_eq!(
        error["properties"].as_object().map(|p| p.len()),
        Some(1),
        "{error}"
    );
    let mut checked = 0;
    for o in operations(&doc) {
        for (status, response) in o.op["responses"].as_object().unwrap() {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let r = resolve(&doc, response);
            assert_eq!(
                r["content"],
                json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}),
                "{} {} {status}",
                o.method,
                o.path
            );
            checked += 1;
        }
        if o.path.starts_with("/api/v1") {
            assert!(
                o.op["responses"].get("400").is_some(),
                "{} {}: the unknown-parameter 400",
                o.method,
                o.path
            );
        }
    }
    assert!(checked > 60, "{checked}");
}

#[tokio::test]
async fn an_unknown_query_parameter_is_refused_on_every_endpoint_naming_it() {
    let app = api().await;
    let (_, doc) = document(&app).await;
    for o in operations(&doc)
        .into_iter()
        .filter(|o| o.path.starts_with("/api/v1"))
    {
        let known: Vec<&str> = o.op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let takes = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        let path = format!("{}?zz=1", concrete(&o.path));
        let body = takes_json(&o.op).then(|| json!({}));
        for token in [Some(app.admin.as_str()), None] {
            let (status, _, answer) = json_call(&app, &o.method, &path, token, body.clone()).await;
            assert_eq!(
                (status, answer),
                (
                    400,
                    json!({"error": format!("unknown query parameter \"zz\" ({} {} takes {takes})", o.method, o.path)})
                ),
                "{} {path}",
                o.method
            );
        }
    }
    // As an operator meets it: the message names every unknown parameter and the known ones.
    app.create_device("aa:bb:cc:0a:00:01", "iq2").await;
    for (method, path, want) in [
        (
            "GET",
            "/api/v1/devices/aa:bb:cc:0a:00:01?x=1",
            "unknown query parameter \"x\" (GET /api/v1/devices/{id} takes none)",
        ),
        (
            "GET",
            "/api/v1/devices?modle=iq2&enabled=true&sort=id&sort=x",
            "unknown query parameters \"modle\", \"sort\" (GET /api/v1/devices takes model, label, enabled, limit, after)",
        ),
        (
            "GET",
            "/api/v1/rollouts/1?foo=1",
            "unknown query parameter \"foo\" (GET /api/v1/rollouts/{id} takes none)",
        ),
        (
            "GET",
            "/api/v1/diagnostics?x=1",
            "unknown query parameter \"x\" (GET /api/v1/diagnostics takes none)",
        ),
        (
            "GET",
            "/api/v1/downloads?device=aa:bb:cc:0a:00:01&state=complete",
            "unknown query parameter \"state\" (GET /api/v1/downloads takes device, model, version, outcome, limit, after)",
        ),
        (
            "DELETE",
            "/api/v1/devices/aa:bb:cc:0a:00:01?force=yes",
            "unknown query parameter \"force\" (DELETE /api/v1/devices/{id} takes none)",
        ),
        (
            "POST",
            "/api/v1/devices/aa:bb:cc:0a:00:01/disable?now",
            "unknown query parameter \"now\" (POST /api/v1/devices/{id}/disable takes none)",
        ),
    ] {
        let (status, _, body) = json_call(&app, method, path, Some(&app.admin), None).await;
        assert_eq!((status, body), (400, json!({ "error": want })), "{method} {path}");
    }
    // Refused means not done: the device is neither deleted nor disabled.
    let (status, dev) = app.get("/api/v1/devices/aa:bb:cc:0a:00:01").await;
    assert_eq!((status, &dev["enabled"]), (200, &json!(true)), "{dev}");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/devices?dry_run=1",
            Some(&app.admin),
            Some(json!({"id": "aa:bb:cc:0a:00:02", "model": "iq2"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app.get("/api/v1/devices/aa:bb:cc:0a:00:02").await;
    assert_eq!(status, 404, "not created");
    // Known parameters, empty or not, still work.
    let (status, body) = app
        .get("/api/v1/devices?model=&label=&enabled=&limit=5&after=")
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn errors_of_the_router_and_the_extractors_are_json() {
    let app = api().await;
    // Unknown routes, under /api/v1 and outside it.
    for path in [
        "/api/v1/nope",
        "/nope",
        "/api/v2/devices",
        "/api/v1/devices/x/y/z",
        "/ui",
        "/ui/nope.js",
    ] {
        let (status, _, body) = json_call(&app, "GET", path, Some(&app.admin), None).await;
        assert_eq!(
            (status, body),
            (404, json!({"error": "no such endpoint"})),
            "{path}"
        );
    }
    // 405, with the methods the path has.
    let (status, headers, body) = json_call(
        &app,
        "POST",
        "/api/v1/devices/aa:bb:cc:00:00:01",
        Some(&app.admin),
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            405,
            json!({"error": "method POST is not allowed on /api/v1/devices/{id}; allowed: GET, HEAD, DELETE"})
        )
    );
    assert_eq!(headers[header::ALLOW], "GET, HEAD, DELETE");
    let (status, _, body) = json_call(&app, "POST", "/healthz", None, None).await;
    assert_eq!(
        (status, body),
        (
            405,
            json!({"error": "method POST is not allowed on /healthz; allowed: GET, HEAD"})
        )
    );
    // 413: a JSON body over 256 KiB, and an install report over it too.
    let big = json!({"id": "aa:bb:cc:00:00:01", "model": "iq2", "labels": ["x".repeat(300 * 1024)]});
    let (status, _, body) = json_call(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&app.admin),
        Some(big.clone()),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("length limit"), "{body}");
    app.create_device("aa:bb:cc:00:00:01", "iq2").await;
    let (status, _, body) = json_call(
        &app,
        "POST",
        "/api/v1/devices/aa:bb:cc:00:00:01/reports",
        Some(&app.admin),
        Some(big),
    )
    .await;
    // SPEC §7: an install report too large is a 422 over HTTP, whichever limit it crossed.
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].is_string(), "{body}");
    // 415: not JSON where JSON is taken, not multipart where an upload is.
    let (status, _, bytes) = raw(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&app.admin),
        Some("text/plain"),
        br#"{"id": "aa:bb:cc:00:00:02", "model": "iq2"}"#.to_vec(),
    )
    .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, body),
        (
            415,
            json!({"error": "Expected request with `Content-Type: application/json`"})
        )
    );
    let (status, _, bytes) = raw(
        &app,
        "POST",
        "/api/v1/releases",
        Some(&app.publisher),
        Some("application/json"),
        b"{}".to_vec(),
    )
    .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, body),
        (
            415,
            json!({"error": "expected Content-Type: multipart/form-data with a boundary"})
        )
    );
    // 400 and 422 from the JSON extractor, 400 from the path extractor.
    let (status, _, bytes) = raw(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&app.admin),
        Some("application/json"),
        b"{\"id\": ".to_vec(),
    )
    .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");
    let (status, _, body) = json_call(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&app.admin),
        Some(json!({"id": "aa:bb:cc:00:00:02", "model": "iq2", "colour": "red"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unknown field `colour`"),
        "{body}"
    );
    let (status, _, body) = json_call(&app, "GET", "/api/v1/devices/%FF%FE", Some(&app.admin), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    // A manifest part over 64 KiB: the multipart 413.
    let boundary = "b0undary";
    let mut upload = Vec::new();
    upload.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n").as_bytes(),
    );
    upload.extend_from_slice(&vec![b'{'; 65 * 1024]);
    upload.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (status, _, bytes) = raw(
        &app,
        "POST",
        "/api/v1/releases",
        Some(&app.publisher),
        Some(&format!("multipart/form-data; boundary={boundary}")),
        upload,
    )
    .await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("manifest is larger than"),
        "{body}"
    );
}

#[tokio::test]
async fn an_image_over_the_limit_gets_413_json_from_a_real_server() {
    let app = spawn_app_with_env(&[("FWDIST_STORE__MAX_IMAGE_BYTES", "1000")]).await;
    let key = app.trusted_key("k").await;
    let s = app.sign(&key, "iq2", "1.0.0", 1, &image(4000, 1)).await;
    // Over `store.max_image_bytes`: the store refuses it.
    let (status, body) = app.upload(&app.publisher_token, &s).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].is_string(), "{body}");
    // Over the body limit (max_image_bytes + 1 MiB): the multipart reader refuses it.
    let huge = image(2 << 20, 2);
    let (status, body) = app
        .upload_parts(&app.publisher_token, &s.manifest, &s.sig, &huge)
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn list_filters_filter_and_refuse_bad_values_naming_the_parameter() {
    let app = api().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    for i in 1..=4 {
        app.create_device(&format!("aa:bb:cc:0f:00:0{i}"), "iq2").await;
    }
    for id in ["aa:bb:cc:0f:00:02", "aa:bb:cc:0f:00:04"] {
        let (status, body) = app
            .post(&format!("/api/v1/devices/{id}/disable"), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let ids = |v: &Value, key: &str| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i[key].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, list) = app.get("/api/v1/devices?enabled=false").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list, "id"), ["aa:bb:cc:0f:00:04", "aa:bb:cc:0f:00:02"]);
    let (_, list) = app.get("/api/v1/devices?enabled=true&model=iq2").await;
    assert_eq!(ids(&list, "id"), ["aa:bb:cc:0f:00:03", "aa:bb:cc:0f:00:01"]);
    // Pages of a filtered list hold only matching devices.
    let (_, page) = app.get("/api/v1/devices?enabled=false&limit=1").await;
    assert_eq!(ids(&page, "id"), ["aa:bb:cc:0f:00:04"]);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, page) = app
        .get(&format!("/api/v1/devices?enabled=false&limit=1&after={next}"))
        .await;
    assert_eq!(ids(&page, "id"), ["aa:bb:cc:0f:00:02"]);

    app.record("aa:bb:cc:0f:00:01", "1.0.0", "firmware.bin", 0, 1000, 1000)
        .await;
    app.record("aa:bb:cc:0f:00:01", "1.0.0", "firmware.bin", 0, 10, 1000)
        .await;
    app.record("aa:bb:cc:0f:00:03", "1.0.0", "firmware.bin", 500, 100, 1000)
        .await;
    let outcomes = |v: &Value| -> Vec<(String, u64)> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["outcome"].as_str().unwrap().to_owned(),
                    i["bytes"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (status, list) = app.get("/api/v1/downloads?outcome=aborted").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        outcomes(&list),
        [("aborted".to_owned(), 100), ("aborted".to_owned(), 10)]
    );
    let (_, list) = app.get("/api/v1/downloads?outcome=complete").await;
    assert_eq!(outcomes(&list), [("complete".to_owned(), 1000)]);
    let (_, list) = app
        .get("/api/v1/downloads?outcome=aborted&device=AA-BB-CC-0F-00-03")
        .await;
    assert_eq!(outcomes(&list), [("aborted".to_owned(), 100)]);

    let r = app
        .rollout(json!({"model": "iq2", "version": "1.0.0", "percent": 10}))
        .await;
    let (status, body) = app
        .patch(&format!("/api/v1/rollouts/{r}"), json!({"state": "paused"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = app.get("/api/v1/rollouts?state=paused").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (_, list) = app.get("/api/v1/rollouts?state=active").await;
    assert_eq!(list["items"], json!([]), "{list}");

    for (path, want) in [
        (
            "/api/v1/devices?enabled=maybe",
            "invalid enabled \"maybe\": expected true or false",
        ),
        (
            "/api/v1/devices?model=IQ2",
            "invalid model \"IQ2\": expected [a-z0-9][a-z0-9-]{0,31}",
        ),
        (
            "/api/v1/downloads?outcome=done",
            "invalid outcome \"done\": expected complete or aborted",
        ),
        (
            "/api/v1/downloads?device=nope",
            "invalid device id \"nope\": expected a MAC address like aa:bb:cc:dd:ee:ff",
        ),
        (
            "/api/v1/downloads?version=one",
            "invalid version \"one\": expected a semantic version like 2.4.1",
        ),
        (
            "/api/v1/releases?model=-x",
            "invalid model \"-x\": expected [a-z0-9][a-z0-9-]{0,31}",
        ),
        (
            "/api/v1/rollouts?state=running",
            "invalid state \"running\": expected scheduled, active, paused or aborted",
        ),
        (
            "/api/v1/audit?action=device.explode",
            "action \"device.explode\" is not one of token.create, token.revoke, device.create, device.disable, device.enable, device.secret, device.delete, device.unlock, release.publish, release.yank, rollout.create, rollout.update, rollout.advance, rollout.pause, pin.set, pin.clear",
        ),
        ("/api/v1/tokens?limit=0", "limit must be 1-1000"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!((status, body), (400, json!({ "error": want })), "{path}");
    }
}

#[tokio::test]
async fn diagnostics_times_are_rfc_3339() {
    let app = spawn_app_with_env(&[("FWDIST_FTPS__MAX_SESSIONS_PER_IP", "1")]).await;
    let _held = crate::raw_ctl::RawCtl::connect(app.ftp_addr).await;
    // The second session from 127.0.0.1 is refused with 421 and counted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let row = loop {
        let _ = tokio::net::TcpStream::connect(app.ftp_addr).await;
        let (status, body) = app.get("/api/v1/diagnostics").await;
        assert_eq!(status, 200, "{body}");
        if let Some(row) = body["client_ips"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == "127.0.0.1" && r["sessions_refused"].as_u64() >= Some(1))
        {
            break row.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no 421 counted: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let at = rfc3339(&row["last_at"], "diagnostics last_at");
    assert_eq!(at.offset(), time::UtcOffset::UTC, "{row}");
    let age = time::OffsetDateTime::now_utc() - at;
    assert!(
        age < time::Duration::minutes(5) && age > -time::Duration::minutes(1),
        "{row}"
    );
}

/// Real answers, recorded with the operation they came from, for checking against the
/// document's schemas.
struct Samples<'a> {
    app: &'a Api,
    seen: Vec<Value>,
}

impl Samples<'_> {
    /// Calls `method path` (the concrete form of `template`) as the admin and records the
    /// answer; returns it.
    async fn call(&mut self, method: &str, template: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self.app.admin.clone();
        self.call_as(method, template, path, Some(&token), body).await
    }

    async fn call_as(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, answer) = json_call(self.app, method, path, token, body).await;
        self.record(method, template, status, &answer);
        (status, answer)
    }

    fn record(&mut self, method: &str, template: &str, status: u16, body: &Value) {
        self.seen
            .push(json!({"method": method, "path": template, "status": status, "body": body}));
    }
}

/// Checks each sample against its operation's answer for its status: the status must be
/// documented, and the body must be valid against the documented JSON schema (formats such
/// as `date-time` included) or absent when the answer documents none.
const CHECK_SAMPLES: &str = r#"
import json, sys
from openapi_schema_validator import OAS31Validator
doc = json.load(open(sys.argv[1]))
samples = json.load(open(sys.argv[2]))
failures = []
for s in samples:
    what = f"{s['method']} {s['path']} -> {s['status']}"
    op = doc["paths"][s["path"]][s["method"].lower()]
    r = op["responses"].get(str(s["status"]))
    if r is None:
        failures.append(f"{what}: status not documented (documented: {sorted(op['responses'])})")
        continue
    if "$ref" in r:
        r = doc["components"]["responses"][r["$ref"].rsplit("/", 1)[1]]
    content = r.get("content", {})
    if s["body"] is None:
        if content:
            failures.append(f"{what}: no body, but the document describes {sorted(content)}")
        continue
    if "application/json" not in content:
        failures.append(f"{what}: a JSON body the document does not describe")
        continue
    schema = {"allOf": [content["application/json"]["schema"]], "components": doc["components"]}
    v = OAS31Validator(schema, format_checker=OAS31Validator.FORMAT_CHECKER)
    for e in v.iter_errors(s["body"]):
        failures.append(f"{what}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
print(f"{len(samples)} answers checked")
if failures:
    print("\n".join(failures))
    sys.exit(1)
"#;

#[tokio::test]
async fn real_answers_fit_the_documented_statuses_and_schemas() {
    let app = api().await;
    let (bytes, _) = document(&app).await;
    let mut s = Samples {
        app: &app,
        seen: Vec::new(),
    };
    let dev = "aa:bb:cc:5a:00:01";
    let dev_path = format!("/api/v1/devices/{dev}");
    // Releases.
    let (status, body) = app.upload("iq2", "1.0.0", 1, &image(1000, 1)).await;
    s.record("POST", "/api/v1/releases", status, &body);
    let (status, body) = app.upload("iq2", "1.0.0", 1, &image(1000, 1)).await;
    s.record("POST", "/api/v1/releases", status, &body);
    let (status, body) = app.upload("iq2", "1.0.0", 1, &image(1000, 2)).await;
    s.record("POST", "/api/v1/releases", status, &body);
    let (status, body) = app.upload("iq2", "1.1.0", 1, &image(1000, 3)).await;
    s.record("POST", "/api/v1/releases", status, &body);
    app.publish("iq2", "1.2.0", 3, &image(1000, 4)).await;
    s.call("GET", "/api/v1/releases", "/api/v1/releases?model=iq2", None)
        .await;
    s.call(
        "GET",
        "/api/v1/releases/{model}/{version}",
        "/api/v1/releases/iq2/1.0.0",
        None,
    )
    .await;
    s.call(
        "GET",
        "/api/v1/releases/{model}/{version}",
        "/api/v1/releases/iq2/0.0.1",
        None,
    )
    .await;
    s.call(
        "POST",
        "/api/v1/releases/{model}/{version}/yank",
        "/api/v1/releases/iq2/1.2.0/yank",
        None,
    )
    .await;
    // Devices, their lifecycle and pins.
    let new = json!({"id": dev, "model": "iq2", "labels": ["site-a"]});
    s.call("POST", "/api/v1/devices", "/api/v1/devices", Some(new.clone()))
        .await;
    s.call("POST", "/api/v1/devices", "/api/v1/devices", Some(new))
        .await;
    s.call(
        "POST",
        "/api/v1/devices",
        "/api/v1/devices",
        Some(json!({"id": "x", "model": "iq2"})),
    )
    .await;
    app.create_device("aa:bb:cc:5a:00:02", "iq2").await;
    s.call(
        "GET",
        "/api/v1/devices",
        "/api/v1/devices?label=site-a&limit=1",
        None,
    )
    .await;
    s.call("GET", "/api/v1/devices/{id}", &dev_path, None).await;
    s.call(
        "GET",
        "/api/v1/devices/{id}",
        "/api/v1/devices/aa:bb:cc:5a:00:99",
        None,
    )
    .await;
    for action in ["disable", "enable", "secret"] {
        let path = format!("{dev_path}/{action}");
        s.call("POST", &format!("/api/v1/devices/{{id}}/{action}"), &path, None)
            .await;
    }
    s.call(
        "DELETE",
        "/api/v1/devices/{id}/lockout",
        &format!("{dev_path}/lockout"),
        None,
    )
    .await;
    let pin = format!("{dev_path}/pin");
    s.call(
        "PUT",
        "/api/v1/devices/{id}/pin",
        &pin,
        Some(json!({"version": "1.0.0", "reason": "support", "expires_at": "2999-01-01T00:00:00Z"})),
    )
    .await;
    s.call(
        "PUT",
        "/api/v1/devices/{id}/pin",
        &pin,
        Some(json!({"version": "1.2.0"})),
    )
    .await;
    s.call("GET", "/api/v1/devices/{id}", &dev_path, None).await;
    s.call("DELETE", "/api/v1/devices/{id}/pin", &pin, None).await;
    s.call("DELETE", "/api/v1/devices/{id}/pin", &pin, None).await;
    // Reports and download records.
    let reports = format!("{dev_path}/reports");
    s.call(
        "POST",
        "/api/v1/devices/{id}/reports",
        &reports,
        Some(json!({"version": "1.0.0", "outcome": "installed", "detail": "ok"})),
    )
    .await;
    s.call(
        "POST",
        "/api/v1/devices/{id}/reports",
        &reports,
        Some(json!({"version": "7.0.0", "outcome": "installed"})),
    )
    .await;
    app.record(dev, "1.0.0", "firmware.bin", 0, 1000, 1000).await;
    app.record(dev, "1.0.0", "firmware.bin", 0, 10, 1000).await;
    s.call(
        "GET",
        "/api/v1/downloads",
        "/api/v1/downloads?outcome=aborted",
        None,
    )
    .await;
    s.call("GET", "/api/v1/downloads", "/api/v1/downloads?limit=1", None)
        .await;
    s.call("GET", "/api/v1/devices/{id}", &dev_path, None).await;
    // Rollouts.
    let (_, r) = s
        .call("POST", "/api/v1/rollouts", "/api/v1/rollouts", Some(json!({"model": "iq2", "version": "1.0.0", "phases": [10, 100], "devices": [dev], "labels": ["site-a"], "start_at": "2999-01-01T00:00:00Z"})))
        .await;
    let rid = r["id"].as_i64().unwrap();
    s.call(
        "POST",
        "/api/v1/rollouts",
        "/api/v1/rollouts",
        Some(json!({"model": "iq2", "version": "1.0.0"})),
    )
    .await;
    let plain = s
        .call(
            "POST",
            "/api/v1/rollouts",
            "/api/v1/rollouts",
            Some(json!({"model": "iq2", "version": "1.0.0", "percent": 100})),
        )
        .await
        .1["id"]
        .as_i64()
        .unwrap();
    let one = format!("/api/v1/rollouts/{plain}");
    s.call("GET", "/api/v1/rollouts", "/api/v1/rollouts?model=iq2", None)
        .await;
    s.call(
        "GET",
        "/api/v1/rollouts/{id}",
        &format!("/api/v1/rollouts/{rid}"),
        None,
    )
    .await;
    s.call("GET", "/api/v1/rollouts/{id}", "/api/v1/rollouts/424242", None)
        .await;
    s.call(
        "PATCH",
        "/api/v1/rollouts/{id}",
        &one,
        Some(json!({"percent": 50})),
    )
    .await;
    s.call("PATCH", "/api/v1/rollouts/{id}", &one, Some(json!({})))
        .await;
    s.call(
        "PATCH",
        "/api/v1/rollouts/{id}",
        &one,
        Some(json!({"state": "aborted"})),
    )
    .await;
    s.call(
        "PATCH",
        "/api/v1/rollouts/{id}",
        &one,
        Some(json!({"state": "active"})),
    )
    .await;
    s.call(
        "GET",
        "/api/v1/rollouts/{id}/devices",
        &format!("{one}/devices"),
        None,
    )
    .await;
    s.call(
        "GET",
        "/api/v1/rollouts/{id}/devices",
        &format!("{one}/devices?state=downloaded"),
        None,
    )
    .await;
    s.call(
        "GET",
        "/api/v1/rollouts/{id}/devices",
        "/api/v1/rollouts/424242/devices",
        None,
    )
    .await;
    // The rest.
    s.call(
        "GET",
        "/api/v1/network-requirements",
        "/api/v1/network-requirements",
        None,
    )
    .await;
    s.call("GET", "/api/v1/diagnostics", "/api/v1/diagnostics", None)
        .await;
    s.call("GET", "/api/v1/sites", "/api/v1/sites", None).await;
    s.call("GET", "/api/v1/sites", "/api/v1/sites?limit=x", None)
        .await;
    s.call("GET", "/api/v1/fleet", "/api/v1/fleet?stale_days=3", None)
        .await;
    s.call("GET", "/api/v1/fleet", "/api/v1/fleet?stale_days=0", None)
        .await;
    s.call(
        "GET",
        "/api/v1/rollouts/{id}/history",
        &format!("{one}/history"),
        None,
    )
    .await;
    s.call(
        "GET",
        "/api/v1/rollouts/{id}/history",
        "/api/v1/rollouts/424242/history",
        None,
    )
    .await;
    s.call("GET", "/api/v1/whoami", "/api/v1/whoami", None).await;
    let viewer = app.viewer.clone();
    s.call_as("GET", "/api/v1/whoami", "/api/v1/whoami", Some(&viewer), None)
        .await;
    s.call_as("GET", "/api/v1/tokens", "/api/v1/tokens", Some(&viewer), None)
        .await;
    s.call_as("GET", "/api/v1/tokens", "/api/v1/tokens", None, None)
        .await;
    let (_, tokens) = s
        .call("GET", "/api/v1/tokens", "/api/v1/tokens?limit=2", None)
        .await;
    let last = tokens["items"][0]["id"].as_i64().unwrap();
    s.call("GET", "/api/v1/audit", "/api/v1/audit?action=device.create", None)
        .await;
    s.call("GET", "/api/v1/audit", "/api/v1/audit?limit=1000", None)
        .await;
    s.call("GET", "/api/v1/audit", "/api/v1/audit?limit=abc", None)
        .await;
    s.call(
        "DELETE",
        "/api/v1/devices/{id}",
        "/api/v1/devices/aa:bb:cc:5a:00:02",
        None,
    )
    .await;
    s.call(
        "DELETE",
        "/api/v1/devices/{id}",
        "/api/v1/devices/aa:bb:cc:5a:00:02",
        None,
    )
    .await;
    s.call(
        "DELETE",
        "/api/v1/tokens/{id}",
        &format!("/api/v1/tokens/{last}"),
        None,
    )
    .await;
    s.call("DELETE", "/api/v1/tokens/{id}", "/api/v1/tokens/424242", None)
        .await;
    s.call_as("GET", "/healthz", "/healthz", None, None).await;

    let statuses: BTreeSet<u64> = s.seen.iter().map(|v| v["status"].as_u64().unwrap()).collect();
    assert_eq!(
        statuses,
        [200, 201, 204, 400, 401, 403, 404, 409, 422, 503]
            .into_iter()
            .collect(),
        "the samples cover these statuses"
    );
    let doc_file = app.dir.path().join("openapi.json");
    std::fs::write(&doc_file, &bytes).unwrap();
    let samples_file = app.dir.path().join("samples.json");
    std::fs::write(&samples_file, serde_json::to_vec(&s.seen).unwrap()).unwrap();
    let out = python(CHECK_SAMPLES, &[&doc_file, &samples_file]);
    assert!(
        out.contains(&format!("{} answers checked", s.seen.len())),
        "{out}"
    );
}

/// Whether a query parameter's schema in the document admits the empty string.
fn admits_empty(schema: &Value) -> bool {
    let plain_string = schema["type"] == "string"
        && ["enum", "pattern", "format", "const"]
            .iter()
            .all(|k| schema.get(*k).is_none())
        && schema["minLength"].as_u64().unwrap_or(0) == 0;
    plain_string
        || schema["enum"].as_array().is_some_and(|e| e.contains(&json!("")))
        || schema["anyOf"]
            .as_array()
            .is_some_and(|a| a.iter().any(admits_empty))
}

/// Every query parameter of the document sent with an empty value (`?state=`), over real HTTP:
/// where the document's schema admits `""` the API answers as if the parameter were left out,
/// and where it does not, the API refuses it with a 400 naming the parameter. The abuse run's
/// schemathesis (tests/abuse) found the document refusing `""` for the enum, boolean and
/// integer filters that the API treats as no filter (docs/api.md): the document was wrong.
#[tokio::test]
async fn an_empty_query_value_is_answered_as_the_document_says() {
    let app = crate::helpers::spawn_app().await;
    app.publish("iq2", "1.0.0", 1, &image(1000, 1)).await;
    let (status, rollout) = app
        .post(
            "/api/v1/rollouts",
            json!({"model": "iq2", "version": "1.0.0", "percent": 100}),
        )
        .await;
    assert_eq!(status, 201, "{rollout}");
    let rollout = rollout["id"].to_string();
    let (status, doc) = app.request(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let mut admitted = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for o in operations(&doc) {
        let path = o.path.replace("{id}", &rollout);
        for p in o.op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
        {
            let name = p["name"].as_str().unwrap();
            let method = Method::from_bytes(o.method.as_bytes()).unwrap();
            let token = Some(app.admin_token.as_str());
            let (without, plain) = app.request(method.clone(), &path, token, None).await;
            let (status, body) = app.request(method, &format!("{path}?{name}="), token, None).await;
            if admits_empty(&p["schema"]) {
                assert_eq!(
                    (status, without),
                    (200, 200),
                    "{} {path}?{name}= is admitted by the document: {body} (without it: {plain})",
                    o.method
                );
                admitted.insert(format!("{} {}", o.path, name));
            } else {
                crate::helpers::assert_client_error(status, &body, &format!("{path}?{name}="));
                assert_eq!(status, 400, "{} {path}?{name}=: {body}", o.method);
                let error = body["error"].as_str().unwrap_or_default();
                assert!(
                    error.contains(name),
                    "{path}?{name}=: the 400 names the parameter: {error}"
                );
                refused.insert(name.to_owned());
            }
        }
    }
    // The filters that found the document wrong are among the admitted ones; what refuses ""
    // is what docs/api.md says refuses it.
    for want in [
        "/api/v1/rollouts state",
        "/api/v1/rollouts/{id}/devices state",
        "/api/v1/downloads outcome",
        "/api/v1/audit action",
        "/api/v1/devices enabled",
        "/api/v1/fleet stale_days",
    ] {
        assert!(admitted.contains(want), "{want} admitted: {admitted:?}");
    }
    assert_eq!(
        refused.into_iter().collect::<Vec<_>>(),
        ["chain", "format", "limit"],
        "the parameters that refuse an empty value"
    );
}
