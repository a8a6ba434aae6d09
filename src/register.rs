//! In-band registration and account management (XEP-0077): creating an account before login
//! (only when `[registration] mode = "open"`, only inside TLS, rate-limited per IP address,
//! a taken name answered as slowly as a failed login),
//! and, after login in every mode, changing the password and removing the account.
//!
//! Passwords only pass through here on their way to [`Credentials::derive`], which runs on a
//! helper thread with the store write (PBKDF2 must not stall the event loop); they are never
//! logged or kept.

use crate::config::RegistrationMode;
use crate::feature::Deferred;
use crate::feature::{Feature, StreamStage};
use crate::iq::Iq;
use crate::jid::Jid;
use crate::reply::IqReply;
use crate::sasl::{Credentials, DEFAULT_ITERATIONS};
use crate::server::Server;
use crate::stanza::{self, IqType, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::store::StoreError;
use crate::xml::build::Element;
use crate::xml::Esc;
use log::info;
use roxmltree::Node;
use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const NS: &str = "jabber:iq:register";
/// The stream feature advertising registration before login (XEP-0077 §8).
pub const NS_FEATURE: &str = "http://jabber.org/features/iq-register";

const WINDOW: Duration = Duration::from_secs(3600);

pub const FEATURE: Feature = Feature {
    name: "register",
    state: Some(crate::feature::init::<RateLimit>),
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    server_disco: &[NS],
    stream_features: Some(|server, stage, out| {
        if stage == StreamStage::Secured && offered(server) {
            Element::new("register").ns(NS_FEATURE).empty(out);
        }
    }),
    ..Feature::NONE
};

/// Accounts created per IP address in the last hour. Holds one entry per registration of
/// the last hour, so it stays tiny on a home server.
#[derive(Default)]
pub struct RateLimit {
    recent: RefCell<Vec<(IpAddr, Instant)>>,
}

impl RateLimit {
    /// Takes a slot for `ip`, or refuses when it used all of them this hour.
    fn reserve(&self, ip: IpAddr, per_hour: u32) -> Option<Instant> {
        let now = Instant::now();
        let mut recent = self.recent.borrow_mut();
        recent.retain(|(_, at)| now.duration_since(*at) < WINDOW);
        let used = recent.iter().filter(|(known, _)| *known == ip).count();
        if used >= per_hour as usize {
            return None;
        }
        recent.push((ip, now));
        Some(now)
    }

    /// The registration did not happen: its slot is free again.
    fn release(&self, ip: IpAddr, at: Instant) {
        let mut recent = self.recent.borrow_mut();
        if let Some(index) = recent.iter().position(|entry| *entry == (ip, at)) {
            recent.swap_remove(index);
        }
    }
}

/// Whether registration is offered before login.
pub fn offered(server: &Server) -> bool {
    server.config().registration.mode == RegistrationMode::Open
}

/// An iq get or set in `jabber:iq:register` (the pre-login stage checks for it).
pub fn is_register(stanza: &Stanza) -> bool {
    matches!(stanza.ty, StanzaType::Iq(IqType::Get | IqType::Set))
        && stanza
            .payload()
            .is_some_and(|p| p.tag_name().namespace() == Some(NS) && p.tag_name().name() == "query")
}

/// The text of a field, trimmed; `None` when absent or empty.
fn field<'a>(query: Node<'a, '_>, name: &str) -> Option<&'a str> {
    stanza::child_text(query, name, NS)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// Derives credentials for `password` on a helper thread and stores them with `write`.
async fn store_password(
    server: &Server,
    password: &str,
    write: impl FnOnce(&crate::store::Store, &[u8]) -> Result<(), StoreError> + Send + 'static,
) -> Result<(), Refusal> {
    let store = server.store.clone();
    let password = password.to_owned();
    smol::unblock(move || {
        let credentials = Credentials::derive(&password, DEFAULT_ITERATIONS)
            .map_err(|e| Refusal::Password(e.to_string()))?;
        write(&store, &credentials.to_bytes()).map_err(Refusal::Store)
    })
    .await
}

enum Refusal {
    Password(String),
    Store(StoreError),
}

impl Refusal {
    fn write(&self, reply: &IqReply, out: &mut String) {
        match self {
            Refusal::Password(why) => reply.error(
                out,
                &StanzaError::new(StanzaCondition::NotAcceptable).with_text(why),
            ),
            Refusal::Store(StoreError::Exists) => reply.fail(out, StanzaCondition::Conflict),
            Refusal::Store(e) => {
                log::warn!("account change failed: {e}");
                reply.fail(out, StanzaCondition::ResourceConstraint);
            }
        }
    }
}

/// §3.1 before login, on a TLS stream: the form, or the new account.
pub async fn before_auth(server: &Server, ip: IpAddr, iq: &Stanza<'_, '_>, out: &mut String) {
    let reply = IqReply::new(server, iq, "");
    // §3.1: a host without in-band registration answers service-unavailable.
    let Some(query) = iq.payload().filter(|_| offered(server)) else {
        reply.fail(out, StanzaCondition::ServiceUnavailable);
        return;
    };
    if iq.ty == StanzaType::Iq(IqType::Get) {
        reply.result_with(
            out,
            &format!(
                "<query xmlns='{NS}'><instructions>Choose a username and password for {}.</instructions><username/><password/></query>",
                Esc(&server.config().domain)
            ),
        );
        return;
    }
    if stanza::child(query, "remove", NS).is_some() {
        // §3.2: nothing to remove for an entity that has not logged in.
        reply.fail(out, StanzaCondition::UnexpectedRequest);
        return;
    }
    let (Some(username), Some(password)) = (field(query, "username"), field(query, "password"))
    else {
        reply.fail(out, StanzaCondition::NotAcceptable);
        return;
    };
    let Some(user) = Jid::from_parts(Some(username), &server.config().domain, None)
        .ok()
        .and_then(|jid| jid.local().map(str::to_owned))
    else {
        reply.error(
            out,
            &StanzaError::new(StanzaCondition::NotAcceptable)
                .with_text("the username is not a valid JID localpart"),
        );
        return;
    };
    // A taken name costs one read, not a key derivation (the create still checks). The
    // answer tells that the account exists, so it is held like a failed login's, longer
    // with each one from the address: names cannot be enumerated at full speed.
    if server.store.user_exists(&user).unwrap_or(false) {
        let limits = &server.config().limits;
        let delay = (server.protection).login_failed(limits, ip, None, Instant::now());
        smol::Timer::after(delay).await;
        reply.fail(out, StanzaCondition::Conflict);
        return;
    }
    let per_hour = server.config().registration.per_ip_per_hour;
    let Some(slot) = server.state::<RateLimit>().reserve(ip, per_hour) else {
        info!("{ip}: registration refused, {per_hour} accounts this hour already");
        reply.error(
            out,
            &StanzaError::new(StanzaCondition::ResourceConstraint)
                .with_text("too many accounts registered from this address; try again later"),
        );
        return;
    };
    let new_user = user.clone();
    let created = store_password(server, password, move |store, credentials| {
        store.create_user(&new_user, credentials)
    })
    .await;
    match created {
        Ok(()) => {
            info!("{ip}: registered account {user}");
            server.account_added(&user);
            reply.result(out);
        }
        Err(refusal) => {
            server.state::<RateLimit>().release(ip, slot);
            refusal.write(&reply, out);
        }
    }
}

/// §3.1–3.3 after login: registration details, password change, account removal.
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let user = iq.user().to_owned();
    let Some(reply) = iq.own_reply(StanzaCondition::ServiceUnavailable, out) else {
        return Deferred::None;
    };
    let query = iq.payload;
    if query.tag_name().name() != "query" {
        reply.fail(out, StanzaCondition::ServiceUnavailable);
        return Deferred::None;
    }
    if iq.ty == IqType::Get {
        reply.result_with(
            out,
            &format!(
                "<query xmlns='{NS}'><registered/><username>{}</username><password/></query>",
                Esc(&user)
            ),
        );
        return Deferred::None;
    }
    if iq.ty != IqType::Set {
        return Deferred::None;
    }
    let server = iq.server.clone();
    if stanza::child(query, "remove", NS).is_some() {
        // §3.2: <remove/> must be the only child.
        if query.children().filter(|c| c.is_element()).count() != 1 {
            reply.fail(out, StanzaCondition::BadRequest);
            return Deferred::None;
        }
        return Deferred::Reply(Box::pin(async move {
            // §3.2: the result first, then every session ends with not-authorized.
            let removed = server.delete_account(&user).await;
            if removed.is_ok() {
                info!("{user}: account removed by its owner");
            }
            reply.after_write(removed, "account removal")
        }));
    }
    // §3.3: the username must be there and name this account; an empty password never
    // replaces the current one.
    let named = field(query, "username")
        .and_then(|name| Jid::from_parts(Some(name), &server.config().domain, None).ok())
        .is_some_and(|jid| jid.local() == Some(user.as_str()));
    let Some(password) = field(query, "password").filter(|_| named) else {
        reply.fail(out, StanzaCondition::BadRequest);
        return Deferred::None;
    };
    let password = password.to_owned();
    Deferred::Reply(Box::pin(async move {
        let account = user.clone();
        let changed = store_password(&server, &password, move |store, credentials| {
            store.set_credentials(&account, credentials)
        })
        .await;
        let mut out = String::new();
        match changed {
            Ok(()) => {
                info!("{user}: password changed in-band");
                reply.result(&mut out);
            }
            Err(refusal) => refusal.write(&reply, &mut out),
        }
        out
    }))
}

impl crate::feature::State for RateLimit {
    fn new(_config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        RateLimit::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_per_address_and_releases() {
        let limit = RateLimit::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limit.reserve(a, 2).unwrap();
        assert!(limit.reserve(a, 2).is_some());
        assert!(limit.reserve(a, 2).is_none());
        assert!(limit.reserve(b, 2).is_some());
        limit.release(a, first);
        assert!(limit.reserve(a, 2).is_some());
    }
}
