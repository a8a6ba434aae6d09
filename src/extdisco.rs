//! XEP-0215 External Service Discovery: tells local users which STUN and TURN servers to
//! use for calls (the built-in STUN server and those in `[[extdisco.services]]`), with
//! short-lived TURN credentials derived from a shared secret. It owns the service list and
//! the credential scheme; it never logs or echoes a secret.

use crate::config::{Config, ExternalService, ServiceKind, Transport};
use crate::feature::{Deferred, Feature};
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::sasl::base64;
use crate::stanza::{IqType, StanzaCondition};
use crate::xml::build::Element;
use roxmltree::Node;

pub const NS: &str = "urn:xmpp:extdisco:2";

pub const FEATURE: Feature = Feature {
    name: "extdisco",
    iq: &[NS],
    on_iq: |iq, out| handle(iq, out).then_some(Deferred::None),
    server_disco: &[NS],
    ..Feature::NONE
};

/// One advertised service, borrowed from the config or made up for the built-in STUN.
struct Service<'a> {
    kind: ServiceKind,
    host: &'a str,
    port: u16,
    transport: Transport,
    /// A TURN REST API secret and the lifetime of the credentials derived from it.
    secret: Option<(&'a [u8], u32)>,
}

impl<'a> From<&'a ExternalService> for Service<'a> {
    fn from(service: &'a ExternalService) -> Service<'a> {
        Service {
            kind: service.kind,
            host: &service.host,
            port: service.port,
            transport: service.transport,
            secret: service
                .secret
                .as_ref()
                .map(|secret| (secret.expose(), service.ttl_secs)),
        }
    }
}

/// Every service offered: the built-in STUN server first (when it listens), then the
/// configured ones in their order.
fn services(config: &Config, stun_port: Option<u16>) -> impl Iterator<Item = Service<'_>> {
    let builtin = stun_port.map(|port| Service {
        kind: ServiceKind::Stun,
        host: config.stun.host.as_deref().unwrap_or(&config.domain),
        port,
        transport: Transport::Udp,
        secret: None,
    });
    builtin
        .into_iter()
        .chain(config.extdisco.services.iter().map(Service::from))
}

/// The "TURN REST API" scheme (draft-uberti-behave-turn-rest §2.2) that coturn's
/// `use-auth-secret` checks: the username is `<expiry unix time>:<user>`, the password
/// the base64 HMAC-SHA1 of the username keyed with the shared secret.
fn credentials(secret: &[u8], expires: u64, user: &str) -> (String, String) {
    let username = format!("{expires}:{user}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, username.as_bytes());
    (username, base64::encode(tag.as_ref()))
}

fn write_service(out: &mut String, service: &Service, user: &str, now: u64) {
    let port = service.port.to_string();
    let element = Element::new("service")
        .attr("type", service.kind.name())
        .attr("host", service.host)
        .attr("port", &port)
        .attr("transport", service.transport.name());
    match service.secret {
        Some((secret, ttl)) => {
            let expires = now + u64::from(ttl);
            let (username, password) = credentials(secret, expires, user);
            let expires = crate::time::format_datetime(expires);
            element
                .attr("username", &username)
                .attr("password", &password)
                .attr("expires", &expires)
                .attr("restricted", "1")
                .empty(out);
        }
        None => element.empty(out),
    }
}

/// A get to the server's JID (§3.2, §3.3); anything else is not this feature's.
#[derive(Debug, PartialEq)]
enum Request<'a> {
    /// `<services/>`: all services, or those of one `type`.
    Services { kind: Option<&'a str> },
    /// `<credentials><service host type [port]/></credentials>`: one service's credentials.
    Credentials {
        host: &'a str,
        kind: &'a str,
        port: Option<&'a str>,
    },
}

impl<'a> TryFrom<Node<'a, '_>> for Request<'a> {
    type Error = StanzaCondition;

    /// A credentials request without a `<service/>` naming host and type, or any other
    /// element, is `bad-request` (§3.3).
    fn try_from(payload: Node<'a, '_>) -> Result<Self, StanzaCondition> {
        match payload.tag_name().name() {
            "services" => Ok(Request::Services {
                kind: payload.attribute("type"),
            }),
            "credentials" => {
                let asked = payload
                    .children()
                    .find(|c| c.has_tag_name((NS, "service")))
                    .ok_or(StanzaCondition::BadRequest)?;
                match (asked.attribute("host"), asked.attribute("type")) {
                    (Some(host), Some(kind)) => Ok(Request::Credentials {
                        host,
                        kind,
                        port: asked.attribute("port"),
                    }),
                    _ => Err(StanzaCondition::BadRequest),
                }
            }
            _ => Err(StanzaCondition::BadRequest),
        }
    }
}

/// `<services/>` (all, or those of one `type`) and `<credentials/>` gets to the server.
pub fn handle(iq: &Iq, out: &mut String) -> bool {
    if iq.target != IqTarget::Server || iq.ty != IqType::Get {
        return false;
    }
    let server = iq.server;
    let reply = iq.reply();
    let request = match Request::try_from(iq.payload) {
        Ok(request) => request,
        Err(condition) => {
            reply.fail(out, condition);
            return true;
        }
    };
    let user = iq.user();
    let now = crate::time::unix_now();
    let config = server.config();
    let stun_port = server.state::<crate::stun::Stun>().port();
    match request {
        Request::Services { kind } => reply.result_of(out, |out| {
            Element::new("services")
                .ns(NS)
                .attr_opt("type", kind)
                .children(out, |out| {
                    for service in services(&config, stun_port)
                        .filter(|s| kind.is_none_or(|k| k == s.kind.name()))
                    {
                        write_service(out, &service, user, now);
                    }
                });
        }),
        // §3.3: credentials for one service named by host and type (and port, if given).
        Request::Credentials { host, kind, port } => {
            let Some(service) = services(&config, stun_port).find(|s| {
                s.host == host
                    && s.kind.name() == kind
                    && port.is_none_or(|p| p == s.port.to_string())
            }) else {
                reply.fail(out, StanzaCondition::ItemNotFound);
                return true;
            };
            reply.result_of(out, |out| {
                Element::new("credentials")
                    .ns(NS)
                    .children(out, |out| write_service(out, &service, user, now));
            });
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(payload: &str, expected: Result<Request, StanzaCondition>) {
        let doc = roxmltree::Document::parse(payload).unwrap();
        assert_eq!(Request::try_from(doc.root_element()), expected, "{payload}");
    }

    #[test]
    fn services_of_all_or_one_type_xep_0215_s3_2() {
        check(
            "<services xmlns='urn:xmpp:extdisco:2'/>",
            Ok(Request::Services { kind: None }),
        );
        check(
            "<services xmlns='urn:xmpp:extdisco:2' type='turn'/>",
            Ok(Request::Services { kind: Some("turn") }),
        );
    }

    #[test]
    fn credentials_name_host_type_and_maybe_port_xep_0215_s3_3() {
        check(
            "<credentials xmlns='urn:xmpp:extdisco:2'>\
             <service host='turn.example' type='turn' port='3478'/></credentials>",
            Ok(Request::Credentials {
                host: "turn.example",
                kind: "turn",
                port: Some("3478"),
            }),
        );
    }

    #[test]
    fn credentials_without_service_host_or_type_are_bad_request() {
        for payload in [
            "<credentials xmlns='urn:xmpp:extdisco:2'/>",
            "<credentials xmlns='urn:xmpp:extdisco:2'><service type='turn'/></credentials>",
            "<credentials xmlns='urn:xmpp:extdisco:2'><service host='h'/></credentials>",
            "<credentials xmlns='urn:xmpp:extdisco:2'><service xmlns='urn:other' host='h' type='turn'/></credentials>",
        ] {
            check(payload, Err(StanzaCondition::BadRequest));
        }
    }

    #[test]
    fn another_element_is_bad_request() {
        check(
            "<service xmlns='urn:xmpp:extdisco:2'/>",
            Err(StanzaCondition::BadRequest),
        );
    }

    #[test]
    fn a_service_with_a_secret_carries_turn_credentials() {
        let service = Service {
            kind: ServiceKind::Turn,
            host: "h'x",
            port: 3478,
            transport: Transport::Udp,
            secret: Some((b"s3cret", 60)),
        };
        let mut out = String::new();
        write_service(&mut out, &service, "alice", 1_700_000_000 - 60);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let s = doc.root_element();
        assert_eq!(s.attribute("host"), Some("h'x"));
        assert_eq!(s.attribute("port"), Some("3478"));
        assert_eq!(s.attribute("username"), Some("1700000000:alice"));
        assert_eq!(
            s.attribute("password"),
            Some("TtElzSjT0GdnTQ9xdcRNxx96yQs=")
        );
        assert_eq!(s.attribute("restricted"), Some("1"));
    }

    /// The password coturn computes for the same secret and username
    /// (`echo -n 1700000000:alice | openssl dgst -binary -sha1 -hmac s3cret | base64`).
    #[test]
    fn credentials_are_the_turn_rest_api_ones() {
        let (username, password) = credentials(b"s3cret", 1_700_000_000, "alice");
        assert_eq!(username, "1700000000:alice");
        assert_eq!(password, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
    }
}
