//! Counters for the failures that otherwise look like "the IQ just didn't update": passive
//! offers that never got a data connection (a firewall drops the passive port), data
//! connections whose TLS handshake failed, and sessions refused with `421` because one
//! address had too many open. Kept per device and per client IP, in memory, since start.
//!
//! Written by the FTPS front, read by the admin API; knows nothing of either. Unused offers
//! and `421` refusals also move their Prometheus counters ([`Metrics`]) here, so the two
//! never disagree.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::domain::{DeviceId, now_ms};
use crate::metrics::{Metrics, Refusal};

/// What went wrong, and when it last did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `227` sent, but no data connection arrived within `ftps.data_connect_timeout_secs`.
    pub passive_offers_unused: u64,
    /// A data connection arrived but its TLS handshake failed or never started.
    pub data_tls_failures: u64,
    /// A data connection from the session's address that did not resume the control
    /// connection's TLS session (a client without session reuse, or someone else there).
    /// One from another address is dropped and logged, not counted: any host could fill the
    /// per-address table with them.
    pub data_connections_unbound: u64,
    /// Sessions refused at connect with `421` (`ftps.max_sessions_per_ip`).
    pub sessions_refused: u64,
    /// The last passive port that went unused (the one to check in the site's firewall).
    pub last_unused_port: Option<u16>,
    /// Unix milliseconds of the last event counted here.
    pub last_at: Option<i64>,
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        self.passive_offers_unused == 0
            && self.data_tls_failures == 0
            && self.data_connections_unbound == 0
            && self.sessions_refused == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    PassiveOfferUnused { port: u16 },
    DataTlsFailure,
    DataUnbound,
    SessionRefused,
}

#[derive(Debug, Default)]
pub struct Diagnostics {
    inner: Mutex<Inner>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Inner {
    by_device: HashMap<DeviceId, Counts>,
    by_ip: HashMap<IpAddr, Counts>,
}

/// At most this many addresses and devices are tracked; beyond it the oldest entry goes,
/// so a scan from many addresses cannot grow memory without bound.
const MAX_ENTRIES: usize = 10_000;

/// One row of [`Diagnostics::snapshot`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row<K> {
    pub key: K,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub devices: Vec<Row<DeviceId>>,
    pub client_ips: Vec<Row<IpAddr>>,
}

impl Diagnostics {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Diagnostics {
            inner: Mutex::default(),
            metrics,
        }
    }

    pub fn count(&self, ip: IpAddr, device: Option<DeviceId>, event: Event) {
        match event {
            Event::PassiveOfferUnused { .. } => self.metrics.passive_offers_unused.inc(),
            Event::SessionRefused => self.metrics.refused(Refusal::TooManySessions),
            Event::DataTlsFailure | Event::DataUnbound => {}
        }
        let at = now_ms();
        let mut g = self.lock();
        bump(&mut g.by_ip, ip, event, at);
        if let Some(d) = device {
            bump(&mut g.by_device, d, event, at);
        }
    }

    pub fn device(&self, id: &DeviceId) -> Counts {
        self.lock().by_device.get(id).copied().unwrap_or_default()
    }

    /// Everything counted, most recent first.
    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        Snapshot {
            devices: rows(&g.by_device),
            client_ips: rows(&g.by_ip),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each update is a few integer writes: a poisoned lock holds consistent counts.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn bump<K: std::hash::Hash + Eq + Copy>(map: &mut HashMap<K, Counts>, key: K, event: Event, at: i64) {
    if !map.contains_key(&key)
        && map.len() >= MAX_ENTRIES
        && let Some(oldest) = map.iter().min_by_key(|(_, c)| c.last_at).map(|(k, _)| *k)
    {
        map.remove(&oldest);
    }
    let c = map.entry(key).or_default();
    match event {
        Event::PassiveOfferUnused { port } => {
            c.passive_offers_unused += 1;
            c.last_unused_port = Some(port);
        }
        Event::DataTlsFailure => c.data_tls_failures += 1,
        Event::DataUnbound => c.data_connections_unbound += 1,
        Event::SessionRefused => c.sessions_refused += 1,
    }
    c.last_at = Some(at);
}

fn rows<K: Copy + Ord>(map: &HashMap<K, Counts>) -> Vec<Row<K>> {
    let mut v: Vec<Row<K>> = map.iter().map(|(k, c)| Row { key: *k, counts: *c }).collect();
    v.sort_by(|a, b| b.counts.last_at.cmp(&a.counts.last_at).then(a.key.cmp(&b.key)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_device_and_per_ip() {
        let d = Diagnostics::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let dev = DeviceId::parse("aa:bb:cc:dd:ee:ff").unwrap();
        d.count(ip, Some(dev), Event::PassiveOfferUnused { port: 50002 });
        d.count(ip, Some(dev), Event::DataTlsFailure);
        d.count(ip, None, Event::SessionRefused);
        let c = d.device(&dev);
        assert_eq!(
            (c.passive_offers_unused, c.data_tls_failures, c.sessions_refused),
            (1, 1, 0)
        );
        assert_eq!(c.last_unused_port, Some(50002));
        let s = d.snapshot();
        assert_eq!(s.client_ips.len(), 1);
        assert_eq!(s.client_ips[0].counts.sessions_refused, 1);
        assert!(
            d.device(&DeviceId::parse("00:11:22:33:44:55").unwrap())
                .is_empty()
        );
    }

    #[test]
    fn memory_is_bounded() {
        let d = Diagnostics::default();
        for i in 0..(MAX_ENTRIES as u32 + 50) {
            d.count(IpAddr::from(i.to_be_bytes()), None, Event::SessionRefused);
        }
        assert_eq!(d.snapshot().client_ips.len(), MAX_ENTRIES);
    }
}
