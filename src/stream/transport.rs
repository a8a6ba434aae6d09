//! The byte pipe under a stream (of any kind): plain TCP until STARTTLS, then TLS
//! (or TLS from the first byte on the XEP-0368 port). Reads go through one
//! per-thread scratch buffer straight into the stream framer, so an idle
//! connection holds no read buffer of its own.

use crate::xml::{Framer, FramerError};
use futures_rustls::server::TlsStream;
use smol::io::{AsyncRead, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{future, Timer};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// RFC 9266 §2: the `tls-exporter` binding is this exporter label with no context...
const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// ...and this many bytes.
const CHANNEL_BINDING_BYTES: usize = 32;

/// Largest TLS record plaintext: one read never needs more.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// TLS as the client side: an outgoing server-to-server stream.
    TlsClient(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// Taken out during a TLS upgrade that failed.
    Closed,
}

/// Lets the kernel find a vanished peer: sent data left unacknowledged for
/// `timeout` (TCP_USER_TIMEOUT, Linux) aborts the connection, and the next
/// read or write fails with `TimedOut`. Every keepalive probe is such data,
/// so no TCP keepalive probes are needed on top.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)] // setsockopt on the socket's own descriptor
pub fn abort_unacknowledged_after(tcp: &TcpStream, timeout: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let millis = libc::c_uint::try_from(timeout.as_millis().min(i32::MAX as u128)).unwrap_or(0);
    // SAFETY: the descriptor is open for as long as `tcp` is borrowed, and the option value
    // is a c_uint whose address and size are passed together.
    let result = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&millis as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the kernel's own retransmission limit finds a vanished peer, later.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn abort_unacknowledged_after(_tcp: &TcpStream, _timeout: Duration) -> io::Result<()> {
    Ok(())
}

/// What a read produced.
pub enum ReadError {
    Io(io::Error),
    Xml(FramerError),
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_) | Transport::TlsClient(_))
    }

    /// The certificate chain the peer presented in the TLS handshake (none on plain TCP or
    /// when it sent none).
    pub fn peer_certificates(&self) -> &[rustls::pki_types::CertificateDer<'static>] {
        let certificates = match self {
            Transport::Tls(tls) => tls.get_ref().1.peer_certificates(),
            Transport::TlsClient(tls) => tls.get_ref().1.peer_certificates(),
            Transport::Plain(_) | Transport::Closed => None,
        };
        certificates.unwrap_or_default()
    }

    /// The `tls-exporter` channel-binding data (RFC 9266 §2: label
    /// "EXPORTER-Channel-Binding", no context, 32 bytes), or None when the connection
    /// cannot bind. Only TLS 1.3 binds: for TLS 1.2 the exporter is safe only with the
    /// extended master secret (RFC 9266 §3), and rustls does not require EMS by default
    /// (`ServerConfig::require_ems` is false unless the provider is FIPS; see src/tls.rs)
    /// nor tell whether a connection negotiated it.
    pub fn channel_binding(&self) -> Option<[u8; CHANNEL_BINDING_BYTES]> {
        let Transport::Tls(tls) = self else {
            return None;
        };
        let connection = tls.get_ref().1;
        if connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return None;
        }
        connection
            .export_keying_material([0; CHANNEL_BINDING_BYTES], CHANNEL_BINDING_LABEL, None)
            .ok()
    }

    /// The socket underneath, e.g. for another task to shut it down.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Transport::Plain(tcp) => Some(tcp),
            Transport::Tls(tls) => Some(tls.get_ref().0),
            Transport::TlsClient(tls) => Some(tls.get_ref().0),
            Transport::Closed => None,
        }
    }

    /// Reads what is available into the framer. `Ok(0)` is end of stream.
    pub fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        framer: &mut Framer,
    ) -> Poll<Result<usize, ReadError>> {
        match self.poll_scratch(cx, |data| framer.push(data)) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(ReadError::Io(e))),
            Poll::Ready(Ok((n, pushed))) => Poll::Ready(pushed.map(|()| n).map_err(ReadError::Xml)),
        }
    }

    /// One read into the shared scratch buffer, handed to `use_data`.
    fn poll_scratch<T>(
        &mut self,
        cx: &mut Context<'_>,
        use_data: impl FnOnce(&[u8]) -> T,
    ) -> Poll<io::Result<(usize, T)>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let polled = match self {
                Transport::Plain(tcp) => Pin::new(tcp).poll_read(cx, &mut scratch),
                Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, &mut scratch),
                Transport::TlsClient(tls) => Pin::new(tls.as_mut()).poll_read(cx, &mut scratch),
                Transport::Closed => Poll::Ready(Ok(0)),
            };
            polled.map_ok(|n| (n, use_data(scratch.get(..n).unwrap_or_default())))
        })
    }

    /// Reads and drops input until end of stream, `limit` bytes or `wait`.
    pub async fn discard_input(&mut self, limit: usize, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut left = limit;
        while left > 0 {
            let read = future::poll_fn(|cx| self.poll_scratch(cx, |_| ()));
            let n = future::or(async { read.await.map_or(0, |(n, ())| n) }, async {
                Timer::at(deadline).await;
                0
            })
            .await;
            if n == 0 {
                return;
            }
            left = left.saturating_sub(n);
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => {
                tcp.write_all(bytes).await?;
                tcp.flush().await
            }
            Transport::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
            Transport::TlsClient(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
            Transport::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Upgrades plain TCP to TLS as the server side of the handshake.
    pub async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let Transport::Plain(tcp) = std::mem::replace(self, Transport::Closed) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let tls = futures_rustls::TlsAcceptor::from(config)
            .accept(tcp)
            .await?;
        *self = Transport::Tls(Box::new(tls));
        Ok(())
    }

    /// Upgrades plain TCP to TLS as the client side of the handshake, naming `server`.
    pub async fn connect_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        server: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<()> {
        let Transport::Plain(tcp) = std::mem::replace(self, Transport::Closed) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let tls = futures_rustls::TlsConnector::from(config)
            .connect(server, tcp)
            .await?;
        *self = Transport::TlsClient(Box::new(tls));
        Ok(())
    }

    /// Closes the write side (TLS close_notify, then TCP FIN).
    pub async fn shutdown(&mut self) {
        let _ = match self {
            Transport::Plain(tcp) => tcp.close().await,
            Transport::Tls(tls) => tls.close().await,
            Transport::TlsClient(tls) => tls.close().await,
            Transport::Closed => Ok(()),
        };
    }
}
