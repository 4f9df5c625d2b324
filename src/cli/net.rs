//! What the client commands (`fetch`, `simulate`) share: server address and TLS trust.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use fwdist_iq::client::ClientConfig;

/// `HOST:PORT` → the address to connect to and the name the certificate must carry.
///
/// # Errors
/// Malformed or unresolvable.
pub async fn resolve_server(server: &str) -> anyhow::Result<(SocketAddr, ServerName<'static>)> {
    let (host, port) = server.rsplit_once(':').context("--server must be HOST:PORT")?;
    let port: u16 = port.parse().context("--server must be HOST:PORT")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a valid server name"))?;
    Ok((addr, name))
}

/// Everything the FTPS client needs to reach `server` (HOST:PORT), trusting `ca`, with
/// `timeout_secs` on every wait.
///
/// # Errors
/// Bad server address or CA file.
pub async fn client_config(server: &str, ca: &Path, timeout_secs: u64) -> anyhow::Result<ClientConfig> {
    let (addr, server_name) = resolve_server(server).await?;
    Ok(ClientConfig {
        addr,
        server_name,
        tls: Arc::new(tls_config(ca)?),
        sessions: fwdist_iq::resume::shared_store(),
        timeout: Duration::from_secs(timeout_secs.max(1)),
        pause_before_handshake: Duration::ZERO,
        bind_ip: None,
    })
}

/// A rustls client config trusting exactly the PEM certificates in `ca`.
///
/// # Errors
/// Unreadable or empty file.
pub fn tls_config(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading --ca {}", ca.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--ca {} is not PEM", ca.display()))?;
    for c in certs {
        roots.add(c).with_context(|| format!("--ca {}", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("--ca {}: no certificates in it", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
