//! The event loop: one smol `LocalExecutor` on one thread holds every
//! listener, every connection task and the shared server state, so state
//! needs no locks. This module starts and stops the server (listeners,
//! signals, graceful shutdown) and owns the state every handler reaches
//! through [`Server`]; protocol logic lives in the feature modules.

use crate::config::Config;
use crate::feature::{Feature, State};
use crate::limits::{Counters, Protection};
use crate::router::{Mailbox, Router, Session};
use crate::stanza::StreamCondition;
use crate::store::{Store, StoreError};
use crate::{c2s, control, systemd, tls};
use async_signal::{Signal, Signals};
use log::{error, info, warn};
use ring::rand::{SecureRandom, SystemRandom};
use smol::net::TcpListener;
use smol::stream::StreamExt;
use smol::{LocalExecutor, Timer};
use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Below this many connections a trim at every halving is not worth its walk over the heap;
/// the last connection's leaving still triggers one.
const RELEASE_MIN_PEAK: usize = 32;

/// How long after start-up its memory is handed back (see [`crate::memory`]).
const STARTUP_SETTLE: Duration = Duration::from_secs(1);

/// How long a graceful stop waits for streams to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// State shared by every task of the loop.
pub struct Server {
    /// What every feature declares; the core reaches features only through these.
    features: &'static [&'static Feature],
    /// Each feature's [`State`], by type.
    states: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
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
    /// XEP-0198 sessions waiting to be resumed.
    pub sm: crate::sm::Parking,
    tls: RefCell<Arc<rustls::ServerConfig>>,
    connections: RefCell<HashMap<u64, Rc<Mailbox>>>,
    /// Most connections since memory was last handed back (see [`release_memory`]).
    peak_connections: Cell<usize>,
    next_id: Cell<u64>,
    rng: SystemRandom,
}

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
            sm: Default::default(),
            features,
            states: RefCell::new(states),
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
        // Asked several times per routed stanza: a scan of a dozen type ids, no hashing.
        let wanted = TypeId::of::<T>();
        let found = self
            .states
            .borrow()
            .iter()
            .find(|(id, _)| *id == wanted)
            .map(|(_, state)| state.clone());
        if let Some(state) = found.and_then(|s| s.downcast::<T>().ok()) {
            return state;
        }
        let state = Rc::new(T::new(&self.config(), &self.store));
        self.states.borrow_mut().push((wanted, state.clone()));
        state
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

    pub fn connection_count(&self) -> usize {
        self.connections.borrow().len()
    }

    /// Queues a stanza for a session. A session whose queue is over the cap
    /// does not read: it is closed, and the stanza counts as not delivered.
    pub fn deliver(&self, session: &Session, xml: Rc<str>, storable: bool) -> bool {
        self.deliver_as(session, xml, storable, crate::csi::Hold::Urgent)
    }

    /// [`Server::deliver`] of a stanza an inactive client may get later.
    pub fn deliver_as(
        &self,
        session: &Session,
        xml: Rc<str>,
        storable: bool,
        hold: crate::csi::Hold,
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

/// Listeners bound before the loop starts, so errors come out at once.
struct Listeners {
    starttls: Vec<TcpListener>,
    direct_tls: Vec<TcpListener>,
}

fn bind_all(config: &Config) -> Result<Listeners, String> {
    let bind = |addr: &std::net::SocketAddr| {
        std::net::TcpListener::bind(addr)
            .and_then(TcpListener::try_from)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    Ok(Listeners {
        starttls: config
            .listen
            .starttls
            .iter()
            .map(bind)
            .collect::<Result<_, _>>()?,
        direct_tls: config
            .listen
            .direct_tls
            .iter()
            .map(bind)
            .collect::<Result<_, _>>()?,
    })
}

/// Runs the server until SIGTERM or SIGINT, then stops it gracefully. `path` is the
/// config file `config` came from, read again on SIGHUP.
pub fn run(
    config: Config,
    path: Option<&std::path::Path>,
    features: &'static [&'static Feature],
) -> Result<(), String> {
    let started = Instant::now();
    crate::store::files::restrict_new_files();
    create_private_dir(&config.data_dir)?;
    crate::store::files::warn_if_readable(&config.data_dir);
    crate::sasl::set_decoy_secret(&crate::store::files::server_secret(&config.data_dir)?);
    // Absolute, so an admin sees which directory account commands must be pointed at.
    let data_dir = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
    info!("data directory {}", data_dir.display());
    let store = Store::open(&config.data_dir, crate::store::DEFAULT_CACHE_BYTES)
        .map_err(|e| e.to_string())?;
    let material = tls::load_for(&config)?;
    if material.generated {
        info!("generated a self-signed certificate for {}", config.domain);
    }
    tls::log_fingerprints(&material);
    let listeners = bind_all(&config)?;
    let starters = features
        .iter()
        .filter_map(|f| f.listen)
        .map(|listen| listen(&config))
        .collect::<Result<Vec<_>, _>>()?;
    let control = control::bind(&config.data_dir)?;
    let data_dir = config.data_dir.clone();
    let signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let server = Rc::new(Server::new(
        config,
        store.clone(),
        material.config,
        features,
    ));
    let ex = Rc::new(LocalExecutor::new());

    smol::block_on(ex.run(async {
        for (listeners, direct) in [(listeners.starttls, false), (listeners.direct_tls, true)] {
            for listener in listeners {
                let kind = if direct { "direct-tls" } else { "starttls" };
                if let Ok(addr) = listener.local_addr() {
                    info!("listening for {kind} on {addr}");
                }
                ex.spawn(accept_loop(ex.clone(), server.clone(), listener, direct))
                    .detach();
            }
        }
        for start in starters {
            start(&ex, &server);
        }
        let hooks = Rc::new(control::Hooks {
            delete: {
                let server = server.clone();
                Box::new(move |user: String| {
                    let server = server.clone();
                    Box::pin(async move { server.delete_account(&user).await })
                })
            },
            added: {
                let server = server.clone();
                Box::new(move |user: &str| server.account_added(user))
            },
        });
        ex.spawn(control::serve(control, server.store.clone(), hooks))
            .detach();
        for background in server.features().iter().filter_map(|f| f.background) {
            ex.spawn(background(server.clone())).detach();
        }
        // What only start-up needed (configuration, integrity check, certificate) goes back
        // once the tasks above have taken their first steps.
        ex.spawn(async {
            Timer::after(STARTUP_SETTLE).await;
            crate::memory::release();
        })
        .detach();
        systemd::ready();
        info!(
            "hearth {} ready for {} in {} ms",
            env!("CARGO_PKG_VERSION"),
            server.config().domain,
            started.elapsed().as_millis()
        );
        wait_for_stop(&server, path, signals).await;
        shutdown(&server).await;
    }));
    // Commits whatever is still queued and joins the writer thread.
    store.close();
    control::unbind(&data_dir);
    info!("stopped");
    Ok(())
}

async fn accept_loop(
    ex: Rc<LocalExecutor<'static>>,
    server: Rc<Server>,
    listener: TcpListener,
    direct_tls: bool,
) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                ex.spawn(c2s::serve(server.clone(), tcp, peer, direct_tls))
                    .detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                error!("accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// SIGHUP reloads the config file and the certificate; SIGTERM and SIGINT stop the server.
async fn wait_for_stop(server: &Server, path: Option<&std::path::Path>, mut signals: Signals) {
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(Signal::Hup) => {
                systemd::reloading();
                crate::reload::reload(server, path);
                systemd::ready();
            }
            Ok(_) => return,
            Err(e) => error!("signal handling: {e}"),
        }
    }
}

/// Every stream gets `<system-shutdown/>` and its close tag; we wait a
/// moment for the tasks to write them.
async fn shutdown(server: &Server) {
    systemd::stopping();
    info!(
        "stopping: closing {} connections",
        server.connection_count()
    );
    for mailbox in server.connections.borrow().values() {
        mailbox.close(StreamCondition::SystemShutdown);
    }
    server.sm.close_all();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while (server.connection_count() > 0 || server.sm.count() > 0) && Instant::now() < deadline {
        Timer::after(Duration::from_millis(10)).await;
    }
    info!("limit counters: {}", server.protection.counters);
    // Writes still pending (archive rows, room history) go to the writer before the store
    // closes.
    for hook in server.features().iter().filter_map(|f| f.shutdown) {
        hook(server);
    }
}

/// The data dir holds credentials and the TLS key: owner only.
fn create_private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))
}
