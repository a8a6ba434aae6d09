//! The state every task of the event loop shares ([`Server`]): settings, store, router,
//! connections, protection, and each feature's declaration and state. One thread holds it
//! (see [`crate::run`]), so it needs no locks. It knows no stream kind and names no
//! feature; protocol logic lives in the feature modules.

use crate::config::Config;
use crate::feature::{Feature, Hooks, State};
use crate::jid::Jid;
use crate::limits::{Counters, Protection};
use crate::router::{Mailbox, Router, Session};
use crate::stanza::StreamCondition;
use crate::store::{Store, StoreError};
use log::{info, warn};
use ring::rand::{SecureRandom, SystemRandom};
use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Below this many connections a trim at every halving is not worth its walk over the heap;
/// the last connection's leaving still triggers one.
const RELEASE_MIN_PEAK: usize = 32;

/// State shared by every task of the loop.
pub struct Server {
    /// What every feature declares; the core reaches features only through these.
    features: &'static [&'static Feature],
    /// The declarations' message-path hooks, gathered once.
    hooks: Hooks,
    /// Each declared feature's [`State`], by type: made at start-up, never changed.
    states: Box<[(TypeId, Rc<dyn Any>)]>,
    /// States asked for that no declaration made (a unit test's server), made on first use.
    extra_states: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
    /// Swapped whole by a reload; see [`Server::config`].
    config: RefCell<Rc<Config>>,
    pub store: Store,
    pub router: RefCell<Router>,
    /// Users whose offline messages are being delivered right now, and
    /// whether more were stored meanwhile (see [`crate::offline::keep`]).
    pub offline_in_flight: RefCell<HashMap<Box<str>, bool>>,
    /// Accounts deleted while the server runs, until created again: nothing more is
    /// routed to them or stored for them (see [`Server::delete_account`]).
    retired: RefCell<HashSet<Box<str>>>,
    /// For XEP-0012 uptime.
    pub started: Instant,
    /// Connection admission, rate buckets, login delays, limit counters.
    pub protection: Protection,
    /// The ways stanzas for other domains leave (external components, federation), in the
    /// order they are offered a stanza (see `add_remote`).
    remote: RefCell<Vec<Rc<RemoteSend>>>,
    tls: RefCell<Arc<rustls::ServerConfig>>,
    connections: RefCell<HashMap<u64, Rc<Mailbox>>>,
    /// Most connections since memory was last handed back (see [`release_memory`]).
    peak_connections: Cell<usize>,
    next_id: Cell<u64>,
    rng: SystemRandom,
}

/// Sends a stanza to another domain (federation's `send`, a component's): false when it is
/// not one this way reaches.
pub type RemoteSend = dyn Fn(&Server, &Jid, Rc<str>, bool) -> bool;

impl Server {
    pub fn new(
        config: Config,
        store: Store,
        tls: Arc<rustls::ServerConfig>,
        features: &'static [&'static Feature],
    ) -> Server {
        let states = features
            .iter()
            .filter_map(|f| f.state)
            .map(|state| {
                let state = state(&config, &store);
                ((*state).type_id(), state)
            })
            .collect();
        Server {
            protection: Protection::new(&config),
            remote: RefCell::default(),
            features,
            hooks: Hooks::new(features),
            states,
            extra_states: RefCell::default(),
            config: RefCell::new(Rc::new(config)),
            store,
            router: RefCell::default(),
            offline_in_flight: RefCell::default(),
            retired: RefCell::default(),
            started: Instant::now(),
            tls: RefCell::new(tls),
            connections: RefCell::default(),
            peak_connections: Cell::new(0),
            next_id: Cell::new(1),
            rng: SystemRandom::new(),
        }
    }

    /// Every feature's declaration, in hook order (see [`crate::feature::enabled`] for the
    /// ones that run with the current settings).
    pub fn features(&self) -> &'static [&'static Feature] {
        self.features
    }

    /// A feature's state. Made at start-up for every declared feature; one asked for that
    /// no declaration made (a unit test's server) is made on first use.
    pub fn state<T: State>(&self) -> Rc<T> {
        // Asked several times per routed stanza: a scan of a dozen type ids in a slice that
        // never changes (no borrow, no hashing).
        let wanted = TypeId::of::<T>();
        let declared = self.states.iter().find(|(id, _)| *id == wanted);
        if let Some(state) = declared.and_then(|(_, s)| s.clone().downcast::<T>().ok()) {
            return state;
        }
        let extra = self
            .extra_states
            .borrow()
            .iter()
            .find(|(id, _)| *id == wanted)
            .map(|(_, state)| state.clone());
        if let Some(state) = extra.and_then(|s| s.downcast::<T>().ok()) {
            return state;
        }
        let state = Rc::new(T::new(&self.config(), &self.store));
        self.extra_states.borrow_mut().push((wanted, state.clone()));
        state
    }

    /// The message-path hooks of the declarations.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// The settings in effect now. A reload may replace them at any await, so a handler
    /// holds this one `Rc` for a consistent view instead of asking again.
    pub fn config(&self) -> Rc<Config> {
        self.config.borrow().clone()
    }

    /// A reload's settings and certificate take effect: for every handler from its next
    /// [`Server::config`] on, for the rate buckets that already exist, and for every TLS
    /// handshake from now on.
    pub fn replace_config(&self, config: Config, tls: Arc<rustls::ServerConfig>) {
        self.protection.set_rate(&config.rate);
        *self.config.borrow_mut() = Rc::new(config);
        *self.tls.borrow_mut() = tls;
    }

    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.borrow().clone()
    }

    pub fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// 64 random bits as hex: stream ids and generated resources.
    pub fn random_id(&self) -> String {
        let mut bytes = [0u8; 8];
        if self.rng.fill(&mut bytes).is_err() {
            bytes = self.next_id().to_le_bytes();
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn register_connection(&self, mailbox: Rc<Mailbox>) -> u64 {
        let id = self.next_id();
        let mut connections = self.connections.borrow_mut();
        connections.insert(id, mailbox);
        let peak = self.peak_connections.get().max(connections.len());
        self.peak_connections.set(peak);
        id
    }

    /// Once half of a large peak of connections has gone, and whenever the
    /// last one has, the memory they used is handed back to the system, so
    /// RSS falls back towards the idle figure instead of staying at the peak
    /// (glibc keeps freed heap pages otherwise). Halving makes it rare: at
    /// most log2(peak) + 1 times on the way down.
    pub fn unregister_connection(&self, id: u64) {
        let mut connections = self.connections.borrow_mut();
        connections.remove(&id);
        let (count, peak) = (connections.len(), self.peak_connections.get());
        if (count <= peak / 2 && peak >= RELEASE_MIN_PEAK) || (count == 0 && peak > 0) {
            connections.shrink_to_fit();
            self.peak_connections.set(count);
            crate::memory::release();
        }
    }

    /// A resumed session's mailbox is the one shutdown must close now.
    pub fn replace_connection_mailbox(&self, id: u64, mailbox: Rc<Mailbox>) {
        if let Some(slot) = self.connections.borrow_mut().get_mut(&id) {
            *slot = mailbox;
        }
    }

    /// Closes a connection that has not logged in, to make room under
    /// `limits.max_unauthenticated_percent` (see [`crate::limits::Protection::admit`]).
    pub fn evict_unauthenticated(&self, id: u64) {
        if let Some(mailbox) = self.connections.borrow().get(&id) {
            mailbox.close(StreamCondition::ResourceConstraint);
        }
        if let Some(unlogged) = self.protection.refusal_to_log(Instant::now()) {
            info!(
                "too many connections not logged in (limits.max_unauthenticated_percent): \
                 the oldest closed ({unlogged} more refusals since the last report)"
            );
        }
    }

    /// Tells every connection to close with `condition` (graceful stop).
    pub fn close_all(&self, condition: StreamCondition) {
        for mailbox in self.connections.borrow().values() {
            mailbox.close(condition);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.connections.borrow().len()
    }

    /// Sends a stanza (`from` stamped, `to` set) toward another domain: a connected
    /// component's or another server's. False when nothing reaches it (federation off, or
    /// the domain refused): the caller then answers `remote-server-not-found`. What cannot
    /// be delivered later bounces to its sender.
    pub fn send_remote(&self, to: &Jid, xml: Rc<str>, storable: bool) -> bool {
        let ways = self.remote.borrow().clone();
        ways.iter()
            .any(|send| send(self, to, xml.clone(), storable))
    }

    /// A way out (external components, federation), as it starts, says how stanzas for
    /// other domains leave: the core routes to it without depending on it. Ways are offered
    /// a stanza in the order they were added (the features' declaration order).
    pub fn add_remote(&self, send: Rc<RemoteSend>) {
        self.remote.borrow_mut().push(send);
    }

    /// Queues a stanza for a session. A session whose queue is over the cap
    /// does not read: it is closed, and the stanza counts as not delivered.
    pub fn deliver(&self, session: &Session, xml: Rc<str>, storable: bool) -> bool {
        self.deliver_as(session, xml, storable, crate::router::Hold::Urgent)
    }

    /// [`Server::deliver`] of a stanza an inactive client may get later.
    pub fn deliver_as(
        &self,
        session: &Session,
        xml: Rc<str>,
        storable: bool,
        hold: crate::router::Hold,
    ) -> bool {
        let cap = self.config().limits.outbound_queue_bytes as usize;
        match session.mailbox.push_stanza(xml, storable, hold, cap) {
            Ok(()) => true,
            Err(_) if session.mailbox.is_closing() => false,
            Err(_) => {
                warn!("{}: outbound queue full, closing the session", session.jid);
                Counters::bump(&self.protection.counters.slow_readers);
                session.mailbox.close(StreamCondition::PolicyViolation);
                false
            }
        }
    }

    /// Deletes an account (by its owner or the administrator). From this moment it no
    /// longer exists for routing and storage and its sessions are told to end (a requester
    /// still gets its reply first); the archive rows routed so far are queued, and the
    /// deletion is queued behind every earlier write, so nothing stored for the user lands
    /// after it. Its uploaded files and room affiliations go once it is done.
    pub async fn delete_account(self: &Rc<Self>, user: &str) -> Result<(), StoreError> {
        self.retired.borrow_mut().insert(user.into());
        for session in self.router.borrow().resources(user) {
            session.mailbox.close(StreamCondition::NotAuthorized);
        }
        // After the closes: the account's own resources end without hearing of each other.
        for hook in self.features.iter().filter_map(|f| f.account_deleting) {
            hook(self, user);
        }
        let result = self.store.delete_user(user).await;
        match result {
            Ok(()) => {
                for hook in self.features.iter().filter_map(|f| f.account_deleted) {
                    if let Some(wait) = hook(self, user) {
                        wait.await;
                    }
                }
            }
            Err(_) => self.account_added(user),
        }
        result
    }

    /// An account was created: a name deleted earlier is in use again.
    pub fn account_added(&self, user: &str) {
        self.retired.borrow_mut().remove(user);
    }

    /// The account was deleted while the server runs (see [`Server::delete_account`]).
    pub fn is_retired(&self, user: &str) -> bool {
        // Asked for every routed message: the usual empty set costs no hashing.
        let retired = self.retired.borrow();
        !retired.is_empty() && retired.contains(user)
    }
}
