//! What every TLS listener of the server starts from: a PEM certificate chain and key loaded
//! into a rustls server configuration with the ring provider, TLS 1.2 and 1.3 and no client
//! authentication. Each listener adds what is its own on top: the FTPS front its session
//! stores ([`crate::ftps::tls`]), the admin API its ALPN ([`crate::api::listener`]).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// An unreadable or unusable certificate or key, naming both files.
#[derive(Debug, thiserror::Error)]
#[error("cannot load the TLS certificate/key ({paths}): {reason}")]
pub struct LoadError {
    paths: String,
    reason: String,
}

/// A server configuration for the chain in `cert` and the key in `key` (both PEM).
///
/// # Errors
/// Unreadable files, no certificate in `cert`, no key in `key`, or a key that does not fit.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, LoadError> {
    let load = |e: &dyn std::fmt::Display| LoadError {
        paths: format!("{}, {}", cert.display(), key.display()),
        reason: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| load(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| load(&e))?;
    if certs.is_empty() {
        return Err(load(&"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| load(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| load(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| load(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_pair_and_names_both_files_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        server_config(&cert, &key).unwrap();
        // The key where the certificate should be: no certificate in that file.
        let e = server_config(&key, &key).unwrap_err().to_string();
        assert!(
            e.contains("no certificate") && e.matches("k.pem").count() == 2,
            "{e}"
        );
        let e = server_config(&dir.path().join("none.pem"), &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.pem"), "{e}");
    }
}
