//! The XEP-0045 Multi-User Chat service on its own domain (`rooms.<domain>` by default): it
//! owns every room in memory, routes stanzas addressed to the service, a room or an occupant
//! to the room's logic ([`room`]), creates rooms on first join and keeps persistent rooms in
//! the store, with their history ([`history`]). It must never route anything that is not
//! addressed to its domain, and rooms never hold more than their occupants' sessions (no
//! copies of session state).

mod form;
mod history;
mod room;
mod vcard;

use crate::config::{Config, Creators};
use crate::feature::Deferred;
use crate::feature::{Feature, Service};
use crate::jid::Jid;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{
    self, IqType, MessageType, PresenceType, Stanza, StanzaCondition, StanzaError, StanzaType,
};
use crate::store::Store;
use crate::xml::build::Element;
use crate::{disco, ping};
use form::RoomConfig;
use log::{info, warn};
use room::{Affiliation, Persist, Room};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";

pub use history::{background, flush as flush_history, FLUSH_EVERY as HISTORY_FLUSH_EVERY};

pub const FEATURE: Feature = Feature {
    name: "muc",
    state: Some(crate::feature::init::<Muc>),
    service: Some(Service {
        serves: |server, domain| server.state::<Muc>().serves(domain),
        domain: |server| server.state::<Muc>().domain().map(str::to_owned),
        name: "Chat rooms",
        federated: true,
        handle,
    }),
    session_ended: Some(|server, session| {
        session_ended(server, session);
        None
    }),
    account_deleted: Some(|server, user| {
        account_deleted(server, user);
        None
    }),
    shutdown: Some(|server| drop(flush_history(server))),
    background: Some(|server| Box::pin(background(server))),
    ..Feature::NONE
};

/// The service: its domain and its rooms by localpart.
pub struct Muc {
    domain: Option<Box<str>>,
    rooms: RefCell<HashMap<Box<str>, Room>>,
    /// Persistent rooms whose history changed since it was last written ([`history`]).
    dirty: RefCell<HashSet<Box<str>>>,
    /// Wakes [`history::background`] when `dirty` stops being empty.
    kick: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
}

/// What a room handler needs to answer the stanza it is handling.
pub struct Ctx<'s, 'a, 'i> {
    pub server: &'s Server,
    pub session: &'s Rc<Session>,
    pub stanza: &'s Stanza<'a, 'i>,
    pub out: &'s mut String,
    /// The service ceiling for a room's `maxusers`.
    pub max_occupants: u32,
}

impl Ctx<'_, '_, '_> {
    /// Answers the stanza with an error from the address it was sent to.
    pub fn error(&mut self, condition: StanzaCondition) {
        self.fail(&StanzaError::new(condition));
    }

    /// Like [`Ctx::error`], for an error with another type or a text.
    pub fn fail(&mut self, error: &StanzaError) {
        if self.stanza.is_error() {
            return;
        }
        let from = self.stanza.to.as_ref().map_or("", Jid::as_str);
        stanza::write_error_reply(
            self.out,
            self.stanza.kind,
            self.stanza.id,
            from,
            self.session.jid.as_str(),
            error,
        );
    }
}

impl Muc {
    /// The service as configured, with the persistent rooms read back from the store.
    pub fn load(config: &Config, store: &Store) -> Muc {
        let domain = config.muc_domain();
        let mut rooms = HashMap::new();
        if let Some(domain) = &domain {
            match store.muc_all() {
                Ok(stored) => {
                    for (name, record) in stored {
                        let restored = Jid::from_parts(Some(&name), domain, None)
                            .ok()
                            .and_then(|jid| Room::from_record(jid, &record, defaults(config)));
                        match restored {
                            Some(room) => {
                                rooms.insert(name.into_boxed_str(), room);
                            }
                            None => warn!("chat room {name}: unreadable record, skipped"),
                        }
                    }
                    if !rooms.is_empty() {
                        info!("{} persistent chat rooms on {domain}", rooms.len());
                    }
                    history::load(store, &mut rooms);
                }
                Err(e) => warn!("cannot read chat rooms: {e}"),
            }
        }
        Muc {
            domain: domain.map(String::into_boxed_str),
            rooms: RefCell::new(rooms),
            dirty: RefCell::default(),
            kick: smol::channel::bounded(1),
        }
    }

    /// The service's domain, when it is enabled.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Whether stanzas to `domain` belong to this service.
    pub fn serves(&self, domain: &str) -> bool {
        self.domain.as_deref() == Some(domain)
    }
}

fn defaults(config: &Config) -> RoomConfig {
    let history = config.muc.history_default.min(form::MAX_HISTORY);
    RoomConfig::new(config.muc.max_occupants, history)
}

/// Every stanza whose `to` is on the service's domain.
pub fn handle(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    out: &mut String,
) -> Deferred {
    let Some(to) = stanza.to.clone() else {
        return Deferred::None;
    };
    let mut ctx = Ctx {
        server,
        session,
        stanza,
        out,
        max_occupants: server.config().muc.max_occupants,
    };
    let Some(name) = to.local() else {
        service(&mut ctx, stanza.ty);
        return Deferred::None;
    };
    let muc = server.state::<Muc>();
    let mut rooms = muc.rooms.borrow_mut();
    let nick = to.resource();
    let mut deferred = Deferred::None;
    let record = match (stanza.ty, nick) {
        (StanzaType::Presence(ty), nick) => {
            let unavailable = match ty {
                PresenceType::Available => false,
                PresenceType::Unavailable => true,
                _ => return Deferred::None,
            };
            let Some(nick) = nick else {
                if !unavailable {
                    ctx.error(StanzaCondition::JidMalformed);
                }
                return Deferred::None;
            };
            if !rooms.contains_key(name) {
                if unavailable {
                    return Deferred::None;
                }
                match create(&ctx, &rooms, &to) {
                    Ok(room) => {
                        rooms.insert(name.into(), room);
                    }
                    Err(condition) => {
                        ctx.error(condition);
                        return Deferred::None;
                    }
                }
                if let Some(room) = rooms.get_mut(name) {
                    room.on_presence(&mut ctx, nick, false, true);
                }
            } else if let Some(room) = rooms.get_mut(name) {
                room.on_presence(&mut ctx, nick, unavailable, false);
            }
            None
        }
        (StanzaType::Message(MessageType::Error), _)
        | (StanzaType::Iq(IqType::Result | IqType::Error), None) => {
            return Deferred::None;
        }
        _ => {
            let Some(room) = rooms.get_mut(name) else {
                // Answers to a request are never answered (RFC 6120 §8.2.3).
                if !matches!(stanza.ty, StanzaType::Iq(IqType::Result | IqType::Error)) {
                    ctx.error(StanzaCondition::ItemNotFound);
                }
                return Deferred::None;
            };
            match (stanza.ty, nick) {
                (StanzaType::Message(ty), Some(nick)) => {
                    room.on_private_message(&mut ctx, nick, ty);
                    None
                }
                (StanzaType::Message(MessageType::Groupchat), None) => room.on_groupchat(&mut ctx),
                (StanzaType::Message(_), None) => match stanza.child("x", NS_USER) {
                    Some(x) => {
                        let (then, record) = room.on_user_message(&mut ctx, x);
                        deferred = then;
                        record
                    }
                    None => {
                        ctx.error(StanzaCondition::NotAcceptable);
                        None
                    }
                },
                (StanzaType::Iq(ty), Some(nick)) => {
                    room.on_occupant_iq(&mut ctx, nick, ty);
                    None
                }
                (StanzaType::Iq(ty), None)
                    if stanza.payload().and_then(|p| p.tag_name().namespace())
                        == Some(crate::mam::NS) =>
                {
                    deferred = room.on_mam(&mut ctx, ty);
                    None
                }
                (StanzaType::Iq(ty), None) => room_iq(&mut ctx, room, ty),
                (StanzaType::Presence(_), _) => None,
            }
        }
    };
    // A groupchat message to the room may add to the history (a refused one only costs a
    // rewrite of the same history); a saved configuration may have trimmed it or made the
    // room persistent.
    let history_changed = (stanza.ty == StanzaType::Message(MessageType::Groupchat)
        && nick.is_none())
        || matches!(record, Some(Persist::Save(_)));
    persist(&server.store, name, record);
    if history_changed && rooms.get(name).is_some_and(|room| room.config.persistent) {
        history::changed(&server.state::<Muc>(), name);
    }
    if rooms.get(name).is_some_and(Room::is_gone) {
        if let Some(room) = rooms.remove(name).filter(|r| r.config.archive) {
            crate::mam::room_gone(server, &room.jid);
        }
    }
    deferred
}

/// §10.1: a new room for the first user to enter it, locked until configured when the
/// client speaks MUC, ready at once for an old groupchat client.
fn create(ctx: &Ctx, rooms: &HashMap<Box<str>, Room>, jid: &Jid) -> Result<Room, StanzaCondition> {
    let config = &ctx.server.config();
    let creator = ctx.session.jid.bare();
    if config.muc.creators == Creators::Admins
        && !config.muc.admins.iter().any(|a| a == creator.as_str())
    {
        return Err(StanzaCondition::NotAllowed);
    }
    let owned = rooms.values().filter(|r| r.is_owner(&creator)).count();
    if owned >= config.muc.max_rooms_per_user as usize {
        return Err(StanzaCondition::NotAllowed);
    }
    let mut room = Room::new(jid.bare(), defaults(config));
    room.locked = ctx.stanza.child("x", NS_MUC).is_some();
    room.set_affiliation(creator, Affiliation::Owner);
    info!("{} created chat room {}", ctx.session.jid, room.jid);
    Ok(room)
}

/// An iq to the room's bare JID.
fn room_iq(ctx: &mut Ctx, room: &mut Room, ty: IqType) -> Option<Persist> {
    let Some(query) = ctx.stanza.payload() else {
        ctx.error(StanzaCondition::BadRequest);
        return None;
    };
    if room.locked && !room.is_owner(&ctx.session.jid.bare()) {
        ctx.error(StanzaCondition::ItemNotFound);
        return None;
    }
    let ns = query.tag_name().namespace().unwrap_or_default();
    match (ns, ty) {
        (NS_OWNER, _) => room.on_owner(ctx, ty, query),
        (NS_ADMIN, _) => room.on_admin(ctx, ty, query),
        (crate::vcard::NS, _) => vcard::on_iq(ctx, room, ty, query),
        (disco::NS_INFO | disco::NS_ITEMS, IqType::Get) => {
            match Disco::parse(query) {
                Some(Ok(disco)) => {
                    let from = room.jid.as_str().to_owned();
                    disco_reply(ctx, &from, disco, |out| {
                        if disco == Disco::Info {
                            room.write_info(out);
                        }
                    });
                }
                Some(Err(condition)) => ctx.error(condition),
                None => ctx.error(StanzaCondition::ServiceUnavailable),
            }
            None
        }
        (ping::NS, IqType::Get) => {
            stanza::write_iq_result(
                ctx.out,
                ctx.stanza.id,
                room.jid.as_str(),
                ctx.session.jid.as_str(),
            );
            None
        }
        _ => {
            ctx.error(StanzaCondition::ServiceUnavailable);
            None
        }
    }
}

/// Stanzas to the service itself: disco (§6.1–§6.3) and ping.
fn service(ctx: &mut Ctx, ty: StanzaType) {
    let server = ctx.server;
    let domain = server
        .state::<Muc>()
        .domain()
        .unwrap_or_default()
        .to_owned();
    let query = ctx.stanza.payload();
    match (ty, query) {
        (StanzaType::Iq(IqType::Get), Some(query)) => match Disco::parse(query) {
            Some(Ok(disco)) => service_disco(ctx, &domain, disco),
            Some(Err(condition)) => ctx.error(condition),
            None if query.has_tag_name((ping::NS, "ping")) => {
                stanza::write_iq_result(ctx.out, ctx.stanza.id, &domain, ctx.session.jid.as_str());
            }
            None => ctx.error(StanzaCondition::ServiceUnavailable),
        },
        (StanzaType::Iq(IqType::Get | IqType::Set) | StanzaType::Message(_), _) => {
            ctx.error(StanzaCondition::ServiceUnavailable)
        }
        _ => {}
    }
}

/// The service's identity and features (XEP-0045 §6.1), or its public rooms (§6.3).
fn service_disco(ctx: &mut Ctx, domain: &str, disco: Disco) {
    match disco {
        Disco::Info => disco_reply(ctx, domain, disco, |out| {
            Element::new("identity")
                .attr("category", "conference")
                .attr("type", "text")
                .attr("name", "Chat rooms")
                .empty(out);
            for feature in [NS_MUC, disco::NS_INFO, disco::NS_ITEMS, ping::NS] {
                Element::new("feature").attr("var", feature).empty(out);
            }
        }),
        Disco::Items => {
            let muc = ctx.server.state::<Muc>();
            let rooms = muc.rooms.borrow();
            let mut listed: Vec<&Room> = rooms
                .values()
                .filter(|r| r.config.public && !r.locked)
                .collect();
            listed.sort_by(|a, b| a.jid.as_str().cmp(b.jid.as_str()));
            disco_reply(ctx, domain, disco, |out| {
                for room in listed {
                    let name = format!("{} ({})", room.display_name(), room.occupant_count());
                    Element::new("item")
                        .attr("jid", room.jid.as_str())
                        .attr("name", &name)
                        .empty(out);
                }
            })
        }
    }
}

/// Which disco query a get to the service or a room is (XEP-0030 §3.1, §4.1).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Disco {
    Info,
    Items,
}

impl Disco {
    /// A `<query/>` in disco#info or disco#items; one naming a `node` asks for something
    /// neither the service nor a room has: `item-not-found`. `None`: not a disco query.
    fn parse(query: roxmltree::Node) -> Option<Result<Disco, StanzaCondition>> {
        let disco = match query.tag_name().namespace() {
            Some(disco::NS_INFO) => Disco::Info,
            Some(disco::NS_ITEMS) => Disco::Items,
            _ => return None,
        };
        if query.tag_name().name() != "query" || query.attribute("node").is_some() {
            return Some(Err(StanzaCondition::ItemNotFound));
        }
        Some(Ok(disco))
    }

    fn ns(self) -> &'static str {
        match self {
            Disco::Info => disco::NS_INFO,
            Disco::Items => disco::NS_ITEMS,
        }
    }
}

/// The result of a disco query from `from`, its `<query/>` filled by `body`.
fn disco_reply(ctx: &mut Ctx, from: &str, disco: Disco, body: impl FnOnce(&mut String)) {
    let to = ctx.session.jid.as_str();
    stanza::write_iq_result_with(ctx.out, ctx.stanza.id, from, to, |out| {
        Element::new("query").ns(disco.ns()).children(out, body);
    });
}

fn persist(store: &Store, name: &str, record: Option<Persist>) {
    match record {
        Some(Persist::Save(record)) => drop(store.muc_save(name, record)),
        Some(Persist::Delete) => drop(store.muc_delete(name)),
        None => {}
    }
}

/// An account was deleted: no room keeps an affiliation for it.
pub fn account_deleted(server: &Server, user: &str) {
    let config = server.config();
    for (name, room) in server.state::<Muc>().rooms.borrow_mut().iter_mut() {
        persist(
            &server.store,
            name,
            room.drop_affiliations(account(&config, user)),
        );
    }
}

/// `hearth deluser` with no server running: the stored rooms forget the account. Blocks
/// until the records are written.
pub fn account_deleted_offline(config: &Config, store: &Store, user: &str) -> Result<(), String> {
    let Some(domain) = config.muc_domain() else {
        return Ok(());
    };
    for (name, record) in store.muc_all().map_err(|e| e.to_string())? {
        let room = Jid::from_parts(Some(&name), &domain, None)
            .ok()
            .and_then(|jid| Room::from_record(jid, &record, defaults(config)));
        if let Some(Persist::Save(record)) =
            room.and_then(|mut room| room.drop_affiliations(account(config, user)))
        {
            smol::block_on(store.muc_save(&name, record))
                .map_err(|e| format!("chat room {name}: {e}"))?;
        }
    }
    Ok(())
}

/// Whether a room JID list entry is `user`'s account.
fn account<'a>(config: &'a Config, user: &'a str) -> impl Fn(&Jid) -> bool + 'a {
    move |jid| jid.domain() == config.domain && jid.local() == Some(user)
}

/// A session ended: it leaves every room it was in, and emptied temporary rooms vanish.
pub fn session_ended(server: &Server, session: &Session) {
    let muc = server.state::<Muc>();
    let mut rooms = muc.rooms.borrow_mut();
    for room in rooms.values_mut() {
        room.session_ended(server, session);
    }
    rooms.retain(|_, room| {
        let gone = room.is_gone();
        if gone && room.config.archive {
            crate::mam::room_gone(server, &room.jid);
        }
        !gone
    });
}

impl crate::feature::State for Muc {
    fn new(config: &crate::config::Config, store: &crate::store::Store) -> Self {
        Muc::load(config, store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disco(query: &str) -> Option<Result<Disco, StanzaCondition>> {
        let doc = roxmltree::Document::parse(query).unwrap();
        Disco::parse(doc.root_element())
    }

    #[test]
    fn info_and_items_queries_xep_0030_s3_s4() {
        assert_eq!(
            disco("<query xmlns='http://jabber.org/protocol/disco#info'/>"),
            Some(Ok(Disco::Info))
        );
        assert_eq!(
            disco("<query xmlns='http://jabber.org/protocol/disco#items'/>"),
            Some(Ok(Disco::Items))
        );
    }

    #[test]
    fn a_node_or_another_element_is_item_not_found() {
        for query in [
            "<query xmlns='http://jabber.org/protocol/disco#info' node='x'/>",
            "<info xmlns='http://jabber.org/protocol/disco#info'/>",
        ] {
            assert_eq!(
                disco(query),
                Some(Err(StanzaCondition::ItemNotFound)),
                "{query}"
            );
        }
    }

    #[test]
    fn another_namespace_is_not_a_disco_query() {
        assert_eq!(disco("<ping xmlns='urn:xmpp:ping'/>"), None);
    }
}
