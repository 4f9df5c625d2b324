//! TLS resumption as an FTPS server that binds data connections to their session wants it
//! (fwdist, vsftpd's `require_ssl_reuse`): every data connection resumes a TLS session of its
//! own control connection.
//!
//! rustls keeps resumable sessions per server name, so two sessions to one server in one
//! process (the fleet simulator) would resume each other's. [`SessionStores`] gives each FTPS
//! session a small store of its own: the control connection may resume from the shared store
//! (a quick reconnect) and writes what it gets to its own (and TLS 1.2 sessions, every other
//! TLS 1.3 ticket, to the shared one); data connections use only the session's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;

/// Resumable sessions shared by every FTPS session of a process (control connections only).
pub fn shared_store() -> Arc<dyn ClientSessionStore> {
    Arc::new(ClientSessionMemoryCache::new(256))
}

/// The control and data TLS configurations of one FTPS session.
#[derive(Debug, Clone)]
pub struct SessionStores {
    pub control: Arc<rustls::ClientConfig>,
    pub data: Arc<rustls::ClientConfig>,
}

impl SessionStores {
    pub fn new(base: &rustls::ClientConfig, shared: &Arc<dyn ClientSessionStore>) -> Self {
        let own: Arc<dyn ClientSessionStore> = Arc::new(ClientSessionMemoryCache::new(8));
        let mut control = base.clone();
        control.resumption = Resumption::store(Arc::new(Tee {
            shared: Some(shared.clone()),
            own: own.clone(),
            tickets: AtomicU32::new(0),
        }));
        let mut data = base.clone();
        data.resumption = Resumption::store(Arc::new(Tee {
            shared: None,
            own,
            tickets: AtomicU32::new(0),
        }));
        SessionStores {
            control: Arc::new(control),
            data: Arc::new(data),
        }
    }
}

/// Reads from `shared` when there is one (the control connection), else from `own`; writes
/// to both.
#[derive(Debug)]
struct Tee {
    shared: Option<Arc<dyn ClientSessionStore>>,
    own: Arc<dyn ClientSessionStore>,
    tickets: AtomicU32,
}

impl Tee {
    fn read(&self) -> &Arc<dyn ClientSessionStore> {
        self.shared.as_ref().unwrap_or(&self.own)
    }
}

impl ClientSessionStore for Tee {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        if let Some(s) = &self.shared {
            s.set_kx_hint(name.clone(), group);
        }
        self.own.set_kx_hint(name, group);
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.read().kx_hint(name)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        if let Some(s) = &self.shared {
            s.set_tls12_session(name.clone(), value.clone());
        }
        self.own.set_tls12_session(name, value);
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        let v = self.read().tls12_session(name)?;
        if self.shared.is_some() {
            // Resumed on the control connection: the data connections resume it too.
            self.own.set_tls12_session(name.to_owned(), v.clone());
        }
        Some(v)
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        if let Some(s) = &self.shared {
            s.remove_tls12_session(name);
        }
        self.own.remove_tls12_session(name);
    }

    /// A TLS 1.3 ticket is single use and cannot be copied: the control connection's first
    /// ticket goes to the session (its data connections need it), the next to the shared
    /// store, and so on alternately.
    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        match &self.shared {
            Some(s) if self.tickets.fetch_add(1, Ordering::Relaxed) % 2 == 1 => {
                s.insert_tls13_ticket(name, value);
            }
            _ => self.own.insert_tls13_ticket(name, value),
        }
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.read().take_tls13_ticket(name)
    }
}
