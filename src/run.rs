//! The event loop: one smol `LocalExecutor` on one thread holds every listener, every
//! connection task and the shared [`Server`] state. This module starts and stops it:
//! binds the listeners (the client ports here, each feature's own through its
//! declaration), spawns the accept loops and the features' background tasks, reloads on
//! SIGHUP and stops gracefully on SIGTERM/SIGINT.

use crate::config::Config;
use crate::feature::Feature;
use crate::server::Server;
use crate::stanza::StreamCondition;
use crate::store::Store;
use crate::{c2s, control, systemd, tls};
use async_signal::{Signal, Signals};
use log::{error, info};
use smol::net::TcpListener;
use smol::stream::StreamExt;
use smol::{LocalExecutor, Timer};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long after start-up its memory is handed back (see [`crate::memory`]).
const STARTUP_SETTLE: Duration = Duration::from_secs(1);

/// How long a graceful stop waits for streams to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

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
    server.close_all(StreamCondition::SystemShutdown);
    for hook in server.features().iter().filter_map(|f| f.stopping) {
        hook(server);
    }
    let draining = || {
        server
            .features()
            .iter()
            .filter_map(|f| f.draining)
            .any(|draining| draining(server))
    };
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while (server.connection_count() > 0 || draining()) && Instant::now() < deadline {
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
