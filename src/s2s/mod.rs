//! Federation: server-to-server streams (RFC 6120) that make this server one node of the
//! XMPP network. Stanzas for another domain leave through one outgoing stream per pair of
//! domains (a [`Link`], opened on demand, its queue bounded in bytes); peers' stanzas
//! arrive on incoming streams, authenticated by certificate (SASL EXTERNAL, or a pinned
//! fingerprint) or by Server Dialback (XEP-0220). A peer's entity is a *remote*
//! [`Session`] to the rest of the server: the dispatcher, rooms and presence hand it
//! stanzas as to anyone, and its mailbox is the link's queue.
//!
//! Streams are unidirectional (RFC 6120 §2.5.4, no piggybacking): answers to what arrives
//! on an incoming stream leave by the outgoing link to the same domain.

pub mod certs;
pub mod dialback;
mod incoming;
mod link;
mod negotiate;
pub mod resolve;

pub use link::Link;

use crate::feature::{Feature, Starter, State};
use crate::jid::Jid;
use crate::router::{Hold, Session};
use crate::server::Server;
use crate::stanza::{self, StanzaCondition};
use log::info;
use smol::LocalExecutor;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

pub const NS_SERVER: &str = "jabber:server";

/// Federation's declaration: its listeners and start (when `[s2s]` is enabled) and its
/// stop. The core routes to it only through `Server::send_remote`, to which the start adds
/// its `send`.
pub const FEATURE: Feature = Feature {
    name: "s2s",
    state: Some(crate::feature::init::<Federation>),
    listen: Some(listen),
    stopping: Some(|server| federation(server).stop()),
    ..Feature::NONE
};

/// Federation's state on this server.
pub fn federation(server: &Server) -> Rc<Federation> {
    server.state::<Federation>()
}

impl State for Federation {
    fn new(_: &crate::config::Config, _: &crate::store::Store) -> Federation {
        Federation::default()
    }
}

/// Binds the federation port and reads what the streams need (the dialback secret, the
/// certificate), so a problem stops the start at once; the starter begins serving.
fn listen(config: &crate::config::Config) -> Result<Starter, String> {
    if !config.s2s.enabled {
        return Ok(Box::new(|_, _| {}));
    }
    let listeners = crate::listener::bind(true, &config.s2s.listen)?;
    let secret = crate::store::files::server_secret(&config.data_dir)?;
    let identity = crate::tls::load_for(config)?.identity;
    Ok(Box::new(move |ex, server| {
        let state = federation(server);
        state.start(server, &secret, ex);
        state.set_identity(&identity);
        server.add_remote(Rc::new(send));
        let s2s = &server.config().s2s;
        let caps = crate::listener::Caps {
            total: s2s.max_connections,
            per_ip: s2s.max_connections_per_ip,
        };
        let owner = server.clone();
        crate::listener::spawn_accept(ex, listeners, "s2s", caps, move |tcp, peer| {
            incoming::serve(owner.clone(), tcp, peer)
        });
    }))
}

/// A local domain and a peer domain: what one outgoing stream authenticates.
type Pair = (Box<str>, Box<str>);

/// Federation's state: the outgoing links, the remote entities that stand for peers'
/// users, the dialback secret.
#[derive(Default)]
pub struct Federation {
    /// Outgoing links by (local domain, peer domain).
    links: RefCell<HashMap<Pair, Rc<Link>>>,
    /// Remote entities seen as senders or recipients, by local domain and JID.
    remotes: RefCell<HashMap<Box<str>, Rc<Session>>>,
    secret: RefCell<Option<Rc<dialback::Secret>>>,
    spawner: RefCell<Option<Rc<LocalExecutor<'static>>>>,
    /// The server links' tasks run for (set at start; the server owns this state).
    server: RefCell<std::rc::Weak<Server>>,
    /// Authenticated incoming streams per peer domain.
    incoming: RefCell<HashMap<Box<str>, u32>>,
    /// Set once the server begins to stop: links then bounce what they hold and end.
    stopping: Cell<bool>,
    /// TLS for outgoing and incoming streams, made from the server's certificate (again
    /// at every reload).
    tls: RefCell<Option<Tls>>,
}

/// Both sides' TLS settings of server-to-server streams.
#[derive(Clone)]
pub struct Tls {
    pub client: std::sync::Arc<rustls::ClientConfig>,
    pub server: std::sync::Arc<rustls::ServerConfig>,
}

impl Federation {
    /// Starts federation: the dialback secret and the executor links run on.
    pub fn start(
        &self,
        server: &Rc<Server>,
        server_secret: &[u8],
        ex: &Rc<LocalExecutor<'static>>,
    ) {
        *self.secret.borrow_mut() = Some(Rc::new(dialback::Secret::new(server_secret)));
        *self.spawner.borrow_mut() = Some(ex.clone());
        *self.server.borrow_mut() = Rc::downgrade(server);
        // The system's roots are read once, here, not on the loop when a peer connects.
        certs::Roots::system();
    }

    /// Makes both sides' TLS settings from the server's certificate (start-up, reload).
    pub fn set_identity(&self, identity: &std::sync::Arc<rustls::sign::CertifiedKey>) {
        match (
            certs::client_config(identity),
            certs::server_config(identity),
        ) {
            (Ok(client), Ok(server)) => *self.tls.borrow_mut() = Some(Tls { client, server }),
            (Err(e), _) | (_, Err(e)) => log::error!("s2s: {e}"),
        }
    }

    pub fn tls(&self) -> Option<Tls> {
        self.tls.borrow().clone()
    }

    pub fn secret(&self) -> Option<Rc<dialback::Secret>> {
        self.secret.borrow().clone()
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) -> bool {
        match &*self.spawner.borrow() {
            Some(ex) => {
                ex.spawn(task).detach();
                true
            }
            None => false,
        }
    }

    /// The link from `local` to `remote`, made (and its task started) on first use; `None`
    /// when federation is not running.
    pub fn link(&self, local: &str, remote: &str) -> Option<Rc<Link>> {
        let key = (Box::<str>::from(local), Box::<str>::from(remote));
        if let Some(link) = self.links.borrow().get(&key) {
            return Some(link.clone());
        }
        let server = self.server.borrow().upgrade()?;
        if self.stopping.get() {
            return None;
        }
        let link = Rc::new(Link::new(local, remote));
        if !self.spawn(link::run(server, link.clone())) {
            return None;
        }
        self.links.borrow_mut().insert(key, link.clone());
        Some(link)
    }

    /// A link's task ended: it is forgotten, and so are the remote entities whose stanzas
    /// it carried (rooms see them leave).
    fn forget_link(&self, server: &Rc<Server>, link: &Link) {
        let key = (link.local.clone(), link.remote.clone());
        let removed = {
            let mut links = self.links.borrow_mut();
            match links.get(&key) {
                Some(current) if std::ptr::eq(&**current, link) => links.remove(&key),
                _ => None,
            }
        };
        drop(removed);
        let gone: Vec<Rc<Session>> = {
            let mut remotes = self.remotes.borrow_mut();
            let keys: Vec<Box<str>> = remotes
                .iter()
                .filter(|(_, s)| Rc::ptr_eq(&s.mailbox, &link.mailbox))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| remotes.remove(k)).collect()
        };
        for session in gone {
            end_remote(server, &session);
        }
    }

    /// The remote entity `jid` as a sender and recipient: stanzas delivered to it leave by
    /// the link from `local` to its domain.
    pub fn remote(&self, server: &Server, local: &str, jid: &Jid) -> Option<Rc<Session>> {
        // One per local domain it talks with: each has its own link.
        let key: Box<str> = format!("{local} {jid}").into();
        if let Some(session) = self.remotes.borrow().get(&key) {
            return Some(session.clone());
        }
        let link = self.link(local, jid.domain())?;
        let session = Rc::new(Session::remote_entity(
            server.next_id(),
            jid.clone(),
            link.mailbox.clone(),
        ));
        let mut remotes = self.remotes.borrow_mut();
        // Entities nothing else holds any more are dropped as new ones come.
        if remotes.len() >= 64 && remotes.len().is_power_of_two() {
            remotes.retain(|_, s| Rc::strong_count(s) > 1);
        }
        remotes.insert(key, session.clone());
        Some(session)
    }

    /// Counts an authenticated incoming stream from `domain`; false when there are already
    /// `max` (the stream is then refused).
    fn add_incoming(&self, domain: &str, max: u32) -> bool {
        let mut incoming = self.incoming.borrow_mut();
        let count = incoming.entry(domain.into()).or_default();
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn remove_incoming(&self, domain: &str) {
        let mut incoming = self.incoming.borrow_mut();
        if let Some(count) = incoming.get_mut(domain) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                incoming.remove(domain);
            }
        }
    }

    /// The server stops: every link bounces what it holds and closes its stream.
    pub fn stop(&self) {
        self.stopping.set(true);
        for link in self.links.borrow().values() {
            link.mailbox
                .close(crate::stanza::StreamCondition::SystemShutdown);
        }
    }
}

/// Most local addresses remembered per remote entity as having its available presence.
const MAX_WATCHERS: usize = 32;

/// Notes an available or unavailable presence a remote entity sends a local address: who
/// saw it available is told `unavailable` if its server is lost (see [`peer_lost`]). Kept
/// in the remote session's `available` and `presence.directed`.
pub fn note_presence(session: &Session, stanza: &stanza::Stanza) {
    let (stanza::StanzaType::Presence(ty), Some(to)) = (stanza.ty, &stanza.to) else {
        return;
    };
    let watcher = to.bare();
    let mut watchers = session.presence.directed.borrow_mut();
    match ty {
        stanza::PresenceType::Available => {
            session.available.set(true);
            if !watchers.contains(&watcher) {
                if watchers.len() >= MAX_WATCHERS {
                    watchers.remove(0);
                }
                watchers.push(watcher);
            }
        }
        stanza::PresenceType::Unavailable => {
            watchers.retain(|w| *w != watcher);
            if watchers.is_empty() {
                session.available.set(false);
            }
        }
        _ => {}
    }
}

/// The connection to `domain`'s server was lost (not closed): every local user who had
/// presence from one of its entities gets `unavailable` from it, since no one will send it
/// (RFC 6121 §4.3: presence is only as good as the path it came by).
pub fn peer_lost(server: &Server, domain: &str) {
    let lost: Vec<Rc<Session>> = federation(server)
        .remotes
        .borrow()
        .values()
        .filter(|s| s.jid.domain() == domain)
        .cloned()
        .collect();
    entities_lost(server, &lost);
}

/// Remote entities (another server's, a component's) whose path here is lost: each local
/// user who had available presence from one of them gets `unavailable` from it.
pub fn entities_lost(server: &Server, lost: &[Rc<Session>]) {
    for session in lost.iter().filter(|s| s.available.get()) {
        session.available.set(false);
        let watchers = std::mem::take(&mut *session.presence.directed.borrow_mut());
        for watcher in watchers {
            let Some(user) = watcher.local() else {
                continue;
            };
            let mut xml = String::new();
            crate::xml::build::Element::new("presence")
                .attr("type", "unavailable")
                .attr("from", session.jid.as_str())
                .attr("to", watcher.as_str())
                .empty(&mut xml);
            let xml: Rc<str> = xml.into();
            let router = server.router.borrow();
            for target in router.resources(user).iter().filter(|s| s.available.get()) {
                server.deliver(target, xml.clone(), false);
            }
        }
        info!("{}: lost, now unavailable", session.jid);
    }
}

/// A remote entity is gone (its server's link ended): the features that kept it (rooms)
/// let it go. Only the hooks run: it was never bound and is no local user.
pub fn end_remote(server: &Rc<Server>, session: &Rc<Session>) {
    for hook in server.features().iter().filter_map(|f| f.session_ended) {
        // Remote entities have nothing stored: their hooks start no disk work to wait for.
        drop(hook(server, session));
    }
}

/// The domain a stanza we send comes from: one of ours, read from its `from`.
fn from_domain<'a>(server_domain: &'a str, xml: &'a str) -> &'a str {
    let head = xml.split('>').next().unwrap_or_default();
    let from = head
        .split_once(" from='")
        .and_then(|(_, rest)| rest.split('\'').next());
    from.map(|jid| {
        let bare = jid.split('/').next().unwrap_or(jid);
        bare.rsplit('@').next().unwrap_or(bare)
    })
    .filter(|domain| !domain.is_empty())
    .unwrap_or(server_domain)
}

/// Sends `xml` (one stanza, `from` stamped and `to` set) toward `to`'s server, opening the
/// stream on demand. False when federation is off or refuses that domain: the caller then
/// answers `remote-server-not-found`. A stanza that cannot be delivered later bounces to
/// its sender (`storable` marks a message that must not vanish).
pub fn send(server: &Server, to: &Jid, xml: Rc<str>, storable: bool) -> bool {
    let config = server.config();
    if !config.s2s.enabled || !config.s2s.allows(to.domain()) {
        return false;
    }
    let local = from_domain(&config.domain, &xml).to_owned();
    let Some(link) = federation(server).link(&local, to.domain()) else {
        return false;
    };
    let cap = config.s2s.max_queue_bytes as usize;
    if link.mailbox.is_closing()
        || link
            .mailbox
            .push_stanza(xml.clone(), storable, Hold::Urgent, cap)
            .is_err()
    {
        info!(
            "s2s {}: queue full ({} bytes queued), a stanza bounced",
            to.domain(),
            link.mailbox.queued_bytes()
        );
        bounce(server, &xml, StanzaCondition::ResourceConstraint);
    }
    true
}

pub use crate::route::bounce;

/// Whether `domain` is one this server answers for: its own or a service's.
pub fn is_ours(server: &Server, domain: &str) -> bool {
    let config = server.config();
    domain == config.domain || server.hooks().service(server, domain).is_some()
}
