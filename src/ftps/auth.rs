//! Device login over FTPS: `USER` is the MAC address (any SPEC form), `PASS` the device
//! secret. Unknown, disabled and wrong-secret devices all get the same 530; the secret is
//! compared in constant time against its stored hash and never logged.
//!
//! libunftp's `UserDetailProvider` only sees the `Principal`, so the authenticator packs what
//! the session needs (device, model, client IP, session serial) into `Principal.username`
//! and [`DeviceProvider`] unpacks it.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};

use super::sessions::Sessions;
use crate::db::Db;
use crate::domain::{DeviceId, Model};
use crate::secret::{Secret, SecretHash};

/// A logged-in device: the `User` of every storage call in its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    pub model: Model,
    pub ip: IpAddr,
    /// Unique per session; links libunftp's log records to this session.
    pub serial: u64,
}

impl fmt::Display for Device {
    /// `MAC#SERIAL`: libunftp logs this on login, see [`super::sessions`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.id, self.serial)
    }
}

impl UserDetail for Device {}

impl Device {
    fn to_principal(&self) -> Principal {
        Principal {
            username: format!("{}|{}|{}|{}", self.id, self.model, self.ip, self.serial),
        }
    }

    fn from_principal(p: &Principal) -> Option<Device> {
        let mut it = p.username.split('|');
        let id = DeviceId::parse(it.next()?).ok()?;
        let model = Model::parse(it.next()?).ok()?;
        let ip = it.next()?.parse().ok()?;
        let serial = it.next()?.parse().ok()?;
        Some(Device {
            id,
            model,
            ip,
            serial,
        })
    }
}

#[derive(Debug)]
pub struct DeviceAuthenticator {
    db: Db,
    sessions: Arc<Sessions>,
}

impl DeviceAuthenticator {
    pub fn new(db: Db, sessions: Arc<Sessions>) -> Self {
        DeviceAuthenticator { db, sessions }
    }
}

/// Compared against when the device is unknown, so that answer takes as long as a wrong secret.
const NO_DEVICE: SecretHash = SecretHash([0u8; 32]);

#[async_trait]
impl Authenticator for DeviceAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let password = Secret::from_client(creds.password.clone().unwrap_or_default());
        let Ok(id) = DeviceId::parse(username.trim()) else {
            let _ = NO_DEVICE.matches(&password);
            return Err(AuthenticationError::BadUser);
        };
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
                let device = Device {
                    id,
                    model: c.model,
                    ip: creds.source_ip,
                    serial: self.sessions.allocate(),
                };
                tracing::info!(device = %id, ip = %creds.source_ip, "device logged in");
                Ok(device.to_principal())
            }
            Some(_) if !usable => {
                tracing::warn!(device = %id, ip = %creds.source_ip, "login refused: device disabled");
                Err(AuthenticationError::BadUser)
            }
            Some(_) => {
                tracing::warn!(device = %id, ip = %creds.source_ip, "login refused: wrong secret");
                Err(AuthenticationError::BadPassword)
            }
            None => {
                tracing::warn!(device = %id, ip = %creds.source_ip, "login refused: unknown device");
                Err(AuthenticationError::BadUser)
            }
        }
    }
}

#[derive(Debug)]
pub struct DeviceProvider;

#[async_trait]
impl UserDetailProvider for DeviceProvider {
    type User = Device;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<Device, UserDetailError> {
        Device::from_principal(principal).ok_or_else(|| UserDetailError::new("malformed principal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_round_trip() {
        let d = Device {
            id: DeviceId::parse("aabbccddeeff").unwrap(),
            model: Model::parse("iq2").unwrap(),
            ip: "198.51.100.7".parse().unwrap(),
            serial: 42,
        };
        assert_eq!(Device::from_principal(&d.to_principal()), Some(d.clone()));
        assert_eq!(d.to_string(), "aa:bb:cc:dd:ee:ff#42");
        let v6 = Device {
            ip: "2001:db8::1".parse().unwrap(),
            ..d
        };
        assert_eq!(Device::from_principal(&v6.to_principal()), Some(v6));
    }
}
