//! Mutual TLS for peer links: loading the PEM files, building the rustls and quinn
//! configurations (ring provider, TLS 1.3 only, ALPN [`ALPN`]), and learning which
//! configured region a connected peer is.

use super::TransportError;
use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;

/// The ALPN protocol both sides offer; a peer speaking anything else fails the handshake.
pub const ALPN: &[u8] = b"meridian-repl/1";

/// This node's TLS material, loaded once.
pub(crate) struct Tls {
    pub(crate) server: quinn::crypto::rustls::QuicServerConfig,
    pub(crate) client: quinn::crypto::rustls::QuicClientConfig,
}

fn tls_file_error(path: &Path, message: impl std::fmt::Display) -> TransportError {
    TransportError::Tls {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Every certificate in the PEM file at `path` (at least one).
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_file_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_file_error(path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_file_error(path, e))
}

/// A region name as a TLS server name.
pub(crate) fn server_name(region: &str) -> Option<ServerName<'static>> {
    match ServerName::try_from(region.to_owned()) {
        Ok(name @ ServerName::DnsName(_)) => Some(name),
        _ => None,
    }
}

/// Whether `cert` (already verified against the CA) is valid for `region`.
fn cert_names(cert: &CertificateDer<'_>, region: &str) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    server_name(region).is_some_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
}

/// Loads the files and builds both sides' configurations for `region`.
pub(crate) fn load(files: &TlsConfig, region: &str) -> Result<Tls, TransportError> {
    let ca = load_certs(&files.ca_cert)?;
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    if !cert_names(&chain[0], region) {
        return Err(tls_file_error(
            &files.cert,
            format!("the certificate is not valid for this node's region {region:?} (its DNS name must be the region)"),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots
            .add(c)
            .map_err(|e| tls_file_error(&files.ca_cert, format!("not a usable CA: {e}")))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |e: rustls::Error| TransportError::TlsConfig(e.to_string());

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| TransportError::TlsConfig(e.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| tls_file_error(&files.key, format!("does not fit the certificate: {e}")))?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls_file_error(&files.key, format!("does not fit the certificate: {e}")))?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    Ok(Tls {
        server: quinn::crypto::rustls::QuicServerConfig::try_from(server)
            .map_err(|e| TransportError::TlsConfig(e.to_string()))?,
        client: quinn::crypto::rustls::QuicClientConfig::try_from(client)
            .map_err(|e| TransportError::TlsConfig(e.to_string()))?,
    })
}

/// Which of `peers` the connected client is: its certificate (verified against the CA
/// during the handshake) must be valid for exactly one configured peer region.
pub(crate) fn identify<'a>(
    conn: &quinn::Connection,
    peers: impl Iterator<Item = &'a str>,
) -> Result<&'a str, String> {
    let certs = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| "no client certificate".to_owned())?;
    let leaf = certs
        .first()
        .ok_or_else(|| "empty client certificate chain".to_owned())?;
    let named: Vec<&str> = peers.filter(|r| cert_names(leaf, r)).collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err("the client certificate names no configured peer region".to_owned()),
        many => Err(format!(
            "the client certificate names several peer regions: {many:?}"
        )),
    }
}
