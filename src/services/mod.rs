//! Services: the rules of fwdist, used alike by every front (the admin API, the CLI, the FTPS
//! tree). A front parses its input into domain types, calls a service and translates the
//! answer; it decides nothing itself.
//!
//! - [`publish`] — verify a signed release and make it visible atomically (store, then row).
//! - [`targeting`] — what a device should fetch now (rollouts; pins join here).
//! - [`rollouts`] — create and steer rollouts (phases, cohorts, schedule), their status and
//!   per-device states, and the automatic advance/pause steps.
//! - [`samples`] — when a rollout's counts are sampled for the dashboard's plot.
//! - [`reports`] — install reports from IQs and the KS backend.
//! - [`devices`] — register (one at a time or a whole fleet), disable, show with target.
//! - [`tokens`] — admin API tokens, shown once and stored hashed.
//!
//! Services use `store`, `db` and `domain`; they know nothing of FTP or HTTP. Reads that
//! carry no rule (listing releases, downloads) go straight to `db` from the fronts.

pub mod devices;
pub mod publish;
pub mod reports;
pub mod rollouts;
pub mod samples;
pub mod targeting;
pub mod tokens;

use std::sync::Arc;

use crate::db::{Db, DbError};
use crate::domain::InvalidInput;
use crate::store::ReleaseStore;

/// Why a service refused a request, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request breaks a rule (the API answers 422).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
    /// A server fault that is not the database's (no randomness, say).
    #[error("{0}")]
    Internal(String),
}

impl From<InvalidInput> for ServiceError {
    fn from(e: InvalidInput) -> Self {
        ServiceError::Invalid(e.0)
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Every service, wired once by `app` (or by a CLI command for its own use).
#[derive(Debug, Clone)]
pub struct Services {
    pub publish: Arc<publish::Publisher>,
    pub targeting: targeting::Targeting,
    pub rollouts: rollouts::Rollouts,
    pub devices: devices::Devices,
    pub tokens: tokens::Tokens,
    pub reports: reports::Reports,
}

/// What the services need from the outside world.
pub struct Wiring {
    pub db: Db,
    pub store: Arc<dyn ReleaseStore>,
    pub trusted_keys: std::path::PathBuf,
    pub max_image_bytes: u64,
    /// Open FTPS sessions, for disabling a device to close its own (none in the CLI).
    pub sessions: Option<Arc<dyn devices::DeviceSessions>>,
    /// This node's name, in reports.
    pub node: String,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Services {
    pub fn new(w: Wiring) -> Self {
        let targeting = targeting::Targeting::new(w.db.clone());
        let rollouts = rollouts::Rollouts::new(w.db.clone());
        Services {
            publish: Arc::new(publish::Publisher::new(
                w.db.clone(),
                w.store,
                w.trusted_keys,
                w.max_image_bytes,
            )),
            reports: reports::Reports::new(w.db.clone(), rollouts.clone(), w.node, w.metrics),
            tokens: tokens::Tokens::new(w.db.clone()),
            devices: devices::Devices::new(w.db, targeting.clone(), rollouts.clone(), w.sessions),
            rollouts,
            targeting,
        }
    }
}
