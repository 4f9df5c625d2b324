//! `/downloads`: download records (SPEC §5), newest first, filtered and paginated.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Authorized, Viewer};
use super::error::{ApiError, ApiQuery};
use super::openapi::{DeviceIdSchema, MacAddress, ModelName, VersionName};
use super::{AppState, Listing, PageQuery, filter, filter_model};
use crate::db::downloads::{DownloadFilter, DownloadRecord};
use crate::domain::{DeviceId, InvalidInput, Outcome, Version, format_ms};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list_downloads))
}

/// A download record, exactly as SPEC §5 shows it: one `RETR` by a device.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Download)]
pub struct DownloadView {
    id: i64,
    #[schema(value_type = DeviceIdSchema)]
    device: DeviceId,
    model: String,
    version: String,
    file: String,
    /// The start offset (`REST`).
    offset: u64,
    /// Bytes the IQ acknowledged (within 64 KiB for an aborted one).
    bytes: u64,
    /// The file's size.
    size: u64,
    outcome: Outcome,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    finished_at: String,
    client_ip: String,
    /// The passive data port used.
    #[schema(required = true)]
    data_port: Option<u16>,
    /// The server node that served it.
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this device's records (any MAC form).
    #[param(value_type = Option<MacAddress>, inline)]
    device: Option<String>,
    /// Only records of this model.
    #[param(value_type = Option<ModelName>, inline)]
    model: Option<String>,
    /// Only records of this version.
    #[param(value_type = Option<VersionName>, inline)]
    version: Option<String>,
    /// Only `complete` or only `aborted` records.
    #[param(value_type = Option<Outcome>, inline)]
    outcome: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

fn parse_outcome(s: &str) -> Result<Outcome, InvalidInput> {
    [Outcome::Complete, Outcome::Aborted]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| InvalidInput(format!("invalid outcome {s:?}: expected complete or aborted")))
}

/// List download records, newest first
///
/// A deleted device's records stay listed.
#[utoipa::path(
    get,
    path = "/downloads",
    params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of records.", body = Listing<DownloadView>)),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn list_downloads(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<DownloadView>>, ApiError> {
    let filter = DownloadFilter {
        device: filter(q.device.as_deref(), DeviceId::parse)?,
        model: filter_model(q.model.as_deref())?,
        version: filter(q.version.as_deref(), Version::parse)?,
        outcome: filter(q.outcome.as_deref(), parse_outcome)?,
    };
    let page = q.page.page()?;
    let rows = st.db.list_downloads(&filter, page).await?;
    let (rows, next) = page.finish(rows, |r| r.0);
    Ok(Json(Listing {
        items: rows.iter().map(DownloadView::new).collect(),
        next,
    }))
}
