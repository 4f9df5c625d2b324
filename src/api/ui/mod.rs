//! The admin dashboard (issue 13): one HTML page, one script and one stylesheet, embedded in
//! the binary and served by the admin listener at `/`, `/ui/app.js` and `/ui/app.css`. No
//! build step and nothing fetched from elsewhere: the script draws its charts as SVG and
//! talks only to `/api/v1` with the token the user typed (kept in `sessionStorage`).
//!
//! Every answer here carries a strict Content-Security-Policy (only this origin's script,
//! style and API; no inline script or style, no frames, no forms), `nosniff`, no referrer,
//! and an ETag with `Cache-Control: no-cache`, so a new binary's assets are used at once and
//! an unchanged one costs a 304. These routes are not part of the API: they are outside
//! `/api/v1`, not in the OpenAPI document, and answer `GET`/`HEAD` only ([`PAGES`] tells the
//! 405 rule so).

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::AppState;

/// The dashboard's paths (each answers GET and HEAD).
pub const PAGES: [&str; 3] = ["/", "/ui/app.js", "/ui/app.css"];

/// The policy of every dashboard answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

fn asset(body: &'static str, content_type: &'static str) -> Asset {
    let digest = Sha256::digest(body.as_bytes());
    Asset {
        body,
        content_type,
        etag: format!("\"{}\"", hex::encode(&digest[..12])),
    }
}

static ASSETS: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    [
        asset(INDEX, "text/html; charset=utf-8"),
        asset(SCRIPT, "text/javascript; charset=utf-8"),
        asset(STYLE, "text/css; charset=utf-8"),
    ]
});

pub fn router() -> Router<AppState> {
    Router::new()
        .route(PAGES[0], get(|h: HeaderMap| async move { serve(&ASSETS[0], &h) }))
        .route(PAGES[1], get(|h: HeaderMap| async move { serve(&ASSETS[1], &h) }))
        .route(PAGES[2], get(|h: HeaderMap| async move { serve(&ASSETS[2], &h) }))
}

fn serve(a: &Asset, req: &HeaderMap) -> Response {
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&a.etag) {
        h.insert(header::ETAG, v);
    }
    resp
}
