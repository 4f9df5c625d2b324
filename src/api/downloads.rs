//! `/downloads`: download records (SPEC §5), newest first, filtered and paginated.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Authorized, Viewer};
use super::error::{ApiError, ApiQuery};
use super::{AppState, Listing, PageQuery};
use crate::db::downloads::{DownloadFilter, DownloadRecord};
use crate::domain::{DeviceId, Model, Outcome, Version, format_ms};

pub fn router() -> Router<AppState> {
    Router::new().route("/downloads", get(list))
}

/// A record exactly as SPEC §5 shows it.
#[derive(Debug, Serialize)]
pub struct DownloadView {
    id: i64,
    device: DeviceId,
    model: String,
    version: String,
    file: String,
    offset: u64,
    bytes: u64,
    size: u64,
    outcome: Outcome,
    started_at: String,
    finished_at: String,
    client_ip: String,
    data_port: Option<u16>,
    node: String,
}

impl DownloadView {
    pub fn new((id, r): &(i64, DownloadRecord)) -> Self {
        DownloadView {
            id: *id,
            device: r.device,
            model: r.model.to_string(),
            version: r.version.to_string(),
            file: r.file.clone(),
            offset: r.offset,
            bytes: r.bytes,
            size: r.size,
            outcome: r.outcome,
            started_at: format_ms(r.started_at),
            finished_at: format_ms(r.finished_at),
            client_ip: r.client_ip.clone(),
            data_port: r.data_port,
            node: r.node.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    device: Option<String>,
    model: Option<String>,
    version: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn list(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<DownloadView>>, ApiError> {
    let filter = DownloadFilter {
        device: q
            .device
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(DeviceId::parse)
            .transpose()?,
        model: q
            .model
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(Model::parse)
            .transpose()?,
        version: q
            .version
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(Version::parse)
            .transpose()?,
    };
    let page = q.page.page()?;
    let rows = st.db.list_downloads(&filter, page).await?;
    let (rows, next) = page.finish(rows, |r| r.0);
    Ok(Json(Listing {
        items: rows.iter().map(DownloadView::new).collect(),
        next,
    }))
}
