//! `/rollouts`: create (devices, percent or phases, labels, thresholds, schedule), change
//! (percent, phase, state, thresholds), show with status counts and per-state counts, and
//! the devices a rollout selects with their state (SPEC §6, §8).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Authorized, Viewer};
use super::downloads::DownloadView;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::openapi::{DeviceIdSchema, MacAddress, ModelName, VersionName};
use super::reports::ReportView;
use super::{AppState, Listing, PageQuery, filter, filter_model, parse_time};
use crate::db::rollouts::RolloutRow;
use crate::domain::{DeviceId, MemberState, RolloutState, Version, format_ms, now_ms};
use crate::services::rollouts::{self, States, Status, shown_state};
use crate::services::targeting::policy;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_rollout, list_rollouts))
        .routes(routes!(show_rollout, update_rollout))
        .routes(routes!(list_rollout_devices))
}

/// A rollout's state as answers show it: `scheduled` is an active rollout whose `start_at`
/// is ahead.
const SHOWN_STATES: [&str; 4] = ["scheduled", "active", "paused", "aborted"];

/// The schema of a rollout's shown state.
struct ShownState;

impl utoipa::PartialSchema for ShownState {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "scheduled (selects nobody until start_at), active, paused (selects nobody; \
                 paused_reason says why when it paused itself) or aborted (for good).",
            ))
            .enum_values(Some(SHOWN_STATES))
            .into()
    }
}
impl ToSchema for ShownState {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("RolloutState")
    }
}

/// A rollout to create (SPEC §6, §8). Give `percent`, `phases` or `devices`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRollout {
    #[schema(value_type = ModelName)]
    model: String,
    /// A published, not yanked release of `model`.
    #[schema(value_type = VersionName)]
    version: String,
    /// 0-100: the share of eligible devices selected (by a stable hash of rollout and
    /// device). Not with `phases`.
    #[schema(minimum = 0, maximum = 100)]
    percent: Option<f64>,
    /// Devices selected whatever the percent (at most 10000).
    #[schema(value_type = Option<Vec<MacAddress>>)]
    devices: Option<Vec<String>>,
    /// Only devices carrying all of these labels are eligible.
    #[serde(default)]
    labels: Vec<String>,
    /// Strictly increasing percents, each in (0, 100]; the rollout starts at phase 0.
    phases: Option<Vec<f64>>,
    /// 0-1, default 0.5: the fraction of selected devices `installed` that opens the next
    /// phase.
    #[schema(minimum = 0, maximum = 1)]
    success_threshold: Option<f64>,
    /// 0-1, default 0.1: the fraction of selected devices `failed` that pauses the rollout.
    #[schema(minimum = 0, maximum = 1)]
    failure_threshold: Option<f64>,
    /// Default 0: a phase stays open at least this long (bake time).
    min_phase_secs: Option<u64>,
    /// The rollout is `scheduled`, selecting nobody, until then.
    #[schema(format = DateTime)]
    start_at: Option<String>,
}

/// What to change in a rollout; give at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RolloutChange)]
struct Change {
    /// Not on a phased rollout (422).
    #[schema(minimum = 0, maximum = 100)]
    percent: Option<f64>,
    /// `active` (resumes a paused rollout), `paused` or `aborted`; an aborted rollout stays
    /// aborted (409).
    #[schema(value_type = Option<String>)]
    state: Option<String>,
    /// Open phase k now, bake time or not; only forward (a lower k: 409).
    phase: Option<usize>,
    #[schema(minimum = 0, maximum = 1)]
    success_threshold: Option<f64>,
    #[schema(minimum = 0, maximum = 1)]
    failure_threshold: Option<f64>,
    min_phase_secs: Option<u64>,
}

/// A rollout with the counts of its current selection.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Rollout)]
struct RolloutView {
    id: i64,
    model: String,
    version: String,
    /// The current phase's percent.
    percent: f64,
    #[schema(value_type = Vec<DeviceIdSchema>)]
    devices: Vec<DeviceId>,
    labels: Vec<String>,
    /// Null without phases.
    #[schema(required = true)]
    phases: Option<Vec<f64>>,
    /// The current phase's index (null without phases).
    #[schema(required = true)]
    phase: Option<usize>,
    success_threshold: f64,
    failure_threshold: f64,
    min_phase_secs: u64,
    /// Null: not scheduled.
    #[schema(format = DateTime, required = true)]
    start_at: Option<String>,
    #[schema(value_type = ShownState)]
    state: &'static str,
    /// Why it paused itself, in words with the counts (null unless paused).
    #[schema(required = true)]
    paused_reason: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    status: StatusView,
}

/// The counts of a rollout's current selection (whatever its state; a scheduled one has
/// `targeted` 0).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RolloutStatus)]
struct StatusView {
    /// Devices selected now.
    targeted: u64,
    /// Of those, devices that fetched image bytes.
    started: u64,
    /// Devices with a complete image download.
    completed: u64,
    /// Devices whose every image download was aborted.
    aborted_only: u64,
    states: StatesView,
}

/// The selected devices per state; they add up to `targeted`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RolloutStates)]
struct StatesView {
    pending: u64,
    downloading: u64,
    downloaded: u64,
    installed: u64,
    failed: u64,
}

impl StatusView {
    fn new(s: Status) -> Self {
        // Destructured whole: a new count cannot be left out of the answer.
        let Status {
            targeted,
            started,
            completed,
            aborted_only,
            states,
        } = s;
        let States {
            pending,
            downloading,
            downloaded,
            installed,
            failed,
        } = states;
        StatusView {
            targeted,
            started,
            completed,
            aborted_only,
            states: StatesView {
                pending,
                downloading,
                downloaded,
                installed,
                failed,
            },
        }
    }
}

fn view(r: RolloutRow, status: Status) -> RolloutView {
    RolloutView {
        state: shown_state(&r, now_ms()),
        id: r.id,
        model: r.model.to_string(),
        version: r.version.to_string(),
        percent: policy::bp_to_percent(r.percent_bp),
        devices: r.devices,
        labels: r.labels,
        phases: r
            .phases
            .map(|p| p.into_iter().map(policy::bp_to_percent).collect()),
        phase: r.phase,
        success_threshold: f64::from(r.success_ppm) / 1e6,
        failure_threshold: f64::from(r.failure_ppm) / 1e6,
        min_phase_secs: r.min_phase_secs,
        start_at: r.start_at.map(format_ms),
        paused_reason: r.paused_reason,
        created_at: format_ms(r.created_at),
        updated_at: format_ms(r.updated_at),
        status: StatusView::new(status),
    }
}

async fn one(st: &AppState, r: RolloutRow) -> Result<RolloutView, ApiError> {
    let status = st.services.rollouts.status(&r).await?;
    Ok(view(r, status))
}

/// Create a rollout
#[utoipa::path(
    post,
    path = "/rollouts",
    request_body = NewRollout,
    responses(
        (status = 201, description = "Created.", body = RolloutView),
        (status = 413, description = "The body is larger than 256 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "A rule is broken: no such or a yanked release, an unknown device or one of another model, a percent, phase or threshold out of range, or a field missing, unknown or invalid (the error says which).", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn create_rollout(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiJson(body): ApiJson<NewRollout>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    let devices = match &body.devices {
        // Counted before parsing, so a huge list is refused without parsing it.
        Some(raw) if raw.len() > rollouts::MAX_LISTED => {
            return Err(ApiError::Unprocessable(format!(
                "at most {} devices per rollout",
                rollouts::MAX_LISTED
            )));
        }
        Some(raw) => Some(
            raw.iter()
                .map(|s| DeviceId::parse(s))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let new = rollouts::NewRollout {
        model: Some(crate::domain::Model::parse(&body.model)?),
        version: Some(Version::parse(&body.version)?),
        percent: body.percent,
        devices,
        labels: body.labels,
        phases: body.phases,
        success_threshold: body.success_threshold,
        failure_threshold: body.failure_threshold,
        min_phase_secs: body.min_phase_secs,
        start_at: body
            .start_at
            .as_deref()
            .map(|s| parse_time("start_at", s))
            .transpose()?,
    };
    let row = st.services.rollouts.create(&new, &who.token.name).await?;
    Ok((StatusCode::CREATED, Json(one(&st, row).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only rollouts of this model.
    #[param(value_type = Option<ModelName>, inline)]
    model: Option<String>,
    /// Only rollouts in this state (as shown).
    #[param(value_type = Option<ShownState>, inline)]
    state: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// List rollouts, newest first
#[utoipa::path(
    get,
    path = "/rollouts",
    params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of rollouts.", body = Listing<RolloutView>)),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn list_rollouts(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<RolloutView>>, ApiError> {
    let page = q.page.page()?;
    let model = filter_model(q.model.as_deref())?;
    // `state` is the state as shown: `scheduled` is a stored `active` whose start is ahead.
    let shown = q.state.as_deref().filter(|s| !s.is_empty());
    let stored = match shown {
        None => None,
        Some("scheduled") => Some(RolloutState::Active),
        Some(s) => Some(RolloutState::parse(s).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid state {s:?}: expected scheduled, active, paused or aborted"
            ))
        })?),
    };
    let rows = st.services.rollouts.list(model.as_ref(), stored, page).await?;
    let (mut rows, next) = page.finish(rows, |r| r.id);
    if let Some(want) = shown {
        let now = now_ms();
        rows.retain(|r| shown_state(r, now) == want);
    }
    let statuses = st.services.rollouts.statuses(&rows).await?;
    let items = rows.into_iter().zip(statuses).map(|(r, s)| view(r, s)).collect();
    Ok(Json(Listing { items, next }))
}

/// `{id}` of the `/rollouts/{id}…` paths.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct RolloutPath {
    /// The rollout's id.
    #[param(value_type = i64, minimum = 1)]
    id: String,
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {s}")))
}

/// Show a rollout with its status counts
#[utoipa::path(
    get,
    path = "/rollouts/{id}",
    params(RolloutPath),
    responses(
        (status = 200, description = "The rollout.", body = RolloutView),
        (status = 404, description = "No such rollout.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn show_rollout(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath(RolloutPath { id }): ApiPath<RolloutPath>,
) -> Result<Json<RolloutView>, ApiError> {
    let r = st.services.rollouts.get(parse_id(&id)?).await?;
    Ok(Json(one(&st, r).await?))
}

/// Change a rollout
///
/// Its percent, phase, state or thresholds. Resuming a paused rollout whose failures are
/// still over its threshold pauses it again at once, unless the same change raised the
/// threshold.
#[utoipa::path(
    patch,
    path = "/rollouts/{id}",
    params(RolloutPath),
    request_body = Change,
    responses(
        (status = 200, description = "Changed.", body = RolloutView),
        (status = 404, description = "No such rollout.", body = ErrorBody),
        (status = 409, description = "The rollout is aborted, or the phase is not ahead of the current one.", body = ErrorBody),
        (status = 413, description = "The body is larger than 256 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "Nothing to change, a value out of range, a percent on a phased rollout, or a field unknown or invalid.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn update_rollout(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(RolloutPath { id }): ApiPath<RolloutPath>,
    ApiJson(change): ApiJson<Change>,
) -> Result<Json<RolloutView>, ApiError> {
    let id = parse_id(&id)?;
    let change = rollouts::Change {
        percent: change.percent,
        state: change.state.as_deref().map(RolloutState::parse).transpose()?,
        phase: change.phase,
        success_threshold: change.success_threshold,
        failure_threshold: change.failure_threshold,
        min_phase_secs: change.min_phase_secs,
    };
    let r = st.services.rollouts.change(id, &change, &who.token.name).await?;
    Ok(Json(one(&st, r).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DevicesQuery {
    /// Only devices in this state.
    #[param(value_type = Option<MemberState>, inline)]
    state: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// A device a rollout selects, with its state in it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RolloutDevice)]
struct MemberView {
    #[schema(value_type = DeviceIdSchema)]
    device: DeviceId,
    state: MemberState,
    /// Its latest download record of this release's image.
    #[schema(required = true)]
    last_download: Option<DownloadView>,
    /// Its latest report for this version.
    #[schema(required = true)]
    last_report: Option<ReportView>,
}

/// List the devices a rollout selects now, with their state
#[utoipa::path(
    get,
    path = "/rollouts/{id}/devices",
    params(RolloutPath, DevicesQuery, PageQuery),
    responses(
        (status = 200, description = "A page of the selected devices.", body = Listing<MemberView>),
        (status = 404, description = "No such rollout.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn list_rollout_devices(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath(RolloutPath { id }): ApiPath<RolloutPath>,
    ApiQuery(q): ApiQuery<DevicesQuery>,
) -> Result<Json<Listing<MemberView>>, ApiError> {
    let id = parse_id(&id)?;
    let page = q.page.page()?;
    let state = filter(q.state.as_deref(), MemberState::parse)?;
    let rows = st.services.rollouts.members(id, state, page).await?;
    let (rows, next) = page.finish(rows, |m| m.id);
    let download_ids: Vec<i64> = rows.iter().filter_map(|m| m.last_download_id).collect();
    let report_ids: Vec<i64> = rows.iter().filter_map(|m| m.last_report_id).collect();
    let downloads = st.db.downloads_by_ids(&download_ids).await?;
    let reports = st.db.reports_by_ids(&report_ids).await?;
    let items = rows
        .into_iter()
        .map(|m| MemberView {
            device: m.device,
            state: m.state,
            last_download: m
                .last_download_id
                .and_then(|d| downloads.get(&d).map(|r| DownloadView::new(&(d, r.clone())))),
            last_report: m
                .last_report_id
                .and_then(|r| reports.get(&r))
                .map(ReportView::new),
        })
        .collect();
    Ok(Json(Listing { items, next }))
}
