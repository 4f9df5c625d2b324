//! Wiring: builds the store, database, services, recorder, FTPS server and admin API from a
//! `Config`, and runs them until a shutdown signal. The binary edge: errors are `anyhow` with
//! context. Listening on port 0 is allowed: [`App::ftp_addr`] and [`App::api_addr`] are the
//! addresses actually bound, and everything built here (the `/healthz` probe, the firewall
//! requirements) uses them, so a test can run the whole server in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::db::Db;
use crate::diagnostics::Diagnostics;
use crate::ftps::{self, FtpsFront, FtpsShared, Sessions};
use crate::metrics::Metrics;
use crate::services::{Services, Wiring};
use crate::store::{FsStore, ReleaseStore, S3Store};

/// `fwdist_api_requests_total{method,status}` around the admin API. Methods outside the
/// standard set count as `other`, so a client cannot grow the label set.
fn count_requests(router: axum::Router, metrics: Arc<Metrics>) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let metrics = metrics.clone();
            async move {
                let method: &'static str = match req.method().as_str() {
                    "GET" => "GET",
                    "POST" => "POST",
                    "PUT" => "PUT",
                    "PATCH" => "PATCH",
                    "DELETE" => "DELETE",
                    "HEAD" => "HEAD",
                    "OPTIONS" => "OPTIONS",
                    _ => "other",
                };
                let resp = next.run(req).await;
                let class = match resp.status().as_u16() {
                    200..=299 => "2xx",
                    300..=399 => "3xx",
                    400..=499 => "4xx",
                    _ => "5xx",
                };
                metrics.api_requests.with_label_values(&[method, class]).inc();
                resp
            }
        },
    ))
}

/// How long sessions and requests get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

pub struct App {
    ftp_addr: SocketAddr,
    api_addr: SocketAddr,
    ftps: FtpsFront,
    api: (api::listener::AdminListener, axum::Router),
    db: Db,
    services: Services,
    recorder_task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl App {
    /// # Errors
    /// Anything that keeps the server from starting, with what it was doing.
    pub async fn build(mut cfg: Config) -> anyhow::Result<App> {
        let budget = crate::descriptors::apply(&cfg)?;
        // FTPS may not hold more sessions than its share of descriptors: beyond it an accept
        // would fail with EMFILE for everyone, IQs and the admin API alike.
        let afforded = u32::try_from(budget.ftps_sessions).unwrap_or(u32::MAX);
        if cfg.ftps.max_sessions == 0 || cfg.ftps.max_sessions > afforded {
            if cfg.ftps.max_sessions > afforded {
                tracing::warn!(
                    configured = cfg.ftps.max_sessions,
                    afforded,
                    "ftps.max_sessions lowered to what the descriptor budget affords"
                );
            }
            cfg.ftps.max_sessions = afforded;
        }
        if ftps::ensure_certificate(&cfg.ftps)? {
            tracing::info!(cert = %cfg.ftps.cert.display(), "TLS certificate created");
        }
        std::fs::create_dir_all(&cfg.signing.trusted_keys)
            .with_context(|| format!("creating {}", cfg.signing.trusted_keys.display()))?;
        let store: Arc<dyn ReleaseStore> = match cfg.store.s3()? {
            Some(s3) => Arc::new(
                S3Store::open(&s3)
                    .await
                    .with_context(|| format!("opening the firmware store at {}", s3.location))?,
            ),
            None => Arc::new(
                FsStore::open(&cfg.store.root)
                    .await
                    .context("opening the firmware store")?,
            ),
        };
        let db = Db::connect(&cfg.db.url).await.context("opening the database")?;
        let metrics = Arc::new(Metrics::new());
        let (recorder, recorder_task) = ftps::spawn_recorder(db.clone(), metrics.clone());
        let sessions = Arc::new(Sessions::new(
            ftps::Lockout::new(
                cfg.ftps.max_failed_logins,
                Duration::from_secs(cfg.ftps.lockout_secs),
            ),
            metrics.clone(),
        ));
        let services = Services::new(Wiring {
            db: db.clone(),
            store: store.clone(),
            trusted_keys: cfg.signing.trusted_keys.clone(),
            max_image_bytes: cfg.store.max_image_bytes,
            sessions: Some(sessions.clone()),
            node: cfg.node.clone(),
            metrics: metrics.clone(),
        });
        // Rollouts made before per-device state existed get their members now.
        services
            .rollouts
            .backfill()
            .await
            .context("making the members of older rollouts")?;
        // Before any publish can start: debris of publishes a crash cut short.
        let orphans = services
            .publish
            .remove_orphans()
            .await
            .context("removing releases without a database row from the store")?;
        metrics.store_orphans_removed.inc_by(orphans as u64);
        let ftps_probes = sessions.probes.clone();
        let shared = Arc::new(FtpsShared {
            db: db.clone(),
            store,
            targeting: services.targeting.clone(),
            reports: services.reports.clone(),
            recorder,
            sessions,
            node: cfg.node.clone(),
            record: cfg.ftps.record_downloads,
        });
        let ftp_listener = tokio::net::TcpListener::bind(cfg.ftps.listen)
            .await
            .with_context(|| format!("binding the FTPS control port {}", cfg.ftps.listen))?;
        // From here on the configuration names the port actually bound (port 0 resolved).
        cfg.ftps.listen = ftp_listener.local_addr()?;
        let ftp_addr = cfg.ftps.listen;
        let (stop, _) = watch::channel(false);
        let diagnostics = Arc::new(Diagnostics::new(metrics.clone()));
        let ftps = ftps::build(&cfg.ftps, shared, diagnostics.clone(), ftp_listener).await?;
        let listener = api::listener::AdminListener::bind(&cfg.admin)
            .await
            .with_context(|| format!("starting the admin API on {}", cfg.admin.listen))?;
        let api_addr = listener.local_addr()?;
        let state = AppState {
            db: db.clone(),
            services: services.clone(),
            ftp_addr,
            max_image_bytes: cfg.store.max_image_bytes,
            network: Arc::new(crate::network::NetworkRequirements::new(
                &cfg.ftps.network_site()?,
            )),
            diagnostics,
            metrics: metrics.clone(),
            ftps_probes,
        };
        Ok(App {
            ftp_addr,
            api_addr,
            ftps,
            api: (listener, count_requests(api::router(state), metrics)),
            db,
            services,
            recorder_task,
            stop,
        })
    }

    pub fn ftp_addr(&self) -> SocketAddr {
        self.ftp_addr
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The admin API, for driving it without a socket (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        self.api.1.clone()
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves until `shutdown` resolves (or a server fails), then drains sessions, requests
    /// and queued download records.
    ///
    /// # Errors
    /// A server that could not bind or failed while running.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let App {
            ftp_addr,
            api_addr,
            ftps,
            api: (listener, router),
            db,
            services,
            recorder_task,
            stop,
        } = self;
        tracing::info!(%ftp_addr, %api_addr, "fwdist serving");
        // The automatic rollout steps (advance, pause): every second, and at once on a report.
        let steps = tokio::spawn(services.rollouts.clone().run_steps());
        let mut api_stop = stop.subscribe();
        let api = listener.serve(router, async move {
            while api_stop.changed().await.is_ok() && !*api_stop.borrow() {}
        });
        let mut api = Box::pin(api);
        let mut ftp_stop = stop.subscribe();
        let mut ftp = Box::pin(ftps.run(
            async move { while ftp_stop.changed().await.is_ok() && !*ftp_stop.borrow() {} },
            GRACE,
        ));
        tokio::pin!(shutdown);
        let mut api_out = None;
        let mut ftp_done = false;
        tokio::select! {
            () = &mut shutdown => tracing::info!("shutting down"),
            () = &mut ftp => ftp_done = true,
            r = &mut api => api_out = Some(r),
        }
        let _ = stop.send(true);
        let (ftp_late, api_late) = tokio::join!(
            finish(&mut ftp, ftp_done, GRACE + Duration::from_secs(2)),
            finish(&mut api, api_out.is_some(), GRACE)
        );
        let api_out = api_out.or(api_late);
        if (!ftp_done && ftp_late.is_none()) || api_out.is_none() {
            tracing::warn!("some sessions did not finish within the grace period");
        }
        let result = match api_out {
            Some(Err(e)) => Err(anyhow::Error::new(e).context(format!("admin API on {api_addr}"))),
            _ => Ok(()),
        };
        steps.abort();
        drop((ftp, api));
        // All recorder handles are gone once the server is dropped; let the writer drain.
        if tokio::time::timeout(Duration::from_secs(5), recorder_task)
            .await
            .is_err()
        {
            tracing::warn!("download records still queued at exit were not written");
        }
        db.close().await;
        result
    }
}

/// Awaits a future that has not completed yet, for at most `limit`.
async fn finish<F: Future + Unpin>(f: &mut F, done: bool, limit: Duration) -> Option<F::Output> {
    if done {
        return None;
    }
    tokio::time::timeout(limit, f).await.ok()
}
