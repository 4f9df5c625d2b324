//! `/releases`: upload (multipart, streamed to disk while hashing), list, show, yank.

use axum::Json;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use super::auth::{Admin, Authorized, Publisher, Viewer};
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::openapi::{ModelName, VersionName};
use super::{AppState, Listing, PageQuery, filter_model};
use crate::db::releases::ReleaseRow;
use crate::domain::{Model, Version, format_ms};
use crate::services::publish::{Published, Staged, StagedImage};
use fwdist_release::manifest::MAX_MANIFEST_BYTES;

pub fn router(max_image_bytes: u64) -> OpenApiRouter<AppState> {
    let upload_limit = usize::try_from(max_image_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    OpenApiRouter::default()
        .routes(routes!(publish_release).layer(DefaultBodyLimit::max(upload_limit)))
        .routes(routes!(list_releases))
        .routes(routes!(show_release))
        .routes(routes!(yank_release))
}

/// A published release. `GET /releases/{model}/{version}`, uploads and yanks add
/// `manifest`, `manifest_raw` and `signature`; lists leave them out.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Release)]
pub struct ReleaseView {
    pub model: String,
    pub version: String,
    /// Grows with every release of a model (an IQ refuses a lower one).
    pub sequence: u64,
    pub file: String,
    pub size: u64,
    /// 64 lowercase hex digits.
    pub sha256: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// A yanked release is served to no one.
    pub yanked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime, required = false)]
    pub yanked_at: Option<String>,
    /// `manifest.json` as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub manifest: Option<serde_json::Value>,
    /// `manifest.json` exactly as signed (the signature covers these bytes, not `manifest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub manifest_raw: Option<String>,
    /// The `manifest.json.sig` document as uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub signature: Option<serde_json::Value>,
}

/// The three parts of a release upload (`fwdist sign` writes the first two beside the
/// image).
#[derive(ToSchema)]
#[allow(dead_code)] // describes the multipart body `read_parts` streams
struct ReleaseUpload {
    /// `manifest.json`, exactly as signed (at most 64 KiB).
    #[schema(value_type = String, format = Binary)]
    manifest: Vec<u8>,
    /// `manifest.json.sig` (at most 64 KiB).
    #[schema(value_type = String, format = Binary)]
    signature: Vec<u8>,
    /// The firmware image the manifest names.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
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

/// Publish a release
///
/// A multipart upload of the signed manifest, its signature and the image; the image is
/// streamed to disk while hashed. The same bytes again answer 200 (idempotent).
#[utoipa::path(
    post,
    path = "/releases",
    request_body(content = ReleaseUpload, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Published.", body = ReleaseView),
        (status = 200, description = "Already published with these very bytes.", body = ReleaseView),
        (status = 400, description = "A part missing, unknown or given twice, or a malformed multipart body.", body = ErrorBody),
        (status = 409, description = "This model and version were published with other bytes.", body = ErrorBody),
        (status = 413, description = "The image is larger than `store.max_image_bytes`, or the manifest or signature larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `multipart/form-data` with a boundary.", body = ErrorBody),
        (status = 422, description = "A bad signature, an untrusted key, a size or sha256 that does not match the image, or a sequence not above the model's last.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("publisher"))),
)]
async fn publish_release(
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only releases of this model.
    #[param(value_type = Option<ModelName>, inline)]
    model: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// List releases, newest first
#[utoipa::path(
    get,
    path = "/releases",
    params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of releases.", body = Listing<ReleaseView>)),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn list_releases(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<ReleaseView>>, ApiError> {
    let model = filter_model(q.model.as_deref())?;
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

/// `{model}` and `{version}` of the `/releases/{model}/{version}…` paths.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ReleasePath {
    /// `[a-z0-9][a-z0-9-]{0,31}`
    #[param(value_type = ModelName, inline)]
    model: String,
    /// A semantic version.
    #[param(value_type = VersionName, inline)]
    version: String,
}

/// Show a release with its manifest and signature
#[utoipa::path(
    get,
    path = "/releases/{model}/{version}",
    params(ReleasePath),
    responses(
        (status = 200, description = "The release.", body = ReleaseView),
        (status = 404, description = "No such release.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn show_release(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath(ReleasePath { model, version }): ApiPath<ReleasePath>,
) -> Result<Json<ReleaseView>, ApiError> {
    let (m, v) = parse_key(&model, &version)?;
    let r = st
        .db
        .release(&m, &v)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no release {m} {v}")))?;
    Ok(Json(ReleaseView::new(&r, true)))
}

/// Yank a release
///
/// It is served to no one any more: it leaves every device's tree and every rollout's
/// target at once. Yanking again changes nothing.
#[utoipa::path(
    post,
    path = "/releases/{model}/{version}/yank",
    params(ReleasePath),
    responses(
        (status = 200, description = "Yanked.", body = ReleaseView),
        (status = 404, description = "No such release.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn yank_release(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(ReleasePath { model, version }): ApiPath<ReleasePath>,
) -> Result<Json<ReleaseView>, ApiError> {
    let (m, v) = parse_key(&model, &version)?;
    let r = st.services.publish.yank(&m, &v, &who.token.name).await?;
    Ok(Json(ReleaseView::new(&r, true)))
}
