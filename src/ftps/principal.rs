//! Who an FTPS session is logged in as: a registered device, or the built-in probe account
//! (`fwdist doctor`), which has a tree of its own and no device identity at all.
//!
//! [`SessionUser`] is libunftp's `User` for a session. The authenticator stores it in the
//! session's [`super::conn::Conn`] when the login succeeds, and libunftp's user-detail
//! provider hands that same value back: nothing is encoded into, or parsed out of, a string.

use std::fmt;
use std::net::IpAddr;

use unftp_core::auth::UserDetail;

use crate::domain::{DeviceId, Model};

/// A logged-in device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLogin {
    pub id: DeviceId,
    pub model: Model,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Device(DeviceLogin),
    /// The built-in probe account: reads `/probe.bin` and nothing else.
    Probe,
}

/// The `User` of every storage call in one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub principal: Principal,
    /// The IQ's address (not the loopback address libunftp sees).
    pub ip: IpAddr,
    /// Unique per session; links libunftp's log records to this session.
    pub serial: u64,
}

impl SessionUser {
    pub fn device(&self) -> Option<&DeviceLogin> {
        match &self.principal {
            Principal::Device(d) => Some(d),
            Principal::Probe => None,
        }
    }
}

impl fmt::Display for SessionUser {
    /// `MAC#SERIAL` (`probe#SERIAL`): libunftp logs this on login, see [`super::sessions`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.principal {
            Principal::Device(d) => write!(f, "{}#{}", d.id, self.serial),
            Principal::Probe => write!(f, "{}#{}", fwdist_release::probe::USER, self.serial),
        }
    }
}

impl UserDetail for SessionUser {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_as_login_and_session() {
        let ip = "192.0.2.1".parse().unwrap_or_else(|_| unreachable!());
        let device = SessionUser {
            principal: Principal::Device(DeviceLogin {
                id: DeviceId::from_bytes([0xaa, 0xbb, 0xcc, 0, 0, 1]),
                model: Model::parse("iq2").unwrap_or_else(|_| unreachable!()),
            }),
            ip,
            serial: 42,
        };
        assert_eq!(device.to_string(), "aa:bb:cc:00:00:01#42");
        assert!(device.device().is_some());
        let probe = SessionUser {
            principal: Principal::Probe,
            ip,
            serial: 7,
        };
        assert_eq!(probe.to_string(), "probe#7");
        assert!(probe.device().is_none());
    }
}
