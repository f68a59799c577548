//! A throwaway certificate authority for the TLS tests: a CA and leaf
//! certificates for `localhost` and 127.0.0.1, made at run time with rcgen
//! and written as PEM files, as a daemon's `tls.cert` and `tls.key` read them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

pub(crate) struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA certificate, PEM: what clients trust.
    pub ca_pem: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and key written to `cert` and `key`.
pub(crate) struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "heartline test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        Self { dir, ca_pem, ca }
    }

    /// A new leaf for `localhost` and 127.0.0.1, written as `NAME.pem` and
    /// `NAME.key` (overwriting what was there: a renewal).
    pub(crate) fn leaf(&self, name: &str) -> Leaf {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{name}.pem")), self.dir.path().join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf { cert: cert_path, key: key_path, der: cert.der().clone() }
    }

    /// A rustls client trusting only this CA.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}
