//! The part of an XML stream (RFC 6120 §4) that every stream kind shares: the
//! byte pipe ([`Transport`]: TCP, then TLS), the framer it feeds, the output
//! buffer and its bounded writer, the session's byte budget, the connection's
//! protection state ([`Guard`]: rate limits, keepalive and idle deadlines, a
//! held login failure) and the wait for whatever comes next (input, mail for
//! the peer, a deadline). It knows nothing of what a stream negotiates.
//!
//! The seam: a stream kind is a [`Stream`] with its own negotiation on top.
//! Client streams ([`crate::c2s::Connection`]) add SASL, resource binding, Stream
//! Management and CSI, each stage carrying what it has established; server-to-server
//! streams ([`crate::s2s`]) add dialback or SASL EXTERNAL and the TLS client side. What a
//! method needs from the layer above (whom to name in a log line, bytes that layer still
//! holds for the peer, the bound address a rate warning goes to) it takes as an argument,
//! so nothing here depends on a stage.

pub mod guard;
pub mod pace;
pub mod transport;

use crate::limits::Counters;
use crate::router::{Mailbox, Outbound};
use crate::server::Server;
use crate::stanza::StreamCondition;
use crate::xml::{self, Event, Framer, FramerError, StreamHeader};
use guard::Guard;
use log::{debug, info};
use smol::future;
use smol::net::TcpStream;
use smol::Timer;
use std::fmt::{self, Display};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::{ReadError, Transport};

/// How long and how much a closing stream still reads and drops.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Queued stanzas written together: one TLS record's worth of plaintext.
const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// Why a stream stopped.
pub enum End {
    /// We sent (or must send) a stream error.
    Error(StreamCondition, Option<&'static str>),
    /// The peer closed its stream; we answer with ours.
    PeerClosed,
    /// The socket is gone (reset, EOF, write failure).
    Gone,
}

/// What woke the stream's task.
pub enum Wake {
    Read(Result<usize, ReadError>),
    Mail(Outbound),
    Deadline,
    /// A rate-limit pause is over: read again.
    Resume,
}

/// What the framer holds next for the layer above.
pub enum Input {
    /// The peer (re)opened its stream.
    Open(StreamHeader),
    /// A top-level element, wrapped in the stream's namespace context.
    Element(String),
}

/// Whom a stream is with, for log lines: its address and, once known, the
/// name it authenticated as.
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub peer: SocketAddr,
    pub name: Option<&'a dyn Display>,
}

impl Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(name) => write!(f, "{name} from {}", self.peer),
            None => write!(f, "{}", self.peer),
        }
    }
}

/// One XML stream on one connection, whatever it negotiates.
pub struct Stream {
    pub server: Rc<Server>,
    pub peer: SocketAddr,
    /// This connection's entry in the server's registry.
    pub conn_id: u64,
    pub transport: Transport,
    pub framer: Framer,
    /// The peer's current stream header (namespace context for stanzas).
    pub header: Option<StreamHeader>,
    /// Our header for the current stream has been written.
    pub header_sent: bool,
    /// Output not yet written.
    pub out: String,
    /// What the rest of the server sends this stream's peer.
    pub mailbox: Rc<Mailbox>,
    pub guard: Guard,
    /// Input already waited for unwritten replies once (logged once).
    backlog_logged: bool,
}

impl Stream {
    /// A stream on a fresh connection; stanzas up to `max_stanza` bytes.
    pub fn new(
        server: Rc<Server>,
        tcp: TcpStream,
        peer: SocketAddr,
        conn_id: u64,
        mailbox: Rc<Mailbox>,
        max_stanza: usize,
    ) -> Stream {
        let limits = &server.config().limits;
        let framer = Framer::new(xml::Limits {
            max_stanza,
            max_depth: limits.max_depth.into(),
            max_attributes: limits.max_attributes,
            max_namespaces: limits.max_namespaces,
            max_namespaces_in_scope: limits.max_namespaces_in_scope,
        });
        let guard = Guard::new(&server.protection.rate(), Instant::now());
        Stream {
            server,
            peer,
            conn_id,
            transport: Transport::Plain(tcp),
            framer,
            header: None,
            header_sent: false,
            out: String::new(),
            mailbox,
            guard,
            backlog_logged: false,
        }
    }

    /// XEP-0368: TLS from the first byte, within `deadline`.
    pub async fn direct_tls(&mut self, deadline: Instant) -> bool {
        let config = self.server.tls_config();
        let transport = &mut self.transport;
        let peer = self.peer;
        match future::or(async { Some(transport.start_tls(config).await) }, async {
            Timer::at(deadline).await;
            None
        })
        .await
        {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                debug!("{peer}: direct TLS handshake failed: {e}");
                false
            }
            None => {
                debug!("{peer}: direct TLS handshake timed out");
                false
            }
        }
    }

    /// STARTTLS (RFC 6120 §5): the handshake after `<proceed/>` was written.
    pub async fn start_tls(&mut self) -> Result<(), End> {
        let config = self.server.tls_config();
        self.start_tls_with(config).await
    }

    /// [`Stream::start_tls`] with these settings (a stream kind with its own, as s2s asks
    /// peers for their certificates).
    pub async fn start_tls_with(&mut self, config: Arc<rustls::ServerConfig>) -> Result<(), End> {
        if let Err(e) = self.transport.start_tls(config).await {
            debug!("{}: STARTTLS handshake failed: {e}", self.peer);
            return Err(End::Gone);
        }
        Ok(())
    }

    /// Starts a fresh stream (after STARTTLS or authentication): the peer
    /// sends a new header next, and stanzas may be up to `max_stanza` bytes.
    pub fn restart(&mut self, max_stanza: usize) {
        self.framer.reset();
        self.header = None;
        self.header_sent = false;
        self.framer.set_max_stanza(max_stanza);
    }

    /// The session's byte budget: everything queued or held for its peer.
    pub fn budget(&self) -> usize {
        self.server.config().limits.outbound_queue_bytes as usize
    }

    /// Tells the mailbox what this stream holds for the peer besides its
    /// queue: output not yet written (`in_flight` of it taken out for a
    /// write) and `unacked` bytes the layer above keeps until acknowledged.
    pub fn publish_held(&self, in_flight: usize, unacked: usize) {
        self.mailbox.set_held(self.out.len() + in_flight + unacked);
    }

    /// Back-pressure on a peer that asks for more than it reads: no more
    /// input is handled while unwritten output fills half the budget (the
    /// other half stays free for stanzas routed to it), or while output and
    /// `unacked` bytes together would overflow it. The output is written
    /// first; a peer that does not read it is cut off by the write timeout,
    /// one that reads but never acknowledges by the layer keeping `unacked`.
    pub fn output_backlog(&mut self, unacked: usize, who: Who<'_>) -> bool {
        let budget = self.budget();
        let unwritten = self.out.len() + self.mailbox.queued_bytes();
        let over = unwritten >= budget / 2 || unwritten + unacked > budget;
        if over && !self.backlog_logged {
            self.backlog_logged = true;
            info!(
                "{who}: {} bytes of output waiting, input paused until it is written",
                unwritten + unacked
            );
        }
        over
    }

    /// The next element or header the framer holds, skipping whitespace.
    pub fn next_input(&mut self) -> Result<Option<Input>, End> {
        loop {
            return match self.framer.next() {
                Err(e) => Err(framer_end(e)),
                Ok(None) => Ok(None),
                Ok(Some(Event::Whitespace)) => continue,
                Ok(Some(Event::StreamClose)) => Err(End::PeerClosed),
                Ok(Some(Event::StreamOpen(header))) => Ok(Some(Input::Open(header))),
                Ok(Some(Event::Stanza(text))) => match &self.header {
                    Some(header) => Ok(Some(Input::Element(header.wrap(text)))),
                    None => Err(End::Error(StreamCondition::BadFormat, None)),
                },
            };
        }
    }

    /// Waits for input (unless reading is paused), mail for the peer, or
    /// `deadline`, whichever comes first. Input goes straight into the framer.
    pub async fn wait(&mut self, deadline: Instant) -> Wake {
        self.wait_for(deadline, true).await
    }

    /// [`Stream::wait`] leaving the mailbox alone: while a stream negotiates, what is
    /// queued for its peer waits.
    pub async fn wait_input(&mut self, deadline: Instant) -> Wake {
        self.wait_for(deadline, false).await
    }

    async fn wait_for(&mut self, deadline: Instant, take_mail: bool) -> Wake {
        let (paused_until, input_waiting) = (self.guard.paused_until, self.guard.input_waiting);
        let transport = &mut self.transport;
        let framer = &mut self.framer;
        let mailbox = &self.mailbox;
        let read = async {
            match paused_until {
                Some(until) => {
                    Timer::at(until).await;
                    Wake::Resume
                }
                // The pause was paid back by the time the read was charged.
                None if input_waiting => Wake::Resume,
                None => future::poll_fn(|cx| transport.poll_fill(cx, framer).map(Wake::Read)).await,
            }
        };
        let mail = async {
            if take_mail {
                future::poll_fn(|cx| mailbox.poll_recv(cx).map(Wake::Mail)).await
            } else {
                future::pending().await
            }
        };
        let deadline = async {
            Timer::at(deadline).await;
            Wake::Deadline
        };
        future::or(mail, future::or(read, deadline)).await
    }

    /// A stanza from the mailbox, then whatever else is queued up to one
    /// write batch, each handed to `deliver` to be written to the output (or
    /// held back). Storable ones are kept until written: the no-loss rule.
    pub fn take_mail(
        &mut self,
        xml: Rc<str>,
        storable: bool,
        hold: crate::router::Hold,
        mut deliver: impl FnMut(Rc<str>, crate::router::Hold, &mut String),
    ) {
        let unwritten = &mut self.guard.unwritten;
        let mut take = |xml: Rc<str>, storable: bool, hold, out: &mut String| {
            if storable {
                unwritten.push(xml.clone());
            }
            deliver(xml, hold, out);
        };
        take(xml, storable, hold, &mut self.out);
        self.mailbox
            .take_queued(&mut self.out, WRITE_BATCH_BYTES, take);
    }

    /// Ends the stream on the wire: writes what is left in the output (a
    /// peer that does not read gets 5 s), closes the write side, then reads
    /// and drops input for a moment.
    pub async fn close(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut self.out);
        let write = self.transport.write_all(out.as_bytes());
        // A peer that does not read must not hold the task forever.
        let _ = future::or(async { write.await.ok() }, async {
            Timer::after(Duration::from_secs(5)).await;
            None
        })
        .await;
        self.transport.shutdown().await;
        // Unread input would turn our close into a TCP reset that can
        // destroy the stream error before the peer reads it. Not when
        // overloaded: then sockets must be freed at once.
        let limit = self.server.config().limits.max_connections as usize;
        if self.server.connection_count() <= limit {
            self.transport.discard_input(LINGER_BYTES, LINGER).await;
        }
    }

    /// A failed read or write: the connection is lost. The kernel aborting it
    /// because sent data went unacknowledged (TCP_USER_TIMEOUT; reported as a
    /// timeout, or as the host being unreachable when address resolution failed
    /// meanwhile) is the keepalive finding a vanished host, and counted as such.
    pub fn lost(&self, error: &io::Error, who: Who<'_>) -> End {
        use io::ErrorKind::{HostUnreachable, NetworkUnreachable, TimedOut};
        if matches!(
            error.kind(),
            TimedOut | HostUnreachable | NetworkUnreachable
        ) {
            info!("{who}: the peer stopped acknowledging ({error})");
            Counters::bump(&self.server.protection.counters.idle_timeouts);
        }
        End::Gone
    }

    /// Writes what is waiting in the output (see [`Stream::write_raw`]).
    pub async fn flush_out(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let who = Who {
            peer: self.peer,
            name: None,
        };
        self.write_raw(out.as_bytes(), 0, who).await
    }

    /// Writes to the peer, giving up (and ending the stream) when the write
    /// blocks longer than `keepalive.write_timeout_secs`.
    pub async fn write_raw(
        &mut self,
        bytes: &[u8],
        unacked: usize,
        who: Who<'_>,
    ) -> Result<(), End> {
        let timeout = Duration::from_secs(self.server.config().keepalive.write_timeout_secs.into());
        self.publish_held(bytes.len(), unacked);
        let transport = &mut self.transport;
        let written = future::or(async { Some(transport.write_all(bytes).await) }, async {
            Timer::after(timeout).await;
            None
        })
        .await;
        self.publish_held(0, unacked);
        match written {
            Some(Ok(())) => {
                self.guard.unwritten = Vec::new();
                Ok(())
            }
            Some(Err(error)) => Err(self.lost(&error, who)),
            None => {
                info!("{who}: write blocked too long, closing");
                Counters::bump(&self.server.protection.counters.write_timeouts);
                Err(End::Gone)
            }
        }
    }
}

pub fn framer_end(e: FramerError) -> End {
    let condition = match e {
        FramerError::NotWellFormed => StreamCondition::NotWellFormed,
        FramerError::RestrictedXml => StreamCondition::RestrictedXml,
        FramerError::PolicyViolation => StreamCondition::PolicyViolation,
        FramerError::InvalidNamespace => StreamCondition::InvalidNamespace,
        FramerError::BadFormat => StreamCondition::BadFormat,
        FramerError::UnsupportedEncoding => StreamCondition::UnsupportedEncoding,
    };
    End::Error(condition, None)
}
