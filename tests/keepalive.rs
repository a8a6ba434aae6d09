//! Keepalive of silent sessions as clients see it: an XEP-0199 ping only for clients that
//! showed they understand it (verified entity capabilities, or a ping of their own), `<r/>`
//! for stream management (XEP-0198), a whitespace keepalive (RFC 6120 §4.6.1) for every
//! other client; a real listen-only client (go-sendxmpp) stays connected; and a host that
//! vanishes from a real network link is seen `unavailable` within `idle_secs +
//! ping_timeout_secs`, found by the kernel's TCP_USER_TIMEOUT when the client takes no pings.

mod common;

use common::caps::*;
use common::roster::*;
use common::*;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PING: &str = "urn:xmpp:ping";
const SM: &str = "urn:xmpp:sm:3";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// One-second keepalive for the protocol tests.
const FAST: &str = "[keepalive]\nidle_secs = 1\nping_timeout_secs = 1\n";

/// Whether `stanza` is the server's XEP-0199 §4.1 ping to `to`.
fn is_ping_to(stanza: &str, to: &str) -> bool {
    with_doc(stanza, |iq| {
        iq.tag_name().name() == "iq"
            && iq.attribute("type") == Some("get")
            && iq.attribute("from") == Some(DOMAIN)
            && iq.attribute("to") == Some(to)
            && iq
                .first_element_child()
                .is_some_and(|p| p.has_tag_name((PING, "ping")))
    })
}

/// Reads until the server pings `client`, answering nothing else; returns the ping's id.
fn expect_ping(client: &mut Client) -> String {
    loop {
        let stanza = client.stanza();
        if is_ping_to(&stanza, &client.jid) {
            return with_doc(&stanza, |iq| iq.attribute("id").unwrap().to_string());
        }
    }
}

/// Presence `from` (a full JID) of `ty` (`None`: available), read by `client`, which
/// answers the server's keepalive pings meanwhile.
fn expect_presence(client: &mut Client, from: &str, ty: Option<&str>) {
    loop {
        let stanza = client.stanza();
        if is_ping_to(&stanza, &client.jid) {
            let id = with_doc(&stanza, |iq| iq.attribute("id").unwrap().to_string());
            client.send(&format!("<iq type='result' id='{id}' to='{DOMAIN}'/>"));
            continue;
        }
        let found = with_doc(&stanza, |p| {
            p.tag_name().name() == "presence"
                && p.attribute("from") == Some(from)
                && p.attribute("type") == ty
        });
        if found {
            return;
        }
    }
}

/// What arrives in `wait` is whitespace keepalives only, at least `spaces` of them.
fn expect_only_whitespace(client: &mut Client, wait: Duration, spaces: usize) {
    let raw = client.receive_for(wait);
    assert!(
        raw.len() >= spaces && raw.bytes().all(|b| b == b' '),
        "expected {spaces}+ whitespace keepalives, got {raw:?}"
    );
}

#[test]
fn a_client_without_ping_support_gets_whitespace_and_never_an_iq_ping() {
    let server = TestServer::start(FAST);
    server.add_user("bob");
    // A listen-only bot: roster, presence, then silence; it never pings.
    let mut bob = Client::login(&server, "bob", "b");
    roster_get(&mut bob);
    bob.send("<presence/>");
    expect_presence(&mut bob, "bob@localhost/b", None); // its own echo (RFC 6121 §4.2.2)
                                                        // Three idle periods: a space each time, nothing else.
    expect_only_whitespace(&mut bob, Duration::from_millis(3500), 2);
    // Still connected, and the stream still works.
    roster_get(&mut bob);
    assert!(!bob.transcript.contains(PING), "{}", bob.transcript);
    assert!(!server.log().contains("keepalive ping"), "{}", server.log());
}

#[test]
fn clients_that_show_they_speak_ping_get_iq_pings() {
    let server = TestServer::start(FAST);
    for user in ["carol", "dave", "erin"] {
        server.add_user(user);
    }
    // Carol's verified capabilities (XEP-0115) include urn:xmpp:ping.
    let mut carol = Client::login(&server, "carol", "c");
    announce_caps(&mut carol, &[DISCO_INFO, PING]);
    // Dave's capabilities are verified too, without ping.
    let mut dave = Client::login(&server, "dave", "d");
    announce_caps(&mut dave, &[DISCO_INFO]);
    // Erin announces nothing but pinged the server once.
    let mut erin = Client::login(&server, "erin", "e");
    erin.sync();

    // Carol and Erin are pinged, answer, stay, and are pinged again (each answering at
    // once, so both read at the same time).
    std::thread::scope(|scope| {
        for client in [&mut carol, &mut erin] {
            scope.spawn(|| {
                for _ in 0..2 {
                    let id = expect_ping(client);
                    client.send(&format!("<iq type='result' id='{id}' to='{DOMAIN}'/>"));
                }
            });
        }
    });
    // Dave only ever gets whitespace.
    expect_only_whitespace(&mut dave, Duration::from_millis(2500), 1);
    roster_get(&mut dave);
    assert!(!dave.transcript.contains(PING), "{}", dave.transcript);
    // Erin stops answering: connection-timeout, as before.
    expect_ping(&mut erin);
    erin.expect_stream_error("connection-timeout");
    server.wait_for_log("no answer to the keepalive ping");
}

#[test]
fn a_client_with_stream_management_is_asked_for_an_ack_not_pinged() {
    let server = TestServer::start(FAST);
    server.add_user("bob");
    let mut bob = Client::login(&server, "bob", "b");
    // It pings too, but XEP-0198's own request is the probe it gets.
    bob.sync();
    bob.send(&format!("<enable xmlns='{SM}'/>"));
    let enabled = bob.stanza();
    with_doc(&enabled, |n| {
        assert!(n.has_tag_name((SM, "enabled")), "{enabled}")
    });
    for _ in 0..2 {
        let request = bob.stanza();
        with_doc(&request, |r| {
            assert!(r.has_tag_name((SM, "r")), "{request}");
        });
        // §4: nothing was sent since enable, so h is 0.
        bob.send(&format!("<a xmlns='{SM}' h='0'/>"));
    }
    // Unanswered: the session times out like an unanswered ping.
    let request = bob.stanza();
    with_doc(&request, |r| {
        assert!(r.has_tag_name((SM, "r")), "{request}")
    });
    bob.expect_stream_error("connection-timeout");
    assert!(!bob.transcript.contains(PING), "{}", bob.transcript);
}

/// go-sendxmpp, killed when the test ends.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn go_sendxmpp_listening_stays_connected_and_prints_messages() {
    if Command::new("go-sendxmpp")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("\n!!!!!!!! SKIPPED: go-sendxmpp is not installed (apt-get install go-sendxmpp) !!!!!!!!\n");
        return;
    }
    let server = TestServer::start(FAST);
    server.add_user("alice");
    server.add_user("bob");
    let home = temp_dir("go-sendxmpp");
    let mut child = Command::new("go-sendxmpp")
        .args(["-l", "-n", "-u", "bob@localhost", "-p", PASSWORD, "-j"])
        .arg(server.starttls.to_string())
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start go-sendxmpp");
    let stdout = child.stdout.take().unwrap();
    let mut listener = Listener(child);
    let (lines, printed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    server.wait_for_log("bob@localhost/go-sendxmpp");
    // More than three keepalive periods of silence.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        listener.0.try_wait().unwrap().is_none(),
        "go-sendxmpp exited during the silence"
    );
    let mut alice = Client::online(&server, "alice", "a");
    alice.send("<message to='bob@localhost' type='chat'><body>still there?</body></message>");
    let line = printed
        .recv_timeout(patience(Duration::from_secs(10)))
        .expect("go-sendxmpp printed nothing");
    assert!(line.ends_with(" alice@localhost: still there?"), "{line}");
    assert!(
        listener.0.try_wait().unwrap().is_none(),
        "go-sendxmpp exited"
    );
    assert!(!server.log().contains("session ended"), "{}", server.log());
}

/// A network namespace joined to this one by a veth pair: a host that can vanish.
struct Netns {
    name: String,
    host_side: String,
    peer_side: String,
    /// The host side's address, where the server listens.
    host_ip: String,
}

impl Netns {
    /// None (after saying so loudly) when namespaces cannot be made: not root, or no `ip`.
    fn create() -> Option<Netns> {
        static N: AtomicU32 = AtomicU32::new(0);
        let (pid, n) = (std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        // A /30 of its own per process and test.
        let net = format!("10.{}.{}.{}", 200 + n, (pid >> 6) & 255, (pid & 63) * 4);
        let host = |last: u32| {
            net.rsplit_once('.')
                .map(|(p, b)| format!("{p}.{}", b.parse::<u32>().unwrap() + last))
                .unwrap()
        };
        let netns = Netns {
            name: format!("hearth-ka-{pid}-{n}"),
            host_side: format!("hk{pid}{n}h"),
            peer_side: format!("hk{pid}{n}p"),
            host_ip: host(1),
        };
        if !ip(&["netns", "add", &netns.name]) {
            eprintln!(
                "\n!!!!!!!! SKIPPED: `ip netns add` failed (needs root and iproute2) !!!!!!!!\n"
            );
            return None;
        }
        let (ns, h, p) = (&netns.name, &netns.host_side, &netns.peer_side);
        let host_cidr = format!("{}/30", netns.host_ip);
        let peer_cidr = format!("{}/30", host(2));
        for args in [
            &["link", "add", h, "type", "veth", "peer", "name", p][..],
            &["link", "set", p, "netns", ns],
            &["addr", "add", &host_cidr, "dev", h],
            &["link", "set", h, "up"],
            &["-n", ns, "addr", "add", &peer_cidr, "dev", p],
            &["-n", ns, "link", "set", p, "up"],
            &["-n", ns, "link", "set", "lo", "up"],
        ] {
            assert!(ip(args), "ip {}", args.join(" "));
        }
        Some(netns)
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens live there.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let handle = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns only switches this thread's network namespace to the one
                    // the open descriptor names.
                    let joined = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap()
        })
    }

    /// The host's cable is pulled: nothing crosses the link any more, nothing is reset.
    fn unplug(&self) {
        assert!(ip(&[
            "-n",
            &self.name,
            "link",
            "set",
            &self.peer_side,
            "down"
        ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_side]);
        ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const IDLE_SECS: u64 = 2;
const PING_TIMEOUT_SECS: u64 = 2;

/// Bob's host vanishes while Alice, on the server's own host, is subscribed to his
/// presence: she sees him `unavailable` within `idle_secs + ping_timeout_secs` and slack.
fn vanished_host_goes_unavailable(bob_speaks_ping: bool) {
    let Some(net) = Netns::create() else {
        return;
    };
    let server = TestServer::start_listening(
        &net.host_ip,
        &format!("[keepalive]\nidle_secs = {IDLE_SECS}\nping_timeout_secs = {PING_TIMEOUT_SECS}\n"),
    );
    server.add_user("alice");
    server.add_user("bob");
    // Sessions of both approve Alice's subscription to Bob, then leave.
    let mut alice_setup = Client::online(&server, "alice", "setup");
    let mut bob_setup = Client::online(&server, "bob", "setup");
    roster_get(&mut alice_setup);
    roster_get(&mut bob_setup);
    subscribe(&mut alice_setup, &mut bob_setup);
    for setup in [&mut bob_setup, &mut alice_setup] {
        setup.send("</stream:stream>");
        assert_eq!(setup.next(), Got::Close);
    }
    server.wait_for_log("bob@localhost/setup: session ended");
    server.wait_for_log("alice@localhost/setup: session ended");
    // Alice watches: she takes no pings, so the whitespace keepalive keeps her too.
    let mut alice = Client::online(&server, "alice", "a");
    roster_get(&mut alice);
    let mut bob = net.run(|| Client::login(&server, "bob", "b"));
    if bob_speaks_ping {
        announce_caps(&mut bob, &[DISCO_INFO, PING]);
        expect_presence(&mut alice, "bob@localhost/b", None);
        // The server pings him: his capabilities were verified.
        expect_ping(&mut bob);
    } else {
        bob.send("<presence/>");
        expect_presence(&mut bob, "bob@localhost/b", None); // his own echo
        expect_presence(&mut alice, "bob@localhost/b", None);
        // He never pinged, so he gets whitespace.
        expect_only_whitespace(&mut bob, Duration::from_secs(IDLE_SECS + 1), 1);
    }
    net.unplug();
    let unplugged = Instant::now();
    expect_presence(&mut alice, "bob@localhost/b", Some("unavailable"));
    let took = unplugged.elapsed();
    let promise =
        patience(Duration::from_secs(IDLE_SECS + PING_TIMEOUT_SECS)) + Duration::from_secs(2);
    assert!(
        took <= promise,
        "unavailable after {took:?}, promised {promise:?}"
    );
    if !bob_speaks_ping {
        // Found by the kernel, not by a ping he could not have answered.
        server.wait_for_log("bob@localhost/b from");
        let log = server.log();
        assert!(log.contains("stopped acknowledging"), "{log}");
        assert!(!log.contains("keepalive ping"), "{log}");
    }
    drop(bob);
}

#[test]
fn a_vanished_host_without_ping_is_found_by_tcp_and_seen_unavailable() {
    vanished_host_goes_unavailable(false);
}

#[test]
fn a_vanished_host_that_takes_pings_is_seen_unavailable() {
    vanished_host_goes_unavailable(true);
}
