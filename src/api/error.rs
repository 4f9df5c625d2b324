//! One error type for the admin API: every failure becomes `{"error": "..."}` with a 4xx for
//! caller mistakes and a 5xx only for server faults (whose details are logged, not returned).

use axum::Json;
use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::db::DbError;
use crate::domain::{InvalidInput, Role};
use crate::services::ServiceError;
use crate::services::publish::{PublishError, StoreError};

/// The body of every error answer: `{"error": "..."}` (its OpenAPI schema is `Error`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, in words, naming the parameter or field at fault.
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this needs the {} role", .0.as_str())]
    Forbidden(Role),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "admin API request failed");
        }
        let status = self.status();
        let body = ErrorBody {
            error: self.to_string(),
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        ApiError::Internal(Box::new(e))
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::Unprocessable(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge(_) => ApiError::PayloadTooLarge(e.to_string()),
            StoreError::Exists(m) => ApiError::Conflict(m),
            StoreError::Io { .. } | StoreError::Missing(_) => ApiError::Internal(Box::new(e)),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => ApiError::Unprocessable(m),
            ServiceError::NotFound(m) => ApiError::NotFound(m),
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::Db(d) => d.into(),
            ServiceError::Internal(m) => ApiError::Internal(m.into()),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Rejected(m) => ApiError::Unprocessable(m),
            PublishError::Conflict(m) => ApiError::Conflict(m),
            PublishError::Store(s) => s.into(),
            PublishError::Db(d) => d.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let msg = r.body_text();
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(msg),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(msg),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(msg),
            _ => ApiError::BadRequest(msg),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let msg = r.body_text();
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(msg),
            _ => ApiError::BadRequest(msg),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(e.body_text())
        } else {
            ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
        }
    }
}

/// The one way `Multipart` refuses a request: no `multipart/form-data` content type with a
/// boundary, i.e. a body of another media type.
impl From<axum::extract::multipart::MultipartRejection> for ApiError {
    fn from(_: axum::extract::multipart::MultipartRejection) -> Self {
        ApiError::UnsupportedMediaType("expected Content-Type: multipart/form-data with a boundary".into())
    }
}

/// `Json<T>` whose rejections answer in our error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query<T>` whose rejections answer in our error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path<T>` whose rejections answer in our error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);
