//! The `certificate` step: what the server's certificate says, judged against the trust
//! roots ([`super::TrustRoots`]: the system's, or `--ca`) and HOST, collected during the
//! handshake by [`CertInspector`]. With `--insecure` the inspector lets the handshake go on
//! past a certificate it would refuse, so that the steps after it can still run; what is
//! wrong with it is still reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{RootSource, Status, TrustRoots};

/// Under this many days left, the certificate step warns.
pub const EXPIRY_WARN_DAYS: i64 = 30;

/// What the server's certificate says, judged against the trust roots and HOST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub subject: String,
    /// What the certificate was judged against.
    pub source: RootSource,
    /// Its issuer is its subject.
    pub self_signed: bool,
    /// Chains to the trust roots (judged at a moment inside the certificate's validity, so
    /// expiry is reported on its own).
    pub chain: Result<(), String>,
    /// Valid for HOST.
    pub name: Result<(), String>,
    /// Validity, Unix seconds; None when unreadable.
    pub validity: Option<(i64, i64)>,
    pub now: i64,
    /// What rustls' own verifier decided: a refusal the checks above do not explain is
    /// reported as is (so `--insecure` cannot pass over one unseen).
    pub verifier: Result<(), String>,
}

impl CertFacts {
    fn gather(
        ee: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
        roots: &RootCertStore,
        source: &RootSource,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let x509 = x509_parser::parse_x509_certificate(ee.as_ref())
            .ok()
            .map(|(_, c)| c);
        let validity = x509.as_ref().map(|c| {
            (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            )
        });
        let subject = x509
            .as_ref()
            .map_or_else(|| "?".into(), |c| c.subject().to_string());
        let self_signed = x509
            .as_ref()
            .is_some_and(|c| c.issuer().as_raw() == c.subject().as_raw());
        let parsed = match ParsedCertificate::try_from(ee) {
            Ok(p) => p,
            Err(e) => {
                let bad = Err(format!("unreadable certificate: {e}"));
                return CertFacts {
                    subject,
                    source: source.clone(),
                    self_signed,
                    chain: bad.clone(),
                    name: bad,
                    validity,
                    now: now_s,
                    verifier: Ok(()),
                };
            }
        };
        let at = match validity {
            Some((_, after)) if now_s > after => after,
            Some((before, _)) if now_s < before => before,
            _ => now_s,
        };
        let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).unwrap_or(0)));
        let chain = verify_server_cert_signed_by_trust_anchor(&parsed, roots, intermediates, at, algs.all)
            .map_err(|e| describe_cert_error(&e, source, self_signed));
        let name =
            verify_server_name(&parsed, name).map_err(|e| describe_cert_error(&e, source, self_signed));
        CertFacts {
            subject,
            source: source.clone(),
            self_signed,
            chain,
            name,
            validity,
            now: now_s,
            verifier: Ok(()),
        }
    }

    /// Would an IQ accept it?
    pub fn acceptable(&self) -> bool {
        let (status, _) = assess_cert(self, "");
        status != Status::Fail
    }
}

fn describe_cert_error(e: &rustls::Error, source: &RootSource, self_signed: bool) -> String {
    match (e, source) {
        (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), RootSource::Pinned(_)) => {
            let what = if self_signed { "it is self-signed: " } else { "" };
            format!("not issued by a certificate in --ca ({what}wrong --ca, or a TLS-inspecting middlebox)")
        }
        (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), RootSource::System)
            if self_signed =>
        {
            "unknown issuer: it is self-signed, so none of the system's trust roots vouches for it \
             (pin it with --ca FILE)"
                .into()
        }
        (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), RootSource::System) => {
            "unknown issuer: not issued by any of the system's trust roots (a private CA: give it with \
             --ca FILE; or a TLS-inspecting middlebox)"
                .into()
        }
        (rustls::Error::InvalidCertificate(CertificateError::BadSignature), RootSource::Pinned(_)) => {
            "its issuer's name is in --ca but the signature does not verify (wrong --ca, or a \
             TLS-inspecting middlebox)"
                .into()
        }
        (rustls::Error::InvalidCertificate(CertificateError::BadSignature), RootSource::System) => {
            "its issuer's name is among the system's trust roots but the signature does not verify \
             (an impostor, or a TLS-inspecting middlebox)"
                .into()
        }
        (
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected,
                presented,
            }),
            _,
        ) => format!(
            "issued for {}, not for {}",
            presented.join(", "),
            expected.to_str()
        ),
        (other, _) => other.to_string(),
    }
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The certificate step's status and detail.
pub fn assess_cert(f: &CertFacts, host: &str) -> (Status, String) {
    let mut problems = Vec::new();
    if let Err(e) = &f.chain {
        problems.push(format!("untrusted: {e}"));
    }
    if let Err(e) = &f.name {
        problems.push(format!("name mismatch: {e}"));
    }
    let Some((before, after)) = f.validity else {
        problems.push("its validity dates are unreadable".into());
        return (Status::Fail, format!("{}: {}", f.subject, problems.join("; ")));
    };
    let days = (after - f.now).div_euclid(86_400);
    if f.now > after {
        let ago = (f.now - after) / 86_400;
        problems.push(format!("expired on {} ({ago} days ago)", date(after)));
    } else if f.now < before {
        problems.push(format!("not valid before {}", date(before)));
    }
    if problems.is_empty()
        && let Err(e) = &f.verifier
    {
        problems.push(format!("refused: {e}"));
    }
    if !problems.is_empty() {
        return (Status::Fail, format!("{}: {}", f.subject, problems.join("; ")));
    }
    let expiry = format!("expires {} ({days} days left)", date(after));
    if days < EXPIRY_WARN_DAYS {
        (Status::Warn, format!("{}: {expiry}: renew it soon", f.subject))
    } else {
        let detail = format!(
            "{}: chains to {}, valid for {host}, {expiry}",
            f.subject,
            f.source.name()
        );
        (Status::Ok, detail)
    }
}

/// A certificate verifier that decides exactly as rustls' WebPKI verifier does, and keeps
/// what it saw so the certificate step can say what is wrong, not just that something is.
///
/// `insecure`: it accepts whatever certificate it is shown (still checking the handshake
/// signatures, which prove the server holds the certificate's key), having kept the facts
/// that say what is wrong with it.
#[derive(Debug)]
pub struct CertInspector {
    inner: Arc<WebPkiServerVerifier>,
    roots: TrustRoots,
    insecure: bool,
    algs: WebPkiSupportedAlgorithms,
    seen: Mutex<Option<CertFacts>>,
}

impl CertInspector {
    /// # Errors
    /// No usable root in `roots`.
    pub fn new(roots: TrustRoots, provider: Arc<CryptoProvider>, insecure: bool) -> Result<Self, String> {
        let algs = provider.signature_verification_algorithms;
        let inner = WebPkiServerVerifier::builder_with_provider(roots.store.clone(), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(CertInspector {
            inner,
            roots,
            insecure,
            algs,
            seen: Mutex::new(None),
        })
    }

    pub(super) fn take(&self) -> Option<CertFacts> {
        self.seen.lock().ok().and_then(|mut g| g.take())
    }
}

impl ServerCertVerifier for CertInspector {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut facts = CertFacts::gather(
            end_entity,
            intermediates,
            server_name,
            now,
            &self.roots.store,
            &self.roots.source,
            self.algs,
        );
        let decided =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        facts.verifier = decided.as_ref().map(|_| ()).map_err(ToString::to_string);
        if let Ok(mut g) = self.seen.lock() {
            *g = Some(facts);
        }
        match decided {
            Err(_) if self.insecure => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    /// A self-signed certificate for `names`, valid from `from` to `to` days from now.
    fn cert(names: &[&str], from: i64, to: i64) -> CertificateDer<'static> {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::seconds(from * DAY);
        p.not_after = now + time::Duration::seconds(to * DAY);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    fn cert_named(cn: &str) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::new(vec!["ftp.example.com".to_owned()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    fn facts(ee: &CertificateDer<'_>, root: &CertificateDer<'_>, host: &str) -> CertFacts {
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        facts_against(ee, roots, &RootSource::Pinned("ca.pem".into()), host)
    }

    fn facts_against(
        ee: &CertificateDer<'_>,
        roots: RootCertStore,
        source: &RootSource,
        host: &str,
    ) -> CertFacts {
        let provider = rustls::crypto::ring::default_provider();
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let now = UnixTime::now();
        CertFacts::gather(
            ee,
            &[],
            &name,
            now,
            &roots,
            source,
            provider.signature_verification_algorithms,
        )
    }

    #[test]
    fn certificate_good_expiring_expired_misnamed_untrusted() {
        let good = cert(&["ftp.example.com"], -1, 365);
        let (s, d) = assess_cert(&facts(&good, &good, "ftp.example.com"), "ftp.example.com");
        assert_eq!(s, Status::Ok, "{d}");
        assert!(d.contains("days left") && d.contains("chains to --ca"), "{d}");

        let soon = cert(&["ftp.example.com"], -300, 10);
        let (s, d) = assess_cert(&facts(&soon, &soon, "ftp.example.com"), "ftp.example.com");
        assert_eq!(s, Status::Warn, "{d}");
        assert!(d.contains("renew"), "{d}");

        let old = cert(&["ftp.example.com"], -400, -3);
        let f = facts(&old, &old, "ftp.example.com");
        assert_eq!(f.chain, Ok(()), "trust is judged apart from expiry");
        let (s, d) = assess_cert(&f, "ftp.example.com");
        assert_eq!(s, Status::Fail);
        assert!(d.contains("expired") && !d.contains("untrusted"), "{d}");
        assert!(!f.acceptable());

        let (s, d) = assess_cert(&facts(&good, &good, "other.example.com"), "other.example.com");
        assert_eq!(s, Status::Fail);
        assert!(
            d.contains("name mismatch") && d.contains("ftp.example.com"),
            "{d}"
        );

        // Same issuer name, other key (rcgen's default subject): an impostor or a stale --ca.
        let stranger = cert(&["ftp.example.com"], -1, 365);
        let (s, d) = assess_cert(&facts(&good, &stranger, "ftp.example.com"), "ftp.example.com");
        assert_eq!(s, Status::Fail);
        assert!(d.contains("untrusted") && d.contains("--ca"), "{d}");
        let (s, d) = assess_cert(
            &facts(
                &cert_named("fwdist"),
                &cert_named("someone else"),
                "ftp.example.com",
            ),
            "ftp.example.com",
        );
        assert_eq!(s, Status::Fail);
        assert!(d.contains("not issued by a certificate in --ca"), "{d}");

        let ip = cert(&["127.0.0.1"], -1, 365);
        let (s, d) = assess_cert(&facts(&ip, &ip, "127.0.0.1"), "127.0.0.1");
        assert_eq!(s, Status::Ok, "{d}");
    }

    fn roots_of(c: &CertificateDer<'_>) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(c.clone().into_owned()).unwrap();
        roots
    }

    #[test]
    fn against_the_system_roots_a_self_signed_or_private_certificate_is_named_as_such() {
        let host = "ftp.example.com";
        let server = cert(&[host], -1, 365);
        let other = cert_named("some public root");
        let f = facts_against(&server, roots_of(&other), &RootSource::System, host);
        assert!(f.self_signed);
        let (s, d) = assess_cert(&f, host);
        assert_eq!(s, Status::Fail);
        assert!(
            d.ends_with(
                "untrusted: unknown issuer: it is self-signed, so none of the system's trust roots \
                 vouches for it (pin it with --ca FILE)"
            ),
            "{d}"
        );

        // Issued by a CA the system does not know.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "private CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let ee_params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
        let ee_key = rcgen::KeyPair::generate().unwrap();
        let ee = ee_params.signed_by(&ee_key, &issuer).unwrap();
        let f = facts_against(ee.der(), roots_of(&other), &RootSource::System, host);
        assert!(!f.self_signed);
        let (_, d) = assess_cert(&f, host);
        assert!(
            d.contains("unknown issuer: not issued by any of the system's trust roots"),
            "{d}"
        );

        // The private CA in the system store: it chains.
        let f = facts_against(ee.der(), roots_of(ca.der()), &RootSource::System, host);
        let (s, d) = assess_cert(&f, host);
        assert_eq!(s, Status::Ok, "{d}");
        assert!(
            d.contains("chains to the system's trust roots, valid for ftp.example.com"),
            "{d}"
        );
    }

    #[test]
    fn a_refusal_the_checks_do_not_explain_is_reported_as_is() {
        let good = cert(&["ftp.example.com"], -1, 365);
        let mut f = facts(&good, &good, "ftp.example.com");
        f.verifier = Err("something else".into());
        let (s, d) = assess_cert(&f, "ftp.example.com");
        assert_eq!(s, Status::Fail);
        assert!(d.ends_with(": refused: something else"), "{d}");
    }

    #[test]
    fn insecure_accepts_what_it_reports_as_wrong() {
        let server = cert(&["ftp.example.com"], -1, 365);
        let other = cert(&["ftp.example.com"], -1, 365);
        let roots = TrustRoots {
            store: Arc::new(roots_of(&other)),
            source: RootSource::System,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let name = ServerName::try_from("ftp.example.com").unwrap();
        for insecure in [false, true] {
            let inspector = CertInspector::new(roots.clone(), provider.clone(), insecure).unwrap();
            let r = inspector.verify_server_cert(&server, &[], &name, &[], UnixTime::now());
            assert_eq!(r.is_ok(), insecure, "{r:?}");
            let f = inspector.take().unwrap();
            assert!(!f.acceptable());
            assert!(f.verifier.is_err() && f.chain.is_err(), "{f:?}");
        }
        let trusting = TrustRoots {
            store: Arc::new(roots_of(&server)),
            source: RootSource::System,
        };
        let inspector = CertInspector::new(trusting, provider, true).unwrap();
        assert!(
            inspector
                .verify_server_cert(&server, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        assert!(inspector.take().unwrap().acceptable());
    }
}
