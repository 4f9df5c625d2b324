//! Device login over FTPS: `USER` is the MAC address (any SPEC form), `PASS` the device
//! secret. Unknown, disabled and wrong-secret devices all get the same 530; the secret is
//! compared in constant time against its stored hash and never logged.
//!
//! The built-in `probe` account (see [`fwdist_release::probe`]) logs in with a public password, at
//! most `ftps.probe_logins_per_minute` times per client IP, and sees only `/probe.bin`.
//!
//! Repeated failures lock that device out from that client IP for a while. libunftp has such
//! a policy, but its cache is per `Server` and we build one `Server` per connection (see
//! [`super::front`]), so [`Lockout`] keeps it here (held by [`Sessions`], which the admin API
//! reaches to show and clear lockouts).
//!
//! libunftp runs behind the front on loopback, so the address it sees is `127.0.0.1`:
//! [`SessionAuthenticator`] gives [`DeviceAuthenticator`] the IQ's real address from the
//! session's [`Conn`] instead, for the lockout, the probe limit and the records.
//!
//! A successful login stores its [`SessionUser`] in the session's [`Conn`];
//! [`SessionUserProvider`] hands that value to libunftp, so nothing travels as a string.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal as FtpPrincipal, UserDetailError,
    UserDetailProvider,
};

use super::conn::Conn;
use super::principal::{DeviceLogin, Principal, SessionUser};
use super::sessions::Sessions;
use crate::db::Db;
use crate::domain::DeviceId;
use crate::secret::{Secret, SecretHash};

/// Failed logins per (user, client IP): `max` failures within `period` (a sliding window)
/// lock that pair for `period` from the last of them (SPEC §6: 5 within 5 minutes lock for
/// 5 minutes). In memory; bounded. The `_at` forms take the time, so the rule is tested
/// without a clock.
#[derive(Debug)]
pub struct Lockout {
    max: u32,
    period: Duration,
    failures: Mutex<HashMap<(String, IpAddr), Pair>>,
}

#[derive(Debug, Default)]
struct Pair {
    /// The failures within the window, oldest first (at most `max`).
    recent: std::collections::VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl Pair {
    fn stale(&self, now: Instant, period: Duration) -> bool {
        self.locked_until.is_none_or(|u| u <= now)
            && self
                .recent
                .back()
                .is_none_or(|t| now.duration_since(*t) >= period)
    }
}

const MAX_TRACKED: usize = 100_000;

impl Lockout {
    /// `max` 0 disables the lockout.
    pub fn new(max: u32, period: Duration) -> Self {
        Lockout {
            max,
            period,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), Pair>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_locked(&self, user: &str, ip: IpAddr) -> bool {
        self.is_locked_at(user, ip, Instant::now())
    }

    pub fn is_locked_at(&self, user: &str, ip: IpAddr, now: Instant) -> bool {
        self.max > 0
            && self
                .lock()
                .get(&(user.to_owned(), ip))
                .and_then(|p| p.locked_until)
                .is_some_and(|u| u > now)
    }

    pub fn failed(&self, user: &str, ip: IpAddr) {
        self.failed_at(user, ip, Instant::now());
    }

    pub fn failed_at(&self, user: &str, ip: IpAddr, now: Instant) {
        if self.max == 0 {
            return;
        }
        let (max, period) = (self.max as usize, self.period);
        let mut g = self.lock();
        let key = (user.to_owned(), ip);
        if g.len() >= MAX_TRACKED && !g.contains_key(&key) {
            g.retain(|_, p| !p.stale(now, period));
            if g.len() >= MAX_TRACKED {
                // Full of live entries: a new pair is not tracked (bounded memory first).
                return;
            }
        }
        let p = g.entry(key).or_default();
        while p.recent.front().is_some_and(|t| now.duration_since(*t) >= period) {
            p.recent.pop_front();
        }
        p.recent.push_back(now);
        if p.recent.len() >= max {
            p.locked_until = Some(now + period);
            p.recent.clear();
        }
    }

    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        if self.max > 0 {
            self.lock().remove(&(user.to_owned(), ip));
        }
    }

    /// The addresses `user` is locked out from now, with how long each lasts.
    pub fn locked(&self, user: &str) -> Vec<(IpAddr, Duration)> {
        self.locked_at(user, Instant::now())
    }

    pub fn locked_at(&self, user: &str, now: Instant) -> Vec<(IpAddr, Duration)> {
        if self.max == 0 {
            return Vec::new();
        }
        self.lock()
            .iter()
            .filter(|((u, _), _)| u == user)
            .filter_map(|((_, ip), p)| p.locked_until.filter(|t| *t > now).map(|t| (*ip, t - now)))
            .collect()
    }

    /// Forgets every failure of `user` (locked or not); returns how many addresses were locked.
    pub fn clear(&self, user: &str) -> usize {
        let locked = self.locked(user).len();
        self.lock().retain(|(u, _), _| u != user);
        locked
    }
}

/// Logins of the probe account per client IP per minute.
#[derive(Debug)]
pub struct ProbeLimit {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl ProbeLimit {
    pub fn new(per_minute: u32) -> Self {
        ProbeLimit {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one login; false when this address is over its limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        let mut g = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() >= MAX_TRACKED {
            g.retain(|_, (start, _)| now.duration_since(*start) < minute);
        }
        let w = g.entry(ip).or_insert((now, 0));
        if now.duration_since(w.0) >= minute {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 <= self.per_minute
    }
}

#[derive(Debug)]
pub struct DeviceAuthenticator {
    db: Db,
    /// Also holds the lockouts (so the admin API can show and clear them).
    sessions: Arc<Sessions>,
    /// `None` when the probe account is disabled.
    probe: Option<ProbeLimit>,
}

impl DeviceAuthenticator {
    pub fn new(db: Db, sessions: Arc<Sessions>, probe: Option<ProbeLimit>) -> Self {
        DeviceAuthenticator { db, sessions, probe }
    }

    fn probe_login(&self, creds: &Credentials) -> Result<SessionUser, AuthenticationError> {
        let ip = creds.source_ip;
        let Some(limit) = &self.probe else {
            tracing::warn!(%ip, "probe login refused: the probe account is disabled");
            return Err(AuthenticationError::BadUser);
        };
        if creds.password.as_deref() != Some(fwdist_release::probe::PASSWORD) {
            return Err(AuthenticationError::BadPassword);
        }
        if !limit.allow(ip) {
            tracing::warn!(%ip, "probe login refused: rate limit");
            return Err(AuthenticationError::IpDisallowed);
        }
        tracing::info!(%ip, "probe account logged in");
        Ok(SessionUser {
            principal: Principal::Probe,
            ip,
            serial: self.sessions.allocate(),
        })
    }
}

/// Compared against when the device is unknown, so that answer takes as long as a wrong secret.
const NO_DEVICE: SecretHash = SecretHash([0u8; 32]);

impl DeviceAuthenticator {
    /// Checks a login; `creds.source_ip` must be the IQ's real address.
    ///
    /// # Errors
    /// The same 530 reasons libunftp maps: bad user, bad password, refused address.
    pub async fn login(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<SessionUser, AuthenticationError> {
        if username.trim().eq_ignore_ascii_case(fwdist_release::probe::USER) {
            return self.probe_login(creds);
        }
        let password = Secret::from_client(creds.password.clone().unwrap_or_default());
        let Ok(id) = DeviceId::parse(username.trim()) else {
            let _ = NO_DEVICE.matches(&password);
            return Err(AuthenticationError::BadUser);
        };
        let key = id.to_string();
        if self.sessions.lockout.is_locked(&key, creds.source_ip) {
            self.sessions.metrics.refused(crate::metrics::Refusal::Lockout);
            tracing::warn!(device = %id, ip = %creds.source_ip, "login refused: locked out after repeated failures");
            // As libunftp does: a locked-out client learns nothing quickly.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return Err(AuthenticationError::BadPassword);
        }
        let found = self.db.device_credentials(&id).await.map_err(|e| {
            tracing::error!(device = %id, error = %e, "device lookup failed during login");
            AuthenticationError::ImplPropagated("device lookup failed".into(), None)
        })?;
        let (hash, usable) = match &found {
            Some(c) => (c.secret_hash, c.enabled),
            None => (NO_DEVICE, false),
        };
        let secret_ok = hash.matches(&password);
        match found {
            Some(c) if usable && secret_ok => {
                self.sessions.lockout.succeeded(&key, creds.source_ip);
                tracing::info!(device = %id, ip = %creds.source_ip, "device logged in");
                Ok(SessionUser {
                    principal: Principal::Device(DeviceLogin { id, model: c.model }),
                    ip: creds.source_ip,
                    serial: self.sessions.allocate(),
                })
            }
            Some(_) if !usable => {
                tracing::warn!(device = %id, ip = %creds.source_ip, "login refused: device disabled");
                self.sessions.lockout.failed(&key, creds.source_ip);
                Err(AuthenticationError::BadUser)
            }
            Some(_) => {
                tracing::warn!(device = %id, ip = %creds.source_ip, "login refused: wrong secret");
                self.sessions.lockout.failed(&key, creds.source_ip);
                Err(AuthenticationError::BadPassword)
            }
            None => {
                // Not counted: unknown ids would let anyone grow the lockout table at will.
                tracing::warn!(device = %id, ip = %creds.source_ip, "login refused: unknown device");
                Err(AuthenticationError::BadUser)
            }
        }
    }
}

/// The authenticator of one session: [`DeviceAuthenticator`] with the IQ's real address.
#[derive(Debug)]
pub struct SessionAuthenticator {
    inner: Arc<DeviceAuthenticator>,
    conn: Arc<Conn>,
}

impl SessionAuthenticator {
    pub fn new(inner: Arc<DeviceAuthenticator>, conn: Arc<Conn>) -> Self {
        SessionAuthenticator { inner, conn }
    }
}

#[async_trait]
impl Authenticator for SessionAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<FtpPrincipal, AuthenticationError> {
        let creds = Credentials {
            source_ip: self.conn.peer.ip(),
            ..creds.clone()
        };
        let claimed = DeviceId::parse(username.trim()).ok();
        let before = claimed.map(|d| self.inner.sessions.generation(d));
        let user = self.inner.login(username, &creds).await?;
        let username = user.to_string();
        self.conn.set_user(user);
        // An admin disabled, re-keyed or deleted the device while this login was checking its
        // old credentials: the close ran before the session had a user, so end it here.
        if let (Some(d), Some(seen)) = (claimed, before)
            && self.inner.sessions.generation(d) != seen
        {
            self.conn.close();
            return Err(AuthenticationError::BadPassword);
        }
        Ok(FtpPrincipal { username })
    }
}

/// Gives libunftp the [`SessionUser`] the session's login stored in its [`Conn`].
#[derive(Debug)]
pub struct SessionUserProvider {
    conn: Arc<Conn>,
}

impl SessionUserProvider {
    pub fn new(conn: Arc<Conn>) -> Self {
        SessionUserProvider { conn }
    }
}

#[async_trait]
impl UserDetailProvider for SessionUserProvider {
    type User = SessionUser;

    async fn provide_user_detail(&self, principal: &FtpPrincipal) -> Result<SessionUser, UserDetailError> {
        match self.conn.user() {
            Some(u) if u.to_string() == principal.username => Ok(u),
            _ => Err(UserDetailError::new("no login on this session")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_after_max_failures_for_that_pair_only() {
        let l = Lockout::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..2 {
            l.failed_at("a", ip, t0);
        }
        assert!(!l.is_locked_at("a", ip, t0));
        l.failed_at("a", ip, t0);
        assert!(l.is_locked_at("a", ip, t0));
        assert!(!l.is_locked_at("a", other, t0));
        assert!(!l.is_locked_at("b", ip, t0));
        assert_eq!(l.locked_at("a", t0), vec![(ip, Duration::from_secs(60))]);
        assert!(l.is_locked_at("a", ip, t0 + Duration::from_secs(59)));
        assert!(
            !l.is_locked_at("a", ip, t0 + Duration::from_secs(60)),
            "the lockout ends"
        );
        assert!(!Lockout::new(0, Duration::from_secs(60)).is_locked_at("a", ip, t0));
        assert_eq!(l.clear("a"), 1);
        assert!(!l.is_locked_at("a", ip, t0));
    }

    #[test]
    fn only_failures_within_the_window_count() {
        let l = Lockout::new(3, Duration::from_secs(300));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t0 = Instant::now();
        // Four minutes apart: never three within five minutes.
        for i in 0..6 {
            l.failed_at("a", ip, t0 + Duration::from_secs(240 * i));
            assert!(
                !l.is_locked_at("a", ip, t0 + Duration::from_secs(240 * i)),
                "failure {i}"
            );
        }
        // Three within the window lock.
        let t1 = t0 + Duration::from_secs(10_000);
        for s in [0, 100, 299] {
            l.failed_at("a", ip, t1 + Duration::from_secs(s));
        }
        assert!(l.is_locked_at("a", ip, t1 + Duration::from_secs(299)));
        // A success forgets the failures.
        l.succeeded("a", ip);
        assert!(!l.is_locked_at("a", ip, t1 + Duration::from_secs(300)));
    }

    #[test]
    fn probe_limit_per_address() {
        let p = ProbeLimit::new(2);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(p.allow(ip) && p.allow(ip));
        assert!(!p.allow(ip));
        assert!(p.allow("192.0.2.10".parse().unwrap()));
    }
}
