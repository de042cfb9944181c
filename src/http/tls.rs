//! TLS for HTTP fronts: a certificate chain and key from PEM files into a
//! rustls [`ServerConfig`].
//!
//! The crypto provider is ring, passed explicitly to the builder: nothing
//! here installs a process-wide default provider, so another part of the
//! process (or a test) can never find a different one already chosen, and
//! aws-lc is never linked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Why a TLS configuration could not be built. Each names the file.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {source}")]
    ReadCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS certificate {path}: {message}")]
    BadCert { path: PathBuf, message: String },
    #[error("cannot read the TLS key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS key {path}: {message}")]
    BadKey { path: PathBuf, message: String },
    /// rustls refused the pair (key does not match the certificate, or an
    /// unsupported key type).
    #[error("TLS certificate {cert} and key {key} cannot be used: {source}")]
    Rejected {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Where a front's certificate chain and private key are (PEM; the chain
/// leaf first, the key PKCS#8, PKCS#1 or SEC1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsSettings {
    /// Read both files and build the server configuration: TLS 1.2 and 1.3
    /// with ring's safe defaults, no client certificates, ALPN `http/1.1`
    /// (the only protocol the stack speaks).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let rejected = |source| TlsError::Rejected {
            cert: self.cert.clone(),
            key: self.key.clone(),
            source,
        };
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(rejected)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(rejected)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCert {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: String| TlsError::BadCert {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE section".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadKey {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::BadKey {
        path: path.to_path_buf(),
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY section".into(),
            e => e.to_string(),
        },
    })
}
