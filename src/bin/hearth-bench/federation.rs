//! The federation modes of hearth-bench (issue 13): messages from one server's users to
//! another server's users over a server-to-server stream (`s2s`), and the memory a server
//! spends on each idle federated peer (`s2s-peers`). The servers are started and routed to
//! each other by the caller (benches/run.sh); these modes only log in, send and measure.

use super::*;

/// The peer server of a federated run as a [`Ctx`] of its own, so the client-side
/// machinery (logins, readers, senders) works on it unchanged.
fn peer_ctx(ctx: &Ctx) -> Res<Rc<Ctx>> {
    let o = &ctx.opts;
    let addr = o.peer_addr.ok_or("s2s needs --peer-addr")?;
    if o.peer_domain.is_empty() || o.peer_pid == 0 {
        return Err("s2s needs --peer-domain and --peer-pid".into());
    }
    Ok(Rc::new(Ctx {
        opts: Rc::new(Opts {
            addr,
            domain: o.peer_domain.clone(),
            pid: o.peer_pid,
            ..Opts::clone(o)
        }),
        tls: ctx.tls.clone(),
    }))
}

/// Sender i is `u{i}` on this server, receiver i is `u{i}` on the peer; every message
/// crosses the one outgoing stream from this server to the peer. With `--rate` the senders
/// keep that total rate for `--seconds` (latency); without, each keeps `--window` messages
/// in flight until `--messages` are sent (capacity). Bounces (a full s2s queue, an
/// unreachable peer) come back to the senders as errors and are counted.
pub async fn throughput(ex: &Rc<LocalExecutor<'static>>, ctx: &Rc<Ctx>) -> Res<()> {
    let o = &ctx.opts;
    let peer = peer_ctx(ctx)?;
    let pairs = o.pairs.max(1);
    let window = o.window.max(1);
    let total = if o.messages == 0 { 200_000 } else { o.messages };
    let per_sender = (total / pairs).max(1) as u64;
    let paced = o.rate > 0.0;
    let (period, pace) = if paced {
        let period = Duration::from_secs_f64(pairs as f64 / o.rate);
        (period, ("target_rate", o.rate))
    } else {
        (Duration::ZERO, ("window", window as f64))
    };
    let senders = login_many(ex, ctx, 0, pairs, o.concurrency).await?;
    let receivers = login_many(ex, &peer, 0, pairs, o.concurrency).await?;
    let stats = Rc::new(Stats::default());
    let done = Rc::new(Cell::new(false));
    let until = Instant::now() + Duration::from_secs_f64(o.seconds);
    let (cpu_a, cpu_b) = (CpuMeter::start(o.pid), CpuMeter::start(peer.opts.pid));
    let (mut sending, mut idle_writers, mut readers) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (sender, receiver)) in senders.into_iter().zip(receivers).enumerate() {
        let (credit, credits) = smol::channel::bounded(window);
        for _ in 0..window {
            let _ = credit.try_send(());
        }
        let (rd, wr) = smol::io::split(receiver);
        let credit = (!paced).then_some(credit);
        readers.push(ex.spawn(reader(rd, stats.clone(), credit, done.clone())));
        idle_writers.push(wr);
        let (rd, wr) = smol::io::split(sender);
        readers.push(ex.spawn(reader(rd, stats.clone(), None, done.clone())));
        let template = Template::new(&peer.opts.domain, i);
        sending.push(if paced {
            let offset = period.mul_f64(i as f64 / pairs as f64);
            ex.spawn(paced_sender(
                wr,
                template,
                period,
                offset,
                until,
                stats.clone(),
            ))
        } else {
            ex.spawn(window_sender(
                wr,
                template,
                per_sender,
                credits,
                stats.clone(),
            ))
        });
    }
    for s in sending {
        idle_writers.push(s.await);
    }
    drain(&stats).await;
    let (a_us, gen_us, secs) = cpu_a.stop();
    let (b_us, _, _) = cpu_b.stop();
    close_run(idle_writers, readers).await;
    let received = stats.received.get() as f64;
    let mut rows = vec![
        ("pairs", pairs as f64),
        pace,
        ("sent", stats.sent.get() as f64),
        ("received", received),
        ("lost", stats.sent.get() as f64 - received),
        ("errors", stats.errors.get() as f64),
        ("msgs_per_s", received / secs),
        ("sending_server_cpu_us_per_msg", a_us / received),
        ("receiving_server_cpu_us_per_msg", b_us / received),
        ("both_servers_cpu_us_per_msg", (a_us + b_us) / received),
        ("generator_cpu_us_per_msg", gen_us / received),
        ("sending_server_cpu_pct", a_us / secs / 1e4),
        ("receiving_server_cpu_pct", b_us / secs / 1e4),
    ];
    rows.extend(latency_rows(&stats));
    report(if paced { "s2s_latency" } else { "s2s" }, &rows);
    Ok(())
}

/// What a server holds in memory and descriptors at one moment.
struct Footprint {
    rss_kib: f64,
    anon_kib: f64,
    sockets: f64,
}

impl Footprint {
    fn of(pid: u32) -> Footprint {
        let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0);
        Footprint {
            rss_kib: rss_kib(pid) as f64,
            anon_kib: status_kib(pid, "RssAnon:") as f64,
            sockets: sockets as f64,
        }
    }
}

/// One session on this server pings each peer domain of `--peers` (XEP-0199, to the
/// server itself): the ping opens our outgoing stream (dialback-verified by the peer
/// calling back), the answer comes over the peer's outgoing stream, so an answered ping
/// means both streams are up. The first peer is a warm-up (it faults in the federation
/// code and TLS client side, which every later peer shares); the figure per peer is the
/// growth from it to all of them, after the server has settled.
pub async fn idle_peers(_ex: &Rc<LocalExecutor<'static>>, ctx: &Rc<Ctx>) -> Res<()> {
    let o = &ctx.opts;
    let (first, rest) = o
        .peers
        .split_first()
        .filter(|(_, rest)| !rest.is_empty())
        .ok_or("s2s-peers needs --peers with at least two domains")?;
    let mut tls = login(ctx, &user(0)).await?;
    let mut answers = Answers::new(&o.domain);
    settle().await;
    let none = Footprint::of(o.pid);
    ping_all(&mut tls, &mut answers, std::slice::from_ref(first)).await?;
    settle().await;
    let warm = Footprint::of(o.pid);
    let started = Instant::now();
    ping_all(&mut tls, &mut answers, rest).await?;
    let connect_s = started.elapsed().as_secs_f64();
    settle().await;
    let all = Footprint::of(o.pid);
    close_all(vec![tls]).await;
    let k = rest.len() as f64;
    report(
        "s2s_peers",
        &[
            ("peers", o.peers.len() as f64),
            ("rss_no_peer_kib", none.rss_kib),
            ("rss_first_peer_kib", warm.rss_kib),
            ("rss_all_peers_kib", all.rss_kib),
            ("first_peer_kib", warm.rss_kib - none.rss_kib),
            ("kib_per_peer", (all.rss_kib - warm.rss_kib) / k),
            ("anon_kib_per_peer", (all.anon_kib - warm.anon_kib) / k),
            ("sockets_per_peer", (all.sockets - warm.sockets) / k),
            ("connect_all_s", connect_s),
        ],
    );
    Ok(())
}

/// Reads what the server sends a session after login (its stream header is already
/// consumed, so the framer is primed with one of ours).
struct Answers {
    framer: Framer,
    buf: Vec<u8>,
}

impl Answers {
    fn new(domain: &str) -> Answers {
        let mut framer = Framer::new(Limits::new(1 << 20, 64));
        let _ = framer.push(stream_header(domain).as_bytes());
        Answers {
            framer,
            buf: vec![0u8; 4096],
        }
    }
}

/// Pings every domain in one write and waits (at most 60 s) until each has answered.
async fn ping_all(tls: &mut Tls, answers: &mut Answers, domains: &[String]) -> Res<()> {
    let mut out = String::new();
    for (i, domain) in domains.iter().enumerate() {
        let _ = write!(
            out,
            "<iq type='get' to='{domain}' id='s2s-{i}'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
    }
    send(tls, out.as_bytes()).await?;
    let waiting = Cell::new(domains.len());
    let read = async {
        while waiting.get() > 0 {
            let Answers { framer, buf } = answers;
            read_until(tls, framer, buf, |text| {
                if !text.starts_with("<iq") || !text.contains("id='s2s-") {
                    return Ok(None);
                }
                if text.contains("type='error'") {
                    return Err(format!("a peer did not answer: {text}"));
                }
                Ok(Some(String::new()))
            })
            .await?;
            waiting.set(waiting.get() - 1);
        }
        Ok(())
    };
    smol::future::or(read, async {
        Timer::after(Duration::from_secs(60)).await;
        Err(format!(
            "{} peers did not answer within 60 s",
            waiting.get()
        ))
    })
    .await
}
