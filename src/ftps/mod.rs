//! The FTPS front for IQs (SPEC §4): libunftp 0.24 with TLS required on both channels,
//! passive mode only, device logins, the per-device read-only tree and download records.
//!
//! Depends inward on `store`, `db`, `rollout` and `domain`; nothing depends on it but `app`.

pub mod auth;
pub mod datachan_guard;
pub mod front;
pub mod log;
pub mod path;
pub mod ports;
pub mod records;
pub mod sessions;
pub mod tls;
pub mod vfs;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use libunftp::ServerBuilder;
use libunftp::options::{FtpsRequired, Reply, ReplyCode, SiteCommandContext, SiteCommandHandler, SiteMd5};

use crate::config::{FtpsConfig, PassiveHost};
use crate::diagnostics::Diagnostics;
use auth::{Device, DeviceAuthenticator, DeviceProvider, Lockout, ProbeLimit};
use front::{Conn, Front, IpGate, ServerFactory};
use ports::{PortPool, SessionBinder};
use vfs::{DeviceVfs, FtpsShared};

#[derive(Debug, thiserror::Error)]
pub enum FtpsError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot start the FTPS server: {0}")]
    Build(#[from] libunftp::ServerError),
}

/// Everything a session's `Server` is built from; shared by all connections.
struct SessionFactory {
    shared: Arc<FtpsShared>,
    authenticator: Arc<DeviceAuthenticator>,
    logger: slog::Logger,
    tls: Arc<rustls::ServerConfig>,
    range: RangeInclusive<u16>,
    host: PassiveHost,
    idle_secs: u64,
    pool: Arc<PortPool>,
    ports_reply: String,
}

/// `SITE PORTS`: the passive range, so `fwdist doctor` can test every port of it.
#[derive(Debug)]
struct SitePorts(String);

#[async_trait]
impl SiteCommandHandler<DeviceVfs, Device> for SitePorts {
    async fn handle(&self, _ctx: &SiteCommandContext<DeviceVfs, Device>) -> Reply {
        Reply::new_with_string(ReplyCode::CommandOkay, self.0.clone())
    }
}

impl SessionFactory {
    fn server(&self, conn: Arc<Conn>) -> Result<libunftp::Server<DeviceVfs, Device>, libunftp::ServerError> {
        let shared = self.shared.clone();
        let c = conn.clone();
        let generator = Box::new(move || DeviceVfs::new(shared.clone(), c.clone()));
        let b = ServerBuilder::<DeviceVfs, Device>::with_user_detail_provider(generator, Arc::new(DeviceProvider))
            .authenticator(self.authenticator.clone())
            .logger(Some(self.logger.clone()))
            .greeting("fwdist firmware server (explicit FTPS required)")
            .ftps_manual::<std::path::PathBuf>(self.tls.clone())
            .ftps_required(FtpsRequired::All, FtpsRequired::All)
            .passive_ports(self.range.clone())
            .idle_session_timeout(self.idle_secs)
            // Devices verify images themselves; SITE MD5 would let one read whole images into CPU.
            .sitemd5(SiteMd5::None)
            .site_command(probe_site_name(), SitePorts(self.ports_reply.clone()))
            .metrics()
            .binder(SessionBinder {
                pool: self.pool.clone(),
                conn,
            });
        let b = match &self.host {
            PassiveHost::Ip(ip) => b.passive_host(*ip),
            PassiveHost::Dns(name) => b.passive_host(libunftp::options::PassiveHost::Dns(name.clone())),
        };
        b.build()
    }
}

fn probe_site_name() -> &'static str {
    crate::probe::SITE_PORTS
}

impl ServerFactory for SessionFactory {
    fn serve(
        &self,
        conn: Arc<Conn>,
        stream: tokio::net::TcpStream,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        let peer = conn.peer;
        match self.server(conn) {
            Ok(server) => Box::pin(async move {
                if let Err(e) = server.service(stream).await {
                    tracing::debug!(%peer, error = %e, "FTPS session ended with an error");
                }
            }),
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot set up an FTPS session");
                Box::pin(async {})
            }
        }
    }

    fn forget(&self, conn_id: u64) {
        self.pool.forget(conn_id);
    }
}

/// The FTPS front, ready to run on `listener` (already bound to `ftps.listen`).
///
/// # Errors
/// Invalid passive settings or unusable TLS files.
pub fn build(
    cfg: &FtpsConfig,
    shared: Arc<FtpsShared>,
    diagnostics: Arc<Diagnostics>,
    listener: tokio::net::TcpListener,
) -> Result<Front, FtpsError> {
    let sessions = shared.sessions.clone();
    let lockout = Lockout::new(cfg.max_failed_logins, Duration::from_secs(cfg.lockout_secs));
    let probe = cfg
        .probe_enabled
        .then(|| ProbeLimit::new(cfg.probe_logins_per_minute));
    let range = cfg.passive_range()?;
    let pool = PortPool::new(
        range.clone(),
        Duration::from_secs(cfg.data_connect_timeout_secs),
        diagnostics.clone(),
    );
    let factory = SessionFactory {
        authenticator: Arc::new(DeviceAuthenticator::new(
            shared.db.clone(),
            sessions,
            lockout,
            probe,
        )),
        logger: log::SlogBridge::logger(),
        shared,
        tls: tls::server_config(cfg)?,
        ports_reply: crate::probe::ports_reply(&range),
        range,
        host: cfg.passive_host()?,
        idle_secs: cfg.idle_timeout_secs,
        pool,
    };
    Ok(Front {
        listener,
        gate: IpGate::new(cfg.max_sessions_per_ip),
        diagnostics,
        factory: Arc::new(factory),
    })
}
