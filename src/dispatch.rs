//! What happens to a stanza from an established session: iq requests go
//! to the feature module that owns their namespace, messages and presence
//! go through the router's delivery rules. Replies to the sender are
//! appended to its output; work that must wait for the disk is returned as
//! [`Deferred`] so the connection task can await it in order.

use crate::iq::Iq;
use crate::jid::Jid;
use crate::offline::{self, Pending};
use crate::privacy::StanzaKind;
use crate::router::{MessageTarget, Session};
use crate::server::Server;
use crate::stanza::{
    self, IqType, MessageType, Stanza, StanzaCondition, StanzaError, StanzaType, StreamCondition,
};
use crate::xml::{write_element_without, NS_CLIENT};
use crate::{
    blocking, carbons, csi, disco, last, pep, ping, presence, privacy, private, register, roster,
    vcard, version,
};
use log::info;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// Work a handler leaves for the connection task.
pub enum Deferred {
    None,
    CloseStream(StreamCondition),
    /// Commit a message for an offline user, then answer the sender.
    StoreOffline(Pending),
    /// The session just became available: deliver stored messages.
    FlushOffline,
    /// Disk work whose outcome is the reply: awaited in stream order, and what it
    /// returns is written to this session.
    Reply(Pin<Box<dyn Future<Output = String>>>),
}

/// Who an iq addressed to this server is really for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IqTarget<'a> {
    /// The server itself (no `to`, or the bare domain).
    Server,
    /// A local account's bare JID: the server answers on its behalf.
    Account(&'a str),
}

pub fn handle(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    out: &mut String,
) -> Deferred {
    if let Some(to) = &stanza.to {
        if server.muc.serves(to.domain()) {
            return crate::muc::handle(server, session, stanza, out);
        }
        if server.upload.serves(to.domain()) {
            return crate::upload::handle(server, session, stanza, out);
        }
        if server.proxy.serves(to.domain()) {
            return crate::proxy::handle(server, session, stanza, out);
        }
    }
    match stanza.ty {
        StanzaType::Message(ty) => on_message(server, session, stanza, ty, out),
        StanzaType::Presence(ty) => {
            if let Some(to) = &stanza.to {
                if !blocking::gate(server, session, stanza, to, out) {
                    return Deferred::None;
                }
            }
            vcard::with_photo_update(server, session, stanza, |stanza| {
                presence::on_presence(server, session, stanza, ty, out)
            })
        }
        StanzaType::Iq(ty) => on_iq(server, session, stanza, ty, out),
    }
}

/// Serialises a stanza for delivery with the sender's full JID stamped.
pub fn forwarded(stanza: &Stanza, from: &Jid) -> String {
    forwarded_without(stanza, from, |_| false)
}

/// [`forwarded`], leaving out the child elements `skip` picks (hints meant
/// for this server only).
pub fn forwarded_without(
    stanza: &Stanza,
    from: &Jid,
    skip: impl Fn(roxmltree::Node) -> bool,
) -> String {
    let mut xml = String::with_capacity(stanza.node.range().len() + 64);
    write_element_without(
        &mut xml,
        stanza.node,
        NS_CLIENT,
        &[("from", Some(from.as_str()))],
        skip,
    );
    xml
}

/// Answers a stanza with an error, unless it is an error itself (RFC 6120 §8.3.1).
pub fn reply_error(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    condition: StanzaCondition,
    out: &mut String,
) {
    if stanza.is_error() {
        return;
    }
    let domain: &str = &server.config().domain;
    let from = stanza.to.as_ref().map_or(domain, Jid::as_str);
    stanza::write_error_reply(
        out,
        stanza.kind,
        stanza.id,
        from,
        session.jid.as_str(),
        &StanzaError::new(condition),
    );
}

/// Whether `to` is on this server's domain. hearth does not federate: a stanza for any other
/// domain is answered with `remote-server-not-found` (RFC 6120 §8.3.3.16), and this is false.
pub fn served_here(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    to: &Jid,
    out: &mut String,
) -> bool {
    if to.domain() != server.config().domain {
        reply_error(
            server,
            session,
            stanza,
            StanzaCondition::RemoteServerNotFound,
            out,
        );
        return false;
    }
    true
}

/// `service-unavailable`: RFC 6121 §8.5's answer for no such account, resource or service
/// alike, which tells the sender nothing about which it was.
pub fn reply_unavailable(server: &Server, session: &Session, stanza: &Stanza, out: &mut String) {
    reply_error(
        server,
        session,
        stanza,
        StanzaCondition::ServiceUnavailable,
        out,
    );
}

/// Whether a localpart names an account: online users certainly exist.
pub fn account_exists(server: &Server, local: &str) -> bool {
    !server.is_retired(local)
        && (!server.router.borrow().resources(local).is_empty()
            || server.store.user_exists(local).unwrap_or(false))
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
    if !served_here(server, session, stanza, &to, out) {
        return Deferred::None;
    }
    let Some(local) = to.local() else {
        // Messages to the server itself carry nothing hearth acts on.
        return Deferred::None;
    };
    if !blocking::gate(server, session, stanza, &to, out) {
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
            let (xml, sent_id) = crate::mam::delivered(server, session, stanza, &to, local);
            let xml: Rc<str> = xml.into();
            let hold = csi::message_hold(stanza, session);
            // Each resource's own privacy list (XEP-0016 §2 rule 1) has the last word.
            let delivered: Vec<_> = sessions
                .into_iter()
                .filter(|s| {
                    blocking::allows(server, &session.jid, &s.jid, StanzaKind::Message)
                        == blocking::Verdict::Allow
                        && server.deliver_as(s, xml.clone(), storable, hold)
                })
                .collect();
            carbons::copy(server, session, stanza, local, &delivered, &xml, sent_id);
            crate::push::on_message(server, session, stanza, local, &delivered);
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
            let (xml, sent_id) = crate::mam::delivered(server, session, stanza, &to, local);
            carbons::copy(server, session, stanza, local, &[], &xml, sent_id);
            crate::push::on_message(server, session, stanza, local, &[]);
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

fn on_iq(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    ty: IqType,
    out: &mut String,
) -> Deferred {
    if let Some(to) = &stanza.to {
        if !served_here(server, session, stanza, to, out)
            || !blocking::gate(server, session, stanza, to, out)
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
    if matches!(ty, IqType::Result | IqType::Error) {
        match target {
            IqTarget::Server => {
                crate::pep::caps::on_response(server, session, stanza);
            }
            // Perhaps an app server answering a push notification (XEP-0357).
            IqTarget::Account(local) => {
                return crate::push::on_response(server, session, stanza, local)
            }
        }
        // Answers to requests the server never sent: nothing to do.
        return Deferred::None;
    }
    let Some(payload) = stanza.payload() else {
        reply_error(server, session, stanza, StanzaCondition::BadRequest, out);
        return Deferred::None;
    };
    let ns = payload.tag_name().namespace().unwrap_or_default();
    let iq = Iq {
        server,
        session,
        stanza,
        ty,
        target,
        payload,
    };
    let handled = match ns {
        disco::NS_INFO | disco::NS_ITEMS => disco::handle(&iq, out),
        ping::NS => ping::handle(&iq, out),
        carbons::NS => carbons::handle(&iq, out),
        blocking::NS => return blocking::handle(&iq, out),
        privacy::NS => return privacy::handle(&iq, out),
        register::NS => return register::handle(&iq, out),
        vcard::NS => return vcard::handle(&iq, out),
        private::NS => return private::handle(&iq, out),
        roster::NS => return roster::handle(&iq, out),
        pep::NS | pep::NS_OWNER => return pep::handle(&iq, out),
        crate::mam::NS => return crate::mam::handle(&iq, out),
        crate::push::NS => return crate::push::handle(&iq, out),
        last::NS => last::handle(&iq, out),
        crate::extdisco::NS => crate::extdisco::handle(&iq, out),
        version::NS => version::handle(&iq, out),
        crate::c2s::NS_SESSION if target == IqTarget::Server && ty == IqType::Set => {
            stanza::write_iq_result(out, stanza.id, "", session.jid.as_str());
            true
        }
        _ => false,
    };
    if !handled {
        reply_unavailable(server, session, stanza, out);
    }
    Deferred::None
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
    presence::session_ended(server, session).await;
    crate::muc::session_ended(server, session);
    privacy::session_ended(server, session);
    crate::push::session_ended(server, session);
    let user = session.jid.user();
    if server.router.borrow().resources(user).is_empty() {
        blocking::user_offline(server, user);
        vcard::user_offline(server, user);
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
