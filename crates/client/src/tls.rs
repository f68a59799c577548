//! TLS for the client (rustls, ring): which certificates to trust and which
//! name to check, and the one place a TCP stream becomes a TLS stream.
//!
//! Owns the trust settings ([`Tls`]) and the `tls://host:port` address form
//! ([`endpoint`]). It must not speak the protocol or decide anything about
//! reconnecting: the connection task does, over whatever stream this gives.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::error::ClientError;

/// The scheme that makes an address TLS: `tls://host:port`.
pub const SCHEME: &str = "tls://";

/// How to check the server's certificate.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    /// The name checked against the certificate (and sent as SNI); `None`:
    /// the host part of the address.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl Tls {
    /// Trusts the system's certificate store (as the platform exposes it).
    pub fn system_roots() -> Result<Self, ClientError> {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(ClientError::Tls("no usable certificate in the system's store".into()));
        }
        Ok(Self::with_roots(roots))
    }

    /// Trusts only the CA certificates in a PEM file (a private CA, or a
    /// self-signed server certificate).
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let failed = |e: &dyn std::fmt::Display| ClientError::Tls(format!("{}: {e}", path.display()));
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(&e))? {
            roots.add(cert.map_err(|e| failed(&e))?).map_err(|e| failed(&e))?;
        }
        if roots.is_empty() {
            return Err(failed(&"no certificate in the file"));
        }
        Ok(Self::with_roots(roots))
    }

    /// Uses a rustls configuration made by the caller (client certificates,
    /// pinning, other roots).
    pub fn with_config(config: Arc<ClientConfig>) -> Self {
        Self { connector: TlsConnector::from(config), server_name: None }
    }

    /// Checks the certificate against `name` instead of the address's host
    /// (connecting by IP address to a server whose certificate names a host).
    pub fn server_name(mut self, name: &str) -> Result<Self, ClientError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| ClientError::Tls(format!("{name:?} is not a DNS name or IP address")))?;
        self.server_name = Some(name);
        Ok(self)
    }

    fn with_roots(roots: RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| ClientConfig::builder())
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::with_config(Arc::new(config))
    }

    /// The TLS handshake over `stream`, checking the certificate against the
    /// configured name or else `host`.
    pub async fn connect(&self, host: &str, stream: TcpStream) -> Result<TlsStream<TcpStream>, ClientError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_owned())
                .map_err(|_| ClientError::Tls(format!("{host:?} is not a DNS name or IP address")))?,
        };
        Ok(self.connector.connect(name, stream).await?)
    }
}

/// Splits `addr` into the `host:port` to connect to, the host alone (the
/// name a certificate is checked against) and whether it asks for TLS
/// (`tls://host:port`).
pub fn endpoint(addr: &str) -> (&str, &str, bool) {
    let (hostport, tls) = match addr.strip_prefix(SCHEME) {
        Some(rest) => (rest, true),
        None => (addr, false),
    };
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(host, _)| host),
        None => hostport.rsplit_once(':').map_or(hostport, |(host, _)| host),
    };
    (hostport, host, tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("127.0.0.1:7400"), ("127.0.0.1:7400", "127.0.0.1", false));
        assert_eq!(endpoint("tls://example.com:7403"), ("example.com:7403", "example.com", true));
        assert_eq!(endpoint("tls://[::1]:7403"), ("[::1]:7403", "::1", true));
    }
}
