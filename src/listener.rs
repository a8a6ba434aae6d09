//! The extra TCP ports of services beside the client ports (file upload, bytestreams
//! proxy): bound before the loop starts so errors come out at once, accepted under a cap
//! on open connections, with deadlines on socket work. It owns no protocol and must
//! never block the loop.

use log::{error, info, warn};
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

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

/// Accepts on every listener of the `what` service; a connection beyond `max` open ones
/// (counted across all of them) is closed at once.
pub fn spawn_accept<F, Fut>(
    ex: &Rc<LocalExecutor<'static>>,
    listeners: Vec<TcpListener>,
    what: &'static str,
    max: u32,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let open = Rc::new(Cell::new(0u32));
    for listener in listeners {
        accept_loop(ex, listener, what, max, open.clone(), serve.clone());
    }
}

/// One listener's accept loop; `open` counts the connections of all the service's listeners.
fn accept_loop<F, Fut>(
    ex: &Rc<LocalExecutor<'static>>,
    listener: TcpListener,
    what: &'static str,
    max: u32,
    open: Rc<Cell<u32>>,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if let Ok(addr) = listener.local_addr() {
        info!("listening for {what} on {addr}");
    }
    let spawner = ex.clone();
    ex.spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) if open.get() < max => {
                    let _ = tcp.set_nodelay(true);
                    open.set(open.get() + 1);
                    let (connection, open) = (serve(tcp), open.clone());
                    spawner
                        .spawn(async move {
                            connection.await;
                            open.set(open.get() - 1);
                        })
                        .detach();
                }
                Ok(_) => warn!("{what}: {max} connections open, one refused"),
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

/// Races `work` against a timer; the timer wins with `TimedOut`.
pub async fn timed<T>(limit: Duration, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    smol::future::or(work, async {
        Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}
