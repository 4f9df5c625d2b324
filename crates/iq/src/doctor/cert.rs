//! The `certificate` step: what the server's certificate says, judged against `--ca` and
//! HOST, collected during the handshake by [`CertInspector`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::Status;

/// Under this many days left, the certificate step warns.
pub const EXPIRY_WARN_DAYS: i64 = 30;

/// What the server's certificate says, judged against `--ca` and HOST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub subject: String,
    /// Chains to `--ca` (judged at a moment inside the certificate's validity, so expiry is
    /// reported on its own).
    pub chain: Result<(), String>,
    /// Valid for HOST.
    pub name: Result<(), String>,
    /// Validity, Unix seconds; None when unreadable.
    pub validity: Option<(i64, i64)>,
    pub now: i64,
}

impl CertFacts {
    fn gather(
        ee: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
        roots: &RootCertStore,
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
        let parsed = match ParsedCertificate::try_from(ee) {
            Ok(p) => p,
            Err(e) => {
                let bad = Err(format!("unreadable certificate: {e}"));
                return CertFacts {
                    subject,
                    chain: bad.clone(),
                    name: bad,
                    validity,
                    now: now_s,
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
            .map_err(|e| describe_cert_error(&e));
        let name = verify_server_name(&parsed, name).map_err(|e| describe_cert_error(&e));
        CertFacts {
            subject,
            chain,
            name,
            validity,
            now: now_s,
        }
    }

    /// Would an IQ accept it?
    pub fn acceptable(&self) -> bool {
        let (status, _) = assess_cert(self, "");
        status != Status::Fail
    }
}

fn describe_cert_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "not issued by a certificate in --ca (wrong --ca, or a TLS-inspecting middlebox)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            "its issuer's name is in --ca but the signature does not verify (wrong --ca, or a \
             TLS-inspecting middlebox)"
                .into()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            presented,
        }) => format!(
            "issued for {}, not for {}",
            presented.join(", "),
            expected.to_str()
        ),
        other => other.to_string(),
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
    if !problems.is_empty() {
        return (Status::Fail, format!("{}: {}", f.subject, problems.join("; ")));
    }
    let expiry = format!("expires {} ({days} days left)", date(after));
    if days < EXPIRY_WARN_DAYS {
        (Status::Warn, format!("{}: {expiry}: renew it soon", f.subject))
    } else {
        let detail = format!("{}: chains to --ca, valid for {host}, {expiry}", f.subject);
        (Status::Ok, detail)
    }
}

/// A certificate verifier that decides exactly as rustls' WebPKI verifier does, and keeps
/// what it saw so the certificate step can say what is wrong, not just that something is.
#[derive(Debug)]
pub struct CertInspector {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    seen: Mutex<Option<CertFacts>>,
}

impl CertInspector {
    /// # Errors
    /// No usable root in `roots`.
    pub fn new(roots: Arc<RootCertStore>, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let algs = provider.signature_verification_algorithms;
        let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(CertInspector {
            inner,
            roots,
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
        let facts = CertFacts::gather(
            end_entity,
            intermediates,
            server_name,
            now,
            &self.roots,
            self.algs,
        );
        if let Ok(mut g) = self.seen.lock() {
            *g = Some(facts);
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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
        let provider = rustls::crypto::ring::default_provider();
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let now = UnixTime::now();
        CertFacts::gather(
            ee,
            &[],
            &name,
            now,
            &roots,
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
}
