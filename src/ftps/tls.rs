//! The FTPS server certificate: a self-signed development certificate is created on first
//! start when `ftps.self_signed` is on and neither file exists, and reused afterwards.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{FtpsConfig, PassiveHost};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "TLS certificate {0} not found (set ftps.cert/ftps.key, or ftps.self_signed = true for a dev certificate)"
    )]
    Missing(String),
    #[error("cannot create the self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
    #[error("cannot load the TLS certificate/key ({0}): {1}")]
    Load(String, String),
}

/// Makes sure `cfg.cert` and `cfg.key` exist; returns true if they were just created.
///
/// # Errors
/// Missing files with `self_signed` off, or a failure to create them.
pub fn ensure_certificate(cfg: &FtpsConfig) -> Result<bool, TlsError> {
    let (cert, key) = (cfg.cert.as_path(), cfg.key.as_path());
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (false, false) if cfg.self_signed => {}
        (false, _) => return Err(TlsError::Missing(cert.display().to_string())),
        (_, false) => return Err(TlsError::Missing(key.display().to_string())),
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    match cfg.passive_host() {
        Ok(PassiveHost::Ip(ip)) => names.push(ip.to_string()),
        Ok(PassiveHost::Dns(name)) => names.push(name),
        Err(_) => {}
    }
    names.sort();
    names.dedup();
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    write_file(cert, ck.cert.pem().as_bytes(), 0o644)?;
    write_file(key, ck.signing_key.serialize_pem().as_bytes(), 0o600)?;
    tracing::warn!(cert = %cert.display(), "created a self-signed TLS certificate for development; use a real one in production");
    Ok(true)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |e| TlsError::Write(path.display().to_string(), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The one rustls configuration every session shares: TLS 1.2 and 1.3, ring, the
/// configured certificate, session-id and ticket resumption (data connections resume the
/// control connection's session, saving a full handshake per transfer).
///
/// # Errors
/// Unreadable or unusable certificate or key.
pub fn server_config(cfg: &FtpsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let what = || format!("{}, {}", cfg.cert.display(), cfg.key.display());
    let load = |e: &dyn std::fmt::Display| TlsError::Load(what(), e.to_string());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| load(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| load(&e))?;
    if certs.is_empty() {
        return Err(load(&"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| load(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| load(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| load(&e))?;
    sc.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    sc.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| load(&e))?;
    Ok(Arc::new(sc))
}
