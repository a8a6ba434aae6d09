//! SIGHUP reloads the config file: sessions stay, live settings change, a bad file or
//! a restart-only change leaves the old values in effect and says so in the log.

mod common;

use common::*;
use std::time::Duration;

/// Edits the server's config file, sends SIGHUP and waits for the reload's log line
/// `needle` (only what the log gained since, so reloads in a row do not match early).
fn reload(server: &TestServer, edit: impl FnOnce(&str) -> String, needle: &str) -> String {
    let text = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(&server.config, edit(&text)).unwrap();
    let seen = server.log().len();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + patience(Duration::from_secs(10));
    loop {
        let log = server.log();
        if let Some(line) = log[seen..].lines().find(|line| line.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{needle}` after SIGHUP:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn replace(from: &'static str, to: &'static str) -> impl FnOnce(&str) -> String {
    move |text| {
        assert!(text.contains(from), "{from} not in\n{text}");
        text.replacen(from, to, 1)
    }
}

fn chat(from: &mut Client, to: &mut Client, to_jid: &str, body: &str) {
    from.send(&format!(
        "<message to='{to_jid}' type='chat'><body>{body}</body></message>"
    ));
    to.expect(&format!("<body>{body}</body>"));
}

/// A message whose stanza is about `bytes` long.
fn big_message(bytes: usize) -> String {
    format!(
        "<message to='alice@localhost' type='chat'><body>{}</body></message>",
        "x".repeat(bytes)
    )
}

#[test]
fn sessions_stay_across_reloads_and_keep_chatting() {
    let server = TestServer::start("[registration]\nmode = \"closed\"\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    alice.sync();
    bob.sync();

    let line = reload(&server, str::to_owned, "config reloaded");
    assert!(line.contains("no setting changed"), "{line}");
    // The certificate is read again too, and its fingerprints logged as at start.
    let deadline = std::time::Instant::now() + patience(Duration::from_secs(10));
    while server
        .log()
        .matches("TLS certificate SHA-1 fingerprint: ")
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    chat(
        &mut alice,
        &mut bob,
        "bob@localhost",
        "after the first reload",
    );

    let line = reload(
        &server,
        replace("mode = \"closed\"", "mode = \"open\""),
        "config reloaded",
    );
    assert!(line.contains("registration.mode now in effect"), "{line}");
    chat(&mut bob, &mut alice, "alice@localhost", "after the second");
    chat(&mut alice, &mut bob, "bob@localhost", "still here");

    // A new client sees the new setting.
    let mut newcomer = Client::connect(&server);
    let features = newcomer.starttls();
    assert!(
        features.contains("<register xmlns='http://jabber.org/features/iq-register'/>"),
        "{features}"
    );
    assert!(!server.log().contains("restart to apply"));
}

#[test]
fn a_smaller_stanza_limit_applies_to_new_connections() {
    let server = TestServer::start("[limits]\nmax_stanza_bytes = 65536\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    alice.sync();
    let mut before = Client::online(&server, "bob", "before");
    before.send(&big_message(5000));
    alice.expect("xxxxx</body>");

    reload(
        &server,
        replace("max_stanza_bytes = 65536", "max_stanza_bytes = 4096"),
        "limits.max_stanza_bytes now in effect",
    );
    let mut after = Client::online(&server, "bob", "after");
    // XEP-0478 advertises the new limit, and it is enforced.
    assert!(after.transcript.contains("<max-bytes>4096</max-bytes>"));
    after.send(&big_message(5000));
    let error = after.expect("<stream:error");
    assert!(error.contains("<policy-violation "), "{error}");
    // Alice's session is untouched.
    chat(&mut before, &mut alice, "alice@localhost", "small");
}

#[test]
fn a_shorter_keepalive_applies_to_an_open_session() {
    let server = TestServer::start("[keepalive]\nidle_secs = 3600\n");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.sync();
    reload(
        &server,
        replace("idle_secs = 3600", "idle_secs = 1"),
        "keepalive.idle_secs now in effect",
    );
    // Her next input starts the idle clock with the new setting.
    alice.sync();
    let ping = alice.expect("urn:xmpp:ping");
    assert!(ping.starts_with("<iq type='get' id='keepalive-"), "{ping}");
}

#[test]
fn a_tighter_rate_applies_to_an_open_session() {
    let server = TestServer::start(
        "[rate]\nstanzas_per_sec = 1000\nstanza_burst = 1000\nwarn_after_secs = 1\n",
    );
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.sync();
    reload(
        &server,
        replace(
            "stanzas_per_sec = 1000\nstanza_burst = 1000",
            "stanzas_per_sec = 1\nstanza_burst = 1",
        ),
        "rate.stanzas_per_sec, rate.stanza_burst now in effect",
    );
    // The old burst is not handed out again: a short flood is throttled and warned about.
    for i in 0..20 {
        alice.send(&format!(
            "<iq type='get' id='f{i}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
    }
    let warning = alice.expect("type='headline'");
    assert!(warning.contains("(1 stanzas or"), "{warning}");
}

#[test]
fn a_bad_config_is_logged_and_the_old_one_stays() {
    let server = TestServer::start("[limits]\nmax_stanza_bytes = 65536\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    alice.sync();
    bob.sync();

    let line = reload(
        &server,
        replace("max_stanza_bytes = 65536", "max_stanza_bytes = 12"),
        "config reload failed",
    );
    let config = server.config.display().to_string();
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains(&format!("keeping the old settings: {config}:")),
        "{line}"
    );
    assert!(line.contains("limits.max_stanza_bytes"), "{line}");
    let text = std::fs::read_to_string(&server.config).unwrap();
    let number = text
        .lines()
        .position(|l| l.contains("= 12"))
        .map(|index| index + 1)
        .unwrap();
    assert!(line.contains(&format!("{config}:{number}:")), "{line}");

    let line = reload(
        &server,
        replace(
            "max_stanza_bytes = 12",
            "max_stanza_bytes = 4096\nbogus = 1",
        ),
        "config reload failed",
    );
    assert!(line.contains("unknown field `bogus`"), "{line}");

    // Still serving, with the old limit: a new client may send 5000 bytes.
    chat(&mut alice, &mut bob, "bob@localhost", "still up");
    let mut late = Client::online(&server, "bob", "late");
    late.send(&big_message(5000));
    alice.expect("xxxxx</body>");
    late.sync();
    assert!(!server.log().contains("now in effect"));
}

#[test]
fn a_bad_certificate_refuses_the_whole_reload() {
    let server = TestServer::start("[registration]\nmode = \"closed\"\n");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    let mut bob = Client::online(&server, "bob", "b");
    alice.sync();
    bob.sync();
    let missing = server.dir.join("missing.pem");
    let key = server.data_dir().join("tls/key.pem");
    let before = server.log().len();
    let line = reload(
        &server,
        |text| {
            format!(
                "{}[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                replace("mode = \"closed\"", "mode = \"open\"")(text),
                missing.display(),
                key.display()
            )
        },
        "config reload failed",
    );
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains("keeping the old settings: cannot read TLS certificate"),
        "{line}"
    );
    assert!(line.contains(&missing.display().to_string()), "{line}");

    // Sessions stay, and so does everything else: registration is still closed for a
    // newcomer, whose TLS handshake still gets the old certificate.
    chat(&mut alice, &mut bob, "bob@localhost", "still up");
    let mut newcomer = Client::connect(&server);
    let features = newcomer.starttls();
    assert!(!features.contains("iq-register"), "{features}");
    chat(&mut bob, &mut alice, "alice@localhost", "and back");
    // One outcome: that error line and nothing else about the reload.
    let log = server.log();
    let reload_lines: Vec<&str> = log[before..]
        .lines()
        .filter(|l| l.contains("reload") || l.contains("now in effect") || l.contains("TLS"))
        .collect();
    assert_eq!(reload_lines, [line.as_str()], "{log}");
}

#[test]
fn a_changed_listen_port_needs_a_restart() {
    let server = TestServer::start("[registration]\nmode = \"closed\"\n");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.sync();
    let line = reload(
        &server,
        |text| {
            replace("mode = \"closed\"", "mode = \"open\"")(text).replacen(
                "starttls = [\"127.0.0.1:0\"]",
                "starttls = [\"127.0.0.1:1\"]",
                1,
            )
        },
        "restart to apply",
    );
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.contains("listen.starttls changed; restart to apply"),
        "{line}"
    );
    // What can change did; the old port still serves.
    server.wait_for_log("registration.mode now in effect");
    let log = server.log();
    let line = log.lines().find(|l| l.contains("config reloaded")).unwrap();
    assert!(!line.contains("listen"), "{line}");
    let mut newcomer = Client::connect(&server);
    assert!(newcomer.starttls().contains("iq-register"));
    alice.sync();
}

/// Reads the next sd_notify datagram.
fn notification(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("an sd_notify message");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Where the server's sd_notify messages arrive: a socket of this test's own, so
/// NOTIFY_SOCKET reaches its server alone. Its directory goes when the test ends.
struct Notify {
    socket: std::os::unix::net::UnixDatagram,
    dir: std::path::PathBuf,
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn systemd_hears_ready_again_after_a_bad_reload() {
    let dir = temp_dir("notify");
    let path = dir.join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(patience(Duration::from_secs(30))))
        .unwrap();
    let notify = Notify { socket, dir };
    let socket = &notify.socket;
    let mut server = TestServer::start_with_env("", &[("NOTIFY_SOCKET", &path)]);
    assert_eq!(notification(socket), "READY=1");
    let good = std::fs::read_to_string(&server.config).unwrap();
    let signal = |server: &TestServer, name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::write(&server.config, format!("{good}[roster]\nmax_items = -1\n")).unwrap();
    signal(&server, "-HUP");
    assert!(notification(socket).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(notification(socket), "READY=1");
    // Still running: a good file reloads as well.
    std::fs::write(&server.config, format!("{good}[roster]\nmax_items = 5\n")).unwrap();
    signal(&server, "-HUP");
    assert!(notification(socket).starts_with("RELOADING=1"));
    assert_eq!(notification(socket), "READY=1");
    assert!(server.stop().success());
    assert_eq!(notification(socket), "STOPPING=1");
}
