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

/// The account a `<username/>` names at `domain`: its localpart, normalised.
fn localpart(username: &str, domain: &str) -> Option<String> {
    Jid::from_parts(Some(username), domain, None)
        .ok()
        .and_then(|jid| jid.local().map(str::to_owned))
}

/// A `jabber:iq:register` request before login (§3.1), checked.
#[derive(Debug, PartialEq)]
enum SignUp<'a> {
    /// A get: which fields to fill in.
    Form,
    /// A set: the account to create.
    Create { user: String, password: &'a str },
}

impl<'a> SignUp<'a> {
    /// [`is_register`] lets only a get or a set of `<query/>` through; a set needs a username
    /// that is a localpart at `domain` and a password (`not-acceptable`, §3.1), and cannot
    /// remove an account not logged in to (`unexpected-request`, §3.2).
    fn parse(
        ty: StanzaType,
        query: Node<'a, '_>,
        domain: &str,
    ) -> Result<Self, StanzaError<'static>> {
        if ty == StanzaType::Iq(IqType::Get) {
            return Ok(SignUp::Form);
        }
        if stanza::child(query, "remove", NS).is_some() {
            return Err(StanzaError::new(StanzaCondition::UnexpectedRequest));
        }
        let (Some(username), Some(password)) = (field(query, "username"), field(query, "password"))
        else {
            return Err(StanzaError::new(StanzaCondition::NotAcceptable));
        };
        let user = localpart(username, domain).ok_or(
            StanzaError::new(StanzaCondition::NotAcceptable)
                .with_text("the username is not a valid JID localpart"),
        )?;
        Ok(SignUp::Create { user, password })
    }
}

/// A `jabber:iq:register` request of a logged-in user about their own account, checked.
#[derive(Debug, PartialEq)]
enum Manage<'a> {
    /// §3.1: a get, answered with `<registered/>`.
    Details,
    /// §3.2: `<remove/>`, alone.
    Remove,
    /// §3.3: a new password for the account `user` names.
    ChangePassword { user: String, password: &'a str },
}

impl<'a> Manage<'a> {
    /// The payload is a `<query/>` (else `service-unavailable`); in a set, `<remove/>` must be
    /// the only child (§3.2), and a password change carries a username that is a localpart
    /// at `domain` and a non-empty password (§3.3): `bad-request` otherwise.
    fn parse(ty: IqType, query: Node<'a, '_>, domain: &str) -> Result<Self, StanzaCondition> {
        if query.tag_name().name() != "query" {
            return Err(StanzaCondition::ServiceUnavailable);
        }
        match ty {
            IqType::Get => Ok(Manage::Details),
            IqType::Set if stanza::child(query, "remove", NS).is_some() => {
                match query.children().filter(Node::is_element).count() {
                    1 => Ok(Manage::Remove),
                    _ => Err(StanzaCondition::BadRequest),
                }
            }
            IqType::Set => {
                let user = field(query, "username").and_then(|name| localpart(name, domain));
                match (user, field(query, "password")) {
                    (Some(user), Some(password)) => Ok(Manage::ChangePassword { user, password }),
                    _ => Err(StanzaCondition::BadRequest),
                }
            }
            // Not requests: dispatch answers neither to a feature.
            IqType::Result | IqType::Error => Err(StanzaCondition::BadRequest),
        }
    }
}

/// §3.1: the fields a new account needs.
fn write_form(out: &mut String, domain: &str) {
    let instructions = format!("Choose a username and password for {domain}.");
    Element::new("query").ns(NS).children(out, |out| {
        Element::new("instructions").text(out, &instructions);
        Element::new("username").empty(out);
        Element::new("password").empty(out);
    });
}

/// §3.1: what a registered user sees: `<registered/>` and their username.
fn write_details(out: &mut String, user: &str) {
    Element::new("query").ns(NS).children(out, |out| {
        Element::new("registered").empty(out);
        Element::new("username").text(out, user);
        Element::new("password").empty(out);
    });
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
    let (user, password) = match SignUp::parse(iq.ty, query, &server.config().domain) {
        Err(error) => {
            reply.error(out, &error);
            return;
        }
        Ok(SignUp::Form) => {
            let mut form = String::new();
            write_form(&mut form, &server.config().domain);
            reply.result_with(out, &form);
            return;
        }
        Ok(SignUp::Create { user, password }) => (user, password),
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
    let server = iq.server.clone();
    let (named, password) = match Manage::parse(iq.ty, iq.payload, &server.config().domain) {
        Err(condition) => {
            reply.fail(out, condition);
            return Deferred::None;
        }
        Ok(Manage::Details) => {
            let mut details = String::new();
            write_details(&mut details, &user);
            reply.result_with(out, &details);
            return Deferred::None;
        }
        Ok(Manage::Remove) => {
            return Deferred::Reply(Box::pin(async move {
                // §3.2: the result first, then every session ends with not-authorized.
                let removed = server.delete_account(&user).await;
                if removed.is_ok() {
                    info!("{user}: account removed by its owner");
                }
                reply.after_write(removed, "account removal")
            }));
        }
        Ok(Manage::ChangePassword { user, password }) => (user, password),
    };
    // §3.3: the username must name this account.
    if named != user {
        reply.fail(out, StanzaCondition::BadRequest);
        return Deferred::None;
    }
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

    const DOMAIN: &str = "example.org";

    fn query(fields: &str) -> String {
        format!("<query xmlns='jabber:iq:register'>{fields}</query>")
    }

    fn sign_up(ty: IqType, fields: &str) -> Result<(), StanzaError<'static>> {
        let xml = query(fields);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        SignUp::parse(StanzaType::Iq(ty), doc.root_element(), DOMAIN).map(|_| ())
    }

    fn manage(ty: IqType, payload: &str) -> Result<(), StanzaCondition> {
        let doc = roxmltree::Document::parse(payload).unwrap();
        Manage::parse(ty, doc.root_element(), DOMAIN).map(|_| ())
    }

    /// The `(namespace, name)` of each child element of the root of `xml`.
    fn children(xml: &str) -> Vec<(String, String)> {
        let doc = roxmltree::Document::parse(xml).unwrap();
        assert!(doc.root_element().has_tag_name((NS, "query")), "{xml}");
        doc.root_element()
            .children()
            .filter(|c| c.is_element())
            .map(|c| {
                let ns = c.tag_name().namespace().unwrap_or_default();
                (ns.to_owned(), c.tag_name().name().to_owned())
            })
            .collect()
    }

    #[test]
    fn sign_up_get_asks_for_the_form() {
        let doc = roxmltree::Document::parse("<query xmlns='jabber:iq:register'/>").unwrap();
        let got = SignUp::parse(StanzaType::Iq(IqType::Get), doc.root_element(), DOMAIN);
        assert_eq!(got, Ok(SignUp::Form));
    }

    #[test]
    fn sign_up_set_creates_the_normalised_account() {
        let xml = query("<username> Juliet </username><password>s3cret</password>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let got = SignUp::parse(StanzaType::Iq(IqType::Set), doc.root_element(), DOMAIN);
        assert_eq!(
            got,
            Ok(SignUp::Create {
                user: "juliet".into(),
                password: "s3cret"
            })
        );
    }

    #[test]
    fn sign_up_without_username_or_password_is_not_acceptable_xep_0077_s3_1() {
        for fields in [
            "<password>p</password>",
            "<username>juliet</username>",
            "<username> </username><password>p</password>",
            "<username>juliet</username><password/>",
        ] {
            assert_eq!(
                sign_up(IqType::Set, fields),
                Err(StanzaError::new(StanzaCondition::NotAcceptable)),
                "{fields}"
            );
        }
    }

    #[test]
    fn sign_up_with_an_invalid_localpart_is_not_acceptable_with_text() {
        let got = sign_up(
            IqType::Set,
            "<username>a@b</username><password>p</password>",
        );
        let error = got.unwrap_err();
        assert_eq!(error.condition, StanzaCondition::NotAcceptable);
        assert!(error.text.is_some());
    }

    #[test]
    fn sign_up_remove_is_unexpected_request_xep_0077_s3_2() {
        assert_eq!(
            sign_up(IqType::Set, "<remove/>"),
            Err(StanzaError::new(StanzaCondition::UnexpectedRequest))
        );
    }

    #[test]
    fn manage_get_asks_for_the_details() {
        let xml = query("");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(
            Manage::parse(IqType::Get, doc.root_element(), DOMAIN),
            Ok(Manage::Details)
        );
    }

    #[test]
    fn manage_remove_alone_removes() {
        let xml = query("<remove/>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(
            Manage::parse(IqType::Set, doc.root_element(), DOMAIN),
            Ok(Manage::Remove)
        );
    }

    #[test]
    fn manage_password_change_names_the_account() {
        let xml = query("<username>Juliet</username><password>new</password>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(
            Manage::parse(IqType::Set, doc.root_element(), DOMAIN),
            Ok(Manage::ChangePassword {
                user: "juliet".into(),
                password: "new"
            })
        );
    }

    #[test]
    fn manage_remove_with_other_children_is_bad_request_xep_0077_s3_2() {
        assert_eq!(
            manage(IqType::Set, &query("<remove/><username>juliet</username>")),
            Err(StanzaCondition::BadRequest)
        );
    }

    #[test]
    fn manage_password_change_without_fields_is_bad_request_xep_0077_s3_3() {
        for fields in [
            "<password>new</password>",
            "<username>juliet</username>",
            "<username>juliet</username><password> </password>",
            "<username>a@b</username><password>new</password>",
        ] {
            assert_eq!(
                manage(IqType::Set, &query(fields)),
                Err(StanzaCondition::BadRequest),
                "{fields}"
            );
        }
    }

    #[test]
    fn manage_payload_other_than_query_is_service_unavailable() {
        assert_eq!(
            manage(IqType::Get, "<other xmlns='jabber:iq:register'/>"),
            Err(StanzaCondition::ServiceUnavailable)
        );
    }

    #[test]
    fn form_asks_for_username_and_password() {
        let mut out = String::new();
        write_form(&mut out, "a&b.example");
        let doc = roxmltree::Document::parse(&out).unwrap();
        let instructions = doc.root_element().first_element_child().unwrap();
        assert!(instructions.text().unwrap().contains("a&b.example"));
        let names: Vec<_> = children(&out)
            .into_iter()
            .map(|(ns, name)| {
                assert_eq!(ns, NS);
                name
            })
            .collect();
        assert_eq!(names, ["instructions", "username", "password"]);
    }

    #[test]
    fn details_say_registered_and_name_the_user() {
        let mut out = String::new();
        write_details(&mut out, "juliet");
        let names: Vec<_> = children(&out).into_iter().map(|(_, name)| name).collect();
        assert_eq!(names, ["registered", "username", "password"]);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let username = doc
            .root_element()
            .children()
            .find(|c| c.has_tag_name((NS, "username")))
            .unwrap();
        assert_eq!(username.text(), Some("juliet"));
    }

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
