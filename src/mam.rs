//! Message Archive Management (XEP-0313, `urn:xmpp:mam:2`) with unique stanza ids (XEP-0359):
//! which messages go into whose archive, the ids that name them, queries with XEP-0059
//! paging, per-user preferences, and the periodic expiry of old messages. Rooms archive
//! through [`archive_groupchat`] and answer queries through [`query`]. It never makes a
//! message's delivery wait for the disk, and never answers a query from an archive the
//! asker may not read.
//!
//! Archive writes are fire-and-forget: a routed message joins the pending [`ArchiveBatch`],
//! which goes to the store's group-commit writer as ONE op once the event loop has run the
//! other ready tasks (see [`background`]), and a detached task only logs a failure. Per
//! message that leaves a copy of its bytes into the batch and no allocation, future, channel
//! message or cross-thread wake-up. Every other archive write (removal, clearing) and every
//! query first hands the pending batch to the writer, so writes still apply in routing
//! order and a client always finds what it was just sent. A lost archive write costs a
//! history entry, never the message itself, which is delivered or stored offline as before.

use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::jid::Jid;
use crate::offline::{NS_DELAY, NS_HINTS};
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, Kind, Stanza, StanzaCondition, StanzaError};
use crate::stanza_id::{add_stanza_id, decode_id, encode_id, NS_SID};
use crate::store::{ArchiveBatch, ArchivePage, ArchiveQuery, PageAt, Store, StoreError};
use crate::xml::build::Element;
use crate::xml::EscAttr;
use log::{info, warn};
use roxmltree::Node;
use smol::channel::{Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

pub const NS: &str = "urn:xmpp:mam:2";
/// `before-id`/`after-id`/`ids`, flipped pages and archive metadata (XEP-0313 §7).
pub const NS_EXTENDED: &str = "urn:xmpp:mam:2#extended";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_DATA: &str = "jabber:x:data";
/// Largest page a query gets, whatever `<max/>` asks (XEP-0313 §4.1.3 lets the server cap).
pub const MAX_PAGE: usize = 100;
/// Most ids one `ids` filter may name: each is a key lookup on the event loop.
const MAX_IDS: usize = 1000;
/// Deletions per expiry write: one batch never holds the writer (or the disk) for long.
const EXPIRY_BATCH: usize = 500;
const EXPIRY_EVERY: Duration = Duration::from_secs(3600);

pub const FEATURE: Feature = Feature {
    name: "mam",
    state: Some(crate::feature::init::<Mam>),
    enabled: |config| config.mam.enabled,
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    account_disco: &[NS, NS_EXTENDED, NS_SID],
    // Archive rows routed so far are queued before the deletion, which then takes them.
    account_deleting: Some(|server, _| flush(server)),
    shutdown: Some(flush),
    prepare_message: Some(delivered),
    offline_refused: Some(|server, user, xml| {
        if let Some(id) = archived_id(server, user, xml) {
            refused(server, user, id);
        }
    }),
    background: Some(|server| Box::pin(background(server))),
    ..Feature::NONE
};

/// An archive write in flight, awaited only to log a failure.
type Write = std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>>>>;

/// Shared archiving state: the last id handed out, the messages not yet handed to the
/// writer, and the writes [`background`] watches.
pub struct Mam {
    last_id: Cell<u64>,
    /// Users with stored preferences; the rest use the default without a
    /// store read on every message (the hot path).
    with_prefs: RefCell<std::collections::HashSet<Box<str>>>,
    /// Archived messages waiting for [`background`] (or the next other archive write).
    pending: RefCell<ArchiveBatch>,
    /// Wakes [`background`] when `pending` stops being empty.
    kick: (Sender<()>, Receiver<()>),
    writes: (Sender<Write>, Receiver<Write>),
}

impl Mam {
    pub fn load(store: &Store) -> Mam {
        let last = store.mam_last_id().unwrap_or_else(|e| {
            warn!("cannot read the last archive id: {e}");
            0
        });
        let with_prefs = store
            .mam_prefs_users()
            .unwrap_or_else(|e| {
                warn!("cannot list archiving preferences: {e}");
                Vec::new()
            })
            .into_iter()
            .map(String::into_boxed_str)
            .collect();
        Mam {
            last_id: Cell::new(last),
            with_prefs: RefCell::new(with_prefs),
            pending: RefCell::new(ArchiveBatch::default()),
            kick: smol::channel::bounded(1),
            writes: smol::channel::unbounded(),
        }
    }

    /// A fresh id: the current time in microseconds, or one more than the last id when the
    /// clock did not move (or went back). Ids are therefore monotonic and never below the
    /// archiving time, which lets a `start` filter skip older keys.
    fn next_id(&self) -> u64 {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let id = micros.max(self.last_id.get() + 1);
        self.last_id.set(id);
        id
    }
}

/// Adds messages to the pending batch (`add` puts them there) and makes sure
/// [`background`] hands it to the writer soon.
fn append(server: &Server, add: impl FnOnce(&mut ArchiveBatch)) {
    let mam = server.state::<Mam>();
    let mut pending = mam.pending.borrow_mut();
    if pending.is_empty() {
        // Full means a kick is already waiting: nothing to add.
        let _ = server.state::<Mam>().kick.0.try_send(());
    }
    add(&mut pending);
}

/// Queues the archive write `write` makes on the writer, after the pending batch so that
/// writes apply in routing order; [`background`] logs if it fails.
fn submit<W: Future<Output = Result<(), StoreError>> + 'static>(
    server: &Server,
    write: impl FnOnce(&Store) -> W,
) {
    flush(server);
    let write = write(&server.store);
    // Unbounded and never closed while the server lives: the send cannot fail.
    let _ = server.state::<Mam>().writes.0.try_send(Box::pin(write));
}

/// Hands the pending batch, if any, to the writer. The server calls it at shutdown, before
/// the store closes.
pub fn flush(server: &Server) {
    let batch = std::mem::take(&mut *server.state::<Mam>().pending.borrow_mut());
    if !batch.is_empty() {
        let write = server.store.mam_append(batch);
        let _ = server.state::<Mam>().writes.0.try_send(Box::pin(write));
    }
}

/// The archive's event-loop task: hands pending batches to the writer, logs failed archive
/// writes and runs the expiry.
pub async fn background(server: Rc<Server>) {
    let hand_over = async {
        while server.state::<Mam>().kick.1.recv().await.is_ok() {
            // Being woken already put this task behind every task that was ready; yielding
            // once more lets the sessions woken meanwhile add theirs to the same batch.
            smol::future::yield_now().await;
            flush(&server);
        }
    };
    let log_failures = async {
        while let Ok(write) = server.state::<Mam>().writes.1.recv().await {
            if let Err(e) = write.await {
                warn!("archive write failed: {e}");
            }
        }
    };
    smol::future::zip(
        smol::future::zip(hand_over, log_failures),
        expire_periodically(&server),
    )
    .await;
}

/// XEP-0313 §5.1.1 / XEP-0334: chat and normal messages with a body, unless hinted away.
fn archivable(stanza: &Stanza) -> bool {
    crate::offline::is_storable(stanza) && stanza.child("no-permanent-store", NS_HINTS).is_none()
}

/// The message to a local user as that user gets it: `from` stamped, carbons' `<private/>`
/// and any stanza-id claiming to be the recipient's removed (XEP-0359 §3), and, when it is
/// archived, the recipient's archive id added. Archives it for the sender and recipient
/// whose preferences want it, and returns the sender's archive id too, for the sender's
/// carbon copies (§3.5).
pub fn delivered(
    server: &Server,
    sender: &Session,
    stanza: &Stanza,
    to: &Jid,
    recipient: &str,
) -> (String, Option<u64>) {
    let by = to.bare();
    let mut xml = crate::carbons::delivered(stanza, &sender.jid, |child| {
        child.has_tag_name((NS_SID, "stanza-id")) && child.attribute("by") == Some(by.as_str())
    });
    if !server.config().mam.enabled || !archivable(stanza) {
        return (xml, None);
    }
    // Another server's user has no archive here, whatever its localpart.
    let sender_user = if sender.remote { "" } else { sender.jid.user() };
    let for_sender = !sender.remote && wants(server, sender_user, to);
    // An empty recipient is another server's user: nothing to archive on their side here.
    let for_recipient =
        !recipient.is_empty() && recipient != sender_user && wants(server, recipient, &sender.jid);
    if !for_sender && !for_recipient {
        return (xml, None);
    }
    let stamp = crate::time::unix_now();
    // One id in both archives: the store then keeps the message once for both.
    let id = server.state::<Mam>().next_id();
    append(server, |batch| {
        let held = batch.hold(xml.as_bytes());
        if for_sender {
            batch.add(sender_user, id, stamp, to.as_str(), held);
        }
        if for_recipient {
            batch.add(recipient, id, stamp, sender.jid.as_str(), held);
        }
    });
    // A message to oneself is archived once, in the sender's archive, which is the
    // recipient's.
    if for_recipient || (recipient == sender_user && for_sender) {
        add_stanza_id(&mut xml, by.as_str(), id);
    }
    (xml, for_sender.then_some(id))
}

/// The recipient's archive id in a message as [`delivered`] wrote it for `recipient`.
pub fn archived_id(server: &Server, recipient: &str, xml: &str) -> Option<u64> {
    stanza_id_by(&format!("{recipient}@{}", server.config().domain), xml)
}

/// The id of the last stanza-id of archive `by` in `message`, found by the exact text
/// [`add_stanza_id`] writes there.
fn stanza_id_by(by: &str, message: &str) -> Option<u64> {
    let marker = format!("<stanza-id xmlns='{NS_SID}' by='{}' id='", EscAttr(by));
    let at = message.rfind(&marker)?;
    let rest = message.get(at + marker.len()..)?;
    decode_id(rest.split('\'').next()?)
}

/// A message [`delivered`] archived was then refused (the recipient's offline queue is
/// full): it leaves the recipient's archive, which must not show what never arrived. The
/// sender's archive keeps it, as the sender did send it.
pub fn refused(server: &Server, recipient: &str, id: u64) {
    submit(server, |store| store.mam_remove(recipient, id));
}

/// Archives a room's groupchat message (`xml` as occupants get it, without stanza-id) and
/// returns the id its stanza-id must carry.
pub fn archive_groupchat(server: &Server, room: &Jid, nick: &str, xml: String) -> String {
    let id = server.state::<Mam>().next_id();
    let stamp = crate::time::unix_now();
    let with = format!("{}/{nick}", room.as_str());
    append(server, |batch| {
        let held = batch.hold(xml.as_bytes());
        batch.add(room.as_str(), id, stamp, &with, held);
    });
    encode_id(id)
}

/// A room is gone (destroyed, or a temporary room emptied): its archive goes with it, so a
/// new room of the same name never shows the old one's history.
pub fn room_gone(server: &Server, room: &Jid) {
    submit(server, |store| store.mam_clear(room.as_str()));
}

// ----- preferences ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DefaultMode {
    Always,
    Never,
    Roster,
}

impl DefaultMode {
    fn name(self) -> &'static str {
        match self {
            DefaultMode::Always => "always",
            DefaultMode::Never => "never",
            DefaultMode::Roster => "roster",
        }
    }

    fn parse(text: &str) -> Option<DefaultMode> {
        match text {
            "always" => Some(DefaultMode::Always),
            "never" => Some(DefaultMode::Never),
            "roster" => Some(DefaultMode::Roster),
            _ => None,
        }
    }
}

/// A user's archiving preferences (§6): stored as lines, the default first, then `+jid`
/// for always and `-jid` for never.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Prefs {
    default: DefaultMode,
    always: Vec<String>,
    never: Vec<String>,
}

impl Prefs {
    fn load(server: &Server, user: &str) -> Prefs {
        let stored = if !server.state::<Mam>().with_prefs.borrow().contains(user) {
            None
        } else {
            server.store.mam_prefs(user).unwrap_or_else(|e| {
                warn!("{user}: cannot read archiving preferences: {e}");
                None
            })
        };
        stored
            .and_then(|bytes| Prefs::decode(&bytes))
            .unwrap_or(Prefs {
                default: DefaultMode::Always,
                always: Vec::new(),
                never: Vec::new(),
            })
    }

    fn decode(bytes: &[u8]) -> Option<Prefs> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        let mut prefs = Prefs {
            default: DefaultMode::parse(lines.next()?)?,
            always: Vec::new(),
            never: Vec::new(),
        };
        for line in lines {
            if let Some(jid) = line.strip_prefix('+') {
                prefs.always.push(jid.to_owned());
            } else if let Some(jid) = line.strip_prefix('-') {
                prefs.never.push(jid.to_owned());
            }
        }
        Some(prefs)
    }

    fn encode(&self) -> Vec<u8> {
        let mut text = self.default.name().to_owned();
        for jid in &self.always {
            let _ = write!(text, "\n+{jid}");
        }
        for jid in &self.never {
            let _ = write!(text, "\n-{jid}");
        }
        text.into_bytes()
    }

    /// A listed bare JID covers every resource; a full JID only itself.
    fn lists(list: &[String], peer: &Jid) -> bool {
        let bare = peer.bare();
        list.iter()
            .any(|jid| jid == peer.as_str() || jid == bare.as_str())
    }

    fn write(&self, out: &mut String) {
        Element::new("prefs")
            .ns(NS)
            .attr("default", self.default.name())
            .children(out, |out| {
                for (name, list) in [("always", &self.always), ("never", &self.never)] {
                    Element::new(name).children(out, |out| {
                        for jid in list {
                            Element::new("jid").text(out, jid);
                        }
                    });
                }
            });
    }

    /// Reads a `<prefs/>` set; `None` when it is malformed.
    fn parse(prefs: Node) -> Option<Prefs> {
        let list = |name| -> Option<Vec<String>> {
            let Some(list) = stanza::child(prefs, name, NS) else {
                return Some(Vec::new());
            };
            list.children()
                .filter(|c| c.has_tag_name((NS, "jid")))
                .map(|jid| {
                    Jid::parse(jid.text().unwrap_or_default().trim())
                        .ok()
                        .map(|j| j.as_str().to_owned())
                })
                .collect()
        };
        Some(Prefs {
            default: DefaultMode::parse(prefs.attribute("default")?)?,
            always: list("always")?,
            never: list("never")?,
        })
    }
}

/// Whether `user` archives a message exchanged with `peer` (§6).
fn wants(server: &Server, user: &str, peer: &Jid) -> bool {
    if server.is_retired(user) {
        return false;
    }
    let prefs = Prefs::load(server, user);
    if Prefs::lists(&prefs.never, peer) {
        return false;
    }
    if Prefs::lists(&prefs.always, peer) {
        return true;
    }
    match prefs.default {
        DefaultMode::Always => true,
        DefaultMode::Never => false,
        DefaultMode::Roster => server
            .store
            .roster_item(user, peer.bare().as_str())
            .is_ok_and(|item| item.is_some()),
    }
}

// ----- iq ------------------------------------------------------------------------------------

/// A `urn:xmpp:mam:2` request to a user's own archive, tied to the iq type that may carry it.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Archive(ArchiveRequest),
    /// `get` of `<prefs/>` (§6.1).
    GetPrefs,
    /// `set` of `<prefs/>` (§6.1); malformed preferences are `bad-request`.
    SetPrefs(Prefs),
}

impl Request {
    fn parse(payload: Node, ty: IqType) -> Result<Request, StanzaCondition> {
        match (payload.tag_name().name(), ty) {
            ("prefs", IqType::Get) => Ok(Request::GetPrefs),
            ("prefs", _) => Prefs::parse(payload)
                .map(Request::SetPrefs)
                .ok_or(StanzaCondition::BadRequest),
            _ => ArchiveRequest::parse(payload, ty).map(Request::Archive),
        }
    }
}

/// A request about an archive, a user's or a room's (§3.3.2).
#[derive(Debug, PartialEq, Eq)]
enum ArchiveRequest {
    /// `get` of `<query/>`: the search form (§4.1.5).
    Form,
    /// `set` of `<query/>`: a search (§4.2).
    Query(Query),
    /// `get` of `<metadata/>` (§5); any other type is `bad-request`.
    Metadata,
}

impl ArchiveRequest {
    /// Anything but `<query/>` and `<metadata/>` is `feature-not-implemented`.
    fn parse(payload: Node, ty: IqType) -> Result<ArchiveRequest, StanzaCondition> {
        match (payload.tag_name().name(), ty) {
            ("query", IqType::Get) => Ok(ArchiveRequest::Form),
            ("query", _) => Query::parse(payload).map(ArchiveRequest::Query),
            ("metadata", IqType::Get) => Ok(ArchiveRequest::Metadata),
            ("metadata", _) => Err(StanzaCondition::BadRequest),
            _ => Err(StanzaCondition::FeatureNotImplemented),
        }
    }
}

/// A search: its filters and page, how the page is ordered and the id its results carry.
#[derive(Debug, PartialEq, Eq)]
struct Query {
    filter: ArchiveQuery,
    /// `<flip-page/>`: the page's messages go out newest first; the page is the same.
    flip: bool,
    query_id: Option<String>,
}

impl Query {
    /// The filters (§4.1) and paging (XEP-0059) of a `<query/>`. Malformed values are
    /// `bad-request`; fields and paging this server does not implement
    /// `feature-not-implemented`; an id that no archive could hold `item-not-found`.
    fn parse(query: Node) -> Result<Query, StanzaCondition> {
        let mut filter = ArchiveQuery::all(PageAt::First, MAX_PAGE);
        if let Some(form) = stanza::child(query, "x", NS_DATA) {
            for field in form
                .children()
                .filter(|c| c.has_tag_name((NS_DATA, "field")))
            {
                parse_field(field, &mut filter)?;
            }
        }
        if let Some(set) = stanza::child(query, "set", NS_RSM) {
            for child in set.children().filter(Node::is_element) {
                let text = child.text().unwrap_or_default().trim();
                let id = || decode_id(text).ok_or(StanzaCondition::ItemNotFound);
                match child.tag_name().name() {
                    "max" => {
                        let max: usize = text.parse().map_err(|_| StanzaCondition::BadRequest)?;
                        filter.max = max.min(MAX_PAGE);
                    }
                    "after" => filter.page = PageAt::After(id()?),
                    "before" if text.is_empty() => filter.page = PageAt::Last,
                    "before" => filter.page = PageAt::Before(id()?),
                    _ => return Err(StanzaCondition::FeatureNotImplemented),
                }
            }
        }
        Ok(Query {
            filter,
            flip: stanza::child(query, "flip-page", NS).is_some(),
            query_id: query.attribute("queryid").map(str::to_owned),
        })
    }
}

/// One field of the search form (§4.1.1) into `filter`.
fn parse_field(field: Node, filter: &mut ArchiveQuery) -> Result<(), StanzaCondition> {
    let value = stanza::child_text(field, "value", NS_DATA)
        .unwrap_or_default()
        .trim();
    let time = || crate::time::parse_datetime(value).ok_or(StanzaCondition::BadRequest);
    // §4.1.3: an id no archive could hold is missing from this one too.
    let id = |text: &str| decode_id(text.trim()).ok_or(StanzaCondition::ItemNotFound);
    match field.attribute("var").unwrap_or_default() {
        "FORM_TYPE" if value == NS => {}
        "FORM_TYPE" => return Err(StanzaCondition::BadRequest),
        "with" => {
            let jid = Jid::parse(value).map_err(|_| StanzaCondition::BadRequest)?;
            filter.with = Some(jid.as_str().to_owned());
        }
        "start" => filter.start = Some(time()?),
        "end" => filter.end = Some(time()?),
        "after-id" => filter.after_id = Some(id(value)?),
        "before-id" => filter.before_id = Some(id(value)?),
        "ids" => {
            let values = || {
                field
                    .children()
                    .filter(|c| c.has_tag_name((NS_DATA, "value")))
            };
            if values().count() > MAX_IDS {
                return Err(StanzaCondition::PolicyViolation);
            }
            let mut ids = values()
                .map(|v| id(v.text().unwrap_or_default()))
                .collect::<Result<Vec<u64>, _>>()?;
            ids.sort_unstable();
            ids.dedup();
            filter.ids = Some(ids);
        }
        _ => return Err(StanzaCondition::FeatureNotImplemented),
    }
    Ok(())
}

/// `urn:xmpp:mam:2` iqs to the server or the user's own bare JID.
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let (server, session, stanza, ty, user) = (iq.server, iq.session, iq.stanza, iq.ty, iq.user());
    let from = stanza.to.as_ref().map_or("", Jid::as_str);
    let to = session.jid.as_str();
    let fail = |out: &mut String, condition| {
        let error = StanzaError::new(condition);
        stanza::write_error_reply(out, Kind::Iq, stanza.id, from, to, &error);
        Deferred::None
    };
    if !server.config().mam.enabled {
        return fail(out, StanzaCondition::ServiceUnavailable);
    }
    if !iq.is_own() {
        // §3.4: only the owner reads or configures a user's archive.
        return fail(out, StanzaCondition::Forbidden);
    }
    let request = match Request::parse(iq.payload, ty) {
        Ok(request) => request,
        Err(condition) => return fail(out, condition),
    };
    match request {
        Request::Archive(request) => {
            let archive_jid = session.jid.bare();
            let at = Archive {
                name: user,
                jid: archive_jid.as_str(),
            };
            answer(server, stanza, to, request, at, out)
        }
        Request::GetPrefs => {
            let prefs = Prefs::load(server, user);
            stanza::write_iq_result_with(out, stanza.id, from, to, |out| prefs.write(out));
            Deferred::None
        }
        Request::SetPrefs(prefs) => {
            server
                .state::<Mam>()
                .with_prefs
                .borrow_mut()
                .insert(user.into());
            let write = server.store.mam_set_prefs(user, prefs.encode());
            let (id, from, to) = (stanza.id.map(str::to_owned), from.to_owned(), to.to_owned());
            Deferred::Reply(Box::pin(async move {
                let mut out = String::new();
                match write.await {
                    Ok(()) => {
                        stanza::write_iq_result_with(&mut out, id.as_deref(), &from, &to, |out| {
                            prefs.write(out);
                        });
                    }
                    Err(e) => {
                        warn!("{to}: archiving preferences not stored: {e}");
                        stanza::write_error_reply(
                            &mut out,
                            Kind::Iq,
                            id.as_deref(),
                            &from,
                            &to,
                            &StanzaError::new(StanzaCondition::ResourceConstraint),
                        );
                    }
                }
                out
            }))
        }
    }
}

/// An archive a request is answered from: its store key and its JID.
#[derive(Clone, Copy)]
struct Archive<'a> {
    name: &'a str,
    jid: &'a str,
}

/// A query of `archive` (whose JID is `archive_jid`), already allowed for this session:
/// the form on `get` (§4.1.5), results and `<fin/>` on `set` (§4.2), or the archive's
/// `<metadata/>` (§5).
pub fn query(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    ty: IqType,
    archive: &str,
    archive_jid: &str,
    out: &mut String,
) -> Deferred {
    let Some(payload) = stanza.payload() else {
        return Deferred::None;
    };
    let to = session.jid.as_str();
    match ArchiveRequest::parse(payload, ty) {
        Ok(request) => {
            let at = Archive {
                name: archive,
                jid: archive_jid,
            };
            answer(server, stanza, to, request, at, out)
        }
        Err(condition) => {
            let from = stanza.to.as_ref().map_or("", Jid::as_str);
            let error = StanzaError::new(condition);
            stanza::write_error_reply(out, Kind::Iq, stanza.id, from, to, &error);
            Deferred::None
        }
    }
}

/// Answers an archive request from `archive` to the session `to`.
fn answer(
    server: &Server,
    stanza: &Stanza,
    to: &str,
    request: ArchiveRequest,
    archive: Archive,
    out: &mut String,
) -> Deferred {
    let from = stanza.to.as_ref().map_or("", Jid::as_str);
    match request {
        ArchiveRequest::Form => {
            stanza::write_iq_result_with(out, stanza.id, from, to, write_form);
            Deferred::None
        }
        ArchiveRequest::Metadata => {
            let (store, archive) = (server.store.clone(), archive.name.to_owned());
            let flushed = store.flush();
            let (id, from, to) = (stanza.id.map(str::to_owned), from.to_owned(), to.to_owned());
            Deferred::Reply(Box::pin(async move {
                if let Err(e) = flushed.await {
                    warn!("archive flush before a query failed: {e}");
                }
                metadata(&store, &archive, id.as_deref(), &from, &to)
            }))
        }
        ArchiveRequest::Query(query) => {
            flush(server);
            let store = server.store.clone();
            let flushed = store.flush();
            let reply = Reply {
                store,
                archive: archive.name.to_owned(),
                archive_jid: archive.jid.to_owned(),
                query,
                iq_id: stanza.id.map(str::to_owned),
                from: from.to_owned(),
                to: to.to_owned(),
            };
            Deferred::Reply(Box::pin(reply.after(flushed)))
        }
    }
}

/// The search form (§4.1.5): the fields [`parse_field`] reads.
fn write_form(out: &mut String) {
    Element::new("query").ns(NS).children(out, |out| {
        Element::new("x")
            .ns(NS_DATA)
            .attr("type", "form")
            .children(out, |out| {
                Element::new("field")
                    .attr("var", "FORM_TYPE")
                    .attr("type", "hidden")
                    .children(out, |out| Element::new("value").text(out, NS));
                for (var, ty) in [
                    ("with", "jid-single"),
                    ("start", "text-single"),
                    ("end", "text-single"),
                    ("before-id", "text-single"),
                    ("after-id", "text-single"),
                ] {
                    Element::new("field")
                        .attr("var", var)
                        .attr("type", ty)
                        .empty(out);
                }
                Element::new("field")
                    .attr("var", "ids")
                    .attr("type", "list-multi")
                    .children(out, |out| {
                        Element::new("validate")
                            .ns("http://jabber.org/protocol/xdata-validate")
                            .attr("datatype", "xs:string")
                            .children(out, |out| Element::new("open").empty(out));
                    });
            });
    });
}

/// Everything a query's answer needs once the writes before it are durable.
struct Reply {
    store: Store,
    archive: String,
    archive_jid: String,
    query: Query,
    iq_id: Option<String>,
    from: String,
    to: String,
}

impl Reply {
    async fn after(self, flushed: impl Future<Output = Result<(), StoreError>>) -> String {
        if let Err(e) = flushed.await {
            warn!("archive flush before a query failed: {e}");
        }
        let mut out = String::new();
        let page = match self.store.mam_query(&self.archive, &self.query.filter) {
            Ok(page) => page,
            Err(e) => {
                let condition = match e {
                    StoreError::NotFound => StanzaCondition::ItemNotFound,
                    e => {
                        warn!("{}: archive query failed: {e}", self.archive);
                        StanzaCondition::ResourceConstraint
                    }
                };
                stanza::write_error_reply(
                    &mut out,
                    Kind::Iq,
                    self.iq_id.as_deref(),
                    &self.from,
                    &self.to,
                    &StanzaError::new(condition),
                );
                return out;
            }
        };
        let mut items: Vec<_> = page.items.iter().collect();
        if self.query.flip {
            items.reverse();
        }
        let addressing = (self.archive_jid.as_str(), self.to.as_str());
        for (id, stamp, xml) in items {
            let xml = String::from_utf8_lossy(xml);
            let query_id = self.query.query_id.as_deref();
            write_result(&mut out, addressing, query_id, (*id, *stamp, &xml));
        }
        stanza::write_iq_result_with(
            &mut out,
            self.iq_id.as_deref(),
            &self.from,
            &self.to,
            |out| write_fin(out, &page),
        );
        out
    }
}

/// One archived message (`id`, `stamp`, the stored `<message>`) as a `<result/>` (§4.2)
/// from `archive_jid` to `to`: the stored message is forwarded as it was delivered.
fn write_result(
    out: &mut String,
    (archive_jid, to): (&str, &str),
    query_id: Option<&str>,
    (id, stamp, xml): (u64, u64, &str),
) {
    let Some(rest) = xml.strip_prefix("<message") else {
        return;
    };
    let (id, stamp) = (encode_id(id), crate::time::format_datetime(stamp));
    Element::new("message")
        .attr("from", archive_jid)
        .attr("to", to)
        .children(out, |out| {
            Element::new("result")
                .ns(NS)
                .attr_opt("queryid", query_id)
                .attr("id", &id)
                .children(out, |out| {
                    Element::new("forwarded")
                        .ns(NS_FORWARD)
                        .children(out, |out| {
                            Element::new("delay")
                                .ns(NS_DELAY)
                                .attr("stamp", &stamp)
                                .empty(out);
                            out.push_str("<message xmlns='jabber:client'");
                            out.push_str(rest);
                        });
                });
        });
}

/// The `<fin/>` that ends a query's results (§4.2) with its XEP-0059 `<set/>`.
fn write_fin(out: &mut String, page: &ArchivePage) {
    let complete = if page.complete { "true" } else { "false" };
    Element::new("fin")
        .ns(NS)
        .attr("complete", complete)
        .children(out, |out| {
            Element::new("set").ns(NS_RSM).children(out, |out| {
                if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
                    let index = page.first_index.to_string();
                    Element::new("first")
                        .attr("index", &index)
                        .text(out, &encode_id(first.0));
                    Element::new("last").text(out, &encode_id(last.0));
                }
                Element::new("count").text(out, &page.count.to_string());
            });
        });
}

/// The `<metadata/>` answer (§5): the archive's first and last message, nothing when empty.
fn metadata(store: &Store, archive: &str, id: Option<&str>, from: &str, to: &str) -> String {
    let mut out = String::new();
    match store.mam_bounds(archive) {
        Ok(bounds) => {
            stanza::write_iq_result_with(&mut out, id, from, to, |out| {
                write_metadata(out, bounds);
            });
        }
        Err(e) => {
            warn!("{archive}: archive metadata failed: {e}");
            let error = StanzaError::new(StanzaCondition::ResourceConstraint);
            stanza::write_error_reply(&mut out, Kind::Iq, id, from, to, &error);
        }
    }
    out
}

/// `<metadata/>` with the (id, stamp) of the archive's first and last message, if any.
fn write_metadata(out: &mut String, bounds: Option<[(u64, u64); 2]>) {
    Element::new("metadata").ns(NS).children(out, |out| {
        let Some([start, end]) = bounds else { return };
        for (name, (id, stamp)) in [("start", start), ("end", end)] {
            let (id, stamp) = (encode_id(id), crate::time::format_datetime(stamp));
            Element::new(name)
                .attr("id", &id)
                .attr("timestamp", &stamp)
                .empty(out);
        }
    });
}

// ----- retention -----------------------------------------------------------------------------

/// Deletes expired messages at start and every hour, a bounded batch per write so the writer
/// and the event loop keep serving in between. The settings are read each round, so a
/// reload's `retention_days` (0 keeps everything) applies from the next hour.
async fn expire_periodically(server: &Server) {
    loop {
        let days = u64::from(server.config().mam.retention_days);
        if !server.config().mam.enabled || days == 0 {
            smol::Timer::after(EXPIRY_EVERY).await;
            continue;
        }
        let cutoff = crate::time::unix_now().saturating_sub(days * 86_400);
        let mut batches = 0u64;
        loop {
            match server.store.mam_expire(cutoff, EXPIRY_BATCH).await {
                Ok(true) => batches += 1,
                Ok(false) => break,
                Err(e) => {
                    warn!("archive expiry failed: {e}");
                    break;
                }
            }
        }
        if batches > 0 {
            info!(
                "archive expiry: about {} old messages deleted",
                batches * EXPIRY_BATCH as u64
            );
        }
        smol::Timer::after(EXPIRY_EVERY).await;
    }
}

impl crate::feature::State for Mam {
    fn new(_config: &crate::config::Config, store: &crate::store::Store) -> Self {
        Mam::load(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<ArchiveQuery, StanzaCondition> {
        let doc = roxmltree::Document::parse(xml).unwrap();
        Query::parse(doc.root_element()).map(|q| q.filter)
    }

    fn request(xml: &str, ty: IqType) -> Result<Request, StanzaCondition> {
        let doc = roxmltree::Document::parse(xml).unwrap();
        Request::parse(doc.root_element(), ty)
    }

    fn archive_request(xml: &str, ty: IqType) -> Result<ArchiveRequest, StanzaCondition> {
        let doc = roxmltree::Document::parse(xml).unwrap();
        ArchiveRequest::parse(doc.root_element(), ty)
    }

    fn no_filter() -> ArchiveQuery {
        ArchiveQuery::all(PageAt::First, MAX_PAGE)
    }

    #[test]
    fn a_query_get_asks_for_the_form() {
        let q = format!("<query xmlns='{NS}' queryid='q'/>");
        assert_eq!(
            request(&q, IqType::Get),
            Ok(Request::Archive(ArchiveRequest::Form))
        );
    }

    #[test]
    fn a_query_set_is_a_search_with_its_queryid_and_flip() {
        let q = format!("<query xmlns='{NS}' queryid='q1'><flip-page/></query>");
        let expected = Query {
            filter: no_filter(),
            flip: true,
            query_id: Some("q1".into()),
        };
        assert_eq!(
            request(&q, IqType::Set),
            Ok(Request::Archive(ArchiveRequest::Query(expected)))
        );
        let plain = format!("<query xmlns='{NS}'/>");
        let Ok(Request::Archive(ArchiveRequest::Query(q))) = request(&plain, IqType::Set) else {
            panic!("a bare query is a search");
        };
        assert_eq!((q.flip, q.query_id, q.filter), (false, None, no_filter()));
    }

    #[test]
    fn rsm_after_before_and_max_page_the_search() {
        let set = |inner: &str| {
            parse(&format!(
                "<query xmlns='{NS}'><set xmlns='{NS_RSM}'>{inner}</set></query>"
            ))
        };
        let page = |inner| set(inner).map(|q| (q.page, q.max));
        assert_eq!(page("<max>5</max>"), Ok((PageAt::First, 5)));
        assert_eq!(page("<after>a</after>"), Ok((PageAt::After(10), MAX_PAGE)));
        assert_eq!(
            page("<before>b</before>"),
            Ok((PageAt::Before(11), MAX_PAGE))
        );
        assert_eq!(page("<before/>"), Ok((PageAt::Last, MAX_PAGE)));
        assert_eq!(set("<max>many</max>"), Err(StanzaCondition::BadRequest));
        assert_eq!(
            set("<before>zz</before>"),
            Err(StanzaCondition::ItemNotFound)
        );
        assert_eq!(
            set("<index>3</index>"),
            Err(StanzaCondition::FeatureNotImplemented)
        );
    }

    #[test]
    fn form_fields_with_start_end_are_checked() {
        let field = |var: &str, value: &str| {
            parse(&format!(
                "<query xmlns='{NS}'><x xmlns='{NS_DATA}'><field var='{var}'><value>{value}</value></field></x></query>"
            ))
        };
        assert_eq!(
            field("end", "1970-01-01T00:02:00Z").map(|q| q.end),
            Ok(Some(120))
        );
        assert_eq!(
            field("with", "a@b/c").map(|q| q.with),
            Ok(Some("a@b/c".into()))
        );
        assert_eq!(field("with", "@nobody"), Err(StanzaCondition::BadRequest));
        assert_eq!(field("end", "soon"), Err(StanzaCondition::BadRequest));
        assert_eq!(field("before-id", ""), Err(StanzaCondition::ItemNotFound));
    }

    #[test]
    fn metadata_is_a_get() {
        let m = format!("<metadata xmlns='{NS}'/>");
        assert_eq!(
            request(&m, IqType::Get),
            Ok(Request::Archive(ArchiveRequest::Metadata))
        );
        assert_eq!(request(&m, IqType::Set), Err(StanzaCondition::BadRequest));
    }

    #[test]
    fn prefs_get_and_set() {
        let get = format!("<prefs xmlns='{NS}'/>");
        assert_eq!(request(&get, IqType::Get), Ok(Request::GetPrefs));
        let set =
            format!("<prefs xmlns='{NS}' default='never'><always><jid>a@h</jid></always></prefs>");
        let expected = Prefs {
            default: DefaultMode::Never,
            always: vec!["a@h".into()],
            never: Vec::new(),
        };
        assert_eq!(request(&set, IqType::Set), Ok(Request::SetPrefs(expected)));
    }

    #[test]
    fn malformed_prefs_are_bad_request() {
        for bad in [
            format!("<prefs xmlns='{NS}'/>"),
            format!("<prefs xmlns='{NS}' default='sometimes'/>"),
            format!("<prefs xmlns='{NS}' default='always'><never><jid>@x</jid></never></prefs>"),
        ] {
            assert_eq!(
                request(&bad, IqType::Set),
                Err(StanzaCondition::BadRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_payloads_are_not_implemented() {
        let other = format!("<archive xmlns='{NS}'/>");
        assert_eq!(
            request(&other, IqType::Get),
            Err(StanzaCondition::FeatureNotImplemented)
        );
        // A room's archive has no preferences.
        let prefs = format!("<prefs xmlns='{NS}'/>");
        assert_eq!(
            archive_request(&prefs, IqType::Get),
            Err(StanzaCondition::FeatureNotImplemented)
        );
    }

    #[test]
    fn the_form_lists_the_fields_a_query_may_use() {
        let mut out = String::new();
        write_form(&mut out);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let x = stanza::child(doc.root_element(), "x", NS_DATA).expect("form");
        assert_eq!(x.attribute("type"), Some("form"));
        let vars: Vec<_> = x.children().filter_map(|f| f.attribute("var")).collect();
        assert_eq!(
            vars,
            [
                "FORM_TYPE",
                "with",
                "start",
                "end",
                "before-id",
                "after-id",
                "ids"
            ]
        );
        let form_type = x.first_element_child().unwrap();
        assert_eq!(stanza::child_text(form_type, "value", NS_DATA), Some(NS));
    }

    #[test]
    fn a_result_forwards_the_stored_message() {
        let mut out = String::new();
        let stored = "<message to='a@h'><body>hi &amp; bye</body></message>";
        write_result(&mut out, ("a@h", "a@h/r"), Some("q'1"), (0xab, 60, stored));
        let doc = roxmltree::Document::parse(&out).unwrap();
        let message = doc.root_element();
        assert_eq!(
            (message.attribute("from"), message.attribute("to")),
            (Some("a@h"), Some("a@h/r"))
        );
        let result = stanza::child(message, "result", NS).expect("result");
        assert_eq!(
            (result.attribute("queryid"), result.attribute("id")),
            (Some("q'1"), Some("ab"))
        );
        let forwarded = stanza::child(result, "forwarded", NS_FORWARD).expect("forwarded");
        let delay = stanza::child(forwarded, "delay", NS_DELAY).expect("delay");
        assert_eq!(delay.attribute("stamp"), Some("1970-01-01T00:01:00Z"));
        let inner = stanza::child(forwarded, "message", "jabber:client").expect("message");
        assert_eq!(
            stanza::child_text(inner, "body", "jabber:client"),
            Some("hi & bye")
        );
    }

    #[test]
    fn fin_carries_the_page_bounds_and_count() {
        let page = ArchivePage {
            items: vec![(1, 0, Vec::new()), (0x1f, 0, Vec::new())],
            count: 7,
            first_index: 3,
            complete: false,
        };
        let mut out = String::new();
        write_fin(&mut out, &page);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let fin = doc.root_element();
        assert_eq!(fin.tag_name().namespace(), Some(NS));
        assert_eq!(fin.attribute("complete"), Some("false"));
        let set = stanza::child(fin, "set", NS_RSM).expect("set");
        let first = stanza::child(set, "first", NS_RSM).expect("first");
        assert_eq!(
            (first.attribute("index"), first.text()),
            (Some("3"), Some("1"))
        );
        assert_eq!(stanza::child_text(set, "last", NS_RSM), Some("1f"));
        assert_eq!(stanza::child_text(set, "count", NS_RSM), Some("7"));
        let empty = ArchivePage {
            items: Vec::new(),
            count: 0,
            first_index: 0,
            complete: true,
        };
        let mut out = String::new();
        write_fin(&mut out, &empty);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let set = doc.root_element().first_element_child().unwrap();
        let names: Vec<_> = set.children().map(|c| c.tag_name().name()).collect();
        assert_eq!(names, ["count"]);
    }

    #[test]
    fn metadata_names_the_first_and_last_message() {
        let mut out = String::new();
        write_metadata(&mut out, Some([(1, 0), (2, 60)]));
        let doc = roxmltree::Document::parse(&out).unwrap();
        let end = stanza::child(doc.root_element(), "end", NS).expect("end");
        assert_eq!(
            (end.attribute("id"), end.attribute("timestamp")),
            (Some("2"), Some("1970-01-01T00:01:00Z"))
        );
        let mut out = String::new();
        write_metadata(&mut out, None);
        let doc = roxmltree::Document::parse(&out).unwrap();
        assert_eq!(doc.root_element().children().count(), 0);
    }

    #[test]
    fn an_added_stanza_id_parses_and_is_found_again() {
        let mut message = "<message to='b@h'><body>hi</body></message>".to_owned();
        add_stanza_id(&mut message, "b@h", 0x2a);
        let doc = roxmltree::Document::parse(&message).unwrap();
        let sid = stanza::child(doc.root_element(), "stanza-id", NS_SID).expect("stanza-id");
        assert_eq!(
            (sid.attribute("by"), sid.attribute("id")),
            (Some("b@h"), Some("2a"))
        );
        assert_eq!(stanza_id_by("b@h", &message), Some(0x2a));
        assert_eq!(stanza_id_by("c@h", &message), None);
    }

    #[test]
    fn ids_round_trip() {
        for id in [1, 0xabc, 1_795_650_000_000_000, u64::MAX] {
            assert_eq!(decode_id(&encode_id(id)), Some(id));
        }
        for bad in ["", "xyz", "10000000000000000", "-1"] {
            assert_eq!(decode_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_parsing() {
        let q = parse(&format!(
            "<query xmlns='{NS}'><x xmlns='{NS_DATA}' type='submit'>\
             <field var='FORM_TYPE'><value>{NS}</value></field>\
             <field var='with'><value>Bob@Localhost</value></field>\
             <field var='start'><value>1970-01-01T00:01:00Z</value></field></x>\
             <set xmlns='{NS_RSM}'><max>1000</max><before/></set></query>"
        ))
        .unwrap();
        assert_eq!(q.with.as_deref(), Some("bob@localhost"));
        assert_eq!(
            (q.start, q.end, q.page, q.max),
            (Some(60), None, PageAt::Last, MAX_PAGE)
        );
        let field = |var: &str, value: &str| {
            parse(&format!(
                "<query xmlns='{NS}'><x xmlns='{NS_DATA}'><field var='{var}'><value>{value}</value></field></x></query>"
            ))
        };
        assert_eq!(
            field("withtext", "x"),
            Err(StanzaCondition::FeatureNotImplemented)
        );
        assert_eq!(
            field("start", "yesterday"),
            Err(StanzaCondition::BadRequest)
        );
        assert_eq!(
            field("FORM_TYPE", "urn:xmpp:mam:1"),
            Err(StanzaCondition::BadRequest)
        );
        let after = parse(&format!(
            "<query xmlns='{NS}'><set xmlns='{NS_RSM}'><after>zz</after></set></query>"
        ));
        assert_eq!(after, Err(StanzaCondition::ItemNotFound));
        let q = parse(&format!(
            "<query xmlns='{NS}'><x xmlns='{NS_DATA}'><field var='after-id'><value>a</value></field>\
             <field var='before-id'><value> ff </value></field>\
             <field var='ids'><value>3</value><value>1</value><value>3</value></field></x></query>"
        ))
        .unwrap();
        assert_eq!(
            (q.after_id, q.before_id, q.ids),
            (Some(10), Some(255), Some(vec![1, 3]))
        );
        let many = "<value>1</value>".repeat(MAX_IDS + 1);
        assert_eq!(
            field("ids", &format!("1</value>{many}<value>2")),
            Err(StanzaCondition::PolicyViolation)
        );
        assert_eq!(field("after-id", "xyz"), Err(StanzaCondition::ItemNotFound));
    }

    #[test]
    fn prefs_round_trip() {
        let prefs = Prefs {
            default: DefaultMode::Roster,
            always: vec!["a@h".into()],
            never: vec!["b@h/r".into(), "c@h".into()],
        };
        assert_eq!(Prefs::decode(&prefs.encode()), Some(prefs.clone()));
        let peer = Jid::parse("c@h/phone").unwrap();
        assert!(Prefs::lists(&prefs.never, &peer));
        assert!(!Prefs::lists(&prefs.always, &peer));
        let mut xml = String::new();
        prefs.write(&mut xml);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(Prefs::parse(doc.root_element()), Some(prefs));
    }
}
