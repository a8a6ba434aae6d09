//! Personal eventing (XEP-0163): every account is a virtual pubsub service (XEP-0060 subset)
//! with auto-created nodes, publish-options, items retrieval under the node's access model,
//! explicit subscriptions ([`subscriptions`]), retraction, node deletion and configuration,
//! and headline notifications to interested resources (entity capabilities, [`caps`]) and
//! subscribers. Persistence is [`crate::store`]'s; this module never routes anything but
//! its own notifications, and never sends one the node's access model does not allow.

pub mod avatar;
pub mod bookmarks;
pub mod caps;
mod page;
mod subscriptions;

use crate::blocking::{self, Verdict};
use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::jid::Jid;
use crate::privacy::StanzaKind;
use crate::reply::IqReply;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, StanzaCondition, StanzaError};
use crate::store::{PepItem, Publish, StoreError};
use crate::xml::{write_element, Esc};
use log::warn;
use roxmltree::Node;
use std::fmt::Write;
use std::rc::Rc;

pub const NS: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const NS_DATA: &str = "jabber:x:data";

/// What an account advertises for its PEP service (XEP-0163 §9): only what works.
pub const FEATURES: [&str; 14] = [
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#subscribe",
    avatar::NS_CONVERSION,
    bookmarks::NS_CONVERSION,
];

pub const FEATURE: Feature = Feature {
    name: "pep",
    iq: &[NS, NS_OWNER],
    on_iq: |iq, out| Some(handle(iq, out)),
    account_identities: &[("pubsub", "pep")],
    account_disco: &FEATURES,
    ..Feature::NONE
};

/// XEP-0060 §4.5 access models hearth implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    /// Contacts subscribed to the owner's presence (`from`/`both`): the PEP default.
    Presence,
    /// The owner only.
    Whitelist,
}

impl Access {
    fn parse(value: &str) -> Option<Access> {
        match value {
            "open" => Some(Access::Open),
            "presence" => Some(Access::Presence),
            "whitelist" => Some(Access::Whitelist),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Whitelist => "whitelist",
        }
    }
}

/// A node's configuration as stored: one access byte, then max_items little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub access: Access,
    pub max_items: u32,
}

impl NodeConfig {
    /// A new node's configuration: XEP-0163 defaults, except the nodes whose XEPs name
    /// other ones (XEP-0402 bookmarks: whitelist, as many items as allowed).
    fn default_for(server: &Server, node: &str) -> NodeConfig {
        if node == bookmarks::NODE {
            return NodeConfig {
                access: Access::Whitelist,
                max_items: server.config().pep.max_items,
            };
        }
        NodeConfig {
            access: Access::Presence,
            max_items: 1,
        }
    }

    fn encode(self) -> Vec<u8> {
        let mut bytes = vec![match self.access {
            Access::Open => 0,
            Access::Presence => 1,
            Access::Whitelist => 2,
        }];
        bytes.extend_from_slice(&self.max_items.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> NodeConfig {
        let access = match bytes.first() {
            Some(0) => Access::Open,
            Some(2) => Access::Whitelist,
            _ => Access::Presence,
        };
        let max_items = bytes
            .get(1..5)
            .and_then(|b| b.try_into().ok())
            .map_or(1, u32::from_le_bytes);
        NodeConfig { access, max_items }
    }
}

/// Node settings a data form (publish-options or configure) asks for.
#[derive(Default, Debug, PartialEq, Eq)]
struct Options {
    access: Option<Access>,
    max_items: Option<u32>,
}

/// Reads `pubsub#access_model` and `pubsub#max_items` from a submitted form; other fields
/// (persist_items, send_last_published_item, …) are accepted as hearth behaves anyway.
/// `None` when a value is one hearth does not support.
fn parse_options(form: Node, ceiling: u32) -> Option<Options> {
    let mut options = Options::default();
    for field in form
        .children()
        .filter(|c| c.has_tag_name((NS_DATA, "field")))
    {
        let value = stanza::child_text(field, "value", NS_DATA).unwrap_or_default();
        match field.attribute("var") {
            Some("pubsub#access_model") => options.access = Some(Access::parse(value.trim())?),
            Some("pubsub#max_items") => {
                let max = match value.trim() {
                    "max" => ceiling,
                    number => number.parse().ok().filter(|n| (1..=ceiling).contains(n))?,
                };
                options.max_items = Some(max);
            }
            _ => {}
        }
    }
    Some(options)
}

fn pubsub_error(condition: StanzaCondition, app: &'static str) -> StanzaError<'static> {
    StanzaError::new(condition).with_app(app, NS_ERRORS)
}

/// `<message type='headline'>` carrying `payload` (`<items/>` or `<delete/>`) in a XEP-0060
/// §7.1.2.1 event.
fn event(owner: &Jid, to: &Jid, payload: &str) -> String {
    format!(
        "<message from='{}' to='{}' type='headline'><event xmlns='{NS_EVENT}'>{payload}</event></message>",
        Esc(owner.as_str()),
        Esc(to.as_str()),
    )
}

/// The `<items/>` of an event: `inner` (items or retractions) of `node`.
fn items_event(node: &str, inner: &str) -> String {
    format!("<items node='{}'>{inner}</items>", Esc(node))
}

fn item_xml(id: &str, payload: &[u8]) -> String {
    format!(
        "<item id='{}'>{}</item>",
        Esc(id),
        String::from_utf8_lossy(payload)
    )
}

fn owner_jid(server: &Server, owner: &str) -> Option<Jid> {
    Jid::from_parts(Some(owner), &server.config().domain, None).ok()
}

/// Whether `user` may read `owner`'s node under `access` (XEP-0060 §6.5.9 errors otherwise).
fn may_read(
    server: &Server,
    owner: &str,
    user: &str,
    access: Access,
) -> Result<(), StanzaError<'static>> {
    if owner == user {
        return Ok(());
    }
    match access {
        Access::Open => Ok(()),
        Access::Presence => {
            let bare = format!("{user}@{}", server.config().domain);
            let subscribed = server
                .store
                .roster_item(owner, &bare)
                .ok()
                .flatten()
                .is_some_and(|item| item.from);
            if subscribed {
                Ok(())
            } else {
                Err(pubsub_error(
                    StanzaCondition::NotAuthorized,
                    "presence-subscription-required",
                ))
            }
        }
        Access::Whitelist => Err(pubsub_error(StanzaCondition::NotAllowed, "closed-node")),
    }
}

/// Sends `inner` (items or a retraction) of `owner`'s `node` to every available resource
/// allowed to see it whose capabilities ask for `node+notify` (XEP-0163 §4.3), and to the
/// node's subscribers.
pub fn notify(server: &Server, owner: &str, node: &str, access: Access, inner: &str) {
    let subscribers = server
        .store
        .pep_subscribers(owner, node)
        .unwrap_or_else(|e| {
            warn!("{owner}: cannot read PEP subscribers: {e}");
            Vec::new()
        });
    broadcast(
        server,
        owner,
        node,
        access,
        &items_event(node, inner),
        &subscribers,
    );
}

/// The available resources an explicit subscription of `jid` covers: all of a bare JID's,
/// or the one full JID.
fn covered<'a>(
    router: &'a crate::router::Router,
    jid: &'a Jid,
) -> impl Iterator<Item = &'a Rc<Session>> + 'a {
    let local = jid.local().unwrap_or_default();
    router
        .resources(local)
        .iter()
        .filter(move |s| s.available.get() && (jid.is_bare() || s.jid == *jid))
}

/// Sends the event `payload` of `owner`'s `node` once to each available resource that
/// asks for `node+notify` or that one of `subscribers` covers, if the access model lets
/// its user read the node now and its privacy rules let the event in.
fn broadcast(
    server: &Server,
    owner: &str,
    node: &str,
    access: Access,
    payload: &str,
    subscribers: &[String],
) {
    let Some(from) = owner_jid(server, owner) else {
        return;
    };
    let interest = caps::notify_feature(node);
    let mut users = vec![from.clone()];
    if access != Access::Whitelist {
        users.extend(crate::presence::contacts(server, owner, |item| item.from));
    }
    let router = server.router.borrow();
    let mut reached: Vec<u64> = Vec::new();
    let mut send = |to: &Rc<Session>| {
        if !reached.contains(&to.id)
            && blocking::allows(server, &from, &to.jid, StanzaKind::Message) == Verdict::Allow
        {
            reached.push(to.id);
            server.deliver(to, event(&from, &to.jid, payload).into(), false);
        }
    };
    for user in &users {
        let local = user.local().unwrap_or_default();
        for to in router.resources(local).iter().filter(|s| s.available.get()) {
            if caps::wants(to, &interest) {
                send(to);
            }
        }
    }
    for jid in subscribers.iter().filter_map(|jid| Jid::parse(jid).ok()) {
        let user = jid.local().unwrap_or_default();
        if may_read(server, owner, user, access).is_ok() {
            covered(&router, &jid).for_each(&mut send);
        }
    }
}

/// XEP-0163 §6: the last item of each node the session is interested in, of its own
/// account and of every contact it is subscribed to, written to `out` (the session's own
/// output, so they follow the presence that asked for them).
pub fn deliver_last(server: &Server, session: &Session, out: &mut String) {
    let user = session.jid.user();
    let mut owners = vec![user.to_owned()];
    owners.extend(
        crate::presence::contacts(server, user, |item| item.to)
            .iter()
            .filter_map(|jid| jid.local().map(str::to_owned)),
    );
    for owner in &owners {
        last_items(server, owner, session, out);
    }
}

/// The last item of each of `owner`'s nodes that `session` is interested in and may read.
fn last_items(server: &Server, owner: &str, session: &Session, out: &mut String) {
    let user = session.jid.user();
    let (Some(from), Ok(nodes)) = (owner_jid(server, owner), server.store.pep_nodes(owner)) else {
        return;
    };
    for (node, config) in nodes {
        let config = NodeConfig::decode(&config);
        if !caps::wants(session, &caps::notify_feature(&node))
            || may_read(server, owner, user, config.access).is_err()
        {
            continue;
        }
        if let Ok(items) = server.store.pep_items(owner, &node) {
            if let Some(last) = items.first() {
                let inner = item_xml(&last.id, &last.payload);
                out.push_str(&event(&from, &session.jid, &items_event(&node, &inner)));
            }
        }
    }
}

/// `owner` approved `contact`'s presence subscription (or `contact` now gets the presence it
/// was already approved for): `contact`'s available resources get the last items they are
/// now entitled to at once, as they would at their next login (XEP-0163 §6).
pub fn presence_granted(server: &Server, owner: &str, contact: &str) {
    let router = server.router.borrow();
    for session in router
        .resources(contact)
        .iter()
        .filter(|s| s.available.get())
    {
        let mut out = String::new();
        last_items(server, owner, session, &mut out);
        if !out.is_empty() {
            server.deliver(session, out.into(), false);
        }
    }
}

/// `pubsub` and `pubsub#owner` requests to an account (the sender's own with no `to`).
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, session, user) = (iq.server, iq.session, iq.user());
    let reply = iq.reply();
    let owner = match iq.target {
        IqTarget::Account(owner) => owner,
        // The domain itself is no pubsub service.
        IqTarget::Server if iq.stanza.to.is_some() => {
            reply.fail(out, StanzaCondition::ServiceUnavailable);
            return Deferred::None;
        }
        IqTarget::Server => user,
    };
    let Some(pubsub) = iq.payload_named("pubsub", &reply, out) else {
        return Deferred::None;
    };
    // The action, not an XEP-0059 `<set/>` next to it.
    let Some(action) = pubsub
        .children()
        .find(|c| c.is_element() && c.tag_name().namespace() != Some(page::NS_RSM))
    else {
        reply.fail(out, StanzaCondition::BadRequest);
        return Deferred::None;
    };
    let ns = pubsub.tag_name().namespace().unwrap_or_default();
    let Some(node) = action.attribute("node").filter(|n| !n.is_empty()) else {
        reply.error(
            out,
            &pubsub_error(StanzaCondition::BadRequest, "nodeid-required"),
        );
        return Deferred::None;
    };
    let request = Request {
        server,
        owner,
        node,
        reply,
    };
    let own = owner == user;
    match (ns, action.tag_name().name(), iq.ty) {
        (NS, "items", IqType::Get) => {
            request.items(user, pubsub, action, out);
            Deferred::None
        }
        (NS, "publish", IqType::Set) if own => request.publish(pubsub, action, out),
        (NS, "retract", IqType::Set) if own => request.retract(action, out),
        (NS, "subscribe", IqType::Set) => request.subscribe(session, action, out),
        (NS, "unsubscribe", IqType::Set) => request.unsubscribe(session, action, out),
        (NS_OWNER, "delete", IqType::Set) if own => request.delete(out),
        (NS_OWNER, "configure", IqType::Get) if own => {
            request.configuration(out);
            Deferred::None
        }
        (NS_OWNER, "configure", IqType::Set) if own => request.configure(action, out),
        (NS, "publish" | "retract", IqType::Set) | (NS_OWNER, "delete" | "configure", _) => {
            request.reply.fail(out, StanzaCondition::Forbidden);
            Deferred::None
        }
        _ => {
            request.reply.error(
                out,
                &StanzaError::new(StanzaCondition::FeatureNotImplemented)
                    .with_app("unsupported", NS_ERRORS),
            );
            Deferred::None
        }
    }
}

/// One request on one node of one account.
struct Request<'a> {
    server: &'a Rc<Server>,
    owner: &'a str,
    node: &'a str,
    reply: IqReply,
}

impl Request<'_> {
    fn config(&self) -> Result<Option<NodeConfig>, StoreError> {
        let stored = self.server.store.pep_node(self.owner, self.node)?;
        Ok(stored.as_deref().map(NodeConfig::decode))
    }

    /// The node's configuration, or the error already written.
    fn existing(&self, out: &mut String) -> Option<NodeConfig> {
        match self.config() {
            Ok(Some(config)) => Some(config),
            Ok(None) => {
                self.reply.fail(out, StanzaCondition::ItemNotFound);
                None
            }
            Err(e) => {
                warn!("{}: cannot read PEP node: {e}", self.owner);
                self.reply.fail(out, StanzaCondition::ResourceConstraint);
                None
            }
        }
    }

    /// XEP-0060 §6.5: all items (oldest first), the newest `max_items`, or those asked by id;
    /// a page of them with XEP-0059, and never more than `pep.max_reply_bytes` of items (§6.5.4:
    /// the newest that fit, the truncation told with an RSM `<set/>`).
    fn items(&self, user: &str, pubsub: Node, action: Node, out: &mut String) {
        let Ok(paging) = page::Paging::parse(pubsub, action) else {
            self.reply.fail(out, StanzaCondition::BadRequest);
            return;
        };
        let Some(config) = self.existing(out) else {
            return;
        };
        if let Err(error) = may_read(self.server, self.owner, user, config.access) {
            self.reply.error(out, &error);
            return;
        }
        let mut items: Vec<PepItem> = match self.server.store.pep_items(self.owner, self.node) {
            Ok(items) => items,
            Err(e) => {
                warn!("{}: cannot read PEP items: {e}", self.owner);
                self.reply.fail(out, StanzaCondition::ResourceConstraint);
                return;
            }
        };
        let wanted: Vec<&str> = action
            .children()
            .filter(|c| c.has_tag_name((NS, "item")))
            .filter_map(|c| c.attribute("id"))
            .collect();
        if !wanted.is_empty() {
            items.retain(|item| wanted.contains(&item.id.as_str()));
        }
        // The store lists the newest first; replies and pages go oldest first.
        items.reverse();
        let ids: Vec<&str> = items.iter().map(|item| item.id.as_str()).collect();
        let sizes: Vec<usize> = items
            .iter()
            .map(|item| item.id.len() + item.payload.len() + page::ITEM_OVERHEAD)
            .collect();
        let cap = self.server.config().pep.max_reply_bytes as usize;
        let page = match paging.select(&ids, &sizes, cap) {
            Ok(page) => page,
            Err(page::UnknownItem) => {
                self.reply.fail(out, StanzaCondition::ItemNotFound);
                return;
            }
        };
        let mut payload = format!("<pubsub xmlns='{NS}'><items node='{}'>", Esc(self.node));
        for item in items.get(page.items.clone()).unwrap_or_default() {
            payload.push_str(&item_xml(&item.id, &item.payload));
        }
        payload.push_str("</items>");
        if page.with_set {
            page.write_set(&ids, &mut payload);
        }
        payload.push_str("</pubsub>");
        self.reply.result_with(out, &payload);
    }

    /// XEP-0060 §7.1 with XEP-0163 auto-create and §7.1.5 publish-options.
    fn publish(self, pubsub: Node, action: Node, out: &mut String) -> Deferred {
        let pep = &self.server.config().pep;
        let items: Vec<Node> = action
            .children()
            .filter(|c| c.has_tag_name((NS, "item")))
            .collect();
        let [item] = items.as_slice() else {
            let app = if items.is_empty() {
                "item-required"
            } else {
                "invalid-payload"
            };
            self.reply
                .error(out, &pubsub_error(StanzaCondition::BadRequest, app));
            return Deferred::None;
        };
        let payloads: Vec<Node> = item.children().filter(Node::is_element).collect();
        let [payload] = payloads.as_slice() else {
            let app = if payloads.is_empty() {
                "payload-required"
            } else {
                "invalid-payload"
            };
            self.reply
                .error(out, &pubsub_error(StanzaCondition::BadRequest, app));
            return Deferred::None;
        };
        let mut xml = String::new();
        write_element(&mut xml, *payload, "", &[]);
        if xml.len() > pep.max_item_bytes as usize {
            self.reply.error(
                out,
                &pubsub_error(StanzaCondition::NotAcceptable, "payload-too-big"),
            );
            return Deferred::None;
        }
        let form = stanza::child(pubsub, "publish-options", NS)
            .and_then(|o| o.children().find(|c| c.has_tag_name((NS_DATA, "x"))));
        let options = match form.map(|form| parse_options(form, pep.max_items)) {
            None => Options::default(),
            Some(Some(options)) => options,
            Some(None) => {
                self.precondition_not_met(out);
                return Deferred::None;
            }
        };
        let config = match self.config() {
            Ok(Some(config)) => {
                let differs = options.access.is_some_and(|a| a != config.access)
                    || options.max_items.is_some_and(|m| m != config.max_items);
                if differs {
                    self.precondition_not_met(out);
                    return Deferred::None;
                }
                config
            }
            Ok(None) => {
                let default = NodeConfig::default_for(self.server, self.node);
                NodeConfig {
                    access: options.access.unwrap_or(default.access),
                    max_items: options.max_items.unwrap_or(default.max_items),
                }
            }
            Err(e) => {
                warn!("{}: cannot read PEP node: {e}", self.owner);
                self.reply.fail(out, StanzaCondition::ResourceConstraint);
                return Deferred::None;
            }
        };
        let id = match item.attribute("id").filter(|id| !id.is_empty()) {
            Some(id) => id.to_owned(),
            None => self.server.random_id(),
        };
        let write = self.server.store.pep_publish(
            self.owner,
            Publish {
                node: self.node.to_owned(),
                config: config.encode(),
                max_items: config.max_items,
                max_nodes: pep.max_nodes,
                replace: false,
                items: vec![(id.clone(), xml.clone().into_bytes())],
            },
        );
        let (server, owner, node, reply) = self.detach();
        Deferred::Reply(Box::pin(async move {
            let mut out = String::new();
            match write.await {
                Ok(()) => {
                    reply.result_with(
                        &mut out,
                        &format!(
                            "<pubsub xmlns='{NS}'><publish node='{}'><item id='{}'/></publish></pubsub>",
                            Esc(&node),
                            Esc(&id)
                        ),
                    );
                    let inner = format!("<item id='{}'>{xml}</item>", Esc(&id));
                    notify(&server, &owner, &node, config.access, &inner);
                    if node == avatar::METADATA {
                        avatar::metadata_published(&server, &owner, &xml).await;
                    } else if node == bookmarks::NODE {
                        bookmarks::to_private(&server, &owner).await;
                    }
                }
                Err(StoreError::QuotaExceeded) => reply.error(
                    &mut out,
                    &StanzaError::new(StanzaCondition::NotAllowed)
                        .with_text("this account has as many nodes as the server allows"),
                ),
                Err(e) => out = reply.after_write(Err(e), "PEP item"),
            }
            out
        }))
    }

    /// What the awaited part of a write keeps: the server, owner, node and answer, owned, as
    /// the parsed request is gone by then.
    fn detach(self) -> (Rc<Server>, String, String, IqReply) {
        let (owner, node) = (self.owner.to_owned(), self.node.to_owned());
        (self.server.clone(), owner, node, self.reply)
    }

    fn precondition_not_met(&self, out: &mut String) {
        self.reply.error(
            out,
            &pubsub_error(StanzaCondition::Conflict, "precondition-not-met"),
        );
    }

    /// XEP-0060 §7.2: one item by id; subscribers hear of it when `notify` is true.
    fn retract(self, action: Node, out: &mut String) -> Deferred {
        let Some(config) = self.existing(out) else {
            return Deferred::None;
        };
        let Some(id) = action
            .children()
            .find(|c| c.has_tag_name((NS, "item")))
            .and_then(|i| i.attribute("id"))
        else {
            self.reply.error(
                out,
                &pubsub_error(StanzaCondition::BadRequest, "item-required"),
            );
            return Deferred::None;
        };
        let tell = matches!(action.attribute("notify"), Some("true" | "1"));
        let write = self.server.store.pep_retract(self.owner, self.node, id);
        let id = id.to_owned();
        let (server, owner, node, reply) = self.detach();
        Deferred::Reply(Box::pin(async move {
            let mut out = String::new();
            match write.await {
                Ok(()) => {
                    reply.result(&mut out);
                    if node == bookmarks::NODE {
                        bookmarks::to_private(&server, &owner).await;
                    }
                    if tell {
                        let inner = format!("<retract id='{}'/>", Esc(&id));
                        notify(&server, &owner, &node, config.access, &inner);
                    }
                }
                Err(StoreError::NotFound) => reply.fail(&mut out, StanzaCondition::ItemNotFound),
                Err(e) => out = reply.after_write(Err(e), "PEP retraction"),
            }
            out
        }))
    }

    /// XEP-0060 §8.4: the node, its items and its subscriptions go; those who could hear
    /// of it get a `<delete/>` event (§8.4.2).
    fn delete(self, out: &mut String) -> Deferred {
        let Some(config) = self.existing(out) else {
            return Deferred::None;
        };
        let subscribers = match self.server.store.pep_subscribers(self.owner, self.node) {
            Ok(subscribers) => subscribers,
            Err(e) => {
                warn!("{}: cannot read PEP subscribers: {e}", self.owner);
                self.reply.fail(out, StanzaCondition::ResourceConstraint);
                return Deferred::None;
            }
        };
        let write = self.server.store.pep_delete(self.owner, self.node);
        let (server, owner, node, reply) = self.detach();
        Deferred::Reply(Box::pin(async move {
            match write.await {
                Err(StoreError::NotFound) => {
                    let mut out = String::new();
                    reply.fail(&mut out, StanzaCondition::ItemNotFound);
                    out
                }
                Ok(()) => {
                    let payload = format!("<delete node='{}'/>", Esc(&node));
                    broadcast(
                        &server,
                        &owner,
                        &node,
                        config.access,
                        &payload,
                        &subscribers,
                    );
                    let mut out = String::new();
                    reply.result(&mut out);
                    out
                }
                result => reply.after_write(result, "PEP node deletion"),
            }
        }))
    }

    /// XEP-0060 §8.2: the configuration form with the fields hearth honours.
    fn configuration(&self, out: &mut String) {
        let Some(config) = self.existing(out) else {
            return;
        };
        let mut payload = format!(
            "<pubsub xmlns='{NS_OWNER}'><configure node='{}'><x xmlns='{NS_DATA}' type='form'>\
             <field var='FORM_TYPE' type='hidden'><value>{NS}#node_config</value></field>",
            Esc(self.node)
        );
        let _ = write!(
            payload,
            "<field var='pubsub#access_model' type='list-single'><value>{}</value>\
             <option><value>open</value></option><option><value>presence</value></option>\
             <option><value>whitelist</value></option></field>\
             <field var='pubsub#max_items' type='text-single'><value>{}</value></field>\
             </x></configure></pubsub>",
            config.access.name(),
            config.max_items
        );
        self.reply.result_with(out, &payload);
    }

    /// XEP-0060 §8.2.4: a submitted form changes the node; a bad value is `not-acceptable`.
    fn configure(self, action: Node, out: &mut String) -> Deferred {
        let Some(config) = self.existing(out) else {
            return Deferred::None;
        };
        let Some(form) = action.children().find(|c| c.has_tag_name((NS_DATA, "x"))) else {
            self.reply.fail(out, StanzaCondition::BadRequest);
            return Deferred::None;
        };
        if form.attribute("type") == Some("cancel") {
            self.reply.result(out);
            return Deferred::None;
        }
        let Some(options) = parse_options(form, self.server.config().pep.max_items) else {
            self.reply.fail(out, StanzaCondition::NotAcceptable);
            return Deferred::None;
        };
        let config = NodeConfig {
            access: options.access.unwrap_or(config.access),
            max_items: options.max_items.unwrap_or(config.max_items),
        };
        let write = self.server.store.pep_configure(
            self.owner,
            self.node,
            config.encode(),
            config.max_items,
        );
        let reply = self.reply;
        Deferred::Reply(Box::pin(async move {
            reply.after_write(write.await, "PEP node configuration")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_options_parse() {
        for config in [
            NodeConfig {
                access: Access::Open,
                max_items: 1,
            },
            NodeConfig {
                access: Access::Whitelist,
                max_items: 70_000,
            },
        ] {
            assert_eq!(NodeConfig::decode(&config.encode()), config);
        }
        let form = |fields: &str| {
            format!("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{NS}#publish-options</value></field>{fields}</x>")
        };
        let parse = |xml: &str| {
            let doc = roxmltree::Document::parse(xml).unwrap();
            parse_options(doc.root_element(), 10)
        };
        assert_eq!(
            parse(&form("<field var='pubsub#access_model'><value>open</value></field><field var='pubsub#max_items'><value>max</value></field>")),
            Some(Options { access: Some(Access::Open), max_items: Some(10) })
        );
        assert_eq!(
            parse(&form(
                "<field var='pubsub#persist_items'><value>true</value></field>"
            )),
            Some(Options::default())
        );
        assert_eq!(
            parse(&form(
                "<field var='pubsub#access_model'><value>roster</value></field>"
            )),
            None
        );
        assert_eq!(
            parse(&form(
                "<field var='pubsub#max_items'><value>11</value></field>"
            )),
            None
        );
        assert_eq!(
            parse(&form(
                "<field var='pubsub#max_items'><value>0</value></field>"
            )),
            None
        );
    }
}
