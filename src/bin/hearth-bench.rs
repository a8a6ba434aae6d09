//! hearth-bench: a load generator and meter for a running hearth server
//! (see docs/PERFORMANCE.md and benches/run.sh).
//!
//! It owns only client-side work: provisioning bench accounts straight into
//! the store (before the server starts), logging in over direct TLS
//! (XEP-0368) with SCRAM-SHA-256, pushing chat messages and reading the
//! server's RSS and CPU time from /proc. It never changes the server.
//!
//! Cheap by design, because it shares the machine's cores with the server:
//! one thread, one smol executor for every connection, message bytes built
//! from a pre-rendered prefix and suffix, and after login no XML parsing at
//! all — replies are found by scanning for `</message>` and the body's
//! send timestamp (nanoseconds since the tool started).
//!
//! Accounts are `u0`, `u1`, … with password `bench`. `setup` derives the
//! SCRAM credentials ONCE at the default iteration count and stores the
//! same bytes for every account, so logins cost the server what real
//! logins cost while provisioning 10,000 accounts takes a second.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use hearth::s2s::certs::AnyCertificate;
use hearth::sasl::client::ScramClient;
use hearth::sasl::{base64, Credentials, Mechanism, DEFAULT_ITERATIONS};
use hearth::store::{Store, DEFAULT_CACHE_BYTES};
use hearth::xml::{Event, Framer, Limits};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use smol::net::TcpStream;
use smol::{LocalExecutor, Timer};
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[path = "hearth-bench/federation.rs"]
mod federation;

const PASSWORD: &str = "bench";
const RESOURCE: &str = "b";

type Tls = TlsStream<TcpStream>;
type Res<T> = Result<T, String>;

const USAGE: &str = "\
usage: hearth-bench setup --data-dir DIR --accounts N
       hearth-bench [--addr A] [--domain D] --pid PID MODE [options]
modes:
  idle                                  server RSS and CPU now
  sessions N                            log in N idle sessions, RSS per session
  throughput [--pairs P] [--messages M] [--window W]
  latency [--pairs P] [--rate R] [--seconds S]
  login [--count N] [--concurrency C]
  offline [--messages N] [--senders S] [--rate R]
  s2s --peer-addr A --peer-domain D --peer-pid PID [--pairs P] [--messages M] [--window W]
      [--rate R --seconds S]            senders on this server, receivers on the peer (federated)
  s2s-peers --peers D1,D2,…             server RSS per idle federated peer (first one: warm-up)
  startup --hearth BIN --config FILE --accounts N [--runs K]
                                        (connects to the address the server logs)
  parse [--bytes B] [--runs K] [--seeds DIR]
                                        framer+parse time per adversarial shape (no server);
                                        --seeds writes each shape as a framer fuzz seed
defaults: --addr 127.0.0.1:5223 --domain localhost";

#[derive(Clone)]
struct Opts {
    addr: SocketAddr,
    domain: String,
    pid: u32,
    /// The other server of a federated run (`s2s`).
    peer_addr: Option<SocketAddr>,
    peer_domain: String,
    peer_pid: u32,
    /// Peer domains for `s2s-peers`.
    peers: Vec<String>,
    mode: String,
    n: usize,
    pairs: usize,
    messages: usize,
    window: usize,
    rate: f64,
    seconds: f64,
    concurrency: usize,
    senders: usize,
    data_dir: Option<PathBuf>,
    hearth: Option<PathBuf>,
    config: Option<PathBuf>,
    runs: usize,
    bytes: usize,
    seeds: Option<PathBuf>,
}

fn parse_args() -> Res<Opts> {
    use lexopt::prelude::*;
    let mut o = Opts {
        addr: SocketAddr::from(([127, 0, 0, 1], 5223)),
        domain: "localhost".into(),
        pid: 0,
        peer_addr: None,
        peer_domain: String::new(),
        peer_pid: 0,
        peers: Vec::new(),
        mode: String::new(),
        n: 0,
        pairs: 50,
        messages: 0,
        window: 64,
        rate: 0.0,
        seconds: 10.0,
        concurrency: 32,
        senders: 20,
        data_dir: None,
        hearth: None,
        config: None,
        runs: 3,
        bytes: 256 * 1024,
        seeds: None,
    };
    let mut p = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| e.to_string();
    fn num<T: std::str::FromStr>(p: &mut lexopt::Parser) -> Res<T> {
        let v = p.value().map_err(|e| e.to_string())?;
        v.to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad number {v:?}"))
    }
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Long("addr") => o.addr = num(&mut p)?,
            Long("domain") => o.domain = p.value().map_err(err)?.string().map_err(err)?,
            Long("pid") => o.pid = num(&mut p)?,
            Long("peer-addr") => o.peer_addr = Some(num(&mut p)?),
            Long("peer-domain") => o.peer_domain = p.value().map_err(err)?.string().map_err(err)?,
            Long("peer-pid") => o.peer_pid = num(&mut p)?,
            Long("peers") => {
                let list = p.value().map_err(err)?.string().map_err(err)?;
                o.peers = list.split(',').map(str::to_owned).collect();
            }
            Long("pairs") => o.pairs = num(&mut p)?,
            Long("messages") => o.messages = num(&mut p)?,
            Long("window") => o.window = num(&mut p)?,
            Long("rate") => o.rate = num(&mut p)?,
            Long("seconds") => o.seconds = num(&mut p)?,
            Long("count") | Long("accounts") => o.n = num(&mut p)?,
            Long("concurrency") => o.concurrency = num(&mut p)?,
            Long("senders") => o.senders = num(&mut p)?,
            Long("runs") => o.runs = num(&mut p)?,
            Long("bytes") => o.bytes = num(&mut p)?,
            Long("seeds") => o.seeds = Some(p.value().map_err(err)?.into()),
            Long("data-dir") => o.data_dir = Some(p.value().map_err(err)?.into()),
            Long("hearth") => o.hearth = Some(p.value().map_err(err)?.into()),
            Long("config") => o.config = Some(p.value().map_err(err)?.into()),
            Long("help") | Short('h') => return Err(USAGE.into()),
            Value(v) if o.mode.is_empty() => o.mode = v.string().map_err(err)?,
            Value(v) if o.mode == "sessions" && o.n == 0 => {
                o.n = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad session count")?
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(o)
}

fn main() {
    let result = parse_args().and_then(|o| {
        raise_fd_limit();
        match o.mode.as_str() {
            "setup" => setup(&o),
            "startup" => startup(&o),
            "parse" => parse_mode(&o),
            "" => Err(USAGE.into()),
            _ => {
                let ex = Rc::new(LocalExecutor::new());
                smol::block_on(ex.run(run_mode(ex.clone(), Rc::new(o))))
            }
        }
    });
    if let Err(e) = result {
        eprintln!("hearth-bench: {e}");
        std::process::exit(1);
    }
}

/// How long the event loop is held by one stanza of each adversarial shape
/// at `--bytes` (the default stanza limit): framer, namespace wrapping and
/// parse, as a connection runs them. The thread's CPU time (preemption by
/// other load on the machine does not count), median of `--runs`.
fn parse_mode(o: &Opts) -> Res<()> {
    use hearth::xml::adversarial::{frame_and_parse, shapes, HEADER};
    let limits = Limits::new(o.bytes, 32);
    let mut rows = Vec::new();
    let mut worst = 0.0f64;
    for shape in shapes(o.bytes) {
        if let Some(dir) = &o.seeds {
            // The framer target's format: chunk size byte, then the stream.
            let seed = [&[7u8][..], HEADER.as_bytes(), shape.stanza.as_bytes()].concat();
            let path = dir.join(format!("adversarial-{}", shape.name));
            std::fs::write(&path, seed).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let mut times = Vec::new();
        for _ in 0..o.runs.max(1) {
            let started = thread_cpu_ns();
            let outcome = frame_and_parse(limits, &shape.stanza);
            times.push(thread_cpu_ns().saturating_sub(started));
            if outcome != shape.expect {
                return Err(format!(
                    "{}: {outcome:?}, expected {:?}",
                    shape.name, shape.expect
                ));
            }
        }
        times.sort_unstable();
        let median = percentile(&times, 0.5) / 1000.0;
        worst = worst.max(median);
        rows.push((format!("{}_us", shape.name), median));
    }
    rows.push(("worst_us".into(), worst));
    let rows: Vec<(&str, f64)> = rows.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    report("parse", &rows);
    Ok(())
}

/// CPU time of the calling thread in nanoseconds.
#[allow(unsafe_code)]
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

/// 10,000 connections need as many descriptors: lift the soft limit to
/// the hard one.
#[allow(unsafe_code)]
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn user(i: usize) -> String {
    format!("u{i}")
}

/// Creates accounts u0..uN-1 that do not exist yet (server must be stopped).
fn setup(o: &Opts) -> Res<()> {
    let dir = o.data_dir.as_ref().ok_or("setup needs --data-dir")?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| e.to_string())?;
    }
    let store = Store::open(dir, DEFAULT_CACHE_BYTES).map_err(|e| e.to_string())?;
    let credentials = Credentials::derive(PASSWORD, DEFAULT_ITERATIONS)
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    let names: Vec<String> = (0..o.n).map(user).collect();
    let added = store
        .create_users(names.iter().map(String::as_str), &credentials)
        .map_err(|e| e.to_string())?;
    store.close();
    println!("setup: {added} accounts added ({} requested)", o.n);
    Ok(())
}

// ---------------------------------------------------------------- metering

fn now_ns() -> u64 {
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// utime+stime of a process in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

#[allow(unsafe_code)]
fn tick_us() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1e6 / if hz > 0 { hz as f64 } else { 100.0 }
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `… kB` field of /proc/PID/status (`VmRSS:`, `RssAnon:`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU of the server and of this tool over one measured interval.
struct CpuMeter {
    pid: String,
    server0: u64,
    me0: u64,
    t0: Instant,
}

impl CpuMeter {
    fn start(pid: u32) -> CpuMeter {
        let pid = pid.to_string();
        CpuMeter {
            server0: cpu_ticks(&pid),
            me0: cpu_ticks("self"),
            pid,
            t0: Instant::now(),
        }
    }
    /// (server CPU µs, generator CPU µs, wall seconds)
    fn stop(&self) -> (f64, f64, f64) {
        let t = tick_us();
        (
            (cpu_ticks(&self.pid) - self.server0) as f64 * t,
            (cpu_ticks("self") - self.me0) as f64 * t,
            self.t0.elapsed().as_secs_f64(),
        )
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let i = (last as f64 * p).round() as usize;
    sorted.get(i.min(last)).map_or(f64::NAN, |&v| v as f64)
}

/// Prints the figures as a table, then as one JSON line.
fn report(mode: &str, rows: &[(&str, f64)]) {
    println!("== {mode}");
    for (k, v) in rows {
        println!("  {k:<28} {v:>14.2}");
    }
    let mut json = format!("{{\"mode\":\"{mode}\"");
    for (k, v) in rows {
        if v.is_finite() {
            let _ = write!(json, ",\"{k}\":{v:.3}");
        } else {
            let _ = write!(json, ",\"{k}\":null");
        }
    }
    json.push('}');
    println!("{json}");
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------- client

fn client_config() -> Res<Arc<ClientConfig>> {
    let provider = hearth::tls::provider();
    // Accepts the server's (self-signed) certificate but still checks the handshake
    // signatures, so the client does the work a real one does.
    let verifier = Arc::new(AnyCertificate::new(&provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    // Every login is a full handshake, as for a client that just started.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

struct Ctx {
    opts: Rc<Opts>,
    tls: Arc<ClientConfig>,
}

fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// The text content of a simple element such as `<challenge …>TEXT</challenge>`.
fn inner(element: &str) -> &str {
    let Some((open, body)) = element.split_once('>') else {
        return "";
    };
    if open.ends_with('/') {
        return "";
    }
    body.rsplit_once("</").map_or(body, |(text, _)| text)
}

/// Reads until the framer yields a stanza accepted by `pick`.
async fn read_until(
    tls: &mut Tls,
    framer: &mut Framer,
    buf: &mut [u8],
    mut pick: impl FnMut(&str) -> Res<Option<String>>,
) -> Res<String> {
    loop {
        loop {
            match framer.next().map_err(|e| format!("server XML: {e}"))? {
                None => break,
                Some(Event::Stanza(text)) => {
                    if let Some(found) = pick(text)? {
                        return Ok(found);
                    }
                }
                Some(Event::StreamClose) => return Err("server closed the stream".into()),
                Some(_) => {}
            }
        }
        let n = tls.read(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("server closed the connection".into());
        }
        let read = buf.get(..n).ok_or("read past the buffer")?;
        framer.push(read).map_err(|e| format!("server XML: {e}"))?;
    }
}

/// TCP + TLS 1.3 + SCRAM-SHA-256 + bind + initial presence, confirmed by
/// a ping round trip so the session is fully set up when this returns.
async fn login(ctx: &Ctx, account: &str) -> Res<Tls> {
    let tcp = TcpStream::connect(ctx.opts.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(ctx.opts.domain.clone()).map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(ctx.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut scram =
        ScramClient::new(Mechanism::ScramSha256, account, PASSWORD).ok_or("SCRAM client")?;
    let header = stream_header(&ctx.opts.domain);
    let mut framer = Framer::new(Limits::new(1 << 20, 64));
    let mut buf = vec![0u8; 4096];
    let out = format!(
        "{header}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
        base64::encode(&scram.first())
    );
    send(&mut tls, out.as_bytes()).await?;
    let sasl = |want: &'static str| {
        move |text: &str| -> Res<Option<String>> {
            if text.starts_with("<failure") {
                return Err(format!("SASL failure: {text}"));
            }
            Ok(text.starts_with(want).then(|| inner(text).to_owned()))
        }
    };
    let challenge = read_until(&mut tls, &mut framer, &mut buf, sasl("<challenge")).await?;
    let challenge = base64::decode(challenge.trim()).ok_or("challenge base64")?;
    let response = scram.handle_server_first(&challenge)?;
    let out = format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        base64::encode(&response)
    );
    send(&mut tls, out.as_bytes()).await?;
    let success = read_until(&mut tls, &mut framer, &mut buf, sasl("<success")).await?;
    let success = base64::decode(success.trim()).ok_or("success base64")?;
    if !scram.verify_server_final(&success) {
        return Err("server signature does not verify".into());
    }
    framer.reset();
    let out = format!(
        "{header}<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{RESOURCE}</resource></bind></iq><presence/>\
         <iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"
    );
    send(&mut tls, out.as_bytes()).await?;
    read_until(&mut tls, &mut framer, &mut buf, |text| {
        if text.starts_with("<iq") && text.contains("type='error'") {
            return Err(format!("bind failed: {text}"));
        }
        Ok((text.starts_with("<iq") && text.contains("id='p'")).then(String::new))
    })
    .await?;
    Ok(tls)
}

async fn send(tls: &mut Tls, bytes: &[u8]) -> Res<()> {
    tls.write_all(bytes).await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())
}

/// Logs in accounts `first..first+count` with at most `concurrency` logins
/// in flight; returns the streams in account order.
async fn login_many(
    ex: &Rc<LocalExecutor<'static>>,
    ctx: &Rc<Ctx>,
    first: usize,
    count: usize,
    concurrency: usize,
) -> Res<Vec<Tls>> {
    let next = Rc::new(Cell::new(0usize));
    // Each stream with its index, put back in account order at the end.
    let done: Rc<RefCell<Vec<(usize, Tls)>>> = Rc::new(RefCell::new(Vec::with_capacity(count)));
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (ctx, next, done) = (ctx.clone(), next.clone(), done.clone());
        workers.push(ex.spawn(async move {
            loop {
                let i = next.get();
                if i >= count {
                    return Ok::<(), String>(());
                }
                next.set(i + 1);
                let account = user(first + i);
                let tls = login(&ctx, &account)
                    .await
                    .map_err(|e| format!("{account}: {e}"))?;
                done.borrow_mut().push((i, tls));
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let mut streams = done.take();
    streams.sort_unstable_by_key(|&(i, _)| i);
    Ok(streams.into_iter().map(|(_, tls)| tls).collect())
}

async fn close_all(streams: Vec<Tls>) {
    for mut tls in streams {
        let _ = tls.write_all(b"</stream:stream>").await;
        let _ = tls.close().await;
    }
}

// ---------------------------------------------------------------- messages

/// Counters shared by every reader and sender of a run.
#[derive(Default)]
struct Stats {
    sent: Cell<u64>,
    received: Cell<u64>,
    errors: Cell<u64>,
    /// Latencies in µs of the messages received inside the sample window.
    latencies: RefCell<Vec<u64>>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = hay.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if hay.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The bytes before the first `needle` in `hay` and those after it.
fn split_around<'a>(hay: &'a [u8], needle: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let (before, from) = hay.split_at_checked(find(hay, needle)?)?;
    Some((before, from.strip_prefix(needle)?))
}

/// Counts delivered messages and their latency; returns a credit to the
/// sender for each; flags `done` when the `id='z'` ping result arrives.
async fn reader(
    mut rd: ReadHalf<Tls>,
    stats: Rc<Stats>,
    credits: Option<Sender<()>>,
    done: Rc<Cell<bool>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(read) = buf.get(..n) else {
            return;
        };
        carry.extend_from_slice(read);
        let now = now_ns();
        let mut rest = carry.as_slice();
        while let Some((message, after)) = split_around(rest, b"</message>") {
            if find(message, b"type='error'").is_some() {
                stats.errors.set(stats.errors.get() + 1);
            } else if let Some((_, body)) = split_around(message, b"<body>") {
                let digits = body
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
                stats
                    .latencies
                    .borrow_mut()
                    .push(now.saturating_sub(digits) / 1000);
                stats.received.set(stats.received.get() + 1);
                if let Some(credits) = &credits {
                    let _ = credits.try_send(());
                }
            }
            rest = after;
        }
        let used = carry.len() - rest.len();
        carry.drain(..used);
        if find(&carry, b"id='z'").is_some() {
            done.set(true);
            carry.clear();
        }
    }
}

/// A sender's pre-rendered message: prefix, timestamp, suffix.
struct Template {
    prefix: Vec<u8>,
}

impl Template {
    fn new(domain: &str, to: usize) -> Template {
        Template {
            prefix: format!(
                "<message to='{}@{domain}/{RESOURCE}' type='chat'><body>",
                user(to)
            )
            .into_bytes(),
        }
    }
    fn render(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        let _ = write!(out, "{}", now_ns());
        out.extend_from_slice(b"</body></message>");
    }
}

async fn write(wr: &mut WriteHalf<Tls>, bytes: &[u8]) -> bool {
    wr.write_all(bytes).await.is_ok() && wr.flush().await.is_ok()
}

/// Sends `count` messages, never more than the credits allow in flight;
/// batches whatever credits are available into one write.
async fn window_sender(
    mut wr: WriteHalf<Tls>,
    template: Template,
    count: u64,
    credits: Receiver<()>,
    stats: Rc<Stats>,
) -> WriteHalf<Tls> {
    let mut batch = Vec::with_capacity(4096);
    let mut sent = 0;
    while sent < count {
        if credits.recv().await.is_err() {
            break;
        }
        let mut k = 1;
        while k < 32 && sent + k < count && credits.try_recv().is_ok() {
            k += 1;
        }
        batch.clear();
        for _ in 0..k {
            template.render(&mut batch);
        }
        if !write(&mut wr, &batch).await {
            break;
        }
        sent += k;
        stats.sent.set(stats.sent.get() + k);
    }
    wr
}

/// Sends one message per `period` until `until`.
async fn paced_sender(
    mut wr: WriteHalf<Tls>,
    template: Template,
    period: Duration,
    offset: Duration,
    until: Instant,
    stats: Rc<Stats>,
) -> WriteHalf<Tls> {
    let mut batch = Vec::with_capacity(256);
    let mut next = Instant::now() + offset;
    while next < until {
        Timer::at(next).await;
        next += period;
        batch.clear();
        template.render(&mut batch);
        if !write(&mut wr, &batch).await {
            break;
        }
        stats.sent.set(stats.sent.get() + 1);
    }
    wr
}

/// Waits until every sent message arrived or nothing arrived for 5 s.
async fn drain(stats: &Stats) {
    let mut last = (stats.received.get(), Instant::now());
    while stats.received.get() + stats.errors.get() < stats.sent.get() {
        Timer::after(Duration::from_millis(5)).await;
        if stats.received.get() != last.0 {
            last = (stats.received.get(), Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
}

fn latency_rows(stats: &Stats) -> [(&'static str, f64); 3] {
    let mut l = stats.latencies.borrow_mut();
    l.sort_unstable();
    [
        ("latency_p50_us", percentile(&l, 0.50)),
        ("latency_p99_us", percentile(&l, 0.99)),
        ("latency_max_us", percentile(&l, 1.0)),
    ]
}

// ---------------------------------------------------------------- modes

async fn run_mode(ex: Rc<LocalExecutor<'static>>, opts: Rc<Opts>) -> Res<()> {
    if opts.pid == 0 {
        return Err("--pid of the server is required".into());
    }
    let ctx = Rc::new(Ctx {
        opts: opts.clone(),
        tls: client_config()?,
    });
    let pid = opts.pid;
    match opts.mode.as_str() {
        "idle" => {
            let cpu = CpuMeter::start(pid);
            report(
                "idle",
                &[
                    ("server_rss_kib", rss_kib(pid) as f64),
                    ("server_cpu_ticks_total", cpu.server0 as f64),
                ],
            );
            Ok(())
        }
        "sessions" => sessions(&ex, &ctx).await,
        "throughput" => throughput(&ex, &ctx).await,
        "latency" => latency(&ex, &ctx).await,
        "login" => login_mode(&ex, &ctx).await,
        "offline" => offline(&ex, &ctx).await,
        "s2s" => federation::throughput(&ex, &ctx).await,
        "s2s-peers" => federation::idle_peers(&ex, &ctx).await,
        other => Err(format!("unknown mode {other:?}\n{USAGE}")),
    }
}

async fn settle() {
    Timer::after(Duration::from_secs(2)).await;
}

async fn sessions(ex: &Rc<LocalExecutor<'static>>, ctx: &Rc<Ctx>) -> Res<()> {
    let (pid, n) = (ctx.opts.pid, ctx.opts.n.max(1));
    let before = rss_kib(pid);
    let cpu = CpuMeter::start(pid);
    let streams = login_many(ex, ctx, 0, n, ctx.opts.concurrency).await?;
    let (server_us, gen_us, secs) = cpu.stop();
    settle().await;
    let after = rss_kib(pid);
    close_all(streams).await;
    settle().await;
    let closed = rss_kib(pid);
    report(
        "sessions",
        &[
            ("sessions", n as f64),
            ("rss_before_kib", before as f64),
            ("rss_with_sessions_kib", after as f64),
            ("kib_per_session", (after as f64 - before as f64) / n as f64),
            ("rss_after_disconnect_kib", closed as f64),
            ("login_wall_s", secs),
            ("server_cpu_us_per_login", server_us / n as f64),
            ("generator_cpu_us_per_login", gen_us / n as f64),
        ],
    );
    Ok(())
}

/// Logs in 2×pairs sessions; session 2i and 2i+1 are partners.
async fn pair_up(
    ex: &Rc<LocalExecutor<'static>>,
    ctx: &Rc<Ctx>,
    first: usize,
    pairs: usize,
) -> Res<Vec<(ReadHalf<Tls>, WriteHalf<Tls>)>> {
    let streams = login_many(ex, ctx, first, 2 * pairs, ctx.opts.concurrency).await?;
    Ok(streams.into_iter().map(smol::io::split).collect())
}

fn partner(i: usize) -> usize {
    i ^ 1
}

async fn throughput(ex: &Rc<LocalExecutor<'static>>, ctx: &Rc<Ctx>) -> Res<()> {
    let o = &ctx.opts;
    let pairs = o.pairs.max(1);
    let total = if o.messages == 0 { 200_000 } else { o.messages };
    let per_sender = (total / (2 * pairs)).max(1) as u64;
    let halves = pair_up(ex, ctx, 0, pairs).await?;
    let stats = Rc::new(Stats::default());
    // credit[i] carries the window of messages from session i to its partner.
    let credits: Vec<_> = (0..2 * pairs)
        .map(|_| {
            let (tx, rx) = smol::channel::bounded(o.window.max(1));
            for _ in 0..o.window.max(1) {
                let _ = tx.try_send(());
            }
            (tx, rx)
        })
        .collect();
    let done = Rc::new(Cell::new(false));
    let cpu = CpuMeter::start(o.pid);
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for (i, (rd, wr)) in halves.into_iter().enumerate() {
        let p = partner(i);
        // What i reads was sent by its partner: credits go back to p's window.
        let (Some((to_partner, _)), Some((_, own_window))) = (credits.get(p), credits.get(i))
        else {
            return Err(format!("session {i} has no partner"));
        };
        readers.push(ex.spawn(reader(
            rd,
            stats.clone(),
            Some(to_partner.clone()),
            done.clone(),
        )));
        let template = Template::new(&o.domain, p);
        senders.push(ex.spawn(window_sender(
            wr,
            template,
            per_sender,
            own_window.clone(),
            stats.clone(),
        )));
    }
    let mut writers = Vec::new();
    for s in senders {
        writers.push(s.await);
    }
    let (server_us, gen_us, secs) = finish(writers, readers, &stats, &cpu).await;
    let received = stats.received.get() as f64;
    let mut rows = vec![
        ("pairs", pairs as f64),
        ("window", o.window as f64),
        ("sent", stats.sent.get() as f64),
        ("received", received),
        ("lost", stats.sent.get() as f64 - received),
        ("errors", stats.errors.get() as f64),
        ("msgs_per_s", received / secs),
        ("server_cpu_us_per_msg", server_us / received),
        ("generator_cpu_us_per_msg", gen_us / received),
        ("server_cpu_pct", server_us / secs / 1e4),
    ];
    rows.extend(latency_rows(&stats));
    report("throughput", &rows);
    Ok(())
}

/// The end of a run: lets the last messages arrive, reads the CPU meter, then closes every
/// stream. Returns the meter's reading.
async fn finish(
    writers: Vec<WriteHalf<Tls>>,
    readers: Vec<smol::Task<()>>,
    stats: &Stats,
    cpu: &CpuMeter,
) -> (f64, f64, f64) {
    drain(stats).await;
    let reading = cpu.stop();
    close_run(writers, readers).await;
    reading
}

/// Closes every stream of a run and gives its readers a moment to see the close.
async fn close_run(writers: Vec<WriteHalf<Tls>>, readers: Vec<smol::Task<()>>) {
    for mut wr in writers {
        let _ = wr.write_all(b"</stream:stream>").await;
        let _ = wr.close().await;
    }
    for r in readers {
        let _ = smol::future::or(r, async {
            Timer::after(Duration::from_millis(200)).await;
        })
        .await;
    }
}

async fn latency(ex: &Rc<LocalExecutor<'static>>, ctx: &Rc<Ctx>) -> Res<()> {
    let o = &ctx.opts;
    let pairs = o.pairs.max(1);
    let rate = if o.rate > 0.0 { o.rate } else { 5000.0 };
    let halves = pair_up(ex, ctx, 0, pairs).await?;
    let stats = Rc::new(Stats::default());
    let period = Duration::from_secs_f64(2.0 * pairs as f64 / rate);
    let until = Instant::now() + Duration::from_secs_f64(o.seconds);
    let done = Rc::new(Cell::new(false));
    let cpu = CpuMeter::start(o.pid);
    let (mut senders, mut readers) = (Vec::new(), Vec::new());
    for (i, (rd, wr)) in halves.into_iter().enumerate() {
        readers.push(ex.spawn(reader(rd, stats.clone(), None, done.clone())));
        let offset = period.mul_f64(i as f64 / (2 * pairs) as f64);
        let template = Template::new(&o.domain, partner(i));
        senders.push(ex.spawn(paced_sender(
            wr,
            template,
            period,
            offset,
            until,
            stats.clone(),
        )));
    }
    let mut writers = Vec::new();
    for s in senders {
        writers.push(s.await);
    }
    let (server_us, gen_us, secs) = finish(writers, readers, &stats, &cpu).await;
    let received = stats.received.get() as f64;
    let mut rows = vec![
        ("target_rate", rate),
        ("sent", stats.sent.get() as f64),
        ("received", received),
        ("lost", stats.sent.get() as f64 - received),
        ("msgs_per_s", received / secs),
        ("server_cpu_us_per_msg", server_us / received),
        ("generator_cpu_us_per_msg", gen_us / received),
    ];
    rows.extend(latency_rows(&stats));
    report("latency", &rows);
    Ok(())
}

async fn login_mode(ex: &Rc<LocalExecutor<'static>>, ctx: &Rc<Ctx>) -> Res<()> {
    let o = &ctx.opts;
    let n = if o.n == 0 { 500 } else { o.n };
    let cpu = CpuMeter::start(o.pid);
    let streams = login_many(ex, ctx, 0, n, o.concurrency).await?;
    let (server_us, gen_us, secs) = cpu.stop();
    close_all(streams).await;
    report(
        "login",
        &[
            ("logins", n as f64),
            ("logins_per_s", n as f64 / secs),
            ("server_cpu_us_per_login", server_us / n as f64),
            ("generator_cpu_us_per_login", gen_us / n as f64),
        ],
    );
    Ok(())
}

/// Senders u0..uS-1 push messages to offline accounts (u9000 and up, at
/// most 500 each, under the default quota of 1,000); a ping after the last
/// one answers only once every earlier message is committed, because a
/// session handles its stanzas in order. Meanwhile pair uS, uS+1 measures
/// online routing latency at `--rate` (default 500/s).
async fn offline(ex: &Rc<LocalExecutor<'static>>, ctx: &Rc<Ctx>) -> Res<()> {
    const FIRST_TARGET: usize = 9000;
    const PER_TARGET: usize = 500;
    let o = &ctx.opts;
    let total = if o.messages == 0 { 50_000 } else { o.messages };
    let senders_n = o.senders.max(1);
    let per_sender = total / senders_n;
    let pair = pair_up(ex, ctx, senders_n, 1).await?;
    let streams = login_many(ex, ctx, 0, senders_n, o.concurrency).await?;
    let online = Rc::new(Stats::default());
    let stored = Rc::new(Stats::default());
    let rate = if o.rate > 0.0 { o.rate } else { 500.0 };
    let period = Duration::from_secs_f64(2.0 / rate);
    let cpu = CpuMeter::start(o.pid);
    let start = Instant::now();
    let never = Rc::new(Cell::new(false));
    let (mut online_writers, mut online_readers) = (Vec::new(), Vec::new());
    // The online pair runs for a generous time; it is stopped below.
    let until = Instant::now() + Duration::from_secs(3600);
    let stop_at = Rc::new(Cell::new(false));
    for (i, (rd, wr)) in pair.into_iter().enumerate() {
        online_readers.push(ex.spawn(reader(rd, online.clone(), None, never.clone())));
        let template = Template::new(&o.domain, senders_n + partner(i));
        let (stats, stop_at) = (online.clone(), stop_at.clone());
        online_writers.push(ex.spawn(async move {
            let run = paced_sender(wr, template, period, period / 2 * i as u32, until, stats);
            let mut run = std::pin::pin!(run);
            // Stop the paced sender when the offline run ends.
            loop {
                let stopped = smol::future::or(async { Some((&mut run).await) }, async {
                    Timer::after(Duration::from_millis(10)).await;
                    None
                })
                .await;
                if let Some(wr) = stopped {
                    return Some(wr);
                }
                if stop_at.get() {
                    return None;
                }
            }
        }));
    }
    let mut tasks = Vec::new();
    for (s, tls) in streams.into_iter().enumerate() {
        let (rd, mut wr) = smol::io::split(tls);
        let done = Rc::new(Cell::new(false));
        let reader_task = ex.spawn(reader(rd, stored.clone(), None, done.clone()));
        let domain = o.domain.clone();
        let stored = stored.clone();
        tasks.push(ex.spawn(async move {
            let mut batch = Vec::with_capacity(8192);
            let mut i = 0;
            while i < per_sender {
                batch.clear();
                let k = 64.min(per_sender - i);
                for _ in 0..k {
                    let global = s * per_sender + i;
                    let target = FIRST_TARGET + global / PER_TARGET;
                    let _ = write!(
                        batch,
                        "<message to='{}@{domain}' type='chat'><body>offline {global}</body></message>",
                        user(target)
                    );
                    i += 1;
                }
                if !write(&mut wr, &batch).await {
                    return Err("write failed".to_string());
                }
                stored.sent.set(stored.sent.get() + k as u64);
            }
            write(&mut wr, b"<iq type='get' id='z'><ping xmlns='urn:xmpp:ping'/></iq>").await;
            while !done.get() {
                Timer::after(Duration::from_millis(2)).await;
            }
            let elapsed = start.elapsed();
            let _ = wr.write_all(b"</stream:stream>").await;
            let _ = wr.close().await;
            drop(reader_task);
            Ok(elapsed)
        }));
    }
    let mut last = Duration::ZERO;
    for t in tasks {
        last = last.max(t.await?);
    }
    stop_at.set(true);
    let mut writers = Vec::new();
    for w in online_writers {
        writers.extend(w.await);
    }
    let (server_us, gen_us, _) = finish(writers, online_readers, &online, &cpu).await;
    let stored_n = (per_sender * senders_n) as f64;
    let mut rows = vec![
        ("offline_messages", stored_n),
        ("offline_errors", stored.errors.get() as f64),
        ("durable_msgs_per_s", stored_n / last.as_secs_f64()),
        ("server_cpu_us_per_stored", server_us / stored_n),
        ("generator_cpu_us_per_stored", gen_us / stored_n),
        ("online_sent", online.sent.get() as f64),
        (
            "online_lost",
            online.sent.get() as f64 - online.received.get() as f64,
        ),
    ];
    rows.extend(latency_rows(&online));
    report("offline", &rows);
    Ok(())
}

/// Starts `hearth serve` `--runs` times and measures the time until a TCP connection to
/// its first listener succeeds. The address is the one the server logs (`listening for …
/// on ADDR`), so a config with port 0 works and no fixed port is needed.
fn startup(o: &Opts) -> Res<()> {
    let bin = o.hearth.as_ref().ok_or("startup needs --hearth")?;
    let config = o.config.as_ref().ok_or("startup needs --config")?;
    let mut times = Vec::new();
    for _ in 0..o.runs.max(1) {
        let t0 = Instant::now();
        let mut child = std::process::Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let log = ServerLog::read(&mut child);
        let ready = log
            .listening(t0 + Duration::from_secs(10))
            .map(|addr| loop {
                if std::net::TcpStream::connect(addr).is_ok() {
                    break Some(t0.elapsed());
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    break None;
                }
                std::thread::sleep(Duration::from_micros(500));
            });
        let rss = rss_kib(child.id());
        stop_child(&mut child);
        let ready = ready.flatten().ok_or_else(|| {
            format!(
                "server did not start or accept within 10 s; its log:\n{}",
                log.text()
            )
        })?;
        times.push((ready.as_secs_f64() * 1e3, rss));
    }
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = *times.get(times.len() / 2).ok_or("no startup measured")?;
    report(
        "startup",
        &[
            ("accounts", o.n as f64),
            ("runs", times.len() as f64),
            ("startup_ms_median", median.0),
            ("startup_ms_max", times.last().map_or(0.0, |t| t.0)),
            ("rss_at_ready_kib", median.1 as f64),
        ],
    );
    Ok(())
}

/// A started server's stderr, read by a thread of its own so the pipe never fills.
struct ServerLog {
    lines: std::sync::mpsc::Receiver<String>,
    seen: RefCell<String>,
}

impl ServerLog {
    fn read(child: &mut std::process::Child) -> ServerLog {
        use std::io::BufRead as _;
        let (tx, lines) = std::sync::mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        ServerLog {
            lines,
            seen: RefCell::default(),
        }
    }

    /// The address of the first `listening for starttls|direct-tls on ADDR` line, unless
    /// the server exits or `deadline` passes first.
    fn listening(&self, deadline: Instant) -> Option<SocketAddr> {
        loop {
            let wait = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(wait).ok()?;
            let seen = &mut self.seen.borrow_mut();
            seen.push_str(&line);
            seen.push('\n');
            let addr = ["listening for direct-tls on ", "listening for starttls on "]
                .iter()
                .find_map(|prefix| line.split(prefix).nth(1));
            if let Some(addr) = addr.and_then(|a| a.trim().parse().ok()) {
                return Some(addr);
            }
        }
    }

    /// Everything logged so far.
    fn text(&self) -> String {
        let seen = &mut self.seen.borrow_mut();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&line);
            seen.push('\n');
        }
        seen.clone()
    }
}

#[allow(unsafe_code)]
fn stop_child(child: &mut std::process::Child) {
    // SAFETY: signalling our own child by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}
