//! The FTPS front for IQs (SPEC §4): libunftp 0.24 with TLS required on both channels,
//! passive mode only, device logins, the per-device read-only tree and download records.
//!
//! Depends inward on `store`, `db`, `rollout` and `domain`; nothing depends on it but `app`.

pub mod auth;
pub mod datachan_guard;
pub mod log;
pub mod path;
pub mod records;
pub mod sessions;
pub mod tls;
pub mod vfs;

use std::sync::Arc;
use std::time::Duration;

use libunftp::ServerBuilder;
use libunftp::options::{FailedLoginsBlock, FailedLoginsPolicy, FtpsRequired, SiteMd5, TlsFlags};

use crate::config::{FtpsConfig, PassiveHost};
use auth::{Device, DeviceAuthenticator, DeviceProvider};
use vfs::{DeviceVfs, FtpsShared};

pub type FtpsServer = libunftp::Server<DeviceVfs, Device>;

#[derive(Debug, thiserror::Error)]
pub enum FtpsError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the FTPS server: {0}")]
    Build(#[from] libunftp::ServerError),
}

/// Builds the libunftp server. `shutdown` resolves when the process should stop; sessions
/// then get `grace` to finish.
///
/// # Errors
/// Invalid passive settings or unreadable TLS files.
pub fn build(
    cfg: &FtpsConfig,
    shared: Arc<FtpsShared>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    grace: Duration,
) -> Result<FtpsServer, FtpsError> {
    let sessions = shared.sessions.clone();
    let authenticator = DeviceAuthenticator::new(shared.db.clone(), sessions.clone());
    let generator = Box::new(move || DeviceVfs::new(shared.clone()));
    let mut b = ServerBuilder::<DeviceVfs, Device>::with_user_detail_provider(generator, Arc::new(DeviceProvider))
        .authenticator(Arc::new(authenticator))
        .logger(Some(log::SlogBridge::logger(sessions)))
        .greeting("fwdist firmware server (explicit FTPS required)")
        .ftps(cfg.cert.clone(), cfg.key.clone())
        .ftps_required(FtpsRequired::All, FtpsRequired::All)
        .ftps_tls_flags(TlsFlags::V1_2 | TlsFlags::V1_3 | TlsFlags::RESUMPTION_SESS_ID | TlsFlags::RESUMPTION_TICKETS)
        .passive_ports(cfg.passive_range()?)
        .idle_session_timeout(cfg.idle_timeout_secs)
        // Devices verify images themselves; SITE MD5 would let one read whole images into CPU.
        .sitemd5(SiteMd5::None)
        .metrics()
        .shutdown_indicator(async move {
            shutdown.await;
            libunftp::options::Shutdown::new().grace_period(grace)
        });
    b = match cfg.passive_host()? {
        PassiveHost::Ip(ip) => b.passive_host(ip),
        PassiveHost::Dns(name) => b.passive_host(libunftp::options::PassiveHost::Dns(name)),
    };
    if cfg.max_failed_logins > 0 {
        b = b.failed_logins_policy(FailedLoginsPolicy::new(
            cfg.max_failed_logins,
            Duration::from_secs(cfg.lockout_secs),
            FailedLoginsBlock::UserAndIP,
        ));
    }
    Ok(b.build()?)
}
