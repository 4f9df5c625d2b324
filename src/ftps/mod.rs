//! The FTPS front for IQs (SPEC §4): fwdist owns the sockets and TLS (front, control relay,
//! data connections), and libunftp 0.24 runs the FTP session behind it over loopback: device
//! logins, the per-device read-only tree and download records.
//!
//! Depends inward on `services` (targeting), `store`, `db` and `domain`; nothing depends on
//! it but `app`, which also hands its session registry to the devices service (as
//! [`crate::services::devices::DeviceSessions`]) so disabling a device ends its sessions.

pub mod auth;
pub mod conn;
pub mod control;
pub mod data;
pub mod front;
pub mod hello;
pub mod inner;
pub mod log;
pub mod oneport;
pub mod path;
pub mod ports;
pub mod principal;
pub mod proxy;
pub mod records;
pub mod sessions;
pub mod tcp;
pub mod tls;
pub mod vfs;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use libunftp::ServerBuilder;
use libunftp::options::{FtpsRequired, Reply, ReplyCode, SiteCommandContext, SiteCommandHandler, SiteMd5};
use tokio::net::TcpSocket;

use crate::config::FtpsConfig;
use crate::config::PassiveMode;
use crate::diagnostics::Diagnostics;
use auth::{DeviceAuthenticator, ProbeLimit, SessionAuthenticator, SessionUserProvider};
use conn::Conn;
use control::FrontCtx;
use front::{Front, IpGate};
use inner::{Inner, ServerFactory};
use oneport::OnePort;
use ports::{Passive, PortPool};
use principal::SessionUser;
use vfs::DeviceVfs;

// What `app` wires the front with: its surface, so nothing outside reaches into submodules.
pub use auth::Lockout;
pub use front::Front as FtpsFront;
pub use records::{Recorder, spawn_writer as spawn_recorder};
pub use sessions::{HealthProbes, Sessions};
pub use tls::ensure_certificate;
pub use vfs::FtpsShared;

#[derive(Debug, thiserror::Error)]
pub enum FtpsError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot start the FTPS server: {0}")]
    Build(#[from] libunftp::ServerError),
    #[error("cannot open the FTP engine's loopback port: {0}")]
    Loopback(#[from] std::io::Error),
}

/// What every session's libunftp `Server` is built from.
/// libunftp's idle timeout: never the one that fires (see [`control`]'s relay).
const ENGINE_IDLE_SECS: u64 = 7 * 24 * 3600;

struct SessionFactory {
    shared: Arc<FtpsShared>,
    authenticator: Arc<DeviceAuthenticator>,
    logger: slog::Logger,
    ports_reply: String,
}

/// `SITE PORTS`: the passive range, so `fwdist doctor` can test every port of it.
#[derive(Debug)]
struct SitePorts(String);

#[async_trait]
impl SiteCommandHandler<DeviceVfs, SessionUser> for SitePorts {
    async fn handle(&self, _ctx: &SiteCommandContext<DeviceVfs, SessionUser>) -> Reply {
        Reply::new_with_string(ReplyCode::CommandOkay, self.0.clone())
    }
}

/// libunftp's passive listener for one session: an ephemeral loopback port, which only the
/// front's data task connects to (the IQ is offered a public port, see [`control`]).
/// `SO_REUSEADDR` lets the port search pass over ports whose last connection lingers in
/// TIME_WAIT.
#[derive(Debug)]
struct LoopbackBinder;

#[async_trait]
impl libunftp::options::Binder for LoopbackBinder {
    async fn bind(&mut self, _local: IpAddr, _range: RangeInclusive<u16>) -> std::io::Result<TcpSocket> {
        let s = TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.bind((Ipv4Addr::LOCALHOST, 0).into())?;
        Ok(s)
    }
}

impl SessionFactory {
    fn server(
        &self,
        conn: Arc<Conn>,
    ) -> Result<libunftp::Server<DeviceVfs, SessionUser>, libunftp::ServerError> {
        let shared = self.shared.clone();
        let c = conn.clone();
        let generator = Box::new(move || DeviceVfs::new(shared.clone(), c.clone()));
        ServerBuilder::<DeviceVfs, SessionUser>::with_user_detail_provider(
            generator,
            Arc::new(SessionUserProvider::new(conn.clone())),
        )
            .authenticator(Arc::new(SessionAuthenticator::new(self.authenticator.clone(), conn)))
            .logger(Some(self.logger.clone()))
            // The front greets the IQ; this greeting only crosses loopback.
            .greeting("fwdist engine")
            .ftps_required(FtpsRequired::None, FtpsRequired::None)
            .passive_host(Ipv4Addr::LOCALHOST)
            .passive_ports(1024..=65535)
            // The relay keeps the idle clock (it sees every command and transfer, libunftp does
            // not): libunftp's own is pushed out of the way, a week.
            .idle_session_timeout(ENGINE_IDLE_SECS)
            // Devices verify images themselves; SITE MD5 would let one read whole images into CPU.
            .sitemd5(SiteMd5::None)
            .site_command(fwdist_release::probe::SITE_PORTS, SitePorts(self.ports_reply.clone()))
            .metrics()
            .binder(LoopbackBinder)
            .build()
    }
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
                    tracing::debug!(%peer, error = %e, "FTP engine session ended with an error");
                }
            }),
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot set up an FTPS session");
                Box::pin(async {})
            }
        }
    }
}

/// The FTPS front, ready to run on `listener` (already bound to `ftps.listen`).
///
/// # Errors
/// Invalid passive settings, unusable TLS files, no loopback port for the FTP engine.
pub async fn build(
    cfg: &FtpsConfig,
    shared: Arc<FtpsShared>,
    diagnostics: Arc<Diagnostics>,
    listener: tokio::net::TcpListener,
) -> Result<Front, FtpsError> {
    let sessions = shared.sessions.clone();
    let probe = cfg
        .probe_enabled
        .then(|| ProbeLimit::new(cfg.probe_logins_per_minute));
    let mode = cfg.passive_mode()?;
    let ports_reply = match &mode {
        PassiveMode::Range(r) => fwdist_release::probe::ports_reply(r),
        PassiveMode::Same => fwdist_release::probe::PORTS_SAME.to_owned(),
    };
    let factory = SessionFactory {
        authenticator: Arc::new(DeviceAuthenticator::new(
            shared.db.clone(),
            sessions.clone(),
            probe,
        )),
        logger: log::SlogBridge::logger(),
        shared: shared.clone(),
        ports_reply,
    };
    let (inner, inner_listener) = Inner::bind(Arc::new(factory)).await?;
    let ctx = FrontCtx {
        tls: tls::server_config(cfg)?,
        inner,
        pool: match mode {
            PassiveMode::Range(range) => Passive::Range(PortPool::new(
                range,
                diagnostics.metrics.passive_ports_in_use.clone(),
                cfg.proxy_protocol,
            )),
            // The port IQs were told: `public_port`, else the one bound (port 0 in tests).
            PassiveMode::Same => Passive::Same(OnePort::new(
                cfg.public_port
                    .unwrap_or_else(|| listener.local_addr().map_or(cfg.listen.port(), |a| a.port())),
                usize::try_from(cfg.max_sessions).unwrap_or(usize::MAX),
                // Each session of an address holds at most one data connection at a time, and
                // new control connections beyond its limit are refused (421) once greeted.
                match cfg.max_sessions_per_ip {
                    0 => usize::MAX,
                    n => usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(2),
                },
                diagnostics.metrics.passive_ports_in_use.clone(),
            )),
        },
        diagnostics: diagnostics.clone(),
        host: cfg.passive_host()?,
        data_timeout: Duration::from_secs(cfg.data_connect_timeout_secs),
        idle: Duration::from_secs(cfg.idle_timeout_secs.max(1)),
        proxy: cfg.proxy_protocol,
        shared,
    };
    Ok(Front {
        listener,
        gate: IpGate::new(cfg.max_sessions_per_ip, u64::from(cfg.max_sessions)),
        diagnostics,
        sessions,
        ctx: Arc::new(ctx),
        inner_listener,
    })
}
