//! Peer certificates: the TLS configs of server-to-server streams, both directions, and what a
//! peer's certificate proves (RFC 6120 §13.7.2, XEP-0178).
//!
//! The handshake accepts any certificate whose key signs the handshake: a LAN peer with a
//! self-signed certificate must still get as far as Server Dialback (XEP-0220). What the
//! certificate is worth is decided after the handshake by [`assess`], against `[s2s.pins]`
//! and the system's trusted roots. This module never decides what a stream does with that.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::tls;

/// What a peer's certificate proves about the domain it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Verifies against the system's roots for the peer's domain.
    Verified,
    /// Its SHA-256 fingerprint matches `[s2s.pins]` for the domain.
    Pinned,
    /// Anything else (self-signed, wrong name, expired, no certificate): dialback may still
    /// authenticate the peer, unless `require_valid_certs`. The text says why, for the log.
    Unverified(String),
    /// A pin is configured for the domain and this certificate is not it (or there is no
    /// certificate): refuse the peer outright.
    PinMismatch,
}

/// What `chain` (the peer's, end entity first) proves for `domain`. A configured `pin`
/// (64 lowercase hex, as `[s2s.pins]` keeps it) decides alone; otherwise the chain must
/// verify against `roots` for `domain` as a DNS name, now (RFC 6120 §13.7.2). webpki matches
/// DNS-IDs only: a certificate naming the domain only as SRV-ID or XmppAddr (§13.7.1.2) does
/// not verify. It must be fit for a server (`id-kp-serverAuth`) whichever side of the
/// connection presented it.
pub fn assess(
    chain: &[CertificateDer<'_>],
    domain: &str,
    pin: Option<&str>,
    roots: &Roots,
) -> Trust {
    if let Some(pin) = pin {
        return match chain.first() {
            Some(cert) if fingerprint(cert) == pin => Trust::Pinned,
            _ => Trust::PinMismatch,
        };
    }
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Trust::Unverified("no certificate".into());
    };
    // An IP literal is a valid rustls ServerName, but not a domain a CA vouches for here.
    let name = match ServerName::try_from(domain) {
        Ok(name @ ServerName::DnsName(_)) => name,
        _ => return Trust::Unverified(format!("{domain} is not a DNS name")),
    };
    let Some(verifier) = &roots.verifier else {
        return Trust::Unverified("no trusted root certificates on this system".into());
    };
    match verifier.verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now()) {
        Ok(_) => Trust::Verified,
        Err(error) => Trust::Unverified(error.to_string()),
    }
}

/// The SHA-256 fingerprint of `cert` as `[s2s.pins]` keeps it: 64 lowercase hex digits.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    tls::fingerprint(&ring::digest::SHA256, cert)
        .replace(':', "")
        .to_ascii_lowercase()
}

/// The certificate chain the peer presented in a finished handshake (empty when it sent
/// none), from either end: `peer_chain(tls_stream.get_ref().1)`.
pub fn peer_chain(connection: &CommonState) -> &[CertificateDer<'static>] {
    connection.peer_certificates().unwrap_or_default()
}

/// The name to open a TLS connection to `domain` with, reached at `address`: the domain when
/// it is a DNS name (sent as SNI, so a peer hosting several domains picks the right
/// certificate), otherwise the address (RFC 6066 §3: no SNI for an IP address).
pub fn server_name(domain: &str, address: IpAddr) -> ServerName<'static> {
    ServerName::try_from(domain.to_owned()).unwrap_or(ServerName::IpAddress(address.into()))
}

/// The trusted root certificates peers' certificates are verified against.
pub struct Roots {
    /// None when there are no roots: nothing verifies.
    verifier: Option<Arc<WebPkiServerVerifier>>,
    /// How many roots it holds, for the log.
    anchors: usize,
}

impl Roots {
    /// Roots made of `certificates` (unparsable ones are skipped).
    pub fn new(certificates: impl IntoIterator<Item = CertificateDer<'static>>) -> Roots {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(certificates);
        let anchors = store.len();
        // Building fails only for an empty store.
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), tls::provider())
                .build()
                .ok();
        Roots { verifier, anchors }
    }

    /// The system's roots (`SSL_CERT_FILE`, `SSL_CERT_DIR` or the distribution's store, as
    /// OpenSSL finds them), read on first use and kept: a system without any gets none, and
    /// then no peer verifies, though pins and dialback still work.
    pub fn system() -> &'static Roots {
        static SYSTEM: OnceLock<Roots> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            if let Some(error) = found.errors.first() {
                let problems = found.errors.len();
                log::warn!(
                    "reading the system's trusted root certificates: \
                     {problems} problem(s), first: {error}"
                );
            }
            let roots = Roots::new(found.certs);
            match roots.anchors {
                0 => log::warn!(
                    "no trusted root certificates on this system: no federating peer's \
                     certificate verifies ([s2s.pins] and dialback still work)"
                ),
                n => log::info!("{n} trusted root certificates for federating peers"),
            }
            roots
        })
    }
}

/// The client side of outgoing streams: [`tls::VERSIONS`], any server certificate that
/// signs the handshake ([`assess`] judges it afterwards), and `own` presented as a client
/// certificate so the peer can authenticate this server by SASL EXTERNAL (XEP-0178).
pub fn client_config(own: &Arc<CertifiedKey>) -> Result<Arc<ClientConfig>, String> {
    let provider = tls::provider();
    let verifier = Arc::new(AnyCertificate::new(&provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(tls::VERSIONS)
        .map_err(|error| format!("TLS setup failed: {error}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(own))));
    // A resumed session keeps the peer's chain, so assessing it works the same.
    config.resumption = Resumption::in_memory_sessions(tls::RESUMPTION_ENTRIES);
    Ok(Arc::new(config))
}

/// The server side of incoming streams: the c2s config's pieces, no ALPN, and a request
/// for a client certificate that a peer may decline (then dialback may authenticate it)
/// and that is accepted whatever it is, for [`assess`] to judge afterwards.
pub fn server_config(own: &Arc<CertifiedKey>) -> Result<Arc<ServerConfig>, String> {
    let verifier = Arc::new(AnyCertificate::new(&tls::provider()));
    tls::server_config(own, verifier).map(Arc::new)
}

/// Accepts any certificate at handshake time, from either end, but only from a peer that
/// proves with the handshake signature that it holds the certificate's key.
#[derive(Debug)]
pub struct AnyCertificate(WebPkiSupportedAlgorithms);

impl AnyCertificate {
    /// Checks signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> AnyCertificate {
        AnyCertificate(provider.signature_verification_algorithms)
    }
}

impl ServerCertVerifier for AnyCertificate {
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
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, signature, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, signature, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

impl ClientCertVerifier for AnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: any issuer will do.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ServerCertVerifier::supported_verify_schemes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_rustls::{TlsAcceptor, TlsConnector};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::PrivateKeyDer;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::{TcpListener, TcpStream};

    const PEER: &str = "peer.example";

    fn key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn names(names: &[&str]) -> CertificateParams {
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// A test CA: its certificate (the root to trust) and what signs with it.
    fn ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let mut params = names(&[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = key();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(params, key))
    }

    fn signed(params: CertificateParams, issuer: &Issuer<'_, KeyPair>) -> CertificateDer<'static> {
        params.signed_by(&key(), issuer).unwrap().der().clone()
    }

    fn self_signed(params: CertificateParams) -> CertificateDer<'static> {
        params.self_signed(&key()).unwrap().der().clone()
    }

    /// A self-signed certificate for `domain` with its key, as `tls::load` makes one.
    fn identity(domain: &str) -> Arc<CertifiedKey> {
        let key = key();
        let cert = names(&[domain]).self_signed(&key).unwrap();
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Arc::new(CertifiedKey::from_der(vec![cert.der().clone()], der, &tls::provider()).unwrap())
    }

    #[test]
    fn ca_signed_for_the_domain_verifies() {
        let (root, ca) = ca();
        let roots = Roots::new([root]);
        let leaf = signed(names(&[PEER]), &ca);
        assert_eq!(assess(&[leaf], PEER, None, &roots), Trust::Verified);
    }

    #[test]
    fn self_signed_is_unverified() {
        let (root, _) = ca();
        let leaf = self_signed(names(&[PEER]));
        let trust = assess(&[leaf], PEER, None, &Roots::new([root]));
        assert!(matches!(trust, Trust::Unverified(_)), "{trust:?}");
    }

    #[test]
    fn wrong_name_is_unverified() {
        let (root, ca) = ca();
        let leaf = signed(names(&["other.example"]), &ca);
        let trust = assess(&[leaf], PEER, None, &Roots::new([root]));
        let Trust::Unverified(why) = trust else {
            panic!("{trust:?}");
        };
        assert!(why.contains("not valid for name"), "{why}");
    }

    #[test]
    fn expired_is_unverified() {
        let (root, ca) = ca();
        let mut params = names(&[PEER]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let trust = assess(&[signed(params, &ca)], PEER, None, &Roots::new([root]));
        let Trust::Unverified(why) = trust else {
            panic!("{trust:?}");
        };
        assert!(why.contains("expired"), "{why}");
    }

    #[test]
    fn nothing_verifies_without_roots() {
        let (_, ca) = ca();
        let leaf = signed(names(&[PEER]), &ca);
        let trust = assess(&[leaf], PEER, None, &Roots::new([]));
        assert!(matches!(trust, Trust::Unverified(_)), "{trust:?}");
    }

    /// webpki would verify an IP address SAN; a CA vouching for an IP is not a domain.
    #[test]
    fn ip_literal_domain_is_unverified() {
        let (root, ca) = ca();
        let leaf = signed(names(&["192.168.1.5"]), &ca);
        let trust = assess(&[leaf], "192.168.1.5", None, &Roots::new([root]));
        assert!(matches!(trust, Trust::Unverified(_)), "{trust:?}");
    }

    #[test]
    fn no_certificate_is_unverified_or_not_the_pin() {
        let (root, _) = ca();
        let roots = Roots::new([root]);
        let trust = assess(&[], PEER, None, &roots);
        assert!(matches!(trust, Trust::Unverified(_)), "{trust:?}");
        let pin = "00".repeat(32);
        assert_eq!(assess(&[], PEER, Some(&pin), &roots), Trust::PinMismatch);
    }

    #[test]
    fn pin_decides_alone() {
        let (root, ca) = ca();
        let roots = Roots::new([root]);
        let self_signed = self_signed(names(&["anything.example"]));
        let pin = fingerprint(&self_signed);
        assert_eq!(
            assess(&[self_signed], PEER, Some(&pin), &roots),
            Trust::Pinned
        );
        let valid = signed(names(&[PEER]), &ca);
        assert_eq!(
            assess(&[valid], PEER, Some(&pin), &roots),
            Trust::PinMismatch
        );
    }

    /// The form `[s2s.pins]` keeps: what the log shows, without colons, in lowercase.
    #[test]
    fn fingerprint_is_lowercase_sha256_hex() {
        let cert = CertificateDer::from(vec![1, 2, 3]);
        assert_eq!(
            fingerprint(&cert),
            "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81"
        );
    }

    #[test]
    fn server_name_is_the_domain_when_dns() {
        let address = IpAddr::from([192, 168, 1, 5]);
        assert_eq!(
            server_name(PEER, address),
            ServerName::try_from(PEER).unwrap()
        );
        assert_eq!(
            server_name("[::1]", address),
            ServerName::IpAddress(address.into())
        );
        assert_eq!(
            server_name("10.0.0.1", address),
            ServerName::IpAddress(IpAddr::from([10, 0, 0, 1]).into())
        );
    }

    /// Handshakes `client` with an s2s server presenting `server_identity` over loopback TCP
    /// and exchanges a byte; returns what each end saw of the other's chain, and the SNI.
    fn handshake(
        client: Arc<ClientConfig>,
        server_identity: &Arc<CertifiedKey>,
    ) -> (
        Vec<CertificateDer<'static>>,
        Vec<CertificateDer<'static>>,
        Option<String>,
    ) {
        let acceptor = TlsAcceptor::from(server_config(server_identity).unwrap());
        smol::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let server = async {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut byte = [0];
                tls.read_exact(&mut byte).await.unwrap();
                let connection = tls.get_ref().1;
                let sni = connection.server_name().map(str::to_owned);
                (peer_chain(connection).to_vec(), sni)
            };
            let client = async {
                let tcp = TcpStream::connect(address).await.unwrap();
                let name = server_name("server.example", address.ip());
                let mut tls = TlsConnector::from(client).connect(name, tcp).await.unwrap();
                tls.write_all(b"<").await.unwrap();
                tls.flush().await.unwrap();
                peer_chain(tls.get_ref().1).to_vec()
            };
            let ((server_saw, sni), client_saw) = smol::future::zip(server, client).await;
            (client_saw, server_saw, sni)
        })
    }

    /// Two self-signed servers: each end gets the other's certificate, to assess afterwards.
    #[test]
    fn self_signed_servers_handshake_and_see_each_other() {
        let server = identity("server.example");
        let client = identity("client.example");
        let (client_saw, server_saw, sni) = handshake(client_config(&client).unwrap(), &server);
        assert_eq!(client_saw, server.cert);
        assert_eq!(server_saw, client.cert);
        assert_eq!(sni.as_deref(), Some("server.example"));

        let roots = Roots::new([]);
        let pin = fingerprint(&server.cert[0]);
        let trust = assess(&client_saw, "server.example", Some(&pin), &roots);
        assert_eq!(trust, Trust::Pinned);
        let trust = assess(&server_saw, "client.example", None, &roots);
        assert!(matches!(trust, Trust::Unverified(_)), "{trust:?}");
    }

    /// The server offers client authentication without requiring it: a peer without a
    /// certificate still connects (and may use dialback).
    #[test]
    fn client_certificate_is_optional() {
        let server = identity("server.example");
        let provider = tls::provider();
        let verifier = Arc::new(AnyCertificate::new(&provider));
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(tls::VERSIONS)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let (client_saw, server_saw, _) = handshake(Arc::new(client), &server);
        assert_eq!(client_saw, server.cert);
        assert!(server_saw.is_empty());
    }
}
