//! Rollouts (SPEC §6, §8): creating one (explicit devices, percent or phases, label cohort,
//! thresholds, schedule), changing it, its status, each selected device's state, and the
//! automatic steps — advance when enough selected devices installed, pause when too many
//! failed — that [`Rollouts::step_all`] takes (the app runs it every second).
//!
//! The rules are pure functions here ([`next_standing`], [`decide`]); whom a rollout selects
//! is [`super::targeting::policy`]. Counts are kept by the database as records and reports
//! arrive (`db::members`), so nothing here scans the fleet after a rollout is created.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::targeting::policy;
use super::{ServiceError, ServiceResult};
use crate::db::audit::AuditEntry;
use crate::db::members::{Event, MemberRules, NewMember, Standing};
use crate::db::rollouts::{Expect, NewRolloutRow, RolloutRow, RolloutUpdate};
use crate::db::{Db, Page};
use crate::domain::{DeviceId, MemberState, Model, ReportOutcome, RolloutState, Version, now_ms};

/// Most devices one rollout may list explicitly.
pub const MAX_LISTED: usize = 100_000;
/// Longest bake time accepted: 30 days.
pub const MAX_PHASE_SECS: u64 = 30 * 24 * 3600;
const PPM: f64 = 1_000_000.0;

/// How a download or a report moves a device's standing: a report outranks downloads, and
/// the latest report wins.
pub fn next_standing(s: Standing, e: Event) -> Standing {
    match e {
        Event::Download { complete } => {
            let completed = s.completed || complete;
            let state = match s.state {
                MemberState::Installed | MemberState::Failed => s.state,
                _ if completed => MemberState::Downloaded,
                _ => MemberState::Downloading,
            };
            Standing {
                state,
                started: true,
                completed,
            }
        }
        Event::Report { outcome } => Standing {
            state: match outcome {
                ReportOutcome::Installed => MemberState::Installed,
                ReportOutcome::Failed => MemberState::Failed,
            },
            ..s
        },
    }
}

/// The rules `db` applies as records and reports arrive.
pub const RULES: MemberRules = MemberRules { next: next_standing };

/// A rollout to create; percents are 0–100, thresholds 0–1, `start_at` unix ms.
#[derive(Debug, Clone, Default)]
pub struct NewRollout {
    pub model: Option<Model>,
    pub version: Option<Version>,
    pub percent: Option<f64>,
    pub devices: Option<Vec<DeviceId>>,
    pub labels: Vec<String>,
    pub phases: Option<Vec<f64>>,
    pub success_threshold: Option<f64>,
    pub failure_threshold: Option<f64>,
    pub min_phase_secs: Option<u64>,
    pub start_at: Option<i64>,
}

/// A change to a rollout; at least one field.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub percent: Option<f64>,
    pub state: Option<RolloutState>,
    pub phase: Option<usize>,
    pub success_threshold: Option<f64>,
    pub failure_threshold: Option<f64>,
    pub min_phase_secs: Option<u64>,
}

/// The counts of a rollout's current selection (SPEC §6 and §8).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub targeted: u64,
    pub started: u64,
    pub completed: u64,
    pub aborted_only: u64,
    pub states: States,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct States {
    pub pending: u64,
    pub downloading: u64,
    pub downloaded: u64,
    pub installed: u64,
    pub failed: u64,
}

impl Status {
    pub fn from_totals(t: &HashMap<String, i64>) -> Status {
        let get = |k: &str| u64::try_from(t.get(k).copied().unwrap_or(0)).unwrap_or(0);
        let states = States {
            pending: get("pending"),
            downloading: get("downloading"),
            downloaded: get("downloaded"),
            installed: get("installed"),
            failed: get("failed"),
        };
        let targeted =
            states.pending + states.downloading + states.downloaded + states.installed + states.failed;
        let (started, completed) = (get("started"), get("completed"));
        Status {
            targeted,
            started,
            completed,
            aborted_only: started.saturating_sub(completed),
            states,
        }
    }
}

/// What the automatic steps do to an active rollout now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Open this phase.
    Advance(usize),
    /// Pause, with the reason in words.
    Pause(String),
}

fn pct(ppm: u32) -> String {
    let p = f64::from(ppm) / 10_000.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p}%")
    }
}

/// The automatic step for `r` (active, not scheduled) with its counts at `now`: pause when
/// `failed / selected ≥ failure_threshold`; else open the next phase when `installed /
/// selected ≥ success_threshold` and the phase has been open `min_phase_secs`. A phase that
/// selects no device has nothing to wait for.
pub fn decide(r: &RolloutRow, s: &Status, now: i64) -> Decision {
    if r.state != RolloutState::Active || r.start_at.is_some_and(|t| t > now) {
        return Decision::Nothing;
    }
    let selected = s.targeted;
    if selected > 0 && s.states.failed * 1_000_000 >= u64::from(r.failure_ppm) * selected {
        let share = s.states.failed as f64 * 100.0 / selected as f64;
        return Decision::Pause(format!(
            "failure threshold: {} of {selected} selected devices failed ({}% ≥ {})",
            s.states.failed,
            (share * 10.0).round() / 10.0,
            pct(r.failure_ppm)
        ));
    }
    let (Some(phases), Some(phase)) = (&r.phases, r.phase) else {
        return Decision::Nothing;
    };
    if phase + 1 >= phases.len() {
        return Decision::Nothing;
    }
    let baked = now.saturating_sub(r.phase_opened_at.unwrap_or(r.created_at))
        >= i64::try_from(r.min_phase_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let enough = selected == 0 || s.states.installed * 1_000_000 >= u64::from(r.success_ppm) * selected;
    if baked && enough {
        Decision::Advance(phase + 1)
    } else {
        Decision::Nothing
    }
}

/// `scheduled`, `active`, `paused` or `aborted` as shown: an active rollout whose start is
/// still ahead is scheduled.
pub fn shown_state(r: &RolloutRow, now: i64) -> &'static str {
    match r.state {
        RolloutState::Active if r.start_at.is_some_and(|t| t > now) => "scheduled",
        s => s.as_str(),
    }
}

/// Rollouts per shown state (`scheduled`, `active`, `paused`, `aborted`), for
/// `fwdist_rollouts`.
///
/// # Errors
/// Database failure.
pub async fn state_counts(db: &Db) -> ServiceResult<Vec<(&'static str, i64)>> {
    let mut out: Vec<(&'static str, i64)> = ["scheduled", "active", "paused", "aborted"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for (state, later, n) in db.rollout_state_counts(now_ms()).await? {
        let shown = match RolloutState::parse(&state)? {
            RolloutState::Active if later => "scheduled",
            s => s.as_str(),
        };
        if let Some(e) = out.iter_mut().find(|(s, _)| *s == shown) {
            e.1 += n;
        }
    }
    Ok(out)
}

fn threshold_ppm(name: &str, v: f64) -> ServiceResult<u32> {
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(ServiceError::Invalid(format!(
            "{name} must be between 0 and 1, got {v}"
        )));
    }
    // In range by the check above.
    Ok((v * PPM).round() as u32)
}

fn phases_bp(phases: &[f64]) -> ServiceResult<Vec<u16>> {
    if phases.is_empty() || phases.len() > 100 {
        return Err(ServiceError::Invalid("phases: give 1 to 100 percents".into()));
    }
    let bp: Vec<u16> = phases
        .iter()
        .map(|p| policy::percent_to_bp(*p))
        .collect::<Result<_, _>>()?;
    if bp[0] == 0 || bp.windows(2).any(|w| w[0] >= w[1]) {
        return Err(ServiceError::Invalid(
            "phases must be strictly increasing percents, each above 0 and at most 100".into(),
        ));
    }
    Ok(bp)
}

fn check_phase_secs(s: u64) -> ServiceResult<u64> {
    if s > MAX_PHASE_SECS {
        return Err(ServiceError::Invalid(format!(
            "min_phase_secs must be at most {MAX_PHASE_SECS} (30 days)"
        )));
    }
    Ok(s)
}

fn carries_all(device_labels: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| device_labels.contains(w))
}

/// A device's initial standing in a new rollout, from what it already did with the release.
fn initial_standing(
    progress: Option<&crate::db::rollouts::ImageProgress>,
    report: Option<ReportOutcome>,
) -> Standing {
    let mut s = Standing::PENDING;
    if let Some(p) = progress {
        s = next_standing(
            s,
            Event::Download {
                complete: p.completed,
            },
        );
    }
    if let Some(outcome) = report {
        s = next_standing(s, Event::Report { outcome });
    }
    s
}

/// A newly registered device: id, model, labels.
pub type Enrolled = (DeviceId, Model, Vec<String>);

#[derive(Debug, Clone)]
pub struct Rollouts {
    db: Db,
    /// Wakes the automatic steps early (a report arrived).
    poke: std::sync::Arc<tokio::sync::Notify>,
    /// The dashboard's progress samples, taken after each round of steps.
    samples: super::samples::Sampler,
}

impl Rollouts {
    pub fn new(db: Db) -> Self {
        Rollouts {
            samples: super::samples::Sampler::new(db.clone()),
            db,
            poke: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Wakes [`Rollouts::run_steps`] now.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// # Errors
    /// Neither percent, phases nor devices; percent with phases; a bad percent, phase list,
    /// threshold or bake time; too many devices; no such (or a yanked) release; a listed
    /// device that is unknown or of another model; database failure.
    pub async fn create(&self, r: &NewRollout, actor: &str) -> ServiceResult<RolloutRow> {
        let model = r
            .model
            .as_ref()
            .ok_or_else(|| ServiceError::Invalid("model is required".into()))?;
        let version = r
            .version
            .as_ref()
            .ok_or_else(|| ServiceError::Invalid("version is required".into()))?;
        if r.percent.is_none() && r.devices.is_none() && r.phases.is_none() {
            return Err(ServiceError::Invalid("give percent, phases or devices".into()));
        }
        if r.percent.is_some() && r.phases.is_some() {
            return Err(ServiceError::Invalid("give percent or phases, not both".into()));
        }
        let phases = r.phases.as_deref().map(phases_bp).transpose()?;
        let percent_bp = match (&phases, r.percent) {
            (Some(p), _) => p[0],
            (None, Some(p)) => policy::percent_to_bp(p)?,
            (None, None) => 0,
        };
        let success_ppm = threshold_ppm("success_threshold", r.success_threshold.unwrap_or(0.5))?;
        let failure_ppm = threshold_ppm("failure_threshold", r.failure_threshold.unwrap_or(0.1))?;
        let min_phase_secs = check_phase_secs(r.min_phase_secs.unwrap_or(0))?;
        super::devices::check_labels(&r.labels)?;
        let listed = r.devices.as_deref().unwrap_or_default();
        if listed.len() > MAX_LISTED {
            return Err(ServiceError::Invalid(format!(
                "at most {MAX_LISTED} devices per rollout"
            )));
        }
        let release = match self.db.release(model, version).await? {
            None => return Err(ServiceError::Invalid(format!("no release {model} {version}"))),
            Some(rel) if rel.yanked_at.is_some() => {
                return Err(ServiceError::Invalid(format!(
                    "release {model} {version} is yanked"
                )));
            }
            Some(rel) => rel,
        };
        // Listed devices: one batched lookup; each must exist and be of the model.
        let found: HashMap<DeviceId, (Model, Vec<String>)> = self
            .db
            .devices_by_ids(listed)
            .await?
            .into_iter()
            .map(|(d, m, l)| (d, (m, l)))
            .collect();
        for d in listed {
            match found.get(d) {
                None => return Err(ServiceError::Invalid(format!("no such device: {d}"))),
                Some((m, _)) if m != model => {
                    return Err(ServiceError::Invalid(format!(
                        "device {d} is a {m}, not a {model}"
                    )));
                }
                Some(_) => {}
            }
        }
        // The eligible devices (a cohort is narrowed by its first label in the query), and
        // the listed ones whatever their labels.
        let mut fleet = self
            .db
            .devices_of_model(model, r.labels.first().map(String::as_str))
            .await?;
        let in_fleet: HashSet<DeviceId> = fleet.iter().map(|(d, _)| *d).collect();
        fleet.extend(
            found
                .into_iter()
                .filter(|(d, _)| !in_fleet.contains(d))
                .map(|(d, (_, l))| (d, l)),
        );
        let progress = self.db.image_progress(model, version, &release.file).await?;
        let reports = self.db.latest_reports(model, version).await?;
        let listed_set: HashSet<DeviceId> = listed.iter().copied().collect();
        let labels = r.labels.clone();
        let members = move |id: i64| -> Vec<NewMember> {
            fleet
                .iter()
                .filter(|(d, l)| listed_set.contains(d) || carries_all(l, &labels))
                .map(|(d, _)| {
                    let report = reports.get(d);
                    NewMember {
                        device: *d,
                        bucket: if listed_set.contains(d) {
                            -1
                        } else {
                            i32::from(policy::bucket(id, d))
                        },
                        standing: initial_standing(progress.get(d), report.map(|r| r.1)),
                        last_download_id: progress.get(d).map(|p| p.last_id),
                        last_report_id: report.map(|r| r.0),
                    }
                })
                .collect()
        };
        let row = NewRolloutRow {
            model,
            version,
            percent_bp,
            listed,
            labels: &r.labels,
            phases: phases.as_deref(),
            success_ppm,
            failure_ppm,
            min_phase_secs,
            start_at: r.start_at,
        };
        let created = self.db.insert_rollout(&row, members).await?;
        self.db
            .append_audit(&AuditEntry {
                actor: actor.to_owned(),
                action: "rollout.create",
                target: format!("rollout/{}", created.id),
                detail: serde_json::json!({"model": model.as_str(), "version": version.as_str(),
                    "percent_bp": percent_bp, "phases": phases, "listed": listed.len(), "labels": r.labels}),
            })
            .await?;
        tracing::info!(rollout = created.id, model = %model, version = %version, percent_bp, listed = listed.len(), "rollout created");
        self.poke();
        Ok(created)
    }

    /// # Errors
    /// No such rollout.
    pub async fn get(&self, id: i64) -> ServiceResult<RolloutRow> {
        self.db
            .rollout(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no rollout {id}")))
    }

    /// Newest first, with one extra row for the caller's [`Page::finish`].
    ///
    /// # Errors
    /// Database failure.
    pub async fn list(
        &self,
        model: Option<&Model>,
        state: Option<RolloutState>,
        page: Page,
    ) -> ServiceResult<Vec<RolloutRow>> {
        Ok(self.db.list_rollouts(model, state, page).await?)
    }

    /// The status of each rollout (a few rows read per rollout, whatever the fleet).
    ///
    /// # Errors
    /// Database failure.
    pub async fn statuses(&self, rows: &[RolloutRow]) -> ServiceResult<Vec<Status>> {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let totals = self.db.rollout_totals(&ids).await?;
        let now = now_ms();
        Ok(rows
            .iter()
            .map(|r| match shown_state(r, now) {
                // A scheduled rollout selects nobody yet (SPEC §8: `targeted` 0).
                "scheduled" => Status::default(),
                _ => totals.get(&r.id).map(Status::from_totals).unwrap_or_default(),
            })
            .collect())
    }

    /// # Errors
    /// Database failure.
    pub async fn status(&self, r: &RolloutRow) -> ServiceResult<Status> {
        Ok(self
            .statuses(std::slice::from_ref(r))
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// # Errors
    /// An empty change; a bad value; `percent` on a phased rollout or `phase` on one without
    /// phases (422); a phase back (409); no such rollout; changing an aborted rollout (409).
    pub async fn change(&self, id: i64, c: &Change, actor: &str) -> ServiceResult<RolloutRow> {
        if c.percent.is_none()
            && c.state.is_none()
            && c.phase.is_none()
            && c.success_threshold.is_none()
            && c.failure_threshold.is_none()
            && c.min_phase_secs.is_none()
        {
            return Err(ServiceError::Invalid(
                "give percent, phase, state, success_threshold, failure_threshold and/or min_phase_secs"
                    .into(),
            ));
        }
        let current = self.get(id).await?;
        if current.state == RolloutState::Aborted && c.state != Some(RolloutState::Aborted) {
            return Err(ServiceError::Conflict(format!(
                "rollout {id} is aborted; create a new rollout instead"
            )));
        }
        let mut u = RolloutUpdate {
            state: c.state,
            success_ppm: c
                .success_threshold
                .map(|v| threshold_ppm("success_threshold", v))
                .transpose()?,
            failure_ppm: c
                .failure_threshold
                .map(|v| threshold_ppm("failure_threshold", v))
                .transpose()?,
            min_phase_secs: c.min_phase_secs.map(check_phase_secs).transpose()?,
            ..RolloutUpdate::default()
        };
        if let Some(p) = c.percent {
            if current.phases.is_some() {
                return Err(ServiceError::Invalid(
                    "this rollout has phases: change its phase, not its percent".into(),
                ));
            }
            u.percent_bp = Some(policy::percent_to_bp(p)?);
        }
        if let Some(k) = c.phase {
            let (Some(phases), Some(now_phase)) = (&current.phases, current.phase) else {
                return Err(ServiceError::Invalid("this rollout has no phases".into()));
            };
            if k >= phases.len() {
                return Err(ServiceError::Invalid(format!(
                    "phase {k} does not exist: this rollout has phases 0 to {}",
                    phases.len() - 1
                )));
            }
            if k < now_phase {
                return Err(ServiceError::Conflict(format!(
                    "rollout {id} is at phase {now_phase}; phases only go forward"
                )));
            }
            if k > now_phase {
                u.phase = Some(k);
                u.percent_bp = Some(phases[k]);
                u.phase_opened_at = Some(now_ms());
            }
        }
        match c.state {
            Some(RolloutState::Active) => u.paused_reason = Some(None),
            Some(RolloutState::Paused) if current.state != RolloutState::Paused => {
                u.paused_reason = Some(Some(format!("paused by {actor}")));
            }
            Some(RolloutState::Aborted) => u.paused_reason = Some(None),
            _ => {}
        }
        let audit = AuditEntry {
            actor: actor.to_owned(),
            action: "rollout.update",
            target: format!("rollout/{id}"),
            detail: serde_json::json!({"percent": c.percent, "state": c.state.map(RolloutState::as_str),
                "phase": c.phase, "success_threshold": c.success_threshold,
                "failure_threshold": c.failure_threshold, "min_phase_secs": c.min_phase_secs}),
        };
        if !self
            .db
            .update_rollout(id, &u, Expect::default(), Some(&audit))
            .await?
        {
            return Err(ServiceError::NotFound(format!("no rollout {id}")));
        }
        // A resumed rollout still over its failure threshold pauses again at once.
        let r = self.get(id).await?;
        self.step(&r, now_ms()).await?;
        let r = self.get(id).await?;
        tracing::info!(
            rollout = id,
            percent_bp = r.percent_bp,
            state = r.state.as_str(),
            "rollout changed"
        );
        Ok(r)
    }

    /// A page of the devices a rollout selects now, optionally of one state.
    ///
    /// # Errors
    /// No such rollout, database failure.
    pub async fn members(
        &self,
        id: i64,
        state: Option<MemberState>,
        page: Page,
    ) -> ServiceResult<Vec<crate::db::members::MemberRow>> {
        let r = self.get(id).await?;
        Ok(self.db.selected_members(id, r.percent_bp, state, page).await?)
    }

    /// Takes the automatic step one rollout needs now; returns what it did.
    async fn step(&self, r: &RolloutRow, now: i64) -> ServiceResult<Decision> {
        let status = self.status(r).await?;
        let decision = decide(r, &status, now);
        let expect = Expect {
            state: Some(RolloutState::Active),
            phase: r.phase,
        };
        let applied = match &decision {
            Decision::Nothing => false,
            Decision::Advance(k) => {
                let bp = r
                    .phases
                    .as_ref()
                    .and_then(|p| p.get(*k))
                    .copied()
                    .unwrap_or(r.percent_bp);
                let u = RolloutUpdate {
                    phase: Some(*k),
                    percent_bp: Some(bp),
                    phase_opened_at: Some(now),
                    ..RolloutUpdate::default()
                };
                let audit = AuditEntry {
                    actor: "fwdist".into(),
                    action: "rollout.advance",
                    target: format!("rollout/{}", r.id),
                    detail: serde_json::json!({"from_phase": r.phase, "to_phase": k, "percent": policy::bp_to_percent(bp),
                        "installed": status.states.installed, "selected": status.targeted}),
                };
                self.db.update_rollout(r.id, &u, expect, Some(&audit)).await?
            }
            Decision::Pause(reason) => {
                let u = RolloutUpdate {
                    state: Some(RolloutState::Paused),
                    paused_reason: Some(Some(reason.clone())),
                    ..RolloutUpdate::default()
                };
                let audit = AuditEntry {
                    actor: "fwdist".into(),
                    action: "rollout.pause",
                    target: format!("rollout/{}", r.id),
                    detail: serde_json::json!({"reason": reason, "failed": status.states.failed, "selected": status.targeted}),
                };
                self.db.update_rollout(r.id, &u, expect, Some(&audit)).await?
            }
        };
        if applied {
            tracing::info!(rollout = r.id, decision = ?decision, "rollout stepped automatically");
        }
        Ok(if applied { decision } else { Decision::Nothing })
    }

    /// Takes every active rollout's automatic step (reads a few rows per rollout).
    ///
    /// # Errors
    /// Database failure.
    pub async fn step_all(&self, now: i64) -> ServiceResult<()> {
        for r in self.db.rollouts_in_state(RolloutState::Active).await? {
            if r.members_ready {
                self.step(&r, now).await?;
            }
        }
        Ok(())
    }

    /// Samples the counts of every active or paused rollout for the dashboard's plot
    /// (`services::samples` decides which samples are written).
    ///
    /// # Errors
    /// Database failure.
    pub async fn sample_all(&self, now: i64) -> ServiceResult<()> {
        let mut rows = self.db.rollouts_in_state(RolloutState::Active).await?;
        rows.extend(self.db.rollouts_in_state(RolloutState::Paused).await?);
        let statuses = self.statuses(&rows).await?;
        self.samples.record(&rows, &statuses, now).await
    }

    /// The samples of rollout `id`, oldest first (the latest `limit`).
    ///
    /// # Errors
    /// No such rollout, database failure.
    pub async fn samples(
        &self,
        id: i64,
        limit: u32,
    ) -> ServiceResult<(RolloutRow, Vec<crate::db::samples::Sample>)> {
        let r = self.get(id).await?;
        let samples = self.db.samples(id, limit).await?;
        Ok((r, samples))
    }

    /// Runs the automatic steps every second, and at once when poked, until dropped; samples
    /// the counts after each round.
    pub async fn run_steps(self) {
        loop {
            if let Err(e) = self.step_all(now_ms()).await {
                tracing::error!(error = %e, "automatic rollout steps failed");
            }
            if let Err(e) = self.sample_all(now_ms()).await {
                tracing::error!(error = %e, "sampling rollout counts failed");
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.poke.notified()).await;
        }
    }

    /// Gives rollouts made before v2 their members (the stable buckets are computed here).
    ///
    /// # Errors
    /// Database failure.
    pub async fn backfill(&self) -> ServiceResult<()> {
        for r in self.db.rollouts_without_members().await? {
            let Some(release) = self.db.release(&r.model, &r.version).await? else {
                continue;
            };
            let progress = self
                .db
                .image_progress(&r.model, &r.version, &release.file)
                .await?;
            let reports = self.db.latest_reports(&r.model, &r.version).await?;
            let listed: HashSet<DeviceId> = r.devices.iter().copied().collect();
            let members: Vec<NewMember> = self
                .db
                .devices_of_model(&r.model, None)
                .await?
                .into_iter()
                .filter(|(d, l)| listed.contains(d) || carries_all(l, &r.labels))
                .map(|(d, _)| NewMember {
                    device: d,
                    bucket: if listed.contains(&d) {
                        -1
                    } else {
                        i32::from(policy::bucket(r.id, &d))
                    },
                    standing: initial_standing(progress.get(&d), reports.get(&d).map(|x| x.1)),
                    last_download_id: progress.get(&d).map(|p| p.last_id),
                    last_report_id: reports.get(&d).map(|x| x.0),
                })
                .collect();
            self.db.backfill_members(r.id, &members).await?;
            tracing::info!(rollout = r.id, members = members.len(), "rollout members made");
        }
        Ok(())
    }

    /// Makes a newly registered device a member of the open rollouts of its model whose
    /// labels it carries.
    ///
    /// # Errors
    /// Database failure.
    pub async fn enroll(&self, devices: &[Enrolled]) -> ServiceResult<()> {
        let mut by_model: HashMap<&Model, Vec<&Enrolled>> = HashMap::new();
        for d in devices {
            by_model.entry(&d.1).or_default().push(d);
        }
        for (model, devs) in by_model {
            for r in self.db.open_rollouts_of_model(model).await? {
                let members: Vec<NewMember> = devs
                    .iter()
                    .filter(|(_, _, labels)| carries_all(labels, &r.labels))
                    .map(|(d, _, _)| NewMember {
                        device: *d,
                        bucket: i32::from(policy::bucket(r.id, d)),
                        standing: Standing::PENDING,
                        last_download_id: None,
                        last_report_id: None,
                    })
                    .collect();
                if !members.is_empty() {
                    self.db.add_members(r.id, &members).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn st(state: MemberState, started: bool, completed: bool) -> Standing {
        Standing {
            state,
            started,
            completed,
        }
    }

    #[test]
    fn downloads_move_a_device_until_it_reports() {
        let s = next_standing(Standing::PENDING, Event::Download { complete: false });
        assert_eq!(s, st(MemberState::Downloading, true, false));
        let s = next_standing(s, Event::Download { complete: true });
        assert_eq!(s, st(MemberState::Downloaded, true, true));
        // A later cut download does not undo a complete one.
        assert_eq!(next_standing(s, Event::Download { complete: false }), s);
        let s = next_standing(
            s,
            Event::Report {
                outcome: ReportOutcome::Installed,
            },
        );
        assert_eq!(s, st(MemberState::Installed, true, true));
        // A report outranks downloads; the latest report wins.
        assert_eq!(
            next_standing(s, Event::Download { complete: true }).state,
            MemberState::Installed
        );
        let s = next_standing(
            s,
            Event::Report {
                outcome: ReportOutcome::Failed,
            },
        );
        assert_eq!(s.state, MemberState::Failed);
        // Reported without downloading here (the KS backend): installed, never started.
        let k = next_standing(
            Standing::PENDING,
            Event::Report {
                outcome: ReportOutcome::Installed,
            },
        );
        assert_eq!(k, st(MemberState::Installed, false, false));
    }

    fn phased(phase: usize, opened: i64) -> RolloutRow {
        RolloutRow {
            id: 1,
            model: Model::parse("iq2").unwrap_or_else(|_| unreachable!()),
            version: Version::parse("1.0.0").unwrap_or_else(|_| unreachable!()),
            percent_bp: [1000, 5000, 10000][phase],
            state: RolloutState::Active,
            devices: vec![],
            labels: vec![],
            phases: Some(vec![1000, 5000, 10000]),
            phase: Some(phase),
            phase_opened_at: Some(opened),
            success_ppm: 500_000,
            failure_ppm: 100_000,
            min_phase_secs: 60,
            start_at: None,
            paused_reason: None,
            members_ready: true,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn status(installed: u64, failed: u64, other: u64) -> Status {
        Status {
            targeted: installed + failed + other,
            states: States {
                installed,
                failed,
                pending: other,
                ..States::default()
            },
            ..Status::default()
        }
    }

    #[test]
    fn advance_needs_enough_installs_and_the_bake_time() {
        let r = phased(0, 0);
        assert_eq!(
            decide(&r, &status(5, 0, 5), 59_999),
            Decision::Nothing,
            "not baked"
        );
        assert_eq!(decide(&r, &status(5, 0, 5), 60_000), Decision::Advance(1));
        assert_eq!(
            decide(&r, &status(4, 0, 6), 600_000),
            Decision::Nothing,
            "40% < 50%"
        );
        assert_eq!(
            decide(&phased(2, 0), &status(10, 0, 0), 600_000),
            Decision::Nothing,
            "last phase"
        );
        assert_eq!(
            decide(&r, &status(0, 0, 0), 60_000),
            Decision::Advance(1),
            "an empty phase waits for nothing"
        );
    }

    #[test]
    fn too_many_failures_pause_with_the_counts_in_words() {
        let r = phased(1, 0);
        assert_eq!(
            decide(&r, &status(10, 3, 7), 0),
            Decision::Pause("failure threshold: 3 of 20 selected devices failed (15% ≥ 10%)".into())
        );
        assert_eq!(decide(&r, &status(10, 1, 9), 0), Decision::Nothing, "5% < 10%");
        let mut paused = r.clone();
        paused.state = RolloutState::Paused;
        assert_eq!(decide(&paused, &status(0, 20, 0), 0), Decision::Nothing);
        let mut scheduled = r;
        scheduled.start_at = Some(1_000);
        assert_eq!(decide(&scheduled, &status(0, 20, 0), 999), Decision::Nothing);
        assert_eq!(shown_state(&scheduled, 999), "scheduled");
        assert_eq!(shown_state(&scheduled, 1_000), "active");
    }

    #[test]
    fn phases_must_grow_and_thresholds_be_fractions() {
        assert_eq!(phases_bp(&[1.0, 10.0, 100.0]).ok(), Some(vec![100, 1000, 10000]));
        assert!(phases_bp(&[10.0, 10.0]).is_err());
        assert!(phases_bp(&[0.0, 10.0]).is_err());
        assert!(phases_bp(&[50.0, 10.0]).is_err());
        assert!(phases_bp(&[]).is_err());
        assert!(phases_bp(&[10.0, 101.0]).is_err());
        assert_eq!(threshold_ppm("x", 0.25).ok(), Some(250_000));
        assert!(threshold_ppm("x", 1.5).is_err());
        assert!(threshold_ppm("x", f64::NAN).is_err());
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            any::<bool>().prop_map(|complete| Event::Download { complete }),
            Just(Event::Report {
                outcome: ReportOutcome::Installed
            }),
            Just(Event::Report {
                outcome: ReportOutcome::Failed
            }),
        ]
    }

    proptest! {
        /// Whatever happens, `completed` implies `started` (for a device that downloaded) and
        /// never goes back, and the state is the latest report's once there is one.
        #[test]
        fn standings_only_move_forward(events in proptest::collection::vec(any_event(), 0..20)) {
            let mut s = Standing::PENDING;
            let mut last_report = None;
            for e in events {
                let before = s;
                s = next_standing(s, e);
                prop_assert!(!before.completed || s.completed);
                prop_assert!(!before.started || s.started);
                if let Event::Report { outcome } = e { last_report = Some(outcome); }
                match last_report {
                    Some(ReportOutcome::Installed) => prop_assert_eq!(s.state, MemberState::Installed),
                    Some(ReportOutcome::Failed) => prop_assert_eq!(s.state, MemberState::Failed),
                    None => prop_assert!(!matches!(s.state, MemberState::Installed | MemberState::Failed)),
                }
            }
        }
    }
}
