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

/// Binds every address, or says which one failed.
pub fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    addrs
        .iter()
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .and_then(TcpListener::try_from)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))
        })
        .collect()
}

/// Accepts on `listener` for the `what` service; a connection beyond `max` open ones
/// (counted in `open`, shared by the service's listeners) is closed at once.
pub fn spawn_accept<F, Fut>(
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
