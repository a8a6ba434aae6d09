//! SCRAM-…-PLUS with the `tls-exporter` channel binding over real TLS (RFC 6120 §13.8,
//! RFC 5802 §6, RFC 9266, XEP-0440), as a client sees it.

mod common;

use common::*;
use hearth::sasl::client::ScramClient;
use hearth::sasl::Mechanism;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::sync::Arc;

const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";

/// The mechanism names and XEP-0440 channel-binding types in `features`.
fn offered(features: &str) -> (Vec<String>, Vec<String>) {
    with_doc(features, |f| {
        let mechanisms = f
            .descendants()
            .filter(|n| n.has_tag_name((NS_SASL, "mechanism")))
            .filter_map(|n| n.text().map(str::to_owned))
            .collect();
        let types = f
            .children()
            .filter(|n| n.has_tag_name((NS_SASL_CB, "sasl-channel-binding")))
            .flat_map(|n| n.children())
            .filter(|n| n.has_tag_name((NS_SASL_CB, "channel-binding")))
            .filter_map(|n| n.attribute("type").map(str::to_owned))
            .collect();
        (mechanisms, types)
    })
}

fn client(mechanism: Mechanism) -> ScramClient {
    ScramClient::new(mechanism, "alice", PASSWORD).unwrap()
}

fn assert_not_authorized(failure: Box<Element>) {
    assert!(failure.is("failure", NS_SASL), "{failure}");
    let conditions: Vec<_> = failure.children().iter().collect();
    assert_eq!(conditions.len(), 1, "{failure}");
    assert!(conditions[0].is("not-authorized", NS_SASL), "{failure}");
}

#[test]
fn plus_mechanisms_and_tls_exporter_are_advertised_over_tls13() {
    let server = TestServer::start("");
    let mut c = Client::connect(&server);
    let (mechanisms, types) = offered(&c.starttls());
    assert_eq!(
        &mechanisms[..4],
        [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1"
        ],
        "{mechanisms:?}"
    );
    assert_eq!(types, ["tls-exporter"]);
}

#[test]
fn plus_logins_with_tls_exporter_bind_and_work() {
    let server = TestServer::start("");
    server.add_user("alice");
    for mechanism in [Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus] {
        let mut c = Client::connect(&server);
        c.starttls();
        let exporter = c.tls_exporter();
        let result = c.scram_with(mechanism, client(mechanism).bind_tls_exporter(&exporter));
        assert!(result.is_ok(), "{mechanism:?}: {result:?}");
        let bound = c.bind("plus");
        assert!(bound.contains("alice@"), "{bound}");
    }
}

#[test]
fn plus_with_wrong_binding_data_is_not_authorized() {
    let server = TestServer::start("");
    server.add_user("alice");
    for mechanism in [Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus] {
        let mut c = Client::connect(&server);
        c.starttls();
        let mut wrong = c.tls_exporter();
        wrong[0] ^= 1;
        let failure = c
            .scram_with(mechanism, client(mechanism).bind_tls_exporter(&wrong))
            .unwrap_err();
        assert_not_authorized(failure);
        // Binding data of another connection (a relayed exchange) fails as well.
        let mut other = Client::connect(&server);
        other.starttls();
        let failure = c
            .scram_with(
                mechanism,
                client(mechanism).bind_tls_exporter(&other.tls_exporter()),
            )
            .unwrap_err();
        assert_not_authorized(failure);
    }
}

/// RFC 5802 §6: a client saying `y` ("I can bind, you cannot") while -PLUS is on offer
/// saw stripped features: refused. `n` keeps working.
#[test]
fn y_is_refused_while_plus_is_offered_and_n_still_works() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::connect(&server);
    c.starttls();
    let failure = c
        .scram_with(
            Mechanism::ScramSha256,
            client(Mechanism::ScramSha256).claim_binding_unoffered(),
        )
        .unwrap_err();
    assert_not_authorized(failure);
    assert!(c.scram(Mechanism::ScramSha256, "alice", PASSWORD));
}

/// RFC 9266 §3: over TLS 1.2 the exporter is safe only with the extended master secret,
/// which rustls does not insist on; hearth offers no -PLUS there, so `y` is honest.
#[test]
fn tls12_offers_no_plus_and_accepts_y() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.data_dir().join("tls/cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c = Client::connect_to(server.starttls, Arc::new(tls12));
    let (mechanisms, types) = offered(&c.starttls());
    assert_eq!(&mechanisms[..2], ["SCRAM-SHA-256", "SCRAM-SHA-1"]);
    assert!(!mechanisms.iter().any(|m| m.ends_with("-PLUS")));
    assert!(types.is_empty());
    let result = c.scram_with(
        Mechanism::ScramSha1,
        client(Mechanism::ScramSha1).claim_binding_unoffered(),
    );
    assert!(result.is_ok(), "{result:?}");
}
