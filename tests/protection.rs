//! Abuse protection as a client sees it: rate limits (backpressure, warning,
//! disconnect), connection limits, login-failure delays, keepalive pings and
//! idle timeouts, slow readers. Every bound is set to a second or two.

mod common;

use common::*;
use hearth::sasl::{base64, Mechanism};
use std::time::{Duration, Instant};

/// Generous byte limits so only the stanza rate matters.
const FAST_BYTES: &str = "bytes_per_sec = 100000000\nbyte_burst = 100000000\n";

fn message(to: &str, id: usize, body: &str) -> String {
    format!("<message to='{to}' type='chat' id='m{id}'><body>{body}</body></message>")
}

/// Reads past stanzas to the stream error, which must be `condition`.
fn until_stream_error(client: &mut Client, condition: &str) {
    loop {
        match client.next() {
            Got::Stanza(s) if s.starts_with("<stream:error") => {
                assert!(s.contains(&format!("<{condition} ")), "{s}");
                return;
            }
            Got::Stanza(_) | Got::Header(_) => {}
            other => panic!("{other:?} before a stream error: {}", client.transcript),
        }
    }
}

/// Message ids `m<n>` in a transcript.
fn ids(transcript: &str) -> Vec<usize> {
    transcript
        .split("id='m")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next()?.parse().ok())
        .collect()
}

/// A pause that is already paid back when the read is charged (here: handling a message
/// for an offline user waits for a commit) must not leave the rest of that read unhandled
/// until the client happens to send more.
#[test]
fn stanzas_read_before_a_short_pause_are_handled_after_it() {
    let server = TestServer::start(&format!(
        "[rate]\nstanzas_per_sec = 1000\nstanza_burst = 1\n{FAST_BYTES}"
    ));
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    alice.sync();
    for round in 0..20 {
        std::thread::sleep(Duration::from_millis(20));
        let burst: String = (1..=6)
            .map(|n| message("bob@localhost", n, "for later"))
            .collect();
        alice.send(&format!(
            "{burst}<iq type='get' id='after{round}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        alice.expect(&format!("id='after{round}'"));
    }
    let mut bob = Client::online(&server, "bob", "b");
    for _ in 0..120 {
        bob.expect("for later");
    }
}

#[test]
fn a_burst_over_the_rate_is_slowed_down_without_loss() {
    let server = TestServer::start(&format!(
        "[rate]\nstanzas_per_sec = 10\nstanza_burst = 5\n{FAST_BYTES}warn_after_secs = 30\ndisconnect_after_secs = 60\n"
    ));
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    // Let alice's bucket refill after login.
    std::thread::sleep(Duration::from_millis(1200));
    let started = Instant::now();
    let burst: String = (1..=25)
        .map(|n| message("bob@localhost", n, "hi"))
        .collect();
    alice.send(&burst);
    for n in 1..=25 {
        let got = bob.stanza();
        assert!(got.contains(&format!("id='m{n}'")), "out of order: {got}");
    }
    // 25 stanzas at 10/s with 5 free: at least about two seconds.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not throttled: {:?}",
        started.elapsed()
    );
    alice.sync();
    assert!(
        !alice.transcript.contains("headline"),
        "{}",
        alice.transcript
    );
    server.wait_for_log("sending too fast, reading paused");
    assert!(server.log().contains("alice@localhost/a from 127.0.0.1"));
}

#[test]
fn a_flood_is_warned_then_disconnected_and_others_keep_low_latency() {
    let server = TestServer::start(&format!(
        "[rate]\nstanzas_per_sec = 20\nstanza_burst = 20\n{FAST_BYTES}warn_after_secs = 1\ndisconnect_after_secs = 2\n"
    ));
    for user in ["alice", "bob", "mallory"] {
        server.add_user(user);
    }
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    let mut mallory = Client::online(&server, "mallory", "m");
    alice.sync();
    bob.sync();
    mallory.sync();
    // Bob echoes every message back to alice.
    let echo = std::thread::spawn(move || loop {
        let got = bob.stanza();
        if got.contains("<body>stop</body>") {
            return;
        }
        if let Some(id) = ids(&got).first() {
            bob.send(&message("alice@localhost", *id, "pong"));
        }
    });
    let flooder = std::thread::spawn(move || {
        let flood: String = (0..1000)
            .map(|n| message("mallory@localhost/m", n, "flood flood flood"))
            .collect();
        mallory.send(&flood);
        until_stream_error(&mut mallory, "policy-violation");
        mallory.transcript
    });
    let mut round_trips = Vec::new();
    for n in 0..25 {
        let sent = Instant::now();
        alice.send(&message("bob@localhost/b", n, "ping"));
        alice.expect(&format!("id='m{n}'"));
        round_trips.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    alice.send(&message("bob@localhost/b", 99, "stop"));
    echo.join().unwrap();
    let transcript = flooder.join().unwrap();
    round_trips.sort();
    let p99 = round_trips[round_trips.len() * 99 / 100];
    assert!(p99 < patience(Duration::from_millis(200)), "p99 {p99:?}");
    // The warning came before the stream error, and most of the flood was
    // never read.
    assert!(
        transcript.contains("<message type='headline' from='localhost'"),
        "{transcript}"
    );
    assert!(transcript.contains("you will be disconnected"));
    assert!(
        ids(&transcript).len() < 200,
        "{} echoed",
        ids(&transcript).len()
    );
    server.wait_for_log("sent too fast for too long");
    let log = server.log();
    for event in [
        "warned about its sending rate",
        "sent too fast for too long",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("mallory@localhost/m from 127.0.0.1:") && l.contains(event)),
            "{event}"
        );
    }
    assert!(!log.contains("flood flood"), "bodies must not be logged");
}

#[test]
fn unauthenticated_connections_per_address_are_limited() {
    let server = TestServer::start("[limits]\nmax_unauthenticated_per_ip = 2\n");
    server.add_user("alice");
    let mut first = Client::connect(&server);
    first.open_stream();
    first.header();
    let mut second = Client::connect(&server);
    second.open_stream();
    second.header();
    let mut third = Client::connect(&server);
    third.expect_stream_error("policy-violation");
    assert!(
        third
            .transcript
            .contains("too many unauthenticated connections from your address"),
        "{}",
        third.transcript
    );
    // Logging in frees the slot: the next connection is admitted.
    drop(first);
    let mut alice = Client::login(&server, "alice", "a");
    let mut fourth = Client::connect(&server);
    fourth.open_stream();
    fourth.header();
    let mut fifth = Client::connect(&server);
    fifth.expect_stream_error("policy-violation");
    alice.sync();
    drop(second);
    std::thread::sleep(patience(Duration::from_millis(300)));
    let mut sixth = Client::connect(&server);
    sixth.starttls();
}

#[test]
fn total_and_per_address_connections_are_limited() {
    // A connection counts once the server has answered its header: the two
    // ports are accepted by separate tasks, so without that a slow server
    // (qemu) could admit the direct-TLS one first.
    let admitted = |server: &TestServer| {
        let mut client = Client::connect(server);
        client.open_stream();
        client.header();
        client
    };
    // All of it open to connections not logged in: else the newest closes the oldest
    // (tests/login_limits.rs) before the total is reached.
    let server =
        TestServer::start("[limits]\nmax_connections = 2\nmax_unauthenticated_percent = 100\n");
    let _a = admitted(&server);
    let _b = admitted(&server);
    let mut c = Client::connect_direct_tls(&server);
    c.expect_stream_error("resource-constraint");
    assert!(c.transcript.contains("too many connections"));

    let mut server = TestServer::start("[limits]\nmax_connections_per_ip = 1\n");
    let _a = admitted(&server);
    let mut b = Client::connect(&server);
    b.expect_stream_error("policy-violation");
    assert!(b
        .transcript
        .contains("too many connections from your address"));
    server.wait_for_log("connection refused: too many connections from your address");
    // The counters come out at shutdown.
    let mut c = Client::connect(&server);
    c.expect_stream_error("policy-violation");
    server.stop();
    server.wait_for_log("limit counters: refused_total=0 refused_per_ip=2 ");
}

#[test]
fn failed_logins_are_answered_ever_more_slowly() {
    let server = TestServer::start(
        "[limits]\nauth_failure_delay_ms = 500\nauth_failure_delay_max_ms = 1000\n",
    );
    server.add_user("alice");
    let timed = |c: &mut Client, password: &str| {
        let started = Instant::now();
        let ok = c.scram(Mechanism::ScramSha256, "alice", password);
        (ok, started.elapsed())
    };
    let ms = Duration::from_millis;
    // What an exchange costs without any delay (much more under emulation).
    let mut warmup = Client::connect(&server);
    warmup.starttls();
    let (ok, base) = timed(&mut warmup, PASSWORD);
    assert!(ok);
    let mut c = Client::connect(&server);
    c.starttls();
    let (ok, first) = timed(&mut c, "wrong");
    assert!(!ok);
    assert!(first >= ms(500), "{first:?}");
    let (_, second) = timed(&mut c, "wrong");
    assert!(second >= ms(1000), "{second:?}");
    // A second connection guessing the same account is slowed down too,
    // and the cap holds (uncapped, the 4th failure would wait 4 s).
    let mut other = Client::connect(&server);
    other.starttls();
    let (_, third) = timed(&mut other, "wrong");
    assert!(third >= ms(1000), "{third:?}");
    let (_, fourth) = timed(&mut other, "wrong");
    assert!(
        fourth >= ms(1000) && fourth < base + ms(2500),
        "{fourth:?} (base {base:?})"
    );
    // The right password is not delayed and resets the count: the next
    // failure waits the first step (500 ms), not the doubled one.
    let (ok, _) = timed(&mut other, PASSWORD);
    assert!(ok);
    let (_, after) = timed(&mut c, "wrong");
    assert!(after < base + ms(750), "{after:?} (base {base:?})");
    assert!(
        !server.log().contains("wrong"),
        "passwords must not be logged"
    );
}

#[test]
fn pipelined_guesses_wait_for_the_delayed_failure() {
    let server = TestServer::start("[limits]\nauth_failure_delay_ms = 400\n");
    server.add_user("bob");
    let mut c = Client::connect(&server);
    c.starttls();
    let guess = |password: &str| {
        let creds = base64::encode(format!("\0bob\0{password}").as_bytes());
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
    };
    let started = Instant::now();
    c.send(&format!("{}{}", guess("one"), guess("two")));
    assert!(c.stanza().contains("<not-authorized/>"));
    assert!(c.stanza().contains("<not-authorized/>"));
    // 400 ms, then 800 ms: the second guess was not checked early.
    assert!(started.elapsed() >= Duration::from_millis(1200));
}

#[test]
fn silent_sessions_are_pinged_and_dead_ones_time_out() {
    let server = TestServer::start("[keepalive]\nidle_secs = 2\nping_timeout_secs = 1\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut bob = Client::online(&server, "bob", "b");
    bob.sync();
    // Bob only sends whitespace keepalives: that is traffic, so no ping.
    let whitespace = std::thread::spawn(move || {
        for _ in 0..12 {
            std::thread::sleep(Duration::from_millis(300));
            bob.send(" ");
        }
        bob.sync();
        bob
    });
    let mut alice = Client::online(&server, "alice", "a");
    let mut quiet = Client::online(&server, "bob", "quiet");
    alice.sync();
    quiet.sync();
    // Alice answers the ping and stays.
    let ping = alice.expect("urn:xmpp:ping");
    assert!(ping.starts_with("<iq type='get' id='keepalive-"), "{ping}");
    assert!(ping.contains("from='localhost' to='alice@localhost/a'"));
    let id = with_doc(&ping, |n| n.attribute("id").unwrap().to_string());
    alice.send(&format!("<iq type='result' id='{id}' to='localhost'/>"));
    // The quiet one ignores the ping and is disconnected.
    quiet.expect("keepalive-");
    quiet.expect_stream_error("connection-timeout");
    alice.sync();
    let bob = whitespace.join().unwrap();
    assert!(!bob.transcript.contains("keepalive-"), "{}", bob.transcript);
    server.wait_for_log("no answer to the keepalive ping");
}

#[test]
fn a_client_that_stops_reading_is_cut_off_by_its_queue_cap_and_loses_nothing() {
    stop_reading_and_expect(16 * 1024, 30, 150, "outbound queue full");
}

#[test]
fn a_client_that_stops_reading_is_cut_off_by_the_write_timeout_and_loses_nothing() {
    // More than the kernel's socket buffers can hold.
    stop_reading_and_expect(64 * 1024 * 1024, 1, 500, "write blocked too long");
}

/// Alice stops reading while bob sends her `count` 20 KB messages; the server cuts her off
/// (by `reason`), carol and bob keep talking, and every message reaches
/// alice, first on the old stream or later from offline storage.
fn stop_reading_and_expect(queue_bytes: u32, write_timeout_secs: u32, count: usize, reason: &str) {
    let server = TestServer::start(&format!(
        "[limits]\noutbound_queue_bytes = {queue_bytes}\n[keepalive]\nwrite_timeout_secs = {write_timeout_secs}\n[rate]\n{FAST_BYTES}stanzas_per_sec = 10000\nstanza_burst = 10000\n"
    ));
    for user in ["alice", "bob", "carol"] {
        server.add_user(user);
    }
    let mut sleepy = Client::online(&server, "alice", "a");
    sleepy.sync();
    let mut bob = Client::online(&server, "bob", "b");
    let mut carol = Client::online(&server, "carol", "c");
    let body = "z".repeat(20_000);
    for n in 1..=count {
        bob.send(&message("alice@localhost", n, &body));
    }
    bob.sync();
    // The server gives up on alice; others are unaffected meanwhile.
    carol.send(&message("bob@localhost", 0, "still fine"));
    bob.expect("still fine");
    server.wait_for_log("alice@localhost/a: session ended");
    server.wait_for_log(reason);
    assert_eq!(server.log().matches(reason).count(), 1, "logged once");
    // What alice had received before, plus offline storage, is everything.
    let mut seen = std::collections::BTreeSet::new();
    loop {
        match sleepy.next() {
            Got::Stanza(s) => seen.extend(ids(&s)),
            Got::Header(_) => {}
            Got::Close | Got::Eof => break,
        }
    }
    let first_session = seen.len();
    assert!(first_session < count, "alice read everything");
    let mut alice = Client::online(&server, "alice", "again");
    while seen.len() < count {
        seen.extend(ids(&alice.expect("<message")));
    }
    assert_eq!(
        seen.iter().copied().collect::<Vec<_>>(),
        (1..=count).collect::<Vec<_>>()
    );
}
