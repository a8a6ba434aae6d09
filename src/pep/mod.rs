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

use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::jid::Jid;
use crate::reply::IqReply;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, StanzaCondition, StanzaError};
use crate::store::{PepItem, Publish, StoreError};
use crate::verdict::{self, StanzaKind, Verdict};
use crate::xml::build::Element;
use crate::xml::write_element;
use log::warn;
use roxmltree::Node;
use std::rc::Rc;

pub const NS: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const NS_DATA: &str = "jabber:x:data";
const NS_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

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
    answers_remote: true,
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
    let mut out = String::new();
    Element::new("message")
        .attr("from", owner.as_str())
        .attr("to", to.as_str())
        .attr("type", "headline")
        .children(&mut out, |out| {
            Element::new("event")
                .ns(NS_EVENT)
                .children(out, |out| out.push_str(payload));
        });
    out
}

/// The `<items/>` of an event: `inner` (items or retractions, already written) of `node`.
fn items_event(node: &str, inner: &str) -> String {
    let mut out = String::new();
    Element::new("items")
        .attr("node", node)
        .children(&mut out, |out| out.push_str(inner));
    out
}

/// An `<item/>` with its stored payload, which is written as it was stored.
fn item_xml(id: &str, payload: &[u8]) -> String {
    let mut out = String::new();
    write_item(&mut out, id, payload);
    out
}

fn write_item(out: &mut String, id: &str, payload: &[u8]) {
    Element::new("item")
        .attr("id", id)
        .children(out, |out| out.push_str(&String::from_utf8_lossy(payload)));
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
    let mut elsewhere = Vec::new();
    if access != Access::Whitelist {
        let contacts = crate::audience::contacts_everywhere(server, owner, |item| item.from);
        users.extend(contacts.local);
        elsewhere = contacts.remote;
    }
    // Contacts on other servers: their capabilities are not known here, so the event goes
    // to the bare JID, a headline their server hands to every available resource (RFC
    // 6121 §8.5.2.1.1); clients not interested ignore it.
    for contact in &elsewhere {
        if verdict::allows(server, &from, contact, StanzaKind::Message) == Verdict::Allow {
            server.send_remote(contact, event(&from, contact, payload).into(), false);
        }
    }
    let router = server.router.borrow();
    let mut reached: Vec<u64> = Vec::new();
    let mut send = |to: &Rc<Session>| {
        if !reached.contains(&to.id)
            && verdict::allows(server, &from, &to.jid, StanzaKind::Message) == Verdict::Allow
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
        crate::audience::contacts(server, user, |item| item.to)
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
    let addressed = match Addressed::parse(pubsub, iq.ty) {
        Ok(addressed) => addressed,
        Err(error) => {
            reply.error(out, &error);
            return Deferred::None;
        }
    };
    if addressed.verb.owner_only() && owner != user {
        reply.fail(out, StanzaCondition::Forbidden);
        return Deferred::None;
    }
    let action = match Action::parse(&addressed, pubsub, &server.config().pep) {
        Ok(action) => action,
        Err(error) => {
            reply.error(out, &error);
            return Deferred::None;
        }
    };
    let request = Request {
        server,
        owner,
        node: addressed.node,
        reply,
    };
    match action {
        Action::Items { wanted, paging } => {
            request.items(user, &wanted, &paging, out);
            Deferred::None
        }
        Action::Publish(publication) => request.publish(publication, out),
        Action::Retract { id, notify } => request.retract(id, notify, out),
        Action::Subscribe(action) => request.subscribe(session, action, out),
        Action::Unsubscribe(action) => request.unsubscribe(session, action, out),
        Action::Delete => request.delete(out),
        Action::GetConfig => {
            request.configuration(out);
            Deferred::None
        }
        Action::Configure(options) => request.configure(options, out),
    }
}

/// What a `<pubsub/>` asks of which node: the first part of its parse, enough to decide
/// whether the asker may ask it at all.
struct Addressed<'a> {
    node: &'a str,
    verb: Verb,
    /// The action element (`<items/>`, `<publish/>`, …).
    action: Node<'a, 'a>,
}

/// The actions hearth's PEP service answers, each with the iq type that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Items,
    Publish,
    Retract,
    Subscribe,
    Unsubscribe,
    Delete,
    GetConfig,
    Configure,
}

impl Verb {
    /// XEP-0163 §4: only the account's owner publishes, retracts and manages its nodes.
    fn owner_only(self) -> bool {
        !matches!(self, Verb::Items | Verb::Subscribe | Verb::Unsubscribe)
    }
}

impl<'a> Addressed<'a> {
    /// No action element (an XEP-0059 `<set/>` beside it does not count) is `bad-request`;
    /// no `node` the pubsub `nodeid-required`; an action this service does not offer
    /// `feature-not-implemented` with `unsupported` (as XEP-0060 §7.1.3.2 answers an
    /// unsupported publish), except an owner `delete` that is no `set`, which is
    /// `forbidden`.
    fn parse(pubsub: Node<'a, 'a>, ty: IqType) -> Result<Addressed<'a>, StanzaError<'static>> {
        let action = pubsub
            .children()
            .find(|c| c.is_element() && c.tag_name().namespace() != Some(page::NS_RSM))
            .ok_or(StanzaError::new(StanzaCondition::BadRequest))?;
        let node = action
            .attribute("node")
            .filter(|n| !n.is_empty())
            .ok_or(pubsub_error(StanzaCondition::BadRequest, "nodeid-required"))?;
        let ns = pubsub.tag_name().namespace().unwrap_or_default();
        let verb = match (ns, action.tag_name().name(), ty) {
            (NS, "items", IqType::Get) => Verb::Items,
            (NS, "publish", IqType::Set) => Verb::Publish,
            (NS, "retract", IqType::Set) => Verb::Retract,
            (NS, "subscribe", IqType::Set) => Verb::Subscribe,
            (NS, "unsubscribe", IqType::Set) => Verb::Unsubscribe,
            (NS_OWNER, "delete", IqType::Set) => Verb::Delete,
            (NS_OWNER, "configure", IqType::Get) => Verb::GetConfig,
            (NS_OWNER, "configure", IqType::Set) => Verb::Configure,
            (NS_OWNER, "delete", _) => return Err(StanzaError::new(StanzaCondition::Forbidden)),
            _ => {
                return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)
                    .with_app("unsupported", NS_ERRORS))
            }
        };
        Ok(Addressed { node, verb, action })
    }
}

/// A PEP request on one node, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Action<'a> {
    /// §6.5: the items named by id (all when none is), paged.
    Items {
        wanted: Vec<&'a str>,
        paging: page::Paging,
    },
    /// §7.1 with §7.1.5 publish-options.
    Publish(Publication<'a>),
    /// §7.2: one item by id; `notify`: subscribers hear of it.
    Retract {
        id: &'a str,
        notify: bool,
    },
    /// §6.1 and §6.2, read by [`subscriptions`].
    Subscribe(Node<'a, 'a>),
    Unsubscribe(Node<'a, 'a>),
    /// §8.4.
    Delete,
    /// §8.2: the configuration form.
    GetConfig,
    /// §8.2.4: a submitted form's options; `None` when it was cancelled.
    Configure(Option<Options>),
}

/// One item to publish.
#[derive(Debug, PartialEq, Eq)]
struct Publication<'a> {
    /// The item id the publisher chose, if any.
    id: Option<&'a str>,
    /// The item's payload, serialised.
    xml: String,
    /// What `<publish-options/>` requires of the node.
    options: Options,
}

impl<'a> Action<'a> {
    /// The details of `addressed`'s action, checked against the `pep` limits; each error is
    /// the one XEP-0060 names for it.
    fn parse(
        addressed: &Addressed<'a>,
        pubsub: Node<'a, 'a>,
        pep: &crate::config::Pep,
    ) -> Result<Action<'a>, StanzaError<'static>> {
        let action = addressed.action;
        let items = || action.children().filter(|c| c.has_tag_name((NS, "item")));
        Ok(match addressed.verb {
            Verb::Items => Action::Items {
                paging: page::Paging::parse(pubsub, action)
                    .map_err(|_| StanzaError::new(StanzaCondition::BadRequest))?,
                wanted: items().filter_map(|c| c.attribute("id")).collect(),
            },
            Verb::Publish => Action::Publish(Publication::parse(pubsub, action, pep)?),
            Verb::Retract => Action::Retract {
                id: items()
                    .next()
                    .and_then(|i| i.attribute("id"))
                    .ok_or(pubsub_error(StanzaCondition::BadRequest, "item-required"))?,
                notify: matches!(action.attribute("notify"), Some("true" | "1")),
            },
            Verb::Subscribe => Action::Subscribe(action),
            Verb::Unsubscribe => Action::Unsubscribe(action),
            Verb::Delete => Action::Delete,
            Verb::GetConfig => Action::GetConfig,
            Verb::Configure => {
                let form = action
                    .children()
                    .find(|c| c.has_tag_name((NS_DATA, "x")))
                    .ok_or(StanzaError::new(StanzaCondition::BadRequest))?;
                if form.attribute("type") == Some("cancel") {
                    Action::Configure(None)
                } else {
                    let options = parse_options(form, pep.max_items)
                        .ok_or(StanzaError::new(StanzaCondition::NotAcceptable))?;
                    Action::Configure(Some(options))
                }
            }
        })
    }
}

impl<'a> Publication<'a> {
    /// XEP-0060 §7.1.3 error cases: exactly one item with exactly one payload
    /// (`item-required`, `payload-required`, `invalid-payload` otherwise), no bigger than
    /// `pep.max_item_bytes` (`payload-too-big`); publish-options hearth cannot meet are
    /// `precondition-not-met` (§7.1.5).
    fn parse(
        pubsub: Node<'a, 'a>,
        action: Node<'a, 'a>,
        pep: &crate::config::Pep,
    ) -> Result<Publication<'a>, StanzaError<'static>> {
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
            return Err(pubsub_error(StanzaCondition::BadRequest, app));
        };
        let payloads: Vec<Node> = item.children().filter(Node::is_element).collect();
        let [payload] = payloads.as_slice() else {
            let app = if payloads.is_empty() {
                "payload-required"
            } else {
                "invalid-payload"
            };
            return Err(pubsub_error(StanzaCondition::BadRequest, app));
        };
        let mut xml = String::new();
        write_element(&mut xml, *payload, "", &[]);
        if xml.len() > pep.max_item_bytes as usize {
            return Err(pubsub_error(
                StanzaCondition::NotAcceptable,
                "payload-too-big",
            ));
        }
        let form = stanza::child(pubsub, "publish-options", NS)
            .and_then(|o| o.children().find(|c| c.has_tag_name((NS_DATA, "x"))));
        let options = match form {
            None => Options::default(),
            Some(form) => parse_options(form, pep.max_items).ok_or_else(precondition_not_met)?,
        };
        Ok(Publication {
            id: item.attribute("id").filter(|id| !id.is_empty()),
            xml,
            options,
        })
    }
}

fn precondition_not_met() -> StanzaError<'static> {
    pubsub_error(StanzaCondition::Conflict, "precondition-not-met")
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
    fn items(&self, user: &str, wanted: &[&str], paging: &page::Paging, out: &mut String) {
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
        let mut payload = String::new();
        Element::new("pubsub").ns(NS).children(&mut payload, |out| {
            Element::new("items")
                .attr("node", self.node)
                .children(out, |out| {
                    for item in items.get(page.items.clone()).unwrap_or_default() {
                        write_item(out, &item.id, &item.payload);
                    }
                });
            if page.with_set {
                page.write_set(&ids, out);
            }
        });
        self.reply.result_with(out, &payload);
    }

    /// XEP-0060 §7.1 with XEP-0163 auto-create and §7.1.5 publish-options.
    fn publish(self, publication: Publication, out: &mut String) -> Deferred {
        let pep = &self.server.config().pep;
        let Publication { id, xml, options } = publication;
        let config = match self.config() {
            Ok(Some(config)) => {
                let differs = options.access.is_some_and(|a| a != config.access)
                    || options.max_items.is_some_and(|m| m != config.max_items);
                if differs {
                    self.reply.error(out, &precondition_not_met());
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
        let id = match id {
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
                    let mut payload = String::new();
                    write_published(&mut payload, &node, &id);
                    reply.result_with(&mut out, &payload);
                    notify(
                        &server,
                        &owner,
                        &node,
                        config.access,
                        &item_xml(&id, xml.as_bytes()),
                    );
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

    /// XEP-0060 §7.2: one item by id; subscribers hear of it when `tell` is true.
    fn retract(self, id: &str, tell: bool, out: &mut String) -> Deferred {
        let Some(config) = self.existing(out) else {
            return Deferred::None;
        };
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
                        let mut inner = String::new();
                        Element::new("retract").attr("id", &id).empty(&mut inner);
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
                    let mut payload = String::new();
                    Element::new("delete")
                        .attr("node", &node)
                        .empty(&mut payload);
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
        let mut payload = String::new();
        write_configuration(&mut payload, self.node, config);
        self.reply.result_with(out, &payload);
    }

    /// XEP-0060 §8.2.4: a submitted form changes the node; a cancelled one nothing.
    fn configure(self, options: Option<Options>, out: &mut String) -> Deferred {
        let Some(config) = self.existing(out) else {
            return Deferred::None;
        };
        let Some(options) = options else {
            self.reply.result(out);
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

/// The `<pubsub/>` of a publish result (§7.1.2): the node and the item's id.
fn write_published(out: &mut String, node: &str, id: &str) {
    Element::new("pubsub").ns(NS).children(out, |out| {
        Element::new("publish")
            .attr("node", node)
            .children(out, |out| Element::new("item").attr("id", id).empty(out));
    });
}

/// The owner `<pubsub/>` with `node`'s configuration form (§8.2.1).
fn write_configuration(out: &mut String, node: &str, config: NodeConfig) {
    let max_items = config.max_items.to_string();
    let value = |out: &mut String, text: &str| Element::new("value").text(out, text);
    Element::new("pubsub").ns(NS_OWNER).children(out, |out| {
        Element::new("configure")
            .attr("node", node)
            .children(out, |out| {
                Element::new("x")
                    .ns(NS_DATA)
                    .attr("type", "form")
                    .children(out, |out| {
                        Element::new("field")
                            .attr("var", "FORM_TYPE")
                            .attr("type", "hidden")
                            .children(out, |out| value(out, NS_NODE_CONFIG));
                        Element::new("field")
                            .attr("var", "pubsub#access_model")
                            .attr("type", "list-single")
                            .children(out, |out| {
                                value(out, config.access.name());
                                for access in [Access::Open, Access::Presence, Access::Whitelist] {
                                    Element::new("option")
                                        .children(out, |out| value(out, access.name()));
                                }
                            });
                        Element::new("field")
                            .attr("var", "pubsub#max_items")
                            .attr("type", "text-single")
                            .children(out, |out| value(out, &max_items));
                    });
            });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both stages of a request's parse, as `handle` runs them (for the owner).
    fn request(ns: &str, inner: &str, ty: IqType) -> Result<Action<'static>, StanzaError<'static>> {
        // Leaked so the parsed request may borrow it: a test's few bytes.
        let xml = format!("<pubsub xmlns='{ns}'>{inner}</pubsub>").leak();
        let doc = Box::leak(Box::new(roxmltree::Document::parse(xml).unwrap()));
        let pubsub = doc.root_element();
        let pep = crate::config::Pep {
            max_item_bytes: 64,
            ..crate::config::Pep::default()
        };
        let addressed = Addressed::parse(pubsub, ty)?;
        Action::parse(&addressed, pubsub, &pep)
    }

    fn pubsub(inner: &str) -> Result<Action<'static>, StanzaError<'static>> {
        request(NS, inner, IqType::Set)
    }

    fn app_error(
        condition: StanzaCondition,
        app: &'static str,
    ) -> Result<Action<'static>, StanzaError<'static>> {
        Err(pubsub_error(condition, app))
    }

    #[test]
    fn items_by_id_and_paged() {
        let Ok(Action::Items { wanted, .. }) = request(
            NS,
            "<items node='n' max_items='2'><item id='a'/><item id='b'/></items>",
            IqType::Get,
        ) else {
            panic!("an items request");
        };
        assert_eq!(wanted, ["a", "b"]);
        assert_eq!(
            request(NS, "<items node='n' max_items='lots'/>", IqType::Get),
            Err(StanzaError::new(StanzaCondition::BadRequest))
        );
    }

    #[test]
    fn a_publish_carries_its_item_and_options() {
        let options = "<publish-options><x xmlns='jabber:x:data' type='submit'>\
            <field var='pubsub#access_model'><value>open</value></field></x></publish-options>";
        let got = pubsub(&format!(
            "<publish node='n'><item id='i'><p xmlns='urn:p'>hi</p></item></publish>{options}"
        ));
        assert_eq!(
            got,
            Ok(Action::Publish(Publication {
                id: Some("i"),
                xml: "<p xmlns='urn:p'>hi</p>".into(),
                options: Options {
                    access: Some(Access::Open),
                    max_items: None
                },
            }))
        );
        let Ok(Action::Publish(publication)) =
            pubsub("<publish node='n'><item id=''><p xmlns='urn:p'/></item></publish>")
        else {
            panic!("a publish");
        };
        assert_eq!(publication.id, None, "an empty id is no id");
    }

    #[test]
    fn malformed_publishes_name_the_pubsub_error() {
        let bad = StanzaCondition::BadRequest;
        assert_eq!(
            pubsub("<publish node='n'/>"),
            app_error(bad, "item-required")
        );
        assert_eq!(
            pubsub("<publish node='n'><item><a xmlns='x'/></item><item><a xmlns='x'/></item></publish>"),
            app_error(bad, "invalid-payload")
        );
        assert_eq!(
            pubsub("<publish node='n'><item/></publish>"),
            app_error(bad, "payload-required")
        );
        assert_eq!(
            pubsub("<publish node='n'><item><a xmlns='x'/><b xmlns='x'/></item></publish>"),
            app_error(bad, "invalid-payload")
        );
        let big = "x".repeat(100);
        assert_eq!(
            pubsub(&format!(
                "<publish node='n'><item><a xmlns='x'>{big}</a></item></publish>"
            )),
            app_error(StanzaCondition::NotAcceptable, "payload-too-big")
        );
        let roster = "<publish node='n'><item><a xmlns='x'/></item></publish><publish-options>\
            <x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>roster</value></field></x>\
            </publish-options>";
        assert_eq!(
            pubsub(roster),
            app_error(StanzaCondition::Conflict, "precondition-not-met")
        );
    }

    #[test]
    fn a_retract_names_one_item() {
        assert_eq!(
            pubsub("<retract node='n' notify='1'><item id='i'/></retract>"),
            Ok(Action::Retract {
                id: "i",
                notify: true
            })
        );
        assert_eq!(
            pubsub("<retract node='n'><item id='i'/></retract>"),
            Ok(Action::Retract {
                id: "i",
                notify: false
            })
        );
        assert_eq!(
            pubsub("<retract node='n'><item/></retract>"),
            app_error(StanzaCondition::BadRequest, "item-required")
        );
    }

    #[test]
    fn owner_delete_and_configure() {
        let owner = |inner: &str, ty| request(NS_OWNER, inner, ty);
        assert_eq!(owner("<delete node='n'/>", IqType::Set), Ok(Action::Delete));
        assert_eq!(
            owner("<delete node='n'/>", IqType::Get),
            Err(StanzaError::new(StanzaCondition::Forbidden))
        );
        assert_eq!(
            owner("<configure node='n'/>", IqType::Get),
            Ok(Action::GetConfig)
        );
        let form = |ty: &str, value: &str| {
            format!(
                "<configure node='n'><x xmlns='jabber:x:data' type='{ty}'>\
                <field var='pubsub#max_items'><value>{value}</value></field></x></configure>"
            )
        };
        assert_eq!(
            owner(&form("submit", "3"), IqType::Set),
            Ok(Action::Configure(Some(Options {
                access: None,
                max_items: Some(3)
            })))
        );
        assert_eq!(
            owner(&form("cancel", "x"), IqType::Set),
            Ok(Action::Configure(None))
        );
        assert_eq!(
            owner(&form("submit", "0"), IqType::Set),
            Err(StanzaError::new(StanzaCondition::NotAcceptable))
        );
        assert_eq!(
            owner("<configure node='n'/>", IqType::Set),
            Err(StanzaError::new(StanzaCondition::BadRequest))
        );
    }

    #[test]
    fn unaddressed_or_unknown_actions_are_refused() {
        assert_eq!(
            pubsub("<set xmlns='http://jabber.org/protocol/rsm'/>"),
            Err(StanzaError::new(StanzaCondition::BadRequest))
        );
        assert_eq!(
            pubsub("<publish><item><a xmlns='x'/></item></publish>"),
            app_error(StanzaCondition::BadRequest, "nodeid-required")
        );
        assert_eq!(
            pubsub("<publish node=''/>"),
            app_error(StanzaCondition::BadRequest, "nodeid-required")
        );
        assert_eq!(
            pubsub("<purge node='n'/>"),
            app_error(StanzaCondition::FeatureNotImplemented, "unsupported")
        );
        assert_eq!(
            request(NS, "<publish node='n'/>", IqType::Get),
            app_error(StanzaCondition::FeatureNotImplemented, "unsupported")
        );
    }

    #[test]
    fn only_reads_and_subscriptions_are_open_to_others() {
        let open = [Verb::Items, Verb::Subscribe, Verb::Unsubscribe];
        for verb in [
            Verb::Items,
            Verb::Publish,
            Verb::Retract,
            Verb::Subscribe,
            Verb::Unsubscribe,
            Verb::Delete,
            Verb::GetConfig,
            Verb::Configure,
        ] {
            assert_eq!(verb.owner_only(), !open.contains(&verb), "{verb:?}");
        }
    }

    #[test]
    fn events_carry_their_items() {
        let owner = Jid::parse("a@h").unwrap();
        let to = Jid::parse("b@h/r").unwrap();
        let inner = item_xml("i&1", b"<p xmlns='urn:p'>x</p>");
        let xml = event(&owner, &to, &items_event("n'1", &inner));
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let message = doc.root_element();
        assert_eq!(
            ["from", "to", "type"].map(|a| message.attribute(a)),
            [Some("a@h"), Some("b@h/r"), Some("headline")]
        );
        let items = stanza::child(message, "event", NS_EVENT)
            .and_then(|e| stanza::child(e, "items", NS_EVENT))
            .expect("items");
        assert_eq!(items.attribute("node"), Some("n'1"));
        let item = stanza::child(items, "item", NS_EVENT).expect("item");
        assert_eq!(item.attribute("id"), Some("i&1"));
        assert_eq!(stanza::child_text(item, "p", "urn:p"), Some("x"));
    }

    #[test]
    fn the_publish_result_names_node_and_item() {
        let mut out = String::new();
        write_published(&mut out, "n<", "i'");
        let doc = roxmltree::Document::parse(&out).unwrap();
        let publish = stanza::child(doc.root_element(), "publish", NS).expect("publish");
        assert_eq!(publish.attribute("node"), Some("n<"));
        let item = stanza::child(publish, "item", NS).expect("item");
        assert_eq!(item.attribute("id"), Some("i'"));
    }

    #[test]
    fn the_configuration_form_reads_back_as_options() {
        let mut out = String::new();
        let config = NodeConfig {
            access: Access::Whitelist,
            max_items: 7,
        };
        write_configuration(&mut out, "n", config);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let configure =
            stanza::child(doc.root_element(), "configure", NS_OWNER).expect("configure");
        assert_eq!(configure.attribute("node"), Some("n"));
        let form = stanza::child(configure, "x", NS_DATA).expect("form");
        assert_eq!(form.attribute("type"), Some("form"));
        assert_eq!(
            parse_options(form, 10),
            Some(Options {
                access: Some(Access::Whitelist),
                max_items: Some(7)
            })
        );
    }

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
