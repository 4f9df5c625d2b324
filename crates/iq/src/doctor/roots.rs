//! What the server's certificate must chain to: the system's trust roots by default (as curl,
//! openssl and browsers), or the CA(s) of `--ca FILE` pinned instead.
//!
//! Root selection lives here, in the library, rather than in the `fwdist` binary's front:
//! the certificate step's words depend on where the roots came from ("not issued by a
//! certificate in --ca" against "self-signed, so none of the system's trust roots vouches for
//! it"), so the source travels with the store into [`super::CertInspector`]; and a device
//! team taking fwdist-iq as a library gets the same loader as `fwdist doctor`. The OS store
//! is read with rustls-native-certs, a TLS-client crate like rustls itself: the IQ crate still
//! has no HTTP, SQL or FTP-server code in its tree.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Where the trust roots came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// `--ca FILE` (the path as given).
    Pinned(String),
    /// The operating system's store: the files `SSL_CERT_FILE` and `SSL_CERT_DIR` name when
    /// either is set, else the platform's (on Debian `/etc/ssl/certs`).
    System,
}

impl RootSource {
    /// How the certificate step names them: `--ca`, `the system's trust roots`.
    pub fn name(&self) -> &'static str {
        match self {
            RootSource::Pinned(_) => "--ca",
            RootSource::System => "the system's trust roots",
        }
    }

    /// For the JSON report: `--ca certs/server.crt`, `system`.
    pub fn describe(&self) -> String {
        match self {
            RootSource::Pinned(path) => format!("--ca {path}"),
            RootSource::System => "system".into(),
        }
    }
}

/// The roots and where they came from; never empty.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    pub store: Arc<RootCertStore>,
    pub source: RootSource,
}

impl TrustRoots {
    /// The certificate(s) of a PEM file, pinned instead of the system's roots.
    ///
    /// # Errors
    /// The file cannot be read, is not PEM, or holds no usable certificate.
    pub fn pinned(ca: &Path) -> Result<Self, String> {
        let shown = ca.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("reading --ca {shown}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--ca {shown} is not PEM: {e}"))?;
        let mut store = RootCertStore::empty();
        for c in certs {
            store.add(c).map_err(|e| format!("--ca {shown}: {e}"))?;
        }
        if store.is_empty() {
            return Err(format!("--ca {shown}: no certificates in it"));
        }
        Ok(TrustRoots {
            store: Arc::new(store),
            source: RootSource::Pinned(shown.to_string()),
        })
    }

    /// The operating system's trust roots. Files of the store that cannot be read are
    /// skipped as long as some roots remain (a store directory often holds a stray file).
    ///
    /// # Errors
    /// One line saying that the store has no usable root, where it was looked for, and
    /// what to do.
    pub fn system() -> Result<Self, String> {
        let found = rustls_native_certs::load_native_certs();
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        from_system_store(found.certs, &errors, &store_location())
    }
}

/// The system roots from what the store gave; `location` says where it was looked for.
fn from_system_store(
    certs: Vec<CertificateDer<'static>>,
    errors: &[String],
    location: &str,
) -> Result<TrustRoots, String> {
    let mut store = RootCertStore::empty();
    let (added, _unusable) = store.add_parsable_certificates(certs);
    if added == 0 {
        let why = errors.first().map(|e| format!("; {e}")).unwrap_or_default();
        return Err(format!(
            "no usable trust roots in the system's certificate store ({location}{why}): give the \
             server's CA with --ca FILE, or install the system's CA certificates (Debian: the \
             ca-certificates package)"
        ));
    }
    Ok(TrustRoots {
        store: Arc::new(store),
        source: RootSource::System,
    })
}

/// Where rustls-native-certs looks: what `SSL_CERT_FILE`/`SSL_CERT_DIR` say when set (then
/// only there), else the platform's store.
fn store_location() -> String {
    let file = std::env::var_os("SSL_CERT_FILE").map(|v| format!("SSL_CERT_FILE={}", v.to_string_lossy()));
    let dir = std::env::var_os("SSL_CERT_DIR")
        .filter(|v| !v.is_empty())
        .map(|v| format!("SSL_CERT_DIR={}", v.to_string_lossy()));
    let set: Vec<String> = file.into_iter().chain(dir).collect();
    if set.is_empty() {
        "the platform's store".into()
    } else {
        set.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate, as DER and as PEM.
    fn self_signed() -> (CertificateDer<'static>, String) {
        let p = rcgen::CertificateParams::new(vec!["ftp.example.com".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let c = p.self_signed(&key).unwrap();
        (c.der().clone(), c.pem())
    }

    #[test]
    fn an_empty_system_store_says_so_in_one_line() {
        let errors = ["failed to read PEM from file: No such file or directory".to_owned()];
        let e = from_system_store(Vec::new(), &errors, "SSL_CERT_FILE=/nowhere").unwrap_err();
        assert!(
            e.starts_with(
                "no usable trust roots in the system's certificate store (SSL_CERT_FILE=/nowhere; failed"
            ) && e.contains("--ca FILE")
                && !e.contains('\n'),
            "{e}"
        );
        // Garbage only: nothing usable either.
        let junk = CertificateDer::from(vec![1, 2, 3]);
        assert!(from_system_store(vec![junk.clone()], &[], "x").is_err());
        // One usable root among junk and errors is enough.
        let roots = from_system_store(vec![junk, self_signed().0], &errors, "x").unwrap();
        assert_eq!(roots.store.len(), 1);
        assert_eq!(roots.source, RootSource::System);
        assert_eq!(roots.source.name(), "the system's trust roots");
        assert_eq!(roots.source.describe(), "system");
    }

    #[test]
    fn a_pinned_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("fwdist-iq-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = TrustRoots::pinned(&empty).unwrap_err();
        assert!(e.contains("no certificates"), "{e}");
        let e = TrustRoots::pinned(&dir.join("missing.pem")).unwrap_err();
        assert!(e.starts_with("reading --ca"), "{e}");
        let good = dir.join("ca.pem");
        std::fs::write(&good, self_signed().1).unwrap();
        let roots = TrustRoots::pinned(&good).unwrap();
        assert_eq!(roots.store.len(), 1);
        assert_eq!(roots.source.name(), "--ca");
        assert_eq!(roots.source.describe(), format!("--ca {}", good.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
