//! `/healthz` (FTPS greets and the database answers) and `/metrics` (Prometheus text).
//! Neither needs a token.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::AppState;
use super::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

async fn healthz(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    st.db
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
    ftp_probe(st.ftp_addr)
        .await
        .map_err(|e| ApiError::Unavailable(format!("ftps: {e}")))?;
    Ok(axum::Json(serde_json::json!({ "status": "ok" })))
}

/// Connects to the control port, expects a `220` greeting and says `QUIT`.
async fn ftp_probe(mut addr: std::net::SocketAddr) -> Result<(), String> {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let probe = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if !line.starts_with("220") {
            return Err(format!("unexpected greeting {:?}", line.trim_end()));
        }
        let _ = reader.get_mut().write_all(b"QUIT\r\n").await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .map_err(|_| "no greeting within 3 s".to_owned())?
}

async fn metrics() -> impl IntoResponse {
    use prometheus::Encoder as _;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, encoder.format_type().to_owned())], buf).into_response()
}
