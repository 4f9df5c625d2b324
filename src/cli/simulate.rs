//! `fwdist simulate`: N simulated IQs with concurrency C against a server; prints
//! sessions/s, MiB/s, p50/p99 session latency and errors by kind. Exit 0 only without errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use fwdist_iq::simulate::{self, Mode, Plan};
use fwdist_release::signing::TrustedKeys;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// FTPS control address, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// CSV of `id,secret` (what `fwdist devices import` prints); sessions cycle through it.
    /// Not needed with --https-get.
    #[arg(long, required_unless_present = "https_get")]
    pub devices: Option<PathBuf>,
    /// Sessions to run in all (with --duration: RATE x SECS instead).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub sessions: usize,
    /// Start sessions on a fixed schedule, this many per second (still at most -c at once;
    /// sessions that start over a second late are counted). Default: as fast as -c allows.
    #[arg(long, value_name = "SESSIONS_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// With --rate: run this many seconds (RATE x SECS sessions), e.g. a soak.
    #[arg(long, value_name = "SECS", requires = "rate")]
    pub duration: Option<u64>,
    /// Cut this fraction of image downloads half way (both connections dropped, as a lost
    /// link) and resume each with REST in a new session, as an IQ does.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = parse_fraction,
          conflicts_with_all = ["manifest_only", "get", "hold_secs", "https_get"])]
    pub cut: f64,
    /// Sessions at once.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub concurrency: usize,
    /// Source addresses, e.g. 127.0.0.2-127.0.0.254, to model many sites (sessions take
    /// them round robin; fewer addresses than sessions models IQs sharing a NAT address).
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Verify manifests against these trusted keys (*.pub).
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Only read the target manifest (measures session setup, not bulk transfer).
    #[arg(long, conflicts_with_all = ["get", "hold_secs", "https_get"])]
    pub manifest_only: bool,
    /// Log in and RETR just this path (works against any FTPS server, e.g. vsftpd).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["hold_secs", "https_get"])]
    pub get: Option<String>,
    /// Log in and hold every session idle for this many seconds (use -c = -n).
    #[arg(long, value_name = "SECS", conflicts_with = "https_get")]
    pub hold_secs: Option<u64>,
    /// Not FTP: TLS + `GET PATH` (HTTP/1.0), to show the generator's own ceiling.
    #[arg(long, value_name = "PATH")]
    pub https_get: Option<String>,
    /// After each update, upload an install report: installed, failed, or mix:F (that
    /// fraction of devices, by a stable hash of the id, report failed).
    #[arg(long, value_name = "OUTCOME", conflicts_with_all = ["manifest_only", "get", "hold_secs", "https_get"],
          value_parser = |s: &str| simulate::ReportPlan::parse(s))]
    pub report: Option<simulate::ReportPlan>,
    /// Extra attempts of a session after a transient failure, as a real IQ retries.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    #[arg(long, default_value = "certs/server.crt")]
    pub ca: PathBuf,
    /// Seconds any single network wait may take.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1e6)
        .ok_or_else(|| format!("{s:?}: expected sessions per second, above 0"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("{s:?}: expected a fraction from 0 to 1"))
}

/// # Errors
/// Bad arguments or unreadable files (exit 1).
pub async fn run(a: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let text = match &a.https_get {
        Some(_) => "-,-".to_owned(),
        None => {
            let path = a.devices.as_deref().context("--devices is required")?;
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
    };
    let devices: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("id,"))
        .map(|l| {
            l.split_once(',')
                .map(|(u, p)| (u.trim().to_owned(), p.trim().to_owned()))
        })
        .collect::<Option<_>>()
        .context("--devices: expected id,secret lines")?;
    if devices.is_empty() {
        bail!("--devices: no devices in the file");
    }
    let source_ips = match &a.source_ips {
        Some(r) => simulate::parse_ip_range(r).map_err(|e| anyhow::anyhow!("--source-ips {e}"))?,
        None => Vec::new(),
    };
    let trust = a.trust.as_deref().map(TrustedKeys::load_dir).transpose()?;
    let client = super::net::client_config(&a.server, &a.ca, a.timeout).await?;
    let plan = Plan {
        client,
        report: a.report,
        devices,
        sessions: match (a.duration, a.rate) {
            (Some(secs), Some(rate)) => simulate::sessions_for(Duration::from_secs(secs), rate),
            _ => a.sessions,
        },
        concurrency: a.concurrency,
        source_ips,
        trust,
        mode: if let Some(p) = &a.https_get {
            Mode::Https(p.clone())
        } else if let Some(s) = a.hold_secs {
            Mode::Hold(Duration::from_secs(s))
        } else if let Some(p) = &a.get {
            Mode::Get(p.clone())
        } else if a.manifest_only {
            Mode::Manifest
        } else {
            Mode::Update
        },
        retries: a.retries,
        rate: a.rate,
        cut: a.cut,
    };
    let r = simulate::run(plan).await;
    println!(
        "sessions: {} ok, {} failed in {:.2} s (concurrency {})",
        r.ok,
        r.failed,
        r.elapsed.as_secs_f64(),
        a.concurrency
    );
    println!(
        "rate: {:.1} sessions/s, {:.1} MiB/s",
        r.sessions_per_sec(),
        r.mib_per_sec()
    );
    println!(
        "latency: p50 {:.1} ms, p99 {:.1} ms",
        r.percentile(0.5).as_secs_f64() * 1e3,
        r.percentile(0.99).as_secs_f64() * 1e3
    );
    let errors: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "errors: {} (TLS upgrade retried in {} sessions)",
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join(" ")
        },
        r.handshake_retries
    );
    if let Some(rate) = a.rate {
        println!(
            "schedule: {rate} sessions/s asked, {} started over 1 s late",
            r.late
        );
    }
    if a.cut > 0.0 {
        println!("cut downloads: {} (resumed with REST)", r.cut);
    }
    if r.no_update > 0 {
        println!(
            "no update: {} sessions (nothing targets the device; not an error)",
            r.no_update
        );
    }
    if !r.reports.is_empty() {
        let rep: Vec<String> = r.reports.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("reports: {}", rep.join(" "));
    }
    if !r.recovered.is_empty() {
        let rec: Vec<String> = r.recovered.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("recovered on retry: {}", rec.join(" "));
    }
    for (kind, example) in &r.examples {
        println!("  {kind}: e.g. {example}");
    }
    Ok(if r.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
