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
use crate::xml::Esc;
use std::fmt::Write;

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
    let _ = write!(
        out,
        "<service type='{}' host='{}' port='{}' transport='{}'",
        service.kind.name(),
        Esc(service.host),
        service.port,
        service.transport.name()
    );
    if let Some((secret, ttl)) = service.secret {
        let expires = now + u64::from(ttl);
        let (username, password) = credentials(secret, expires, user);
        let _ = write!(
            out,
            " username='{}' password='{password}' expires='{}' restricted='1'",
            Esc(&username),
            crate::time::format_datetime(expires)
        );
    }
    out.push_str("/>");
}

/// `<services/>` (all, or those of one `type`) and `<credentials/>` gets to the server.
pub fn handle(iq: &Iq, out: &mut String) -> bool {
    let (server, payload) = (iq.server, iq.payload);
    if iq.target != IqTarget::Server || iq.ty != IqType::Get {
        return false;
    }
    let reply = iq.reply();
    let user = iq.user();
    let now = crate::time::unix_now();
    let config = server.config();
    let mut body = String::new();
    match payload.tag_name().name() {
        "services" => {
            let wanted = payload.attribute("type");
            let _ = write!(body, "<services xmlns='{NS}'");
            if let Some(kind) = wanted {
                let _ = write!(body, " type='{}'", Esc(kind));
            }
            body.push('>');
            for service in services(&config, server.state::<crate::stun::Stun>().port())
                .filter(|s| wanted.is_none_or(|k| k == s.kind.name()))
            {
                write_service(&mut body, &service, user, now);
            }
            body.push_str("</services>");
        }
        // §3.3: credentials for one service named by host and type (and port, if given).
        "credentials" => {
            let Some(asked) = payload.children().find(|c| c.has_tag_name((NS, "service"))) else {
                reply.fail(out, StanzaCondition::BadRequest);
                return true;
            };
            let (Some(host), Some(kind)) = (asked.attribute("host"), asked.attribute("type"))
            else {
                reply.fail(out, StanzaCondition::BadRequest);
                return true;
            };
            let port = asked.attribute("port");
            let Some(service) =
                services(&config, server.state::<crate::stun::Stun>().port()).find(|s| {
                    s.host == host
                        && s.kind.name() == kind
                        && port.is_none_or(|p| p == s.port.to_string())
                })
            else {
                reply.fail(out, StanzaCondition::ItemNotFound);
                return true;
            };
            let _ = write!(body, "<credentials xmlns='{NS}'>");
            write_service(&mut body, &service, user, now);
            body.push_str("</credentials>");
        }
        _ => {
            reply.fail(out, StanzaCondition::BadRequest);
            return true;
        }
    }
    reply.result_with(out, &body);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password coturn computes for the same secret and username
    /// (`echo -n 1700000000:alice | openssl dgst -binary -sha1 -hmac s3cret | base64`).
    #[test]
    fn credentials_are_the_turn_rest_api_ones() {
        let (username, password) = credentials(b"s3cret", 1_700_000_000, "alice");
        assert_eq!(username, "1700000000:alice");
        assert_eq!(password, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
    }
}
