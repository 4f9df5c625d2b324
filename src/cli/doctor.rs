//! `fwdist doctor HOST:PORT`: arguments and printing; the steps, and the choice of trust
//! roots (the system's, or `--ca`), are in [`fwdist_iq::doctor`].

use std::io::Write as _;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::domain::DeviceId;
use fwdist_iq::doctor::{self, DoctorOptions, Line, Login, TrustRoots};

/// Exit code for bad arguments (clap uses it too).
const BAD_ARGUMENTS: u8 = 2;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Trust: the server's certificate must chain to the system's trust roots, as for \
    curl and openssl\n\
    (the files SSL_CERT_FILE and SSL_CERT_DIR name when either is set, else the platform's store,\n\
    e.g. /etc/ssl/certs), or with --ca FILE to that file's certificate(s) instead. A certificate an\n\
    IQ would refuse (unknown issuer, self-signed, expired, wrong name) stops the run at the\n\
    certificate step; with --insecure that line still says it is NOT trusted, the later steps run,\n\
    and the exit code is 4 at best.\n\n\
    Exit codes:\n  \
    0  every step passed: an IQ update works from here\n  \
    3  updates work but degraded: some passive ports fail, so an IQ that draws one needs a retry\n  \
    4  only with --insecure: the certificate is NOT trusted (an IQ refuses it), while the steps\n     \
    after it worked (every passive port, or some: the summary says)\n  \
    1  an update cannot work from here (a step failed, or no passive port works; with --insecure\n     \
    this outranks 4, and the certificate line still says what is wrong with it)\n  \
    2  bad arguments: also an unusable --ca, or no usable root in the system's store (give --ca)"
)]
pub struct DoctorArgs {
    /// The FTPS server as IQs reach it: HOST:PORT of the control port.
    #[arg(value_name = "HOST:PORT", value_parser = parse_server)]
    pub server: (String, u16),
    /// PEM certificate(s) the server's certificate must chain to, instead of the system's
    /// trust roots: the server's own CA, or its self-signed certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Go on after the certificate step fails, having shown what is wrong with the
    /// certificate: the later steps (login, passive ports) still run; exit 4 at best.
    #[arg(long)]
    pub insecure: bool,
    /// Log in as this device (its MAC, sent as typed) instead of the built-in probe account;
    /// each passive port is then tested with a directory listing.
    #[arg(long, requires = "secret", value_parser = parse_device)]
    pub device: Option<String>,
    /// The device's secret (better given through the environment than the command line).
    #[arg(long, env = "FWDIST_DEVICE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The passive range to test, FIRST-LAST: instead of what the server's `SITE PORTS`
    /// says, or when it does not answer it. Ignored (with a warning) against a one-port
    /// server (`SITE PORTS` says passive=same): it hands out no other port.
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_range)]
    pub passive_ports: Option<RangeInclusive<u16>>,
    /// Seconds any control-channel wait (connect, reply, handshake) may take.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout_secs: u64,
    /// Seconds a data connection may take to open before its port counts as blocked.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub data_timeout_secs: u64,
    /// Local address to connect from (control and data).
    #[arg(long, value_name = "IP")]
    pub bind_ip: Option<IpAddr>,
    /// Print one JSON document (steps, ports, rules, verdict) instead of lines.
    #[arg(long)]
    pub json: bool,
}

fn parse_server(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not HOST:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?}: {e}"))?;
    Ok((host.to_owned(), port))
}

fn parse_device(s: &str) -> Result<String, String> {
    DeviceId::parse(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

fn parse_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not FIRST-LAST (two ports, FIRST <= LAST)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// Runs the doctor; the exit code is its verdict.
///
/// # Errors
/// None of its own: unusable arguments (an unusable `--ca`, or a system store without a
/// usable root when `--ca` is not given) print one line and exit 2.
pub async fn run(a: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let (host, port) = a.server.clone();
    let roots = match &a.ca {
        Some(ca) => TrustRoots::pinned(ca),
        None => TrustRoots::system(),
    };
    let roots = match roots {
        Ok(r) => r,
        Err(e) => return Ok(bad_arguments(&e)),
    };
    let server_name = match ServerName::try_from(host.clone()) {
        Ok(n) => n,
        Err(e) => return Ok(bad_arguments(&format!("{host:?}: {e}"))),
    };
    let login = match (&a.device, &a.secret) {
        (Some(user), Some(secret)) => Login::Device {
            user: user.clone(),
            secret: secret.clone(),
        },
        _ => Login::Probe,
    };
    let opts = DoctorOptions {
        host,
        port,
        server_name,
        roots,
        insecure: a.insecure,
        login,
        passive_ports: a.passive_ports.clone(),
        timeout: Duration::from_secs(a.timeout_secs),
        data_timeout: Duration::from_secs(a.data_timeout_secs),
        bind_ip: a.bind_ip,
    };
    let json = a.json;
    let mut print = |line: &Line| {
        if !json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    };
    let report = match doctor::run(&opts, &mut print).await {
        Ok(r) => r,
        Err(e) => return Ok(bad_arguments(&format!("the trust roots: {e}"))),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for rule in &report.rules {
            println!("     {rule}");
        }
    }
    Ok(ExitCode::from(report.exit_code))
}

fn bad_arguments(e: &str) -> ExitCode {
    eprintln!("fwdist doctor: {e}");
    ExitCode::from(BAD_ARGUMENTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_and_range_arguments() {
        assert_eq!(
            parse_server("ftp.example.com:2121").unwrap(),
            ("ftp.example.com".into(), 2121)
        );
        assert_eq!(parse_server("[::1]:21").unwrap(), ("::1".into(), 21));
        assert_eq!(
            parse_server("203.0.113.5:2121").unwrap(),
            ("203.0.113.5".into(), 2121)
        );
        for bad in [
            "ftp.example.com",
            ":2121",
            "host:0",
            "host:x",
            "host:70000",
            "bad host:21",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_range("50000-50003").unwrap(), 50000..=50003);
        assert_eq!(parse_range("50000-50000").unwrap(), 50000..=50000);
        for bad in ["50003-50000", "50000", "a-b", "0-5", "1-70000"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        assert!(parse_device("aa-bb-cc-dd-ee-ff").is_ok());
        assert!(parse_device("nope").is_err());
    }
}
