//! File descriptors: the process limit, and what each front may use of it.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit ([`raise_limit`]) and split
//! ([`Budget::plan`]) into a fixed reserve for the process itself, the admin API's share
//! (its connection cap, `admin.max_connections`, times what one connection can hold), and the
//! rest for FTPS sessions. The admin API is what the budget bounds — it is the part an
//! unauthenticated client could otherwise fill — so whatever the API is asked, FTPS keeps the
//! rest. A configuration whose admin share leaves FTPS fewer than [`min_ftps_sessions`]
//! sessions is refused at start, with what to change: a server that cannot log in one site's
//! IQs is a configuration mistake, better found at start than at the first busy hour.
//!
//! FTPS itself has no global session cap (only `ftps.max_sessions_per_ip`): the budget says
//! how many sessions its share affords; past that its accepts fail (`EMFILE`) and its accept
//! loop pauses, as before — but no longer because of the admin API.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::config::Config;

/// Descriptors the process holds whatever its load: stdin/out/err, the runtime's epoll and
/// wakers, the signal pipe, the three listeners (FTPS control, the FTP engine's loopback
/// port, admin), the database pool (8 connections × database, WAL and shared-memory files),
/// with room for configuration, key and certificate reads.
pub const RESERVE: u64 = 64;
/// What one admin connection can hold: its socket, and what a request may open — both ends
/// of `/healthz`'s probe connection to the FTPS port, or an upload's staging file.
pub const PER_ADMIN_CONNECTION: u64 = 3;
/// What one FTPS session can hold at its peak: the control connection (the IQ's socket, the
/// relay's loopback connection to the FTP engine and the engine's end of it), the passive
/// listener until the data connection is bound, the IQ's data connection, and either the
/// store file a `RETR` sends or, for a listing or upload, the engine's loopback listener and
/// both ends of its loopback data connection.
pub const PER_FTPS_SESSION: u64 = 8;
/// FTPS sessions the budget must leave room for, at least: one site's worth at the default
/// `ftps.max_sessions_per_ip`.
pub const MIN_FTPS_SESSIONS: u64 = 16;

/// FTPS sessions the budget must afford: as many as one client address may open
/// (`ftps.max_sessions_per_ip`), and never fewer than [`MIN_FTPS_SESSIONS`] (0 = no limit).
pub fn min_ftps_sessions(max_sessions_per_ip: u32) -> u64 {
    u64::from(max_sessions_per_ip).max(MIN_FTPS_SESSIONS)
}

/// How the descriptor limit is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub reserve: u64,
    pub admin_connections: u32,
    /// Descriptors the admin API may hold at most.
    pub admin: u64,
    /// Descriptors left for FTPS.
    pub ftps: u64,
    /// FTPS sessions that share affords.
    pub ftps_sessions: u64,
}

/// The configured admin cap does not leave FTPS the sessions it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the file descriptor limit (RLIMIT_NOFILE) is {limit}: {RESERVE} for the server itself and \
     {admin} for admin.max_connections = {admin_connections} ({PER_ADMIN_CONNECTION} each) leave \
     room for {ftps_sessions} FTPS sessions ({PER_FTPS_SESSION} descriptors each), fewer than the \
     {need_sessions} needed (ftps.max_sessions_per_ip, at least {MIN_FTPS_SESSIONS}); {advice}"
)]
pub struct TooLow {
    pub limit: u64,
    pub admin_connections: u32,
    pub admin: u64,
    pub ftps_sessions: u64,
    pub need_sessions: u64,
    pub advice: String,
}

impl Budget {
    /// Pure: splits `limit` descriptors for `admin_connections` admin connections, or says
    /// why it cannot while leaving `need_sessions` FTPS sessions.
    ///
    /// # Errors
    /// The reserve, the admin share and `need_sessions` sessions do not fit in `limit`.
    pub fn plan(limit: u64, admin_connections: u32, need_sessions: u64) -> Result<Budget, TooLow> {
        let admin = u64::from(admin_connections) * PER_ADMIN_CONNECTION;
        let ftps = limit.saturating_sub(RESERVE).saturating_sub(admin);
        let ftps_sessions = ftps / PER_FTPS_SESSION;
        if ftps_sessions >= need_sessions {
            return Ok(Budget {
                limit,
                reserve: RESERVE,
                admin_connections,
                admin,
                ftps,
                ftps_sessions,
            });
        }
        let for_ftps = need_sessions.saturating_mul(PER_FTPS_SESSION);
        let fit = limit.saturating_sub(RESERVE).saturating_sub(for_ftps) / PER_ADMIN_CONNECTION;
        let required = RESERVE.saturating_add(admin).saturating_add(for_ftps);
        let advice = if fit > 0 {
            format!(
                "set admin.max_connections to {fit} or less, or raise the hard limit to {required} \
                 (ulimit -Hn, systemd LimitNOFILE=)"
            )
        } else {
            format!("raise the hard limit to at least {required} (ulimit -Hn, systemd LimitNOFILE=)")
        };
        Err(TooLow {
            limit,
            admin_connections,
            admin,
            ftps_sessions,
            need_sessions,
            advice,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("cannot read the file descriptor limit: {0}")]
    Read(nix::Error),
    #[error(transparent)]
    TooLow(#[from] TooLow),
}

/// The descriptor limit before and after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (or, when that is unlimited, to the
/// kernel's `fs.nr_open`). A refusal is logged and the soft limit kept.
///
/// # Errors
/// The limit cannot be read.
pub fn raise_limit() -> Result<Limit, DescriptorError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(DescriptorError::Read)?;
    let target = if hard == nix::sys::resource::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    if soft >= target {
        return Ok(Limit {
            before: soft,
            now: soft,
        });
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => Ok(Limit {
            before: soft,
            now: target,
        }),
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the file descriptor limit; keeping the soft limit");
            Ok(Limit {
                before: soft,
                now: soft,
            })
        }
    }
}

/// Raises the limit, plans the budget for `cfg` and logs it (one INFO line).
///
/// # Errors
/// The limit cannot be read, or the configured caps do not fit it ([`TooLow`]).
pub fn apply(cfg: &Config) -> Result<Budget, DescriptorError> {
    let limit = raise_limit()?;
    let b = Budget::plan(
        limit.now,
        cfg.admin.max_connections,
        min_ftps_sessions(cfg.ftps.max_sessions_per_ip),
    )?;
    tracing::info!(
        limit = b.limit,
        soft_was = limit.before,
        reserve = b.reserve,
        admin_connections = b.admin_connections,
        admin = b.admin,
        ftps = b.ftps,
        ftps_sessions = b.ftps_sessions,
        "file descriptor budget: {} = {} reserved + {} admin API ({} connections x {}) + {} FTPS ({} sessions x {})",
        b.limit,
        b.reserve,
        b.admin,
        b.admin_connections,
        PER_ADMIN_CONNECTION,
        b.ftps,
        b.ftps_sessions,
        PER_FTPS_SESSION,
    );
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_share_is_its_cap_and_ftps_gets_the_rest() {
        let b = Budget::plan(20_000, 256, 16).unwrap();
        assert_eq!(b.admin, 256 * PER_ADMIN_CONNECTION);
        assert_eq!(b.ftps, 20_000 - RESERVE - 256 * PER_ADMIN_CONNECTION);
        assert_eq!(b.ftps_sessions, b.ftps / PER_FTPS_SESSION);
        assert_eq!(b.reserve + b.admin + b.ftps, b.limit);
        // The common default soft limit, if the hard limit were no higher: still fits.
        let b = Budget::plan(1024, 256, 16).unwrap();
        assert_eq!((b.admin, b.ftps, b.ftps_sessions), (768, 192, 24));
    }

    #[test]
    fn exactly_enough_fits_and_one_less_is_refused_with_what_would_fit() {
        let need = 16;
        let exact = RESERVE + 10 * PER_ADMIN_CONNECTION + need * PER_FTPS_SESSION;
        assert_eq!(Budget::plan(exact, 10, need).unwrap().ftps_sessions, need);
        let e = Budget::plan(exact - 1, 10, need).unwrap_err();
        assert_eq!(e.ftps_sessions, need - 1);
        // One admin connection fewer frees enough for the last FTPS session.
        assert!(
            e.advice.contains("admin.max_connections to 9 or less"),
            "{}",
            e.advice
        );
        assert!(Budget::plan(exact - 1, 9, need).is_ok());
    }

    #[test]
    fn the_issue_10_limit_refuses_the_default_cap_and_says_what_to_do() {
        // `ulimit -n 256` with 256 admin connections: the API alone would need 768.
        let e = Budget::plan(256, 256, min_ftps_sessions(16)).unwrap_err();
        assert_eq!(e.ftps_sessions, 0);
        let msg = e.to_string();
        assert!(msg.contains("RLIMIT_NOFILE) is 256"), "{msg}");
        assert!(msg.contains("admin.max_connections = 256"), "{msg}");
        assert!(msg.contains("admin.max_connections to 21 or less"), "{msg}");
        // Below the reserve plus the FTPS minimum nothing fits: only raising the limit helps.
        let e = Budget::plan(150, 1, 16).unwrap_err();
        assert!(
            e.advice.starts_with("raise the hard limit to at least 195"),
            "{}",
            e.advice
        );
    }

    #[test]
    fn ftps_needs_one_address_worth_of_sessions_and_at_least_sixteen() {
        assert_eq!(
            min_ftps_sessions(0),
            MIN_FTPS_SESSIONS,
            "0 = no per-address limit"
        );
        assert_eq!(min_ftps_sessions(2), MIN_FTPS_SESSIONS);
        assert_eq!(min_ftps_sessions(1000), 1000);
        assert!(Budget::plan(4096, 256, min_ftps_sessions(1000)).is_err());
    }

    #[test]
    fn huge_caps_do_not_overflow() {
        assert!(Budget::plan(u64::MAX, u32::MAX, u64::MAX).is_err());
        assert!(Budget::plan(0, u32::MAX, 16).is_err());
        assert!(Budget::plan(u64::MAX, u32::MAX, 16).is_ok());
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let l = raise_limit().unwrap();
        assert!(l.now >= soft && l.before == soft, "{l:?}");
    }
}
