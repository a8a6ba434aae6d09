//! What happens to a stanza from an established session: iq requests go
//! to the feature module that owns their namespace, messages and presence
//! go through the router's delivery rules. Replies to the sender are
//! appended to its output; work that must wait for the disk is returned as
//! [`Deferred`] so the connection task can await it in order.

use crate::feature::{self, Deferred, Routed};
use crate::iq::{Iq, IqTarget};
use crate::jid::Jid;
use crate::offline::{self, Pending};
use crate::route::{
    account_exists, forwarded, reply_error, reply_remote_not_found, reply_unavailable, served_here,
};
use crate::router::{Hold, MessageTarget, Session};
use crate::server::Server;
use crate::stanza::{self, IqType, MessageType, Stanza, StanzaCondition, StanzaType};
use log::info;
use std::rc::Rc;

/// RFC 3921 session establishment, offered as optional (RFC 6121 App. E) and answered here.
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

pub fn handle(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    out: &mut String,
) -> Deferred {
    if let Some(to) = &stanza.to {
        if let Some(service) = server.hooks().service(server, to.domain()) {
            if session.remote && !service.federated {
                reply_unavailable(server, session, stanza, out);
                return Deferred::None;
            }
            return (service.handle)(server, session, stanza, out);
        }
    }
    match stanza.ty {
        StanzaType::Message(ty) => on_message(server, session, stanza, ty, out),
        StanzaType::Presence(ty) => {
            if let Some(to) = &stanza.to {
                if !gates_pass(server, session, stanza, to, out) {
                    return Deferred::None;
                }
            }
            server.hooks().on_presence.map_or(Deferred::None, |handle| {
                handle(server, session, stanza, ty, out)
            })
        }
        StanzaType::Iq(ty) => on_iq(server, session, stanza, ty, out),
    }
}

fn on_message(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    ty: MessageType,
    out: &mut String,
) -> Deferred {
    // RFC 6121 §8.5: no `to` means the sender's own bare JID.
    let to = stanza.to.clone().unwrap_or_else(|| session.jid.bare());
    if to.domain() != server.config().domain && !session.remote {
        to_remote(server, session, stanza, &to, out);
        return Deferred::None;
    }
    if !served_here(server, session, stanza, &to, out) {
        return Deferred::None;
    }
    let Some(local) = to.local() else {
        // Messages to the server itself carry nothing hearth acts on.
        return Deferred::None;
    };
    if !gates_pass(server, session, stanza, &to, out) {
        return Deferred::None;
    }
    if !account_exists(server, local) {
        reply_unavailable(server, session, stanza, out);
        return Deferred::None;
    }
    let target = server.router.borrow().message_targets(&to, ty);
    let storable = offline::is_storable(stanza);
    match target {
        MessageTarget::Sessions(sessions) => {
            let (xml, sent_id) = prepare(server, session, stanza, &to, local);
            let xml: Rc<str> = xml.into();
            let hold = Hold::of_message(stanza, session);
            let admits = |s: &Session| {
                server
                    .hooks()
                    .admits
                    .iter()
                    .all(|admit| admit(server, &session.jid, s))
            };
            let delivered: Vec<_> = sessions
                .into_iter()
                .filter(|s| admits(s) && server.deliver_as(s, xml.clone(), storable, hold))
                .collect();
            routed(server, session, stanza, local, &delivered, &xml, sent_id);
            if delivered.is_empty() && storable {
                return Deferred::StoreOffline(Pending::new(
                    server,
                    local,
                    xml.to_string(),
                    stanza,
                    session.jid.as_str(),
                ));
            }
            Deferred::None
        }
        MessageTarget::Offline if storable => {
            let (xml, sent_id) = prepare(server, session, stanza, &to, local);
            routed(server, session, stanza, local, &[], &xml, sent_id);
            Deferred::StoreOffline(Pending::new(
                server,
                local,
                xml,
                stanza,
                session.jid.as_str(),
            ))
        }
        MessageTarget::Offline | MessageTarget::Drop => Deferred::None,
        MessageTarget::Error(condition) => {
            reply_error(server, session, stanza, condition, out);
            Deferred::None
        }
    }
}

/// A local user's message to another server's user: gates, the sender's archive and copies
/// to the sender's other resources as for a local recipient, then out over federation.
fn to_remote(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    to: &Jid,
    out: &mut String,
) {
    if !gates_pass(server, session, stanza, to, out) {
        return;
    }
    // No local recipient: `prepare` and the routed hooks see an empty one.
    let (xml, sent_id) = prepare(server, session, stanza, to, "");
    let storable = offline::is_storable(stanza);
    if !server.send_remote(to, xml.as_str().into(), storable) {
        reply_remote_not_found(server, session, stanza, out);
        return;
    }
    routed(server, session, stanza, "", &[], &xml, sent_id);
}

/// Every declared gate lets the stanza from `session` go on to `to`.
fn gates_pass(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    to: &Jid,
    out: &mut String,
) -> bool {
    server
        .hooks()
        .gates
        .iter()
        .all(|gate| gate(server, session, stanza, to, out))
}

/// The message as its recipient gets it, by the declared preparer (which archives it).
fn prepare(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    to: &Jid,
    local: &str,
) -> (String, Option<u64>) {
    match server.hooks().prepare_message {
        Some(prepare) => prepare(server, session, stanza, to, local),
        None => (forwarded(stanza, &session.jid), None),
    }
}

/// Tells the features that watch routed messages (copies, notifications).
fn routed(
    server: &Server,
    sender: &Session,
    stanza: &Stanza,
    recipient: &str,
    delivered: &[Rc<Session>],
    xml: &str,
    sent_id: Option<u64>,
) {
    let routed = Routed {
        sender,
        stanza,
        recipient,
        delivered,
        xml,
        sent_id,
    };
    for watch in &server.hooks().message_routed {
        watch(server, &routed);
    }
}

fn on_iq(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    ty: IqType,
    out: &mut String,
) -> Deferred {
    if let Some(to) = &stanza.to {
        if !served_here(server, session, stanza, to, out)
            || !gates_pass(server, session, stanza, to, out)
        {
            return Deferred::None;
        }
    }
    let target = match &stanza.to {
        None => IqTarget::Server,
        Some(to) if to.resource().is_some() => {
            route_iq_to_resource(server, session, stanza, to, out);
            return Deferred::None;
        }
        Some(to) => match to.local() {
            None => IqTarget::Server,
            Some(local) if account_exists(server, local) => IqTarget::Account(local),
            Some(_) => {
                reply_unavailable(server, session, stanza, out);
                return Deferred::None;
            }
        },
    };
    let config = server.config();
    let features = || feature::enabled(server.features(), &config);
    if matches!(ty, IqType::Result | IqType::Error) {
        // Answers to queries the server sent (or, to an account, one sent on its behalf,
        // such as a push notification); answers to requests never sent are dropped.
        match target {
            IqTarget::Server => {
                for on_response in features().filter_map(|f| f.on_server_response) {
                    on_response(server, session, stanza);
                }
            }
            IqTarget::Account(local) => {
                let claimed = features()
                    .filter_map(|f| f.on_account_response)
                    .find_map(|on_response| on_response(server, session, stanza, local));
                return claimed.unwrap_or(Deferred::None);
            }
        }
        return Deferred::None;
    }
    let Some(payload) = stanza.payload() else {
        reply_error(server, session, stanza, StanzaCondition::BadRequest, out);
        return Deferred::None;
    };
    if session.remote && ty == IqType::Set {
        // Another server's user reads public data here; it changes nothing.
        reply_error(server, session, stanza, StanzaCondition::Forbidden, out);
        return Deferred::None;
    }
    let ns = payload.tag_name().namespace().unwrap_or_default();
    let iq = Iq {
        server,
        session,
        stanza,
        ty,
        target,
        payload,
    };
    if ns == NS_SESSION && target == IqTarget::Server && ty == IqType::Set {
        // RFC 3921's session establishment, a no-op kept for old clients (RFC 6121 App. E).
        stanza::write_iq_result(out, stanza.id, "", session.jid.as_str());
        return Deferred::None;
    }
    let handled = features()
        .filter(|f| f.iq.contains(&ns) && (f.answers_remote || !session.remote))
        .find_map(|f| (f.on_iq)(&iq, out));
    handled.unwrap_or_else(|| {
        reply_unavailable(server, session, stanza, out);
        Deferred::None
    })
}

/// A stanza from a remote session (another server's entity, a component's), handled as any
/// and its answers queued for the remote side (at most `cap` bytes waiting there).
pub async fn handle_remote(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza<'_, '_>,
    cap: usize,
) {
    let mut out = String::new();
    match handle(server, session, stanza, &mut out) {
        Deferred::StoreOffline(pending) => pending.store(server, &mut out).await,
        Deferred::Reply(task) => out.push_str(&task.await),
        Deferred::None | Deferred::CloseStream(_) | Deferred::FlushOffline => {}
    }
    if !out.is_empty() {
        let _ = session
            .mailbox
            .push_stanza(out.into(), false, Hold::Urgent, cap);
    }
}

/// RFC 6121 §8.5.3: an iq to a full JID goes to that resource or is
/// answered with an error; responses to a vanished resource are dropped.
fn route_iq_to_resource(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    to: &Jid,
    out: &mut String,
) {
    let target = server.router.borrow().find(to).cloned();
    let delivered = target.is_some_and(|target| {
        let xml: Rc<str> = forwarded(stanza, &session.jid).into();
        server.deliver(&target, xml, false)
    });
    let is_request = matches!(stanza.ty, StanzaType::Iq(IqType::Get | IqType::Set));
    if !delivered && is_request {
        reply_unavailable(server, session, stanza, out);
    }
}

/// The session is gone: unregister it, tell contacts, and keep every
/// message still queued for it (RFC 6121 §8.5.3 / no-loss rule).
pub async fn session_ended(server: &Rc<Server>, session: &Rc<Session>) {
    server.router.borrow_mut().unbind(session);
    for hook in server.features().iter().filter_map(|f| f.session_ended) {
        if let Some(wait) = hook(server, session) {
            wait.await;
        }
    }
    let user = session.jid.user();
    if server.router.borrow().resources(user).is_empty() {
        for hook in server.features().iter().filter_map(|f| f.user_offline) {
            hook(server, user);
        }
    }
    let mut kept = 0;
    for item in session.mailbox.drain() {
        if let crate::router::Outbound::Stanza {
            xml,
            storable: true,
            ..
        } = item
        {
            if offline::keep(server, user, xml.as_bytes().to_vec())
                .await
                .is_ok()
            {
                kept += 1;
            }
        }
    }
    if kept > 0 {
        info!(
            "{}: {kept} undelivered messages moved to offline storage",
            session.jid
        );
    }
    info!("{}: session ended", session.jid);
}
