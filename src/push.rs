//! Push notifications (XEP-0357), the user's server side: a device registers its app server
//! (a JID and a node, plus a publish-options form such as a secret) with `<enable/>`, and
//! when a message would otherwise wait unseen — stored offline, or queued for a session
//! whose connection dropped (XEP-0198 hibernation) — the server publishes a short summary
//! to the app servers concerned, which wake the devices. This module owns the
//! registrations' protocol, the decision what wakes a device and the notifications in
//! flight. It never logs a publish-options form or a node (they carry the device's
//! secrets) and never waits for an app server: a notification is sent and forgotten
//! unless its answer is an error.

use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::jid::Jid;
use crate::offline;
use crate::reply::IqReply;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::error::NS_STANZA_ERRORS;
use crate::stanza::{self, IqType, MessageType, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::store::{PushRegistration, StoreError};
use crate::xml::build::Element;
use crate::xml::{write_element, NS_CLIENT};
use log::{debug, info, warn};
use roxmltree::Node;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const NS: &str = "urn:xmpp:push:0";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_DATA: &str = "jabber:x:data";
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
const SUMMARY: &str = "urn:xmpp:push:summary";
/// OMEMO payloads (legacy and current): an encrypted message deserves a wake-up even
/// without a fallback body.
const NS_OMEMO: [&str; 2] = ["eu.siacs.conversations.axolotl", "urn:xmpp:omemo:2"];

/// App servers hand out node names of a few dozen bytes; more is not a node.
const MAX_NODE_BYTES: usize = 1024;
/// A publish-options form carries a secret or a token, not kilobytes.
const MAX_OPTIONS_BYTES: usize = 4096;
/// Unanswered notifications per registration: one more would wake a device that is being
/// woken already, so it is not sent. With the registration cap this bounds an account.
const MAX_IN_FLIGHT: usize = 2;
/// An app server that has not answered by then never will; its entry is forgotten.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Ids of notification iqs: the prefix, then a server-wide counter.
const ID_PREFIX: &str = "push-";

pub const FEATURE: Feature = Feature {
    name: "push",
    message_routed: Some(|server, routed| {
        on_message(
            server,
            routed.sender,
            routed.stanza,
            routed.recipient,
            routed.delivered,
        )
    }),
    state: Some(crate::feature::init::<Push>),
    enabled: |config| config.push.enabled,
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    // Its notifications are the only queries sent on an account's behalf.
    on_account_response: Some(|server, session, stanza, user| {
        Some(on_response(server, session, stanza, user))
    }),
    account_disco: &[NS],
    session_ended: Some(|server, session| {
        session_ended(server, session);
        None
    }),
    ..Feature::NONE
};

/// The devices of live sessions and the notifications in flight.
#[derive(Default)]
pub struct Push {
    /// Sessions that enabled push, by session id: which registration is theirs.
    devices: RefCell<HashMap<u64, Device>>,
    /// Sent and not answered yet, oldest first.
    in_flight: RefCell<VecDeque<InFlight>>,
}

/// The registration a session enabled, and whether its connection is gone while the
/// session waits for resumption (then what reaches it must wake the device).
struct Device {
    jid: Box<str>,
    node: Box<str>,
    hibernated: bool,
}

struct InFlight {
    id: u64,
    user: Box<str>,
    jid: Box<str>,
    node: Box<str>,
    sent: Instant,
}

/// What a notification tells the app server.
struct Summary<'a> {
    sender: Option<&'a str>,
    body: Option<&'a str>,
}

/// `<enable/>` or `<disable/>` from one of the user's sessions (§5, §6).
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, session, user) = (iq.server, iq.session, iq.user());
    if !server.config().push.enabled {
        iq.reply().fail(out, StanzaCondition::ServiceUnavailable);
        return Deferred::None;
    }
    let Some(reply) = iq.own_reply(StanzaCondition::Forbidden, out) else {
        return Deferred::None;
    };
    let request = match iq.ty {
        IqType::Set => parse(iq.payload),
        _ => Err(StanzaCondition::BadRequest),
    };
    match request {
        Err(condition) => {
            reply.fail(out, condition);
            Deferred::None
        }
        Ok(Request::Enable(registration)) => enable(server, session, registration, reply),
        Ok(Request::Disable { jid, node }) => {
            let pushes = server.state::<Push>();
            let mut devices = pushes.devices.borrow_mut();
            if devices
                .get(&session.id)
                .is_some_and(|d| *d.jid == jid && node.as_deref().is_none_or(|n| *d.node == *n))
            {
                devices.remove(&session.id);
            }
            let write = server.store.push_disable(user, &jid, node.as_deref());
            info!("{user}: push notifications at {jid} disabled by the user");
            Deferred::Reply(Box::pin(async move {
                reply.after_write(write.await, "push registration")
            }))
        }
    }
}

#[derive(Debug, PartialEq)]
enum Request {
    Enable(PushRegistration),
    Disable { jid: String, node: Option<String> },
}

/// Reads `<enable jid node>` with its optional publish-options form, or `<disable jid
/// node?>` (without a node it covers every registration at that JID).
fn parse(payload: Node) -> Result<Request, StanzaCondition> {
    let jid = payload
        .attribute("jid")
        .ok_or(StanzaCondition::BadRequest)?;
    let jid = Jid::parse(jid).map_err(|_| StanzaCondition::JidMalformed)?;
    let node = payload.attribute("node").filter(|node| !node.is_empty());
    if node.is_some_and(|node| node.len() > MAX_NODE_BYTES) {
        return Err(StanzaCondition::NotAcceptable);
    }
    match payload.tag_name().name() {
        "enable" => {
            let node = node.ok_or(StanzaCondition::BadRequest)?;
            let options = match stanza::child(payload, "x", NS_DATA) {
                None => Vec::new(),
                Some(form) => publish_options(form)?.into_bytes(),
            };
            Ok(Request::Enable(PushRegistration {
                jid: jid.as_str().to_owned(),
                node: node.to_owned(),
                options,
            }))
        }
        "disable" => Ok(Request::Disable {
            jid: jid.as_str().to_owned(),
            node: node.map(str::to_owned),
        }),
        _ => Err(StanzaCondition::BadRequest),
    }
}

/// The form serialised as it will sit in `<publish-options/>`, once it is a submitted
/// XEP-0060 publish-options form of reasonable size.
fn publish_options(form: Node) -> Result<String, StanzaCondition> {
    let form_type = form
        .children()
        .filter(|c| c.has_tag_name((NS_DATA, "field")))
        .find(|field| field.attribute("var") == Some("FORM_TYPE"))
        .and_then(|field| stanza::child_text(field, "value", NS_DATA))
        .map(str::trim);
    if form.attribute("type") != Some("submit") || form_type != Some(PUBLISH_OPTIONS) {
        return Err(StanzaCondition::BadRequest);
    }
    let mut xml = String::new();
    write_element(&mut xml, form, NS_PUBSUB, &[]);
    if xml.len() > MAX_OPTIONS_BYTES {
        return Err(StanzaCondition::NotAcceptable);
    }
    Ok(xml)
}

fn enable(
    server: &Rc<Server>,
    session: &Session,
    registration: PushRegistration,
    reply: IqReply,
) -> Deferred {
    let user = session.jid.user().to_owned();
    let max = server.config().push.max_registrations_per_user as usize;
    let device = Device {
        jid: registration.jid.as_str().into(),
        node: registration.node.as_str().into(),
        hibernated: false,
    };
    let write = server.store.push_enable(&user, registration, max);
    let (server, session_id) = (server.clone(), session.id);
    Deferred::Reply(Box::pin(async move {
        let mut out = String::new();
        match write.await {
            Ok(()) => {
                info!("{user}: push notifications enabled at {}", device.jid);
                server
                    .state::<Push>()
                    .devices
                    .borrow_mut()
                    .insert(session_id, device);
                reply.result(&mut out);
            }
            Err(StoreError::QuotaExceeded) => reply.error(
                &mut out,
                &StanzaError::new(StanzaCondition::PolicyViolation)
                    .with_text("too many push registrations for this account"),
            ),
            Err(e) => {
                warn!("{user}: push registration not stored: {e}");
                reply.fail(&mut out, StanzaCondition::ResourceConstraint);
            }
        }
        out
    }))
}

/// Whether a message is worth waking a phone for: a chat or normal message with a body or
/// an OMEMO payload. Chat states, receipts, groupchat and errors are not.
fn wakes(stanza: &Stanza) -> bool {
    matches!(
        stanza.ty,
        StanzaType::Message(MessageType::Chat | MessageType::Normal)
    ) && (stanza.child("body", NS_CLIENT).is_some()
        || NS_OMEMO
            .iter()
            .any(|ns| stanza.child("encrypted", ns).is_some()))
}

/// A message from `sender` for `user` was handed to the `delivered` sessions (none: it
/// waits in offline storage). Devices whose session is hibernated are woken; with no
/// session at all, every device is. The user's own messages wake nothing.
pub fn on_message(
    server: &Server,
    sender: &Session,
    stanza: &Stanza,
    user: &str,
    delivered: &[Rc<Session>],
) {
    // An empty user: the message went to another server, whose devices are its business.
    if !server.config().push.enabled
        || user.is_empty()
        || sender.jid.local() == Some(user)
        || !wakes(stanza)
    {
        return;
    }
    // Not taken by a session and not stored: nobody will ever see it.
    if delivered.is_empty() && !offline::is_storable(stanza) {
        return;
    }
    let summary = Summary {
        sender: Some(sender.jid.as_str()),
        body: stanza::child_text(stanza.node, "body", NS_CLIENT),
    };
    wake(server, user, delivered, &summary);
}

/// A subscription request from the bare JID `from` is now pending for `user` (and was
/// handed to the user's available sessions).
pub fn on_subscription_request(server: &Server, user: &str, from: &str) {
    if !server.config().push.enabled {
        return;
    }
    let delivered: Vec<Rc<Session>> = server
        .router
        .borrow()
        .resources(user)
        .iter()
        .filter(|s| s.available.get())
        .cloned()
        .collect();
    let summary = Summary {
        sender: Some(from),
        body: None,
    };
    wake(server, user, &delivered, &summary);
}

/// Notifies the devices of the hibernated sessions among `delivered`, or every device of
/// the user when `delivered` is empty. Sessions on a live connection read it themselves.
fn wake(server: &Server, user: &str, delivered: &[Rc<Session>], summary: &Summary) {
    let only = if delivered.is_empty() {
        None
    } else {
        let pushes = server.state::<Push>();
        let devices = pushes.devices.borrow();
        let asleep: Vec<(Box<str>, Box<str>)> = delivered
            .iter()
            .filter_map(|s| devices.get(&s.id))
            .filter(|device| device.hibernated)
            .map(|device| (device.jid.clone(), device.node.clone()))
            .collect();
        if asleep.is_empty() {
            return;
        }
        Some(asleep)
    };
    notify(server, user, only.as_deref(), summary);
}

/// The session's connection dropped and it waits for resumption (XEP-0198): from now on
/// what reaches it wakes its device. `missed` tells whether messages it never acknowledged
/// wait for it; they wake the device at once.
pub fn hibernated(server: &Server, session: &Session, missed: impl FnOnce() -> bool) {
    let registration = {
        let pushes = server.state::<Push>();
        let mut devices = pushes.devices.borrow_mut();
        let Some(device) = devices.get_mut(&session.id) else {
            return;
        };
        device.hibernated = true;
        (device.jid.clone(), device.node.clone())
    };
    if server.config().push.enabled && missed() {
        let user = session.jid.user();
        let summary = Summary {
            sender: None,
            body: None,
        };
        notify(server, user, Some(&[registration]), &summary);
    }
}

/// A new connection resumed the session: its device reads for itself again.
pub fn resumed(server: &Server, session: &Session) {
    if let Some(device) = server
        .state::<Push>()
        .devices
        .borrow_mut()
        .get_mut(&session.id)
    {
        device.hibernated = false;
    }
}

/// The session is gone for good; its registration stays in the store.
pub fn session_ended(server: &Server, session: &Session) {
    let pushes = server.state::<Push>();
    let mut devices = pushes.devices.borrow_mut();
    if devices.remove(&session.id).is_some() && devices.is_empty() {
        *devices = HashMap::new();
    }
}

/// Sends a notification to each of `user`'s registrations (or to those in `only`).
fn notify(server: &Server, user: &str, only: Option<&[(Box<str>, Box<str>)]>, summary: &Summary) {
    let registrations = match server.store.push_registrations(user) {
        Ok(registrations) => registrations,
        Err(e) => {
            warn!("{user}: cannot read push registrations: {e}");
            return;
        }
    };
    for registration in registrations {
        let wanted = only.is_none_or(|only| {
            only.iter()
                .any(|(jid, node)| **jid == registration.jid && **node == registration.node)
        });
        if wanted {
            send(server, user, &registration, summary);
        }
    }
}

fn send(server: &Server, user: &str, registration: &PushRegistration, summary: &Summary) {
    let id = {
        let now = Instant::now();
        let pushes = server.state::<Push>();
        let mut in_flight = pushes.in_flight.borrow_mut();
        while in_flight
            .front()
            .is_some_and(|f| now.duration_since(f.sent) >= REPLY_TIMEOUT)
        {
            in_flight.pop_front();
        }
        let pending = in_flight
            .iter()
            .filter(|f| *f.user == *user && *f.jid == registration.jid)
            .filter(|f| *f.node == registration.node)
            .count();
        if pending >= MAX_IN_FLIGHT {
            debug!(
                "{user}: push notification to {} skipped, earlier ones unanswered",
                registration.jid
            );
            return;
        }
        let id = server.next_id();
        in_flight.push_back(InFlight {
            id,
            user: user.into(),
            jid: registration.jid.as_str().into(),
            node: registration.node.as_str().into(),
            sent: now,
        });
        id
    };
    let from = format!("{user}@{}", server.config().domain);
    let include_body = server.config().push.include_body;
    let xml = publish(id, &from, registration, summary, include_body);
    if let Err(condition) = route(server, &registration.jid, xml) {
        server
            .state::<Push>()
            .in_flight
            .borrow_mut()
            .retain(|f| f.id != id);
        // Queued now, committed in order with later writes; nothing here waits for it.
        drop(disable_failed(
            server,
            user,
            &registration.jid,
            &registration.node,
            condition.name(),
        ));
    }
}

/// §7: the publish of a summary to the registration's node, with its publish-options.
fn publish(
    id: u64,
    from: &str,
    registration: &PushRegistration,
    summary: &Summary,
    include_body: bool,
) -> String {
    let mut xml = String::with_capacity(512 + registration.options.len());
    let id = format!("{ID_PREFIX}{id}");
    // The XEP leaves open what to count; every notification stands for one event (as
    // Prosody's mod_cloud_notify does), and the app server only needs to know there is news.
    let fields = [
        ("message-count", Some("1")),
        ("last-message-sender", summary.sender),
        ("last-message-body", summary.body.filter(|_| include_body)),
    ];
    let field = |out: &mut String, var: &str, ty: Option<&str>, value: &str| {
        Element::new("field")
            .attr("var", var)
            .attr_opt("type", ty)
            .children(out, |out| Element::new("value").text(out, value));
    };
    let notification = |out: &mut String| {
        Element::new("notification").ns(NS).children(out, |out| {
            Element::new("x")
                .ns(NS_DATA)
                .attr("type", "form")
                .children(out, |out| {
                    field(out, "FORM_TYPE", Some("hidden"), SUMMARY);
                    for (var, value) in fields {
                        if let Some(value) = value {
                            field(out, var, None, value);
                        }
                    }
                });
        });
    };
    Element::new("iq")
        .attr("type", "set")
        .attr("from", from)
        .attr("to", &registration.jid)
        .attr("id", &id)
        .children(&mut xml, |out| {
            Element::new("pubsub").ns(NS_PUBSUB).children(out, |out| {
                Element::new("publish")
                    .attr("node", &registration.node)
                    .children(out, |out| Element::new("item").children(out, notification));
                if !registration.options.is_empty() {
                    Element::new("publish-options").children(out, |out| {
                        out.push_str(&String::from_utf8_lossy(&registration.options));
                    });
                }
            });
        });
    xml
}

/// Hands the iq to the app server: over federation when it is on another server (the
/// usual case: the phone vendor's), else to a local account's session.
fn route(server: &Server, to: &str, xml: String) -> Result<(), StanzaCondition> {
    let to = Jid::parse(to).map_err(|_| StanzaCondition::JidMalformed)?;
    if to.domain() != server.config().domain {
        return match server.send_remote(&to, xml.into(), false) {
            true => Ok(()),
            false => Err(StanzaCondition::RemoteServerNotFound),
        };
    }
    if to.resource().is_none() {
        return Err(StanzaCondition::ServiceUnavailable);
    }
    let router = server.router.borrow();
    let session = router
        .find(&to)
        .ok_or(StanzaCondition::ServiceUnavailable)?;
    if server.deliver(session, xml.into(), false) {
        Ok(())
    } else {
        Err(StanzaCondition::ServiceUnavailable)
    }
}

/// §8: a registration whose notification failed for good is removed.
fn disable_failed(
    server: &Server,
    user: &str,
    jid: &str,
    node: &str,
    condition: &str,
) -> impl Future<Output = Result<(), StoreError>> {
    info!("{user}: push notifications at {jid} disabled: {condition}");
    server.store.push_disable(user, jid, Some(node))
}

/// What an app server's error answer says (RFC 6120 §8.3.2): its condition, and whether it
/// is only temporary (`type='wait'`).
#[derive(Debug, PartialEq)]
struct Failure<'a> {
    condition: &'a str,
    temporary: bool,
}

impl<'a> Failure<'a> {
    /// An `<error/>` without a condition (or no `<error/>` at all) is
    /// `undefined-condition`, and not temporary.
    fn parse(error: Option<Node<'a, '_>>) -> Failure<'a> {
        let condition = error
            .and_then(|e| {
                e.children()
                    .find(|c| c.is_element() && c.tag_name().namespace() == Some(NS_STANZA_ERRORS))
            })
            .map_or("undefined-condition", |c| c.tag_name().name());
        let temporary = error.and_then(|e| e.attribute("type")) == Some("wait");
        Failure {
            condition,
            temporary,
        }
    }
}

/// A result or error addressed to `user`'s bare JID: the answer to a notification, when
/// its id and sender match one in flight. An error other than a temporary one (`wait`)
/// disables the registration; the answering session waits until that is stored.
pub fn on_response(server: &Server, session: &Session, stanza: &Stanza, user: &str) -> Deferred {
    let Some(id) = stanza
        .id
        .and_then(|id| id.strip_prefix(ID_PREFIX))
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return Deferred::None;
    };
    let answered = {
        let pushes = server.state::<Push>();
        let mut in_flight = pushes.in_flight.borrow_mut();
        let position = in_flight
            .iter()
            .position(|f| f.id == id && *f.user == *user && *f.jid == *session.jid.as_str());
        position.and_then(|i| in_flight.remove(i))
    };
    let Some(answered) = answered else {
        return Deferred::None;
    };
    if stanza.ty != StanzaType::Iq(IqType::Error) {
        return Deferred::None;
    }
    let Failure {
        condition,
        temporary,
    } = Failure::parse(stanza.child("error", NS_CLIENT));
    if temporary {
        info!(
            "{user}: push notification to {} failed for now: {condition}",
            answered.jid
        );
        return Deferred::None;
    }
    let write = disable_failed(server, user, &answered.jid, &answered.node, condition);
    let user = user.to_owned();
    Deferred::Reply(Box::pin(async move {
        if let Err(e) = write.await {
            warn!("{user}: failed push registration not removed: {e}");
        }
        String::new()
    }))
}

impl crate::feature::State for Push {
    fn new(_config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        Push::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(xml: &str) -> Result<Request, StanzaCondition> {
        let doc = roxmltree::Document::parse(xml).unwrap();
        parse(doc.root_element())
    }

    const FORM: &str = "<x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
        <field var='secret'><value>s3cr&amp;t</value></field></x>";

    #[test]
    fn enable_needs_jid_and_node_and_a_publish_options_form() {
        let enable = |attrs: &str, form: &str| {
            parsed(&format!("<enable xmlns='{NS}' {attrs}>{form}</enable>"))
        };
        assert_eq!(
            enable("jid='push.example' node='n1'", FORM),
            Ok(Request::Enable(PushRegistration {
                jid: "push.example".into(),
                node: "n1".into(),
                options: "<x xmlns='jabber:x:data' type='submit'>\
                    <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                    <field var='secret'><value>s3cr&amp;t</value></field></x>"
                    .as_bytes()
                    .to_vec(),
            }))
        );
        assert!(matches!(
            enable("jid='Push.Example/r' node='n'", ""),
            Ok(Request::Enable(PushRegistration { ref jid, ref options, .. }))
                if jid == "push.example/r" && options.is_empty()
        ));
        assert_eq!(enable("node='n'", ""), Err(StanzaCondition::BadRequest));
        assert_eq!(
            enable("jid='push.example'", ""),
            Err(StanzaCondition::BadRequest)
        );
        assert_eq!(
            enable("jid='a@@b' node='n'", ""),
            Err(StanzaCondition::JidMalformed)
        );
        let wrong_type = FORM.replace("pubsub#publish-options", "pubsub#node_config");
        assert_eq!(
            enable("jid='p' node='n'", &wrong_type),
            Err(StanzaCondition::BadRequest)
        );
        let not_submitted = FORM.replace("type='submit'", "type='form'");
        assert_eq!(
            enable("jid='p' node='n'", &not_submitted),
            Err(StanzaCondition::BadRequest)
        );
        let huge = FORM.replace("s3cr", &"x".repeat(MAX_OPTIONS_BYTES));
        assert_eq!(
            enable("jid='p' node='n'", &huge),
            Err(StanzaCondition::NotAcceptable)
        );
        let long_node = format!("jid='p' node='{}'", "n".repeat(MAX_NODE_BYTES + 1));
        assert_eq!(enable(&long_node, ""), Err(StanzaCondition::NotAcceptable));
    }

    #[test]
    fn disable_with_or_without_node() {
        assert_eq!(
            parsed(&format!("<disable xmlns='{NS}' jid='p' node='n'/>")),
            Ok(Request::Disable {
                jid: "p".into(),
                node: Some("n".into())
            })
        );
        assert_eq!(
            parsed(&format!("<disable xmlns='{NS}' jid='p'/>")),
            Ok(Request::Disable {
                jid: "p".into(),
                node: None
            })
        );
        assert_eq!(
            parsed(&format!("<purge xmlns='{NS}' jid='p'/>")),
            Err(StanzaCondition::BadRequest)
        );
    }

    #[test]
    fn publish_carries_summary_and_options_and_the_body_only_when_asked() {
        let registration = PushRegistration {
            jid: "app@h/r".into(),
            node: "n'1".into(),
            options: b"<x xmlns='jabber:x:data' type='submit'/>".to_vec(),
        };
        let summary = Summary {
            sender: Some("b@h/x"),
            body: Some("hi <3"),
        };
        let xml = publish(7, "a@h", &registration, &summary, false);
        assert_eq!(
            xml,
            "<iq type='set' from='a@h' to='app@h/r' id='push-7'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n&apos;1'><item>\
             <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='form'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>\
             <field var='message-count'><value>1</value></field>\
             <field var='last-message-sender'><value>b@h/x</value></field>\
             </x></notification></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'/></publish-options>\
             </pubsub></iq>"
        );
        let with_body = publish(7, "a@h", &registration, &summary, true);
        assert!(with_body
            .contains("<field var='last-message-body'><value>hi &lt;3</value></field></x>"));
        let bare = PushRegistration {
            options: Vec::new(),
            ..registration
        };
        let quiet = Summary {
            sender: None,
            body: None,
        };
        let xml = publish(8, "a@h", &bare, &quiet, true);
        assert!(!xml.contains("publish-options") && !xml.contains("last-message"));
    }

    fn failure(error: &str, expected: Failure) {
        let xml = format!("<iq xmlns='jabber:client' type='error'>{error}</iq>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let error = stanza::child(doc.root_element(), "error", NS_CLIENT);
        assert_eq!(Failure::parse(error), expected, "{error:?}");
    }

    #[test]
    fn a_wait_error_is_temporary_rfc6120_s8_3_2() {
        failure(
            "<error type='wait'><resource-constraint \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            Failure {
                condition: "resource-constraint",
                temporary: true,
            },
        );
    }

    #[test]
    fn other_errors_are_for_good_xep_0357_s8() {
        failure(
            "<error type='cancel'><item-not-found \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            Failure {
                condition: "item-not-found",
                temporary: false,
            },
        );
    }

    #[test]
    fn an_error_without_condition_is_undefined() {
        for error in ["<error type='wait'/>", ""] {
            let temporary = !error.is_empty();
            failure(
                error,
                Failure {
                    condition: "undefined-condition",
                    temporary,
                },
            );
        }
    }
}
