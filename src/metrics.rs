//! fwdist's own Prometheus families (SPEC §11), in a registry per running server (so two
//! servers in one test process never share counts). `/metrics` serves these beside
//! libunftp's `ftp_*` families, which live in the process-wide default registry.
//!
//! Counted where the event happens (the FTPS front, the recorder, the report service, the
//! admin API's middleware); gauges that describe stored state (`fwdist_rollouts`) are set
//! from the database when scraped. Knows nothing of FTP or HTTP.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Why an FTPS connection or login was turned away (`fwdist_ftps_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `421` at connect: too many sessions from that address.
    TooManySessions,
    /// A login refused because that device is locked out from that address.
    Lockout,
    /// A command other than `AUTH TLS` on a control channel that is not encrypted.
    Plaintext,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManySessions => "421",
            Refusal::Lockout => "lockout",
            Refusal::Plaintext => "plaintext",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub downloads: IntCounterVec,
    pub download_bytes: IntCounter,
    pub reports: IntCounterVec,
    pub rollouts: IntGaugeVec,
    pub ftps_sessions: IntGauge,
    pub ftps_refused: IntCounterVec,
    pub passive_offers_unused: IntCounter,
    pub record_queue_depth: IntGauge,
    pub record_waits: IntCounterVec,
    pub store_orphans_removed: IntCounter,
    pub passive_ports_in_use: IntGauge,
    pub oneport_held: IntCounterVec,
    pub api_requests: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c =
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, Box::new(c.clone()), name);
    c
}

fn register(r: &Registry, c: Box<dyn prometheus::core::Collector>, name: &str) {
    // Names are constants of this file, each registered once per registry: a failure is a
    // programming error caught by the unit test below, never input.
    if let Err(e) = r.register(c) {
        panic!("metric {name}: {e}");
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            register(&r, Box::new(c.clone()), name);
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
            register(&r, Box::new(g.clone()), name);
            g
        };
        let rollouts = IntGaugeVec::new(
            Opts::new(
                "fwdist_rollouts",
                "Rollouts by state (scheduled, active, paused, aborted).",
            ),
            &["state"],
        )
        .unwrap_or_else(|e| panic!("metric fwdist_rollouts: {e}"));
        register(&r, Box::new(rollouts.clone()), "fwdist_rollouts");
        let m = Metrics {
            downloads: counter_vec(
                &r,
                "fwdist_downloads_total",
                "Download records written, by outcome (complete: the IQ acknowledged every byte).",
                &["outcome"],
            ),
            download_bytes: counter(
                "fwdist_download_bytes_total",
                "Image bytes the IQs acknowledged, over all records.",
            ),
            reports: counter_vec(
                &r,
                "fwdist_reports_total",
                "Install reports stored, by outcome and source (ftps, api).",
                &["outcome", "source"],
            ),
            rollouts,
            ftps_sessions: gauge("fwdist_ftps_sessions", "FTPS control connections open now."),
            ftps_refused: counter_vec(
                &r,
                "fwdist_ftps_refused_total",
                "FTPS connections, logins or pre-TLS commands turned away, by reason (421, lockout, plaintext: each command before AUTH TLS).",
                &["reason"],
            ),
            passive_offers_unused: counter(
                "fwdist_passive_offers_unused_total",
                "Passive offers (227) the IQ never connected to: a firewall likely blocks the port.",
            ),
            record_queue_depth: gauge(
                "fwdist_record_queue_depth",
                "Download records queued for the database, not yet written.",
            ),
            record_waits: counter_vec(
                &r,
                "fwdist_record_waits_total",
                "Complete downloads whose 226 waited for their record's commit, by result (committed; late: not committed within the deadline, 226 sent anyway; failed: the database refused it).",
                &["result"],
            ),
            store_orphans_removed: counter(
                "fwdist_store_orphans_removed_total",
                "Releases removed from the store at start because they had no database row (a publish cut short between its store commit and its row).",
            ),
            passive_ports_in_use: gauge(
                "fwdist_passive_ports_in_use",
                "Passive ports on offer now, waiting for their data connection (of ftps.passive_ports; with \"same\", offers on the control port).",
            ),
            oneport_held: counter_vec(
                &r,
                "fwdist_oneport_held_total",
                "One port: connections held because their address had an offer outstanding, by what they turned out to be (data, control: greeted late, gone: closed first).",
                &["as"],
            ),
            api_requests: counter_vec(
                &r,
                "fwdist_api_requests_total",
                "Admin API requests answered, by method and status class (2xx, 4xx, 5xx).",
                &["method", "status"],
            ),
            registry: r,
        };
        for reason in [Refusal::TooManySessions, Refusal::Lockout, Refusal::Plaintext] {
            m.ftps_refused.with_label_values(&[reason.as_str()]);
        }
        for verdict in ["data", "control", "gone"] {
            m.oneport_held.with_label_values(&[verdict]);
        }
        for result in ["committed", "late", "failed"] {
            m.record_waits.with_label_values(&[result]);
        }
        for outcome in ["complete", "aborted"] {
            m.downloads.with_label_values(&[outcome]);
        }
        for outcome in ["installed", "failed"] {
            for source in ["ftps", "api"] {
                m.reports.with_label_values(&[outcome, source]);
            }
        }
        for state in ["scheduled", "active", "paused", "aborted"] {
            m.rollouts.with_label_values(&[state]);
        }
        m
    }

    pub fn refused(&self, why: Refusal) {
        self.ftps_refused.with_label_values(&[why.as_str()]).inc();
    }

    /// Prometheus text of these families and of the default registry (libunftp's).
    pub fn render(&self) -> Result<(String, Vec<u8>), prometheus::Error> {
        use prometheus::Encoder as _;
        let encoder = prometheus::TextEncoder::new();
        let mut families = self.registry.gather();
        families.extend(prometheus::gather());
        let mut buf = Vec::new();
        encoder.encode(&families, &mut buf)?;
        Ok((encoder.format_type().to_owned(), buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_of_the_spec_is_rendered() {
        let m = Metrics::new();
        m.refused(Refusal::Lockout);
        let (_, text) = m.render().unwrap();
        let text = String::from_utf8(text).unwrap();
        for family in [
            "fwdist_downloads_total",
            "fwdist_download_bytes_total",
            "fwdist_reports_total",
            "fwdist_rollouts",
            "fwdist_ftps_sessions",
            "fwdist_ftps_refused_total",
            "fwdist_passive_offers_unused_total",
            "fwdist_record_queue_depth",
            "fwdist_record_waits_total",
            "fwdist_store_orphans_removed_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
        assert!(
            text.contains("fwdist_ftps_refused_total{reason=\"lockout\"} 1"),
            "{text}"
        );
        // Two servers in one process keep their own counts.
        assert!(Metrics::new().render().is_ok());
    }
}
