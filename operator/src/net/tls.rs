//! The TLS client of the recipient sources: the CAs a MailDomain's Secret names, or the
//! system's.

use crate::recipients::extract::SourceError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

/// A TLS client that trusts the CAs in `ca_pem`, or the system's when it is `None`.
pub fn client_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, SourceError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let certificate = certificate.map_err(|error| {
                    SourceError::TlsFailed(format!("the CA certificates are not PEM: {error}"))
                })?;
                roots.add(certificate).map_err(|error| {
                    SourceError::TlsFailed(format!("a CA certificate is not usable: {error}"))
                })?;
            }
        }
        None => {
            // Unreadable system certificates are skipped, as every TLS client does.
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            tracing::debug!(added, "system CAs loaded");
        }
    }
    if roots.is_empty() {
        return Err(SourceError::TlsFailed(
            "no CA certificate to check the server's against".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| SourceError::TlsFailed(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
