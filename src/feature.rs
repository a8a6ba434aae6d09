//! The handler interface: what a feature declares, and the only way the core reaches one.
//!
//! A feature (roster, MUC, MAM, …) is a module with one `pub const FEATURE: Feature` that
//! says, in one place, what it handles (iq payload namespaces, a service sub-domain), what
//! it advertises (disco features and identities, stream features) and which lifecycle
//! events it wants. The core (dispatch, disco, stream negotiation, the server's start and
//! stop) walks the list of declarations in [`crate::features::ALL`] and never names a
//! feature, so adding a XEP means adding a module and one line to that list. Disco answers
//! and stream features are built from the same declarations the dispatcher uses, so what is
//! advertised and what is handled cannot drift apart.
//!
//! Features never call back into a connection: a handler appends replies to `out` and
//! returns [`Deferred`] work for the connection task (disk writes awaited in stream order);
//! lifecycle hooks return a [`Wait`] the core awaits before going on.

use crate::config::Config;
use crate::iq::Iq;
use crate::jid::Jid;
use crate::offline::Pending;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{PresenceType, Stanza, StreamCondition};
use crate::store::Store;
use smol::LocalExecutor;
use std::any::Any;
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

/// Disk work a lifecycle hook started, which the core awaits before the next hook runs.
pub type Wait = Option<Pin<Box<dyn Future<Output = ()>>>>;

/// Answers an iq get/set whose payload namespace the feature listed in [`Feature::iq`];
/// `None` when it is not a request the feature knows (the core then answers
/// `service-unavailable`).
pub type IqHandler = fn(&Iq, &mut String) -> Option<Deferred>;

/// Claims an iq result or error addressed to an account's bare JID: `None` when the answer
/// is not to a query of this feature's.
pub type AccountResponse = fn(&Server, &Session, &Stanza, &str) -> Option<Deferred>;

/// A lifecycle hook about one session.
pub type SessionHook = fn(&Rc<Server>, &Rc<Session>) -> Wait;

/// A task that runs as long as the server.
pub type Background = fn(Rc<Server>) -> Pin<Box<dyn Future<Output = ()>>>;

/// Decides whether a stanza from `session` may go to `to` at all (block lists): false when
/// it must not, with the answer the feature's XEP names already in `out`.
pub type Gate = fn(&Server, &Session, &Stanza, &Jid, &mut String) -> bool;

/// Whether a message from `from` may reach this one session of its recipient (a session's
/// own privacy list has the last word, XEP-0016 §2).
pub type Admit = fn(&Server, &Jid, &Session) -> bool;

/// Writes a message to a local user (`to`, localpart `recipient`) as that user gets it,
/// archiving it where it is kept: the XML, and the sender's archive id for its copies. An
/// empty `recipient` is another server's user (only the sender's side is kept here).
pub type Prepare = fn(&Server, &Session, &Stanza, &Jid, &str) -> (String, Option<u64>);

/// A message to a local user after it was routed: `delivered` are the sessions that took
/// it (none when it is kept offline), `xml` what they got. An empty `recipient` is another
/// server's user: the message went out over federation.
pub struct Routed<'a, 'b> {
    pub sender: &'a Session,
    pub stanza: &'a Stanza<'b, 'b>,
    pub recipient: &'a str,
    pub delivered: &'a [Rc<Session>],
    pub xml: &'a str,
    pub sent_id: Option<u64>,
}

/// Handles presence stanzas from a session (after the gates).
pub type PresenceHandler =
    fn(&Rc<Server>, &Rc<Session>, &Stanza, PresenceType, &mut String) -> Deferred;

/// Handles every stanza addressed to a service sub-domain (or a JID in it).
pub type ServiceHandler = fn(&Rc<Server>, &Rc<Session>, &Stanza, &mut String) -> Deferred;

/// An entry of the server's disco#items besides the services: a JID and its name, if any.
pub type ServerItem = (Box<str>, Option<Box<str>>);

/// A service on a sub-domain of its own (chat rooms, upload, bytestream proxy).
pub struct Service {
    /// Whether stanzas to this domain are the service's (asked for every routed stanza).
    pub serves: fn(&Server, &str) -> bool,
    /// The service's domain, when it runs with these settings (for disco#items).
    pub domain: fn(&Server) -> Option<String>,
    /// Its name in the server's disco#items.
    pub name: &'static str,
    /// Serves other servers' users too (chat rooms); when false their stanzas to it are
    /// answered `service-unavailable` (upload slots and relays are for local users).
    pub federated: bool,
    pub handle: ServiceHandler,
}

/// A feature's own state (its caches, queues, limits): created from the settings and the
/// store when the server starts, reached with [`Server::state`]. It lives with the feature;
/// the core holds it without knowing its type.
pub trait State: Any {
    fn new(config: &Config, store: &Store) -> Self
    where
        Self: Sized;
}

/// Makes a feature's state at start-up; [`init`] is the one for a [`State`] type.
pub type Init = fn(&Config, &Store) -> Rc<dyn Any>;

/// Binds a feature's sockets and returns what starts serving them.
pub type Listen = fn(&Config) -> Result<Starter, String>;

/// `Feature::state` for a [`State`] type.
pub fn init<T: State>(config: &Config, store: &Store) -> Rc<dyn Any> {
    Rc::new(T::new(config, store))
}

/// Starts what a feature bound before the loop ran (its listening sockets' tasks).
pub type Starter = Box<dyn FnOnce(&Rc<LocalExecutor<'static>>, &Rc<Server>)>;

/// Where in stream negotiation a stream feature is offered (RFC 6120 §4.3.2).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StreamStage {
    /// Secured, not yet authenticated: next to the SASL mechanisms.
    Secured,
    /// Authenticated, not yet bound: next to resource binding.
    Authenticated,
}

/// One feature's declaration. Start from [`Feature::NONE`] and fill in what applies.
pub struct Feature {
    pub name: &'static str,
    /// Creates its state at start-up (see [`State`]).
    pub state: Option<Init>,
    /// Binds its own sockets before the loop starts (so errors come out at once), and
    /// returns what starts serving them.
    pub listen: Option<Listen>,
    /// Whether it runs with these settings: when false it neither handles nor advertises.
    pub enabled: fn(&Config) -> bool,
    /// Iq payload namespaces it answers, addressed to the server or to a local account's
    /// bare JID, and the handler for them.
    pub iq: &'static [&'static str],
    pub on_iq: IqHandler,
    /// Its iq handler also answers other servers' entities' get requests (public
    /// information: disco, ping, vCards, …; their sets are refused before any handler);
    /// the requester is then a remote session, never an owner, and `Iq::user` is empty.
    pub answers_remote: bool,
    /// Answers to iq results and errors addressed to the server (queries it sent).
    pub on_server_response: Option<fn(&Server, &Session, &Stanza)>,
    /// Answers to iq results and errors addressed to an account's bare JID.
    pub on_account_response: Option<AccountResponse>,
    /// Checks every stanza from a session to another address before it is routed.
    pub gate: Option<Gate>,
    /// Checks a message against each session of its recipient.
    pub admit: Option<Admit>,
    /// Writes (and archives) a message for its recipient; the first feature declaring one
    /// does it, otherwise the message goes as sent with its sender stamped.
    pub prepare_message: Option<Prepare>,
    /// Sees every message routed to a local user (copies, notifications).
    pub message_routed: Option<fn(&Server, &Routed)>,
    /// A message for an offline user (as prepared) could not be stored: undo what
    /// preparing it did.
    pub offline_refused: Option<fn(&Server, &str, &str)>,
    /// Handles presence stanzas; the first feature declaring it does.
    pub on_presence: Option<PresenceHandler>,
    /// disco#info features of the server's own JID.
    pub server_disco: &'static [&'static str],
    /// disco#info nodes of the server's JID it answers as the JID itself (XEP-0115's
    /// `node#ver`).
    pub server_info_node: Option<fn(&Server, &str) -> bool>,
    /// disco#info identities (category, type) and features of an account's bare JID.
    pub account_identities: &'static [(&'static str, &'static str)],
    pub account_disco: &'static [&'static str],
    /// Writes its stream features for this stage of negotiation.
    pub stream_features: Option<fn(&Server, StreamStage, &mut String)>,
    pub service: Option<Service>,
    /// Entries (JID, name) it lists in the server's disco#items besides its service's
    /// (connected external components).
    pub server_items: Option<fn(&Server) -> Vec<ServerItem>>,
    /// A bound session ended (before its undelivered messages are kept offline).
    pub session_ended: Option<SessionHook>,
    /// The last session of a user ended.
    pub user_offline: Option<fn(&Server, &str)>,
    /// An account is being deleted: runs before the deletion is committed, while the
    /// account's data is still stored.
    pub account_deleting: Option<fn(&Server, &str)>,
    /// An account's deletion was committed.
    pub account_deleted: Option<fn(&Rc<Server>, &str) -> Wait>,
    /// The server begins to stop (every stream is told to close): end what it holds open.
    pub stopping: Option<fn(&Server)>,
    /// Whether it still holds sessions a graceful stop waits for.
    pub draining: Option<fn(&Server) -> bool>,
    /// The streams have ended: hand pending writes to the store before it closes.
    pub shutdown: Option<fn(&Server)>,
    /// A task that runs as long as the server (periodic clean-up, batched writes).
    pub background: Option<Background>,
}

fn always(_: &Config) -> bool {
    true
}

fn no_iq(_: &Iq, _: &mut String) -> Option<Deferred> {
    None
}

impl Feature {
    pub const NONE: Feature = Feature {
        name: "",
        state: None,
        listen: None,
        enabled: always,
        iq: &[],
        on_iq: no_iq,
        answers_remote: false,
        gate: None,
        admit: None,
        prepare_message: None,
        message_routed: None,
        offline_refused: None,
        on_presence: None,
        on_server_response: None,
        on_account_response: None,
        server_disco: &[],
        server_info_node: None,
        account_identities: &[],
        account_disco: &[],
        stream_features: None,
        service: None,
        server_items: None,
        session_ended: None,
        user_offline: None,
        account_deleting: None,
        account_deleted: None,
        stopping: None,
        draining: None,
        shutdown: None,
        background: None,
    };
}

/// The message-path hooks and services of the declarations, gathered once at start-up so a
/// routed stanza calls them without walking every declaration.
pub struct Hooks {
    pub services: Vec<&'static Feature>,
    pub gates: Vec<Gate>,
    pub admits: Vec<Admit>,
    pub prepare_message: Option<Prepare>,
    pub message_routed: Vec<fn(&Server, &Routed)>,
    pub on_presence: Option<PresenceHandler>,
}

impl Hooks {
    pub fn new(features: &[&'static Feature]) -> Hooks {
        Hooks {
            services: features
                .iter()
                .copied()
                .filter(|f| f.service.is_some())
                .collect(),
            gates: features.iter().filter_map(|f| f.gate).collect(),
            admits: features.iter().filter_map(|f| f.admit).collect(),
            prepare_message: features.iter().find_map(|f| f.prepare_message),
            message_routed: features.iter().filter_map(|f| f.message_routed).collect(),
            on_presence: features.iter().find_map(|f| f.on_presence),
        }
    }

    /// The service on `domain`, if one runs with these settings.
    pub fn service(&self, server: &Server, domain: &str) -> Option<&'static Service> {
        let config = server.config();
        self.services
            .iter()
            .filter(|f| (f.enabled)(&config))
            .filter_map(|f| f.service.as_ref())
            .find(|service| (service.serves)(server, domain))
    }
}

/// The declarations of the features that run with the current settings.
pub fn enabled<'a>(
    features: &'a [&'static Feature],
    config: &'a Config,
) -> impl Iterator<Item = &'static Feature> + 'a {
    features.iter().copied().filter(|f| (f.enabled)(config))
}
