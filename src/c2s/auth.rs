//! Authentication on a client stream: SASL (RFC 6120 §6) and the legacy
//! `jabber:iq:auth` login (XEP-0078). Passwords are checked against SCRAM
//! credentials from the store and never leave this function's stack.

use super::{Login, NS_IQ_AUTH, NS_SASL};
use crate::config::Auth as AuthConfig;
use crate::jid::Jid;
use crate::sasl::{base64, Credentials, Exchange, Failure, Mechanism, Step};
use crate::stanza::{
    self, IqType, Kind, Stanza, StanzaCondition, StanzaError, StanzaType, StreamCondition,
};
use crate::stream::{End, Stream};
use crate::xml::Esc;
use log::info;
use roxmltree::Node;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Instant;

/// RFC 6120 §6.4.5 allows 2 to 5 retries; then the stream ends.
const MAX_AUTH_FAILURES: u8 = 5;

/// An unfinished SASL exchange and the account it names (for the
/// brute-force delay when its proof turns out wrong).
pub struct SaslState(Exchange, Option<Box<str>>);

/// SCRAM always; SCRAM-…-PLUS when the connection can channel-bind (`binds`, RFC 6120
/// §13.8); PLAIN only inside TLS, and only if enabled.
pub fn offered_mechanisms(auth: &AuthConfig, tls: bool, binds: bool) -> Vec<Mechanism> {
    let mut mechanisms = Vec::new();
    if binds {
        mechanisms.extend([Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus]);
    }
    mechanisms.extend([Mechanism::ScramSha256, Mechanism::ScramSha1]);
    if tls && auth.allow_plain {
        mechanisms.push(Mechanism::Plain);
    }
    mechanisms
}

/// XEP-0078 sends the password itself, so it is only ever allowed in TLS.
pub fn legacy_auth_allowed(auth: &AuthConfig, tls: bool) -> bool {
    auth.legacy_auth && tls
}

pub fn is_legacy_auth(stanza: &Stanza) -> bool {
    matches!(stanza.ty, StanzaType::Iq(IqType::Get | IqType::Set))
        && stanza
            .payload()
            .is_some_and(|p| p.tag_name().namespace() == Some(NS_IQ_AUTH))
}

impl Login {
    /// One SASL element (RFC 6120 §6.4): the account, once an exchange succeeded.
    pub(super) fn on_sasl(
        &mut self,
        stream: &mut Stream,
        node: Node,
    ) -> Result<Option<Box<str>>, End> {
        let data = || -> Result<Vec<u8>, Failure> {
            match node.text().map(str::trim) {
                None | Some("") => Ok(Vec::new()),
                Some("=") => Ok(Vec::new()),
                Some(text) => base64::decode(text).ok_or(Failure::IncorrectEncoding),
            }
        };
        let store = stream.server.store.clone();
        let server = stream.server.clone();
        let locked = |user: &str| {
            let limits = &server.config().limits;
            server
                .protection
                .account_locked(limits, user, Instant::now())
        };
        let mut named: Option<Box<str>> = None;
        let mut lookup = |user: &str| {
            named = Some(user.into());
            if locked(user) {
                // Over the account's attempt budget: decoy credentials, which never pass.
                return None;
            }
            store
                .credentials(user)
                .ok()
                .flatten()
                .and_then(|bytes| Credentials::from_bytes(&bytes))
        };
        let (step, next) = match node.tag_name().name() {
            "auth" => {
                self.sasl = None;
                let tls = stream.transport.is_tls();
                let binding = stream.transport.channel_binding();
                let offered = offered_mechanisms(&server.config().auth, tls, binding.is_some());
                let mechanism = node
                    .attribute("mechanism")
                    .and_then(Mechanism::from_name)
                    .filter(|m| offered.contains(m));
                let initial = match node.text().map(str::trim) {
                    None | Some("") => None,
                    _ => Some(data()),
                };
                match (mechanism, initial) {
                    (None, _) => (Step::Failure(Failure::InvalidMechanism), None),
                    (Some(_), Some(Err(failure))) => (Step::Failure(failure), None),
                    (Some(mechanism), initial) => {
                        let initial = initial.and_then(Result::ok);
                        Exchange::start(
                            mechanism,
                            initial.as_deref(),
                            &server.config().domain,
                            binding.as_ref().map(|data| &data[..]),
                            &mut lookup,
                        )
                    }
                }
            }
            "response" => match (self.sasl.take(), data()) {
                (None, _) => (Step::Failure(Failure::MalformedRequest), None),
                (Some(_), Err(failure)) => (Step::Failure(failure), None),
                (Some(SaslState(_, Some(user))), Ok(_)) if locked(&user) => {
                    // The budget ran out during the exchange: no proof is checked.
                    named = Some(user);
                    (Step::Failure(Failure::NotAuthorized), None)
                }
                (Some(SaslState(exchange, user)), Ok(response)) => {
                    let step = exchange.step(&response, &mut lookup);
                    named = named.or(user);
                    step
                }
            },
            "abort" => {
                self.sasl = None;
                (Step::Failure(Failure::Aborted), None)
            }
            _ => return Err(End::Error(StreamCondition::NotAuthorized, None)),
        };
        match step {
            Step::Challenge(challenge) => {
                self.sasl = next.map(|exchange| SaslState(exchange, named));
                let _ = write!(
                    stream.out,
                    "<challenge xmlns='{NS_SASL}'>{}</challenge>",
                    base64::encode(&challenge)
                );
                Ok(None)
            }
            Step::Success {
                username,
                additional_data,
            } => {
                let _ = write!(stream.out, "<success xmlns='{NS_SASL}'>");
                if !additional_data.is_empty() {
                    stream.out.push_str(&base64::encode(&additional_data));
                }
                stream.out.push_str("</success>");
                info!("{}: authenticated as {username}", stream.peer);
                server
                    .protection
                    .login_succeeded(stream.peer.ip(), &username);
                Ok(Some(username.into()))
            }
            Step::Failure(failure) => {
                // Every failure slows the address down (a cheap malformed
                // or aborted exchange must not be repeatable at full
                // speed); only a wrong proof is held against the account.
                let account = named.filter(|_| failure == Failure::NotAuthorized);
                stream.delay_login_failure(account.as_deref());
                let _ = write!(
                    stream.out,
                    "<failure xmlns='{NS_SASL}'><{}/></failure>",
                    failure.condition()
                );
                self.count_failure(stream.peer).map(|()| None)
            }
        }
    }

    /// One failed negotiation step on this stream; too many end it.
    pub(super) fn count_failure(&mut self, peer: SocketAddr) -> Result<(), End> {
        self.failures = self.failures.saturating_add(1);
        info!("{peer}: authentication failure {}", self.failures);
        if self.failures >= MAX_AUTH_FAILURES {
            return Err(End::Error(
                StreamCondition::PolicyViolation,
                Some("too many failed authentication attempts"),
            ));
        }
        Ok(())
    }

    /// XEP-0078: `get` lists the fields, `set` logs in. The account and the
    /// resource to bind it to at once, when the password was right.
    pub(super) fn on_legacy_auth<'a>(
        &mut self,
        stream: &mut Stream,
        iq: &Stanza<'a, '_>,
    ) -> Result<Option<(Box<str>, &'a str)>, End> {
        let domain = stream.server.config().domain.clone();
        let Some(query) = iq.payload() else {
            return Err(End::Error(StreamCondition::NotAuthorized, None));
        };
        let field = |name| stanza::child_text(query, name, NS_IQ_AUTH).map(str::trim);
        if iq.ty == StanzaType::Iq(IqType::Get) {
            stanza::open_reply(&mut stream.out, Kind::Iq, "result", iq.id, "", "");
            let _ = write!(
                stream.out,
                "><query xmlns='{NS_IQ_AUTH}'><username>{}</username><password/><resource/></query></iq>",
                Esc(field("username").unwrap_or_default())
            );
            return Ok(None);
        }
        let reply_error = |out: &mut String, condition| legacy_error(out, iq, &domain, condition);
        let (Some(username), Some(password), Some(resource)) =
            (field("username"), field("password"), field("resource"))
        else {
            reply_error(&mut stream.out, StanzaCondition::NotAcceptable);
            stream.delay_login_failure(None);
            return self.count_failure(stream.peer).map(|()| None);
        };
        if username.is_empty() || resource.is_empty() {
            reply_error(&mut stream.out, StanzaCondition::NotAcceptable);
            stream.delay_login_failure(None);
            return self.count_failure(stream.peer).map(|()| None);
        }
        let user = Jid::from_parts(Some(username), &domain, None)
            .ok()
            .and_then(|jid| jid.local().map(str::to_owned));
        let credentials = user.as_deref().and_then(|user| {
            stream
                .server
                .store
                .credentials(user)
                .ok()
                .flatten()
                .and_then(|bytes| Credentials::from_bytes(&bytes))
        });
        let limits = &stream.server.config().limits;
        let locked = (user.as_deref()).is_some_and(|u| {
            stream
                .server
                .protection
                .account_locked(limits, u, Instant::now())
        });
        let verified = !locked && credentials.is_some_and(|c| c.verify_plain(password));
        let (true, Some(user)) = (verified, user) else {
            stream.delay_login_failure(Some(username));
            reply_error(&mut stream.out, StanzaCondition::NotAuthorized);
            return self.count_failure(stream.peer).map(|()| None);
        };
        info!("{}: authenticated as {user} (legacy auth)", stream.peer);
        (stream.server.protection).login_succeeded(stream.peer.ip(), &user);
        Ok(Some((user.into(), resource)))
    }
}

/// XEP-0078's answer to a login: the result once bound, or why not.
pub fn legacy_reply(
    out: &mut String,
    iq: &Stanza,
    domain: &str,
    bound: Result<(), StanzaCondition>,
) {
    match bound {
        Ok(()) => stanza::write_iq_result(out, iq.id, "", ""),
        Err(condition) => legacy_error(out, iq, domain, condition),
    }
}

fn legacy_error(out: &mut String, iq: &Stanza, domain: &str, condition: StanzaCondition) {
    stanza::write_error_reply(
        out,
        Kind::Iq,
        iq.id,
        domain,
        "",
        &StanzaError::new(condition),
    );
}
