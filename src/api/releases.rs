//! `/releases`: upload (multipart, streamed to disk while hashing), list, show, yank.

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Authorized, Publisher, Viewer};
use super::error::{ApiError, ApiPath, ApiQuery};
use super::{AppState, Listing, PageQuery};
use crate::db::releases::ReleaseRow;
use crate::domain::{Model, Version, format_ms};
use crate::services::publish::{Published, Staged, StagedImage};
use fwdist_release::manifest::MAX_MANIFEST_BYTES;

pub fn router(max_image_bytes: u64) -> Router<AppState> {
    let upload_limit = usize::try_from(max_image_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    Router::new()
        .route(
            "/releases",
            post(upload).layer(DefaultBodyLimit::max(upload_limit)).get(list),
        )
        .route("/releases/{model}/{version}", get(show))
        .route("/releases/{model}/{version}/yank", post(yank))
}

#[derive(Debug, Serialize)]
pub struct ReleaseView {
    pub model: String,
    pub version: String,
    pub sequence: u64,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub created_at: String,
    pub yanked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yanked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<serde_json::Value>,
    /// `manifest.json` exactly as signed (the signature covers these bytes, not `manifest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_raw: Option<String>,
    /// The `manifest.json.sig` document as uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<serde_json::Value>,
}

impl ReleaseView {
    pub fn new(r: &ReleaseRow, with_manifest: bool) -> Self {
        ReleaseView {
            model: r.model.to_string(),
            version: r.version.to_string(),
            sequence: r.sequence,
            file: r.file.clone(),
            size: r.size,
            sha256: r.sha256.to_string(),
            created_at: format_ms(r.created_at),
            yanked: r.yanked_at.is_some(),
            yanked_at: r.yanked_at.map(format_ms),
            manifest: with_manifest
                .then(|| serde_json::from_slice(&r.manifest).ok())
                .flatten(),
            manifest_raw: with_manifest
                .then(|| String::from_utf8(r.manifest.clone()).ok())
                .flatten(),
            signature: with_manifest
                .then(|| serde_json::from_slice(&r.signature).ok())
                .flatten(),
        }
    }
}

/// Parts received so far; removes a staged image if the upload fails.
#[derive(Default)]
struct Parts {
    manifest: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
    image: Option<StagedImage>,
}

async fn upload(
    who: Authorized<Publisher>,
    State(st): State<AppState>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<ReleaseView>), ApiError> {
    let mut multipart = multipart?;
    let mut parts = Parts::default();
    if let Err(e) = read_parts(&st, &mut multipart, &mut parts).await {
        if let Some(img) = parts.image.take() {
            img.abandon().await;
        }
        return Err(e);
    }
    let missing = |n: &str| ApiError::BadRequest(format!("multipart part {n:?} is missing"));
    let (manifest, signature, image) = match (parts.manifest, parts.signature, parts.image) {
        (Some(m), Some(s), Some(i)) => (m, s, i),
        (m, s, i) => {
            let name = if m.is_none() {
                "manifest"
            } else if s.is_none() {
                "signature"
            } else {
                "image"
            };
            if let Some(i) = i {
                i.abandon().await;
            }
            return Err(missing(name));
        }
    };
    match st
        .services
        .publish
        .publish(&manifest, &signature, image, &who.token.name)
        .await?
    {
        Published::Created(r) => Ok((StatusCode::CREATED, Json(ReleaseView::new(&r, true)))),
        Published::Unchanged(r) => Ok((StatusCode::OK, Json(ReleaseView::new(&r, true)))),
    }
}

async fn read_parts(st: &AppState, mp: &mut Multipart, parts: &mut Parts) -> Result<(), ApiError> {
    while let Some(mut field) = mp.next_field().await? {
        let name = field.name().unwrap_or_default().to_owned();
        let slot = match name.as_str() {
            "manifest" => &mut parts.manifest,
            "signature" => &mut parts.signature,
            "image" => {
                if parts.image.is_some() {
                    return Err(ApiError::BadRequest(
                        "multipart part \"image\" given twice".into(),
                    ));
                }
                let mut staged = st.services.publish.stage().await?;
                match stream_into(&mut field, &mut staged).await {
                    Ok(()) => parts.image = Some(staged.finish().await?),
                    Err(e) => {
                        staged.abandon().await;
                        return Err(e);
                    }
                }
                continue;
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unexpected multipart part {other:?}: expected manifest, signature, image"
                )));
            }
        };
        if slot.is_some() {
            return Err(ApiError::BadRequest(format!(
                "multipart part {name:?} given twice"
            )));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = field.chunk().await? {
            if buf.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(ApiError::PayloadTooLarge(format!(
                    "{name} is larger than {MAX_MANIFEST_BYTES} bytes"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        *slot = Some(buf);
    }
    Ok(())
}

async fn stream_into(
    field: &mut axum::extract::multipart::Field<'_>,
    staged: &mut Staged,
) -> Result<(), ApiError> {
    while let Some(chunk) = field.chunk().await? {
        staged.write(&chunk).await?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    model: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn list(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<ReleaseView>>, ApiError> {
    let model = q.model.as_deref().map(Model::parse).transpose()?;
    let page = q.page.page()?;
    let rows = st.db.list_releases(model.as_ref(), page).await?;
    let (rows, next) = page.finish(rows, |r| r.id);
    Ok(Json(Listing {
        items: rows.iter().map(|r| ReleaseView::new(r, false)).collect(),
        next,
    }))
}

fn parse_key(model: &str, version: &str) -> Result<(Model, Version), ApiError> {
    let not_found = || ApiError::NotFound(format!("no release {model} {version}"));
    Ok((
        Model::parse(model).map_err(|_| not_found())?,
        Version::parse(version).map_err(|_| not_found())?,
    ))
}

async fn show(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath((model, version)): ApiPath<(String, String)>,
) -> Result<Json<ReleaseView>, ApiError> {
    let (m, v) = parse_key(&model, &version)?;
    let r = st
        .db
        .release(&m, &v)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no release {m} {v}")))?;
    Ok(Json(ReleaseView::new(&r, true)))
}

async fn yank(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath((model, version)): ApiPath<(String, String)>,
) -> Result<Json<ReleaseView>, ApiError> {
    let (m, v) = parse_key(&model, &version)?;
    let r = st.services.publish.yank(&m, &v, &who.token.name).await?;
    Ok(Json(ReleaseView::new(&r, true)))
}
