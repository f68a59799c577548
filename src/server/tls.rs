//! TLS for the stream listeners (rustls, ring): the certificate in force and
//! the acceptor every TLS listener shares.
//!
//! Owns the certificate chain and key read from `tls.cert` and `tls.key`,
//! and swapping them on SIGHUP: the acceptor asks [`Certs`] for the key at
//! each handshake, so new handshakes use the new certificate while
//! established connections keep theirs. A file that cannot be read or
//! parsed, or a key that does not match the certificate, is refused and the
//! old pair kept. It must not touch sockets or the protocol: the shells
//! (`stream`, `ws`) run the handshake and what follows it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why a certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert and tls.key must both be set")]
    Unset,
    #[error("cannot read {path}: {cause}")]
    Pem { path: PathBuf, cause: rustls_pki_types::pem::Error },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key in {path} cannot be used with the certificate: {cause}")]
    Key { path: PathBuf, cause: rustls::Error },
}

/// The certificate and key in force, swapped whole by [`Certs::reload`].
pub struct Certs {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certs").finish_non_exhaustive()
    }
}

impl Certs {
    /// Reads the pair named by `config`.
    pub fn load(config: &crate::config::Tls) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self { current: RwLock::new(read(config)?) }))
    }

    /// Reads the pair named by `config` again; on any error the pair in
    /// force stays and the error is returned.
    pub fn reload(&self, config: &crate::config::Tls) -> Result<(), TlsError> {
        let next = read(config)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        Ok(())
    }

    /// The end-entity certificate in force (DER), for logs and tests.
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.get().cert[0].clone()
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The acceptor for every TLS listener: TLS 1.2 and 1.3, no client
    /// certificates, the key looked up per handshake.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Only fails for a provider without the default protocol versions, which ring has.
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| ServerConfig::builder())
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        TlsAcceptor::from(Arc::new(config))
    }
}

/// Hands rustls whatever [`Certs`] holds at the time of each handshake.
#[derive(Debug)]
struct Resolver(Arc<Certs>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}

fn read(config: &crate::config::Tls) -> Result<Arc<CertifiedKey>, TlsError> {
    let (Some(cert), Some(key)) = (&config.cert, &config.key) else { return Err(TlsError::Unset) };
    fn pem(path: &Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + '_ {
        move |cause| TlsError::Pem { path: path.to_owned(), cause }
    }
    let chain =
        CertificateDer::pem_file_iter(cert).map_err(pem(cert))?.collect::<Result<Vec<_>, _>>().map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.clone() });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider)
        .map_err(|cause| TlsError::Key { path: key.clone(), cause })?;
    Ok(Arc::new(certified))
}
