//! The extra TCP ports of services beside the client ports (file upload, bytestreams
//! proxy): bound before the loop starts so errors come out at once, accepted under a cap
//! on open connections, with deadlines on socket work. It owns no protocol and must
//! never block the loop.

use log::{error, info, warn};
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Binds every address of a service that is configured (none when it is off), or says
/// which one failed.
pub fn bind(configured: bool, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    if !configured {
        return Ok(Vec::new());
    }
    addrs
        .iter()
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .and_then(TcpListener::try_from)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))
        })
        .collect()
}

/// The port a service advertises: its first listener's (0 if the system will not say), or
/// `None` when it has no listener and is off.
pub fn first_port(listeners: &[TcpListener]) -> Option<u16> {
    let first = listeners.first()?;
    Some(first.local_addr().map_or(0, |a| a.port()))
}

/// How many connections a service takes: in all, and from one address (so one host
/// cannot take every slot of a port that needs no login).
#[derive(Clone, Copy)]
pub struct Caps {
    pub total: u32,
    pub per_ip: u32,
}

/// Open connections of one service, in all and by address (entries only while non-zero).
#[derive(Default)]
struct Open {
    total: Cell<u32>,
    by_ip: RefCell<HashMap<IpAddr, u32>>,
}

impl Open {
    /// Counts a new connection from `ip`, or says which cap it would break.
    fn admit(&self, ip: IpAddr, caps: Caps) -> Result<(), &'static str> {
        let mut by_ip = self.by_ip.borrow_mut();
        let from_ip = by_ip.get(&ip).copied().unwrap_or(0);
        if self.total.get() >= caps.total {
            return Err("connections open");
        }
        if from_ip >= caps.per_ip {
            return Err("connections open from one address");
        }
        self.total.set(self.total.get() + 1);
        by_ip.insert(ip, from_ip + 1);
        Ok(())
    }

    fn release(&self, ip: IpAddr) {
        self.total.set(self.total.get().saturating_sub(1));
        let mut by_ip = self.by_ip.borrow_mut();
        if let Some(count) = by_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                by_ip.remove(&ip);
                crate::memory::shrink_sparse(&mut by_ip);
            }
        }
    }
}

/// Accepts on every listener of the `what` service; a connection beyond `caps` (counted
/// across all of them) is closed at once. `serve` gets the peer's address too.
pub fn spawn_accept<F, Fut>(
    ex: &Rc<LocalExecutor<'static>>,
    listeners: Vec<TcpListener>,
    what: &'static str,
    caps: Caps,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let open = Rc::new(Open::default());
    for listener in listeners {
        accept_loop(ex, listener, what, caps, open.clone(), serve.clone());
    }
}

/// One listener's accept loop; `open` counts the connections of all the service's listeners.
fn accept_loop<F, Fut>(
    ex: &Rc<LocalExecutor<'static>>,
    listener: TcpListener,
    what: &'static str,
    caps: Caps,
    open: Rc<Open>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if let Ok(addr) = listener.local_addr() {
        info!("listening for {what} on {addr}");
    }
    let spawner = ex.clone();
    let refusals = RefusalLog::default();
    ex.spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => match open.admit(peer.ip(), caps) {
                    Ok(()) => {
                        let _ = tcp.set_nodelay(true);
                        let (connection, open) = (serve(tcp, peer), open.clone());
                        spawner
                            .spawn(async move {
                                connection.await;
                                open.release(peer.ip());
                            })
                            .detach();
                    }
                    Err(why) => refusals.note(|unlogged| {
                        format!(
                            "{what}: refused {peer}: too many {why} (at most {} in all, {} per \
                             address; {unlogged} more refused since the last warning)",
                            caps.total, caps.per_ip
                        )
                    }),
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    error!("{what}: accept failed: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .detach();
}

/// Refusals are logged once per interval with how many went unlogged, so a flood of
/// connections cannot flood the log as well.
#[derive(Default)]
pub struct RefusalLog {
    last: Cell<Option<Instant>>,
    unlogged: Cell<u64>,
}

const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl RefusalLog {
    /// Logs `message` (given the refusals left unlogged since the last one) if none was
    /// logged in the last interval.
    pub fn note(&self, message: impl FnOnce(u64) -> String) {
        let now = Instant::now();
        if self
            .last
            .get()
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            self.unlogged.set(self.unlogged.get().saturating_add(1));
            return;
        }
        self.last.set(Some(now));
        warn!("{}", message(self.unlogged.replace(0)));
    }
}

/// Races `work` against a timer; the timer wins with `TimedOut`.
pub async fn timed<T>(limit: Duration, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    smol::future::or(work, async {
        Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}
