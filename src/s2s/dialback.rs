//! Server Dialback (XEP-0220): the keys (XEP-0185, derived from a persistent secret so
//! nothing per stream is stored), and the `db:result` / `db:verify` elements both sides
//! exchange. Dialback proves a peer controls the DNS (or here the static route) of the
//! domain it claims, which is what a LAN of self-signed certificates can offer.

use crate::xml::build::Element;
use ring::hmac;
use roxmltree::Node;

pub const NS: &str = "jabber:server:dialback";
/// XEP-0220 §2.1: dialback offered as a stream feature, with error support.
pub const NS_FEATURE: &str = "urn:xmpp:features:dialback";

/// The secret keys are made with: HMAC-SHA256 keyed by the hex SHA-256 of the server's
/// persistent secret (XEP-0185 §3), so keys survive a restart and a peer can verify a key
/// given on a connection opened before it.
pub struct Secret(hmac::Key);

impl Secret {
    pub fn new(server_secret: &[u8]) -> Secret {
        let digest = ring::digest::digest(&ring::digest::SHA256, server_secret);
        let hex = hex(digest.as_ref());
        Secret(hmac::Key::new(hmac::HMAC_SHA256, hex.as_bytes()))
    }

    /// XEP-0185: the key for a stream from `originating` to `receiving` with this id.
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let text = format!("{receiving} {originating} {stream_id}");
        hex(hmac::sign(&self.0, text.as_bytes()).as_ref())
    }

    /// Whether `key` is the one this server gave for that stream (constant time).
    pub fn verify(&self, key: &str, receiving: &str, originating: &str, stream_id: &str) -> bool {
        let expected = self.key(receiving, originating, stream_id);
        crate::sasl::constant_time_eq(expected.as_bytes(), key.trim().as_bytes())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One dialback element as received.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub verify: bool,
    pub from: &'a str,
    pub to: &'a str,
    /// `db:verify` names the stream id it is about.
    pub id: Option<&'a str>,
    /// `valid`, `invalid`, `error`; absent on a request.
    pub ty: Option<&'a str>,
    pub key: &'a str,
}

impl<'a> Request<'a> {
    /// `db:result` or `db:verify`, with `from` and `to`; anything else is `None`.
    pub fn parse(node: Node<'a, 'a>) -> Option<Request<'a>> {
        if node.tag_name().namespace() != Some(NS) {
            return None;
        }
        let verify = match node.tag_name().name() {
            "result" => false,
            "verify" => true,
            _ => return None,
        };
        Some(Request {
            verify,
            from: node.attribute("from")?,
            to: node.attribute("to")?,
            id: node.attribute("id"),
            ty: node.attribute("type"),
            key: node.text().unwrap_or_default(),
        })
    }
}

/// `<db:result from to>key</db:result>`: the originating server asks to be accepted.
pub fn write_result_request(out: &mut String, from: &str, to: &str, key: &str) {
    Element::new("db:result")
        .attr("from", from)
        .attr("to", to)
        .text(out, key);
}

/// The receiving server's answer to a `db:result`: `valid` or `invalid`.
pub fn write_result_answer(out: &mut String, from: &str, to: &str, valid: bool) {
    Element::new("db:result")
        .attr("from", from)
        .attr("to", to)
        .attr("type", verdict(valid))
        .empty(out);
}

/// `<db:verify from to id>key</db:verify>`: the receiving server asks the authoritative one.
pub fn write_verify_request(out: &mut String, from: &str, to: &str, id: &str, key: &str) {
    Element::new("db:verify")
        .attr("from", from)
        .attr("to", to)
        .attr("id", id)
        .text(out, key);
}

/// The authoritative server's answer to a `db:verify`.
pub fn write_verify_answer(out: &mut String, from: &str, to: &str, id: &str, valid: bool) {
    Element::new("db:verify")
        .attr("from", from)
        .attr("to", to)
        .attr("id", id)
        .attr("type", verdict(valid))
        .empty(out);
}

fn verdict(valid: bool) -> &'static str {
    if valid {
        "valid"
    } else {
        "invalid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_only_for_its_stream_and_domains() {
        let secret = Secret::new(b"s3cret");
        let key = secret.key("b.example", "a.example", "D60000229F");
        assert_eq!(key.len(), 64);
        assert!(secret.verify(&key, "b.example", "a.example", "D60000229F"));
        assert!(!secret.verify(&key, "b.example", "a.example", "D60000229G"));
        assert!(!secret.verify(&key, "a.example", "b.example", "D60000229F"));
        assert!(!secret.verify(&key, "b.example", "a.example", ""));
        assert!(!Secret::new(b"other").verify(&key, "b.example", "a.example", "D60000229F"));
    }

    #[test]
    fn key_is_xep_0185s_hmac() {
        // Computed apart (Python's hmac/hashlib): HMAC-SHA256 keyed by the hex SHA-256 of
        // the secret, over "receiving originating id".
        let secret = Secret::new(b"s3cr3tf0rd14lb4ck");
        assert_eq!(
            secret.key("example.net", "example.com", "D60000229F"),
            "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"
        );
    }

    #[test]
    fn requests_parse_and_answers_round_trip() {
        let mut out = String::new();
        write_verify_request(&mut out, "a.example", "b.example", "id1", "k3y");
        let wrapped = format!("<w xmlns='jabber:server' xmlns:db='{NS}'>{out}</w>");
        let doc = roxmltree::Document::parse(&wrapped).unwrap();
        let request = Request::parse(doc.root_element().first_element_child().unwrap()).unwrap();
        assert_eq!(
            request,
            Request {
                verify: true,
                from: "a.example",
                to: "b.example",
                id: Some("id1"),
                ty: None,
                key: "k3y"
            }
        );
        let foreign =
            roxmltree::Document::parse("<result xmlns='jabber:server' from='a' to='b'/>").unwrap();
        assert_eq!(Request::parse(foreign.root_element()), None);
    }
}
