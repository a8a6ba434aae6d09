//! What one stanza can cost the (single) event loop: shapes whose parse
//! time grows faster than their size (a namespace bomb: thousands of
//! declarations in scope for thousands of children) are refused by the
//! framer with `<policy-violation/>` before any parser sees them, and an
//! unauthenticated peer only gets the small pre-login stanza limit (RFC
//! 6120 §13.12). Meanwhile other clients open streams without delay.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// The attack: one start tag declaring `decls` prefixes, then
/// `children` children declaring one default namespace each.
fn namespace_bomb(decls: usize, children: usize) -> String {
    let prefixes: String = (0..decls).map(|i| format!(" xmlns:a{i}='u'")).collect();
    format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X'{prefixes}>{}</auth>",
        "<b xmlns='v'/>".repeat(children)
    )
}

/// The stream error's condition, after which the server closes.
fn stream_error(client: &mut Client) -> String {
    let error = loop {
        match client.next() {
            Got::Stanza(s) if s.starts_with("<stream:error") => break s,
            Got::Stanza(_) | Got::Header(_) => continue,
            other => panic!("no stream error: {other:?}: {}", client.transcript),
        }
    };
    let condition = with_doc(&error, |node| {
        let first = node.first_element_child().expect("a condition");
        assert_eq!(first.tag_name().namespace(), Some(NS_STREAM_ERRORS));
        first.tag_name().name().to_owned()
    });
    assert_eq!(client.next(), Got::Close);
    client.expect_eof();
    condition
}

/// Plain TCP: stream header to features.
fn time_to_features(server: &TestServer) -> Duration {
    let started = Instant::now();
    let mut client = Client::connect(server);
    client.open_stream();
    client.header();
    let features = client.stanza();
    assert!(features.contains("urn:ietf:params:xml:ns:xmpp-tls"));
    started.elapsed()
}

/// Runs `attack` on `threads` threads in a loop while a victim opens
/// streams; returns the slowest victim's time to features.
fn slowest_victim_under(
    server: &TestServer,
    threads: usize,
    attack: impl Fn() + Send + Sync + 'static,
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let attack = Arc::new(attack);
    let attackers: Vec<_> = (0..threads)
        .map(|_| {
            let stop = stop.clone();
            let attack = attack.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    attack();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let slowest = (0..10)
        .map(|_| {
            let took = time_to_features(server);
            std::thread::sleep(Duration::from_millis(50));
            took
        })
        .max()
        .unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().expect("attacker thread");
    }
    slowest
}

fn plain_attacker(server: &TestServer, bomb: Arc<String>) -> impl Fn() + Send + Sync + 'static {
    let addr = server.starttls;
    let tls = server.tls_client_config();
    move || {
        let mut mallory = Client::connect_to(addr, tls.clone());
        mallory.open_stream();
        mallory.header();
        mallory.stanza();
        if mallory.try_send(&bomb) {
            assert_eq!(stream_error(&mut mallory), "policy-violation");
        }
    }
}

#[test]
fn namespace_bomb_before_login_is_refused_and_others_are_not_held_up() {
    // The attackers come from the same address as the victim: lift the
    // per-address caps so only the event loop's time is measured.
    let server = TestServer::start(
        "[limits]\nmax_connections_per_ip = 1000\nmax_unauthenticated_per_ip = 1000\n",
    );
    for (decls, children) in [(2000, 2000), (4000, 4000)] {
        let bomb = namespace_bomb(decls, children);
        let mut mallory = Client::connect(&server);
        mallory.open_stream();
        mallory.header();
        mallory.stanza();
        mallory.try_send(&bomb);
        assert_eq!(stream_error(&mut mallory), "policy-violation");
    }
    let bomb = Arc::new(namespace_bomb(2000, 2000));
    let slowest = slowest_victim_under(&server, 2, plain_attacker(&server, bomb));
    assert!(
        slowest < patience(Duration::from_millis(500)),
        "a stream took {slowest:?} to open during the attack"
    );
}

/// Fills a `<message>` up to the 256 KiB default limit with `child`.
fn message_at_the_limit(attributes: &str, child: &str) -> String {
    let head = format!("<message type='error' to='nobody@localhost'{attributes}>");
    let room = 256 * 1024 - head.len() - "</message>".len();
    format!("{head}{}</message>", child.repeat(room / child.len()))
}

#[test]
fn namespace_bomb_at_the_stanza_limit_after_login_is_refused() {
    // No rate limit: only parsing may take time here.
    let server = TestServer::start(&format!(
        "{NO_RATE_LIMIT}[limits]\nmax_connections_per_ip = 1000\nmax_unauthenticated_per_ip = 1000\n"
    ));
    server.add_user("mallory");
    let prefixes = |n: usize| -> String { (0..n).map(|i| format!(" xmlns:a{i}='u'")).collect() };
    // The widest legal shape at the limit (declarations in scope up to the
    // bound, every child declaring one more; text keeps the node count
    // under the parser's cap) is parsed quickly.
    let mut mallory = Client::online(&server, "mallory", "m");
    mallory.sync();
    let started = Instant::now();
    let child = format!("<b xmlns='v'>{}</b>", "x".repeat(80));
    mallory.send(&message_at_the_limit(&prefixes(6), &child));
    mallory.sync();
    assert!(
        started.elapsed() < patience(Duration::from_secs(2)),
        "{:?}",
        started.elapsed()
    );
    // The bomb at the same size is refused, and while logged-in attackers
    // keep sending it, streams open without delay.
    let bomb = Arc::new(message_at_the_limit(&prefixes(2000), "<b xmlns='v'/>"));
    mallory.send(&bomb);
    assert_eq!(stream_error(&mut mallory), "policy-violation");
    let server_ref = &server;
    let stop = &AtomicBool::new(false);
    let slowest = std::thread::scope(|scope| {
        let attacker = scope.spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut mallory = Client::login(server_ref, "mallory", &format!("m{n}"));
                mallory.send(&bomb);
                assert_eq!(stream_error(&mut mallory), "policy-violation");
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let slowest = (0..10).map(|_| time_to_features(server_ref)).max();
        stop.store(true, Ordering::Relaxed);
        attacker.join().expect("attacker");
        slowest.unwrap_or_default()
    });
    assert!(
        slowest < patience(Duration::from_millis(500)),
        "a stream took {slowest:?} to open during the attack"
    );
}

#[test]
fn stanzas_before_login_are_held_to_the_small_limit() {
    let server = TestServer::start("[limits]\nmax_stanza_bytes_preauth = 4096\n");
    server.add_user("alice");
    let padding = "x".repeat(5000);
    let mut early = Client::connect(&server);
    early.starttls();
    early.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{padding}</auth>"
    ));
    assert_eq!(stream_error(&mut early), "policy-violation");
    // The same size is fine once logged in.
    let mut alice = Client::online(&server, "alice", "a");
    alice.send(&format!(
        "<message to='alice@localhost/a' id='big'><body>{padding}</body></message>"
    ));
    alice.expect(&padding);
}

#[test]
fn encryption_required_failures_are_counted_and_slowed() {
    let server = TestServer::start("[limits]\nauth_failure_delay_ms = 300\n");
    let mut mallory = Client::connect(&server);
    mallory.open_stream();
    mallory.header();
    mallory.stanza();
    let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>";
    let mut waits = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        mallory.send(auth);
        let failure = mallory.stanza();
        with_doc(&failure, |node| {
            assert_eq!(node.tag_name().name(), "failure");
            let condition = node.first_element_child().expect("condition");
            assert_eq!(condition.tag_name().name(), "encryption-required");
        });
        waits.push(started.elapsed());
    }
    // 300, 600, 1200, 2400 ms: each answer waits longer than the last.
    assert!(waits[0] >= Duration::from_millis(250), "{waits:?}");
    assert!(waits[3] >= Duration::from_millis(2000), "{waits:?}");
    // RFC 6120 §6.4.5: a handful of retries, then the stream ends.
    mallory.send(auth);
    assert_eq!(stream_error(&mut mallory), "policy-violation");
}
