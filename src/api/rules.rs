//! Request rules every route shares, read from the OpenAPI document so that behaviour and
//! document cannot drift apart:
//!
//! - a query parameter that the operation does not declare is refused with `400` naming it
//!   (SPEC §6 v2: filters never silently match everything), before the token is checked;
//! - a method the path does not have gets `405` with an `Allow` header and a JSON body;
//! - a path that is no route gets `404` `{"error": "no such endpoint"}`.
//!
//! The dashboard's pages (`ui.rs`) are not in the document; [`RouteTable::with_pages`] adds
//! them so that their 405 names `GET, HEAD` too.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::ParameterIn;

use super::error::{ApiError, ErrorBody};
use super::openapi::{PREFIX, operations};

/// For each path template of the document: its methods and the query parameters each takes.
#[derive(Debug, Default)]
pub struct RouteTable {
    paths: BTreeMap<String, Vec<(Method, Vec<String>)>>,
}

impl RouteTable {
    pub fn new(doc: &OpenApi) -> Self {
        let paths = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = operations(item)
                    .map(|(method, op)| {
                        let names = op
                            .parameters
                            .iter()
                            .flatten()
                            .filter(|p| p.parameter_in == ParameterIn::Query)
                            .map(|p| p.name.clone())
                            .collect();
                        (method, names)
                    })
                    .collect();
                (path.clone(), methods)
            })
            .collect();
        RouteTable { paths }
    }

    /// Adds paths outside the document that answer `GET` (and `HEAD`) only, taking no query
    /// parameter rule: the dashboard's pages, so their 405 names what they allow.
    pub fn with_pages(mut self, pages: &[&str]) -> Self {
        for p in pages {
            self.paths
                .insert((*p).to_owned(), vec![(Method::GET, Vec::new())]);
        }
        self
    }

    /// The query parameters of (method, path template), `None` for no such operation.
    /// `HEAD` is `GET` without the body, as axum routes it.
    pub fn query_params(&self, method: &Method, path: &str) -> Option<&[String]> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.paths
            .get(path)?
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, names)| names.as_slice())
    }

    /// The methods a path template answers, `HEAD` after `GET` as axum adds it.
    pub fn methods(&self, path: &str) -> Vec<Method> {
        let mut out = Vec::new();
        for (m, _) in self.paths.get(path).into_iter().flatten() {
            out.push(m.clone());
            if m == Method::GET {
                out.push(Method::HEAD);
            }
        }
        out
    }
}

/// `route_layer` middleware: refuses a query parameter the operation does not declare.
/// Only under `/api/v1`: `/healthz` and `/metrics` belong to probes and scrapers.
pub async fn refuse_unknown_query(
    State(table): State<Arc<RouteTable>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    if let (Some(matched), Some(_)) = (&matched, req.uri().query())
        && matched.as_str().starts_with(PREFIX)
        && let Some(known) = table.query_params(req.method(), matched.as_str())
    {
        let given = match Query::<Vec<(String, String)>>::try_from_uri(req.uri()) {
            Ok(Query(pairs)) => pairs,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let mut unknown: Vec<&str> = Vec::new();
        for (name, _) in &given {
            if !known.contains(name) && !unknown.contains(&name.as_str()) {
                unknown.push(name);
            }
        }
        if !unknown.is_empty() {
            let quoted: Vec<String> = unknown.iter().map(|n| format!("{n:?}")).collect();
            let takes = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            let noun = if unknown.len() == 1 {
                "parameter"
            } else {
                "parameters"
            };
            return ApiError::BadRequest(format!(
                "unknown query {noun} {} ({} {} takes {takes})",
                quoted.join(", "),
                req.method(),
                matched.as_str(),
            ))
            .into_response();
        }
    }
    next.run(req).await
}

/// `405` for a method the path does not have: `Allow` and the error name the ones it has.
pub fn method_not_allowed(table: &RouteTable, method: &Method, matched: Option<&MatchedPath>) -> Response {
    let path = matched.map(MatchedPath::as_str).unwrap_or_default();
    let allowed: Vec<String> = table.methods(path).iter().map(ToString::to_string).collect();
    let allow = allowed.join(", ");
    let body = ErrorBody {
        error: format!("method {method} is not allowed on {path}; allowed: {allow}"),
    };
    let mut resp = (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

/// The fallback of the whole router.
pub async fn no_such_endpoint() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}
