//! Peer certificates: the TLS client side of outgoing streams and what a peer's certificate proves.
//! (Interim: accepts any server certificate at the handshake and proves nothing; the full
//! assessment lands with the certificates work.)

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// What a peer's certificate proves about the domain it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Verified,
    Pinned,
    Unverified(String),
    PinMismatch,
}

/// Interim: nothing verifies, a configured pin decides.
pub fn assess(chain: &[CertificateDer<'_>], _domain: &str, pin: Option<&str>) -> Trust {
    let Some(leaf) = chain.first() else {
        return Trust::Unverified("no certificate".into());
    };
    match pin {
        Some(pin) if fingerprint(leaf) == pin => Trust::Pinned,
        Some(_) => Trust::PinMismatch,
        None => Trust::Unverified("not checked".into()),
    }
}

pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client side of outgoing streams.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(config) => Arc::new(config),
        Err(_) => unreachable_config(),
    }
}

#[allow(clippy::panic)]
fn unreachable_config() -> ! {
    panic!("ring supports TLS 1.2 and 1.3")
}
