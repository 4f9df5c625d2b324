//! `/healthz` (the FTPS listener accepts and the database answers) and `/metrics`
//! (Prometheus text: fwdist's families and libunftp's). Neither needs a token.
//!
//! The FTPS check connects to the control port from an address it announced first
//! ([`crate::ftps::HealthProbes`]): the accept loop answers it `220` before any session limit,
//! so a server whose local address has all its sessions open is still reported healthy.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpSocket;

use crate::ftps::HealthProbes;

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
    ftp_probe(st.ftp_addr, &st.ftps_probes)
        .await
        .map_err(|e| ApiError::Unavailable(format!("ftps: {e}")))?;
    Ok(axum::Json(serde_json::json!({ "status": "ok" })))
}

/// Connects to the control port from an announced local address and expects `220`.
async fn ftp_probe(mut addr: std::net::SocketAddr, probes: &Arc<HealthProbes>) -> Result<(), String> {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let probe = async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| e.to_string())?;
        let from = SocketAddr::new(
            if addr.ip().is_loopback() {
                addr.ip()
            } else if addr.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            0,
        );
        socket.bind(from).map_err(|e| e.to_string())?;
        let mut local = socket.local_addr().map_err(|e| e.to_string())?;
        if local.ip().is_unspecified() {
            // The kernel picks the source at connect; the accept loop will see that one.
            local.set_ip(addr.ip());
        }
        let _guard = probes.announce(local);
        let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if !line.starts_with("220") {
            return Err(format!("unexpected answer {:?}", line.trim_end()));
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .map_err(|_| "no greeting within 3 s".to_owned())?
}

async fn metrics(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // Stored state is read when scraped: what the database says, not a counter that can drift.
    for (state, n) in crate::services::rollouts::state_counts(&st.db).await? {
        st.metrics.rollouts.with_label_values(&[state]).set(n);
    }
    let (content_type, body) = st.metrics.render().map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(([(header::CONTENT_TYPE, content_type)], body))
}
