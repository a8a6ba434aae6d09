//! The per-session byte budget (`limits.outbound_queue_bytes`) against clients that ask for
//! more than they take: pipelined PEP retrievals of a large node with nothing read, the same
//! with stream management (XEP-0198) and nothing acknowledged, and a parked session whose
//! unacknowledged stanzas and mailbox share the budget. The server's memory is read from
//! `/proc/<pid>/status`; other users keep chatting meanwhile, and the memory goes back once
//! the attacker is gone. Also XEP-0060 §6.5.4/§6.5.7 paging of a node's items (XEP-0059).

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const RSM: &str = "http://jabber.org/protocol/rsm";
const SM: &str = "urn:xmpp:sm:3";
const NODE: &str = "urn:example:big";
const BUDGET: usize = 1024 * 1024;
/// Items of 60 KB: a whole-node reply would be about 1 MB.
const ITEM_BYTES: usize = 60_000;
const ITEMS: usize = 16;
/// How close to its baseline the server's RSS must come back once the attacker is gone
/// (the store's read cache and allocator noise vary by a few hundred KB between runs).
const RETURN_SLACK: usize = 1024 * 1024;

/// The config of the attack tests: the default budget, a short write timeout, no rate limit
/// (the node is published at full speed).
fn attack_config() -> String {
    format!("[keepalive]\nwrite_timeout_secs = 3\n{NO_RATE_LIMIT}")
}

/// The server's resident set in bytes (VmRSS).
fn rss(server: &TestServer) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| {
            kib.trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .expect("VmRSS")
        * 1024
}

/// Samples the server's RSS until stopped; the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Sampler {
    fn start(server: &TestServer) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/proc/{}/status", server.pid());
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::SeqCst) {
                if let Ok(status) = std::fs::read_to_string(&path) {
                    let kib = status
                        .lines()
                        .find_map(|line| line.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                        .unwrap_or(0usize);
                    peak = peak.max(kib * 1024);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Sampler { stop, thread }
    }

    fn peak(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// `owner` publishes `count` items of `bytes` bytes each to `node`, kept (max_items = max).
fn publish_node(owner: &mut Client, node: &str, count: usize, bytes: usize) {
    let payload = "p".repeat(bytes);
    for n in 0..count {
        owner.send(&format!(
            "<iq type='set' id='pub{n}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'>\
             <item id='i{n}'><x xmlns='urn:example'>{payload}</x></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>\
             <field var='pubsub#max_items'><value>max</value></field></x></publish-options>\
             </pubsub></iq>"
        ));
        let reply = owner.expect(&format!("id='pub{n}'"));
        assert_eq!(
            with_doc(&reply, |iq| iq.attribute("type").map(str::to_owned)).as_deref(),
            Some("result"),
            "{reply}"
        );
    }
}

fn items_request(id: &str) -> String {
    format!(
        "<iq type='get' id='{id}'><pubsub xmlns='{PUBSUB}'><items node='{NODE}'/></pubsub></iq>"
    )
}

/// Alice and bob still talk: a message from one reaches the other.
fn still_chatting(from: &mut Client, to: &mut Client, body: &str) {
    from.send(&format!(
        "<message to='{}' type='chat' id='{body}'><body>{body}</body></message>",
        to.jid
    ));
    let got = to.expect(&format!("id='{body}'"));
    with_doc(&got, |message| {
        assert_eq!(message.tag_name().name(), "message");
        assert_eq!(message.attribute("from"), Some(from.jid.as_str()));
    });
}

/// The server's RSS falls to within `slack` of `baseline` within a few seconds.
fn returns_near(server: &TestServer, baseline: usize, slack: usize) {
    if emulated() {
        // qemu-user's RSS grows with its own translation cache as new code runs, and the
        // heap trim does not reach the host: only the native run can check the return.
        eprintln!("emulated: the return of memory is checked natively only");
        return;
    }
    let deadline = Instant::now() + patience(Duration::from_secs(5));
    loop {
        let now = rss(server);
        if now <= baseline + slack {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "RSS stayed at {} KiB, baseline {} KiB",
            now / 1024,
            baseline / 1024
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A whole-node reply: its items and its RSM `<set/>` (count, first index), parsed.
fn items_reply(xml: &str) -> (usize, Option<(usize, usize)>) {
    with_doc(xml, |iq| {
        assert_eq!(iq.attribute("type"), Some("result"), "{xml}");
        let pubsub = iq.first_element_child().expect("pubsub");
        assert!(pubsub.has_tag_name((PUBSUB, "pubsub")));
        let items = pubsub
            .children()
            .find(|c| c.has_tag_name((PUBSUB, "items")))
            .expect("items");
        let count = items
            .children()
            .filter(|c| c.has_tag_name((PUBSUB, "item")))
            .count();
        let set = pubsub
            .children()
            .find(|c| c.has_tag_name((RSM, "set")))
            .map(|set| {
                let total = set
                    .children()
                    .find(|c| c.has_tag_name((RSM, "count")))
                    .and_then(|c| c.text())
                    .and_then(|t| t.parse().ok())
                    .expect("count");
                let first = set
                    .children()
                    .find(|c| c.has_tag_name((RSM, "first")))
                    .and_then(|c| c.attribute("index"))
                    .and_then(|i| i.parse().ok())
                    .expect("first index");
                (total, first)
            });
        (count, set)
    })
}

/// Three users: mallory owns a node of 16 × 60 KB items; alice and bob just chat.
fn setup(server: &TestServer) -> (Client, Client) {
    for user in ["mallory", "alice", "bob"] {
        server.add_user(user);
    }
    let mut alice = Client::online(server, "alice", "a");
    let mut bob = Client::online(server, "bob", "b");
    alice.sync();
    bob.sync();
    let mut owner = Client::online(server, "mallory", "setup");
    publish_node(&mut owner, NODE, ITEMS, ITEM_BYTES);
    owner.send("</stream:stream>");
    owner.expect_eof();
    server.wait_for_log("mallory@localhost/setup: session ended");
    (alice, bob)
}

/// What RSS may grow by besides the session's budget: allocator and buffer overhead (native:
/// ~1.6 MB measured). Under qemu-user the RSS also holds the emulator's translation cache,
/// which grows with the server code first run during the attack (armv7: ~7 MB measured);
/// either bound is far below the ~25 MB the unbudgeted answers would take.
fn slack() -> usize {
    if emulated() {
        12 * 1024 * 1024
    } else {
        6 * 1024 * 1024
    }
}

/// The server settles (start-up memory release, the publisher's buffers): its RSS then.
fn baseline(server: &TestServer) -> usize {
    std::thread::sleep(patience(Duration::from_millis(1500)));
    rss(server)
}

#[test]
fn pipelined_retrievals_never_read_are_throttled_within_the_budget() {
    let server = TestServer::start(&attack_config());
    let (mut alice, mut bob) = setup(&server);
    let mut mallory = Client::online(&server, "mallory", "m");
    mallory.sync();
    let before = baseline(&server);
    let sampler = Sampler::start(&server);
    // 100 requests in one write (about 11 KB); nothing of the answers is read.
    let requests: String = (0..100).map(|n| items_request(&format!("q{n}"))).collect();
    mallory.send(&requests);
    still_chatting(&mut alice, &mut bob, "during");
    // Input waits for the unread replies; the write timeout then ends the connection.
    server.wait_for_log("input paused until it is written");
    server.wait_for_log("write blocked too long");
    server.wait_for_log("mallory@localhost/m: session ended");
    still_chatting(&mut bob, &mut alice, "after");
    let peak = sampler.peak();
    assert!(
        peak < before + BUDGET + slack(),
        "RSS grew from {} KiB to {} KiB",
        before / 1024,
        peak / 1024
    );
    // What reached the client: far fewer than 100 answers, each a page of the node.
    let mut answered = 0;
    loop {
        match mallory.next() {
            Got::Stanza(s) if s.starts_with("<iq") => {
                let (count, set) = items_reply(&s);
                assert!(count < ITEMS, "a whole node in one reply");
                assert_eq!(set, Some((ITEMS, ITEMS - count)), "{}", &s[..200]);
                answered += 1;
            }
            Got::Stanza(_) | Got::Header(_) => {}
            Got::Close | Got::Eof => break,
        }
    }
    assert!(answered < 100, "{answered} answers");
    drop(mallory);
    // Alice and bob stay connected; the memory goes back all the same.
    returns_near(&server, before, RETURN_SLACK);
    still_chatting(&mut alice, &mut bob, "later");
}

#[test]
fn retrievals_read_but_never_acknowledged_end_in_resource_constraint() {
    let server = TestServer::start(&attack_config());
    let (mut alice, mut bob) = setup(&server);
    let mut mallory = Client::login(&server, "mallory", "m");
    mallory.send(&format!("<enable xmlns='{SM}' resume='true'/>"));
    assert!(mallory.stanza().starts_with("<enabled "));
    mallory.sync();
    let before = baseline(&server);
    let sampler = Sampler::start(&server);
    let requests: String = (0..300).map(|n| items_request(&format!("q{n}"))).collect();
    mallory.send(&requests);
    // Mallory reads everything and acknowledges nothing.
    let mut answered = 0;
    let error = loop {
        match mallory.next() {
            Got::Stanza(s) if s.starts_with("<stream:error") => break s,
            Got::Stanza(s) if s.starts_with("<iq") => answered += 1,
            Got::Stanza(_) | Got::Header(_) => {}
            other => panic!("no stream error: {other:?}"),
        }
    };
    // RFC 6120 §4.9.3.17: the server will not hold more for this stream.
    with_doc(&error, |e| {
        let condition = e.first_element_child().expect("condition");
        assert_eq!(condition.tag_name().name(), "resource-constraint");
        assert_eq!(
            condition.tag_name().namespace(),
            Some("urn:ietf:params:xml:ns:xmpp-streams")
        );
    });
    assert_eq!(mallory.next(), Got::Close);
    // Each answer is a page of about 250 KB: a handful fit the budget.
    assert!(
        answered <= 2 * BUDGET / (4 * ITEM_BYTES),
        "{answered} answers"
    );
    server.wait_for_log("bytes unacknowledged, over the session's budget");
    still_chatting(&mut alice, &mut bob, "during");
    server.wait_for_log("mallory@localhost/m: session ended");
    let peak = sampler.peak();
    assert!(
        peak < before + BUDGET + slack(),
        "RSS grew from {} KiB to {} KiB",
        before / 1024,
        peak / 1024
    );
    drop(mallory);
    returns_near(&server, before, RETURN_SLACK);
    still_chatting(&mut bob, &mut alice, "after");
}

#[test]
fn a_parked_session_shares_its_budget_with_what_it_left_unacknowledged() {
    let server = TestServer::start(&attack_config());
    let (mut alice, mut bob) = setup(&server);
    let mut mallory = Client::login(&server, "mallory", "m");
    mallory.send(&format!("<enable xmlns='{SM}' resume='true'/>"));
    assert!(mallory.stanza().starts_with("<enabled "));
    mallory.send("<presence/>");
    // Two pages of the node (about 500 KB) read and not acknowledged, then the line drops.
    for id in ["q1", "q2"] {
        mallory.send(&items_request(id));
        mallory.expect(&format!("id='{id}'"));
    }
    drop(mallory);
    server.wait_for_log("session kept for resumption");
    // 30 messages of 20 KB: under the budget alone, over it with what waits for an ack.
    let body = "z".repeat(20_000);
    for n in 0..30 {
        alice.send(&format!(
            "<message to='mallory@localhost/m' type='chat' id='m{n}'><body>{n} {body}</body></message>"
        ));
    }
    alice.sync();
    server.wait_for_log("outbound queue full");
    server.wait_for_log("not resumed, ending the session");
    server.wait_for_log("mallory@localhost/m: session ended");
    still_chatting(&mut bob, &mut alice, "after");
    // Nothing is lost: every message waits in offline storage.
    let mut again = Client::login(&server, "mallory", "again");
    again.send("<presence/>");
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 30 {
        let message = again.expect("<message");
        if let Some(id) = with_doc(&message, |m| m.attribute("id").map(str::to_owned)) {
            if id.starts_with('m') {
                seen.insert(id);
            }
        }
    }
}

#[test]
fn items_are_paged_with_max_items_and_rsm() {
    // A 4 KiB reply cap: two of the 1500-byte items fit.
    let server = TestServer::start("[pep]\nmax_reply_bytes = 4096\n");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    publish_node(&mut alice, NODE, 5, 1500);
    let get = |alice: &mut Client, id: &str, items: &str, set: &str| {
        alice.send(&format!(
            "<iq type='get' id='{id}'><pubsub xmlns='{PUBSUB}'>{items}{set}</pubsub></iq>"
        ));
        let reply = alice.expect(&format!("id='{id}'"));
        with_doc(&reply, |iq| {
            assert_eq!(iq.attribute("type"), Some("result"), "{reply}");
            let pubsub = iq.first_element_child().unwrap();
            let ids: Vec<String> = pubsub
                .descendants()
                .filter(|c| c.has_tag_name((PUBSUB, "item")))
                .filter_map(|c| c.attribute("id").map(str::to_owned))
                .collect();
            let set = pubsub
                .children()
                .find(|c| c.has_tag_name((RSM, "set")))
                .map(|set| {
                    let text = |name: &str| {
                        set.children()
                            .find(|c| c.has_tag_name((RSM, name)))
                            .map(|c| {
                                (
                                    c.text().unwrap_or("").to_owned(),
                                    c.attribute("index").map(str::to_owned),
                                )
                            })
                    };
                    (text("first"), text("last"), text("count").map(|c| c.0))
                });
            (ids, set)
        })
    };
    let items = format!("<items node='{NODE}'/>");
    let rsm = |inner: &str| format!("<set xmlns='{RSM}'>{inner}</set>");
    // XEP-0060 §6.5.7: the two most recent, no paging noted.
    let (ids, set) = get(
        &mut alice,
        "m2",
        &format!("<items node='{NODE}' max_items='2'/>"),
        "",
    );
    assert_eq!((ids, set), (vec!["i3".to_owned(), "i4".to_owned()], None));
    // §6.5.4: the whole node does not fit: the newest that do, the truncation told.
    let (ids, set) = get(&mut alice, "all", &items, "");
    assert_eq!(ids, ["i3", "i4"]);
    assert_eq!(
        set,
        Some((
            Some(("i3".to_owned(), Some("3".to_owned()))),
            Some(("i4".to_owned(), None)),
            Some("5".to_owned())
        ))
    );
    // XEP-0059: the first page, the next one, the last one.
    let (ids, set) = get(&mut alice, "p1", &items, &rsm("<max>1</max>"));
    assert_eq!(ids, ["i0"]);
    assert_eq!(set.and_then(|s| s.2), Some("5".to_owned()));
    let (ids, _) = get(
        &mut alice,
        "p2",
        &items,
        &rsm("<max>2</max><after>i0</after>"),
    );
    assert_eq!(ids, ["i1", "i2"]);
    let (ids, _) = get(&mut alice, "p3", &items, &rsm("<max>1</max><before/>"));
    assert_eq!(ids, ["i4"]);
    let (ids, set) = get(&mut alice, "p4", &items, &rsm("<max>0</max>"));
    assert!(ids.is_empty());
    assert_eq!(set, Some((None, None, Some("5".to_owned()))));
    // An unknown anchor is item-not-found (XEP-0059 §2.4).
    alice.send(&format!(
        "<iq type='get' id='bad'><pubsub xmlns='{PUBSUB}'>{items}{}</pubsub></iq>",
        rsm("<after>nope</after>")
    ));
    let reply = alice.expect("id='bad'");
    with_doc(&reply, |iq| {
        assert_eq!(iq.attribute("type"), Some("error"));
        let error = iq.children().find(|c| c.has_tag_name("error")).unwrap();
        assert!(error
            .children()
            .any(|c| c.tag_name().name() == "item-not-found"));
    });
}

#[test]
fn offline_messages_over_the_budget_reach_a_client_that_acknowledges() {
    // 20 stored messages of 10 KB with a 64 KiB budget: they come in batches, each after
    // the client's ack made room (XEP-0198), not all at once into the unacknowledged queue.
    let server = TestServer::start(&format!(
        "[limits]\noutbound_queue_bytes = 65536\n{NO_RATE_LIMIT}"
    ));
    server.add_user("alice");
    server.add_user("bob");
    let mut bob = Client::online(&server, "bob", "b");
    let body = "o".repeat(10_000);
    for n in 0..20 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat' id='o{n}'><body>{body}</body></message>"
        ));
    }
    bob.sync();
    let mut alice = Client::login(&server, "alice", "a");
    alice.send(&format!("<enable xmlns='{SM}'/>"));
    assert!(alice.stanza().starts_with("<enabled "));
    alice.send("<presence/>");
    let (mut received, mut seen) = (0u32, std::collections::BTreeSet::new());
    while seen.len() < 20 {
        let Got::Stanza(stanza) = alice.next() else {
            panic!("stream ended after {} messages", seen.len());
        };
        let (name, id) = with_doc(&stanza, |n| {
            (
                n.tag_name().name().to_owned(),
                n.attribute("id").map(str::to_owned),
            )
        });
        match name.as_str() {
            "r" => alice.send(&format!("<a xmlns='{SM}' h='{received}'/>")),
            "message" | "presence" | "iq" => {
                received += 1;
                if let Some(id) = id.filter(|id| id.starts_with('o')) {
                    seen.insert(id);
                }
            }
            other => panic!("unexpected {other}: {stanza}"),
        }
    }
    alice.sync();
}
