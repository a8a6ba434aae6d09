//! The operator's side: command line, accounts while the server runs,
//! disco and version, graceful stop.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

#[test]
fn graceful_stop_closes_streams_and_exits_zero() {
    let mut server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "a");
    alice.sync();
    let status = server.stop();
    alice.expect_stream_error("system-shutdown");
    assert!(status.success(), "{status:?}");
}

#[test]
fn accounts_are_managed_while_the_server_runs() {
    let server = TestServer::start("");
    // Added through the control socket: the running server holds the db.
    server.add_user("ivy");
    let mut ivy = Client::online(&server, "ivy", "r");
    ivy.sync();
    let out = server.hearth(&["users"], "");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ivy@localhost");
    let out = server.hearth(
        &["passwd", "ivy@localhost", "--password-stdin"],
        "new secret",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Client::connect(&server);
    c.starttls();
    assert!(!c.scram(hearth::sasl::Mechanism::ScramSha256, "ivy", PASSWORD));
    assert!(c.scram(hearth::sasl::Mechanism::ScramSha256, "ivy", "new secret"));
    // Deleting the account ends its sessions.
    let out = server.hearth(&["deluser", "ivy@localhost"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ivy.expect_stream_error("not-authorized");
    let out = server.hearth(&["users"], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
}

/// Messages that are on their way while an account is deleted never outlive it: an
/// account created again under the name starts with no offline messages, no archive and
/// no last activity; what arrives after the deletion is refused to the sender.
#[test]
fn a_deleted_account_keeps_nothing_that_was_in_flight() {
    let server = TestServer::start("");
    server.add_user("alice");
    server.add_user("bob");
    let mut alice = Client::online(&server, "alice", "a");
    // Bound but not available: what alice sends goes to offline storage.
    let mut bob = Client::login(&server, "bob", "b");
    bob.sync();
    let flood = std::thread::spawn(move || {
        // Within the default burst of 100 stanzas, so no rate limit slows alice.
        for i in 0..90 {
            alice.send(&format!(
                "<message to='bob@localhost' type='chat' id='m{i}'><body>m{i}</body></message>"
            ));
        }
        alice.sync();
        alice
    });
    std::thread::sleep(Duration::from_millis(20));
    let out = server.hearth(&["deluser", "bob@localhost"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bob.expect_stream_error("not-authorized");
    let mut alice = flood.join().unwrap();
    // After the deletion, messages to bob are refused.
    alice.send("<message to='bob@localhost' type='chat' id='late'><body>late</body></message>");
    let late = alice.expect("id='late'");
    assert!(late.contains("<service-unavailable "), "{late}");

    server.add_user("bob");
    let mut bob = Client::online(&server, "bob", "again");
    bob.expect_silence(Duration::from_millis(500));
    bob.send("<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='all'/></iq>");
    let fin = bob.expect("id='q'");
    assert!(
        fin.contains("<fin ") && fin.contains("complete='true'"),
        "{fin}"
    );
    assert!(!fin.contains("<first"), "archive not empty: {fin}");
    bob.send("<iq type='get' id='last' to='bob@localhost'><query xmlns='jabber:iq:last'/></iq>");
    let last = bob.expect("id='last'");
    assert!(!last.contains("<presence"), "{last}");
}

#[test]
fn control_socket_is_owner_only_and_removed_at_stop() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = TestServer::start("");
    let socket = server.data_dir().join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    assert!(server.stop().success());
    assert!(!socket.exists(), "control.sock left behind");
}

#[test]
fn disco_and_version_describe_the_server_and_account() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut c = Client::online(&server, "alice", "a");
    c.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = c.stanza();
    for needle in [
        "<identity category='server' type='im'",
        "<feature var='urn:xmpp:ping'/>",
        "<feature var='jabber:iq:version'/>",
        "<feature var='http://jabber.org/protocol/disco#items'/>",
    ] {
        assert!(info.contains(needle), "{needle} in {info}");
    }
    c.send("<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert!(c
        .stanza()
        .contains("<query xmlns='http://jabber.org/protocol/disco#items'"));
    c.send("<iq type='get' id='d3' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let account = c.stanza();
    assert!(
        account.contains("<identity category='account' type='registered'/>"),
        "{account}"
    );
    c.send("<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>");
    let version = c.stanza();
    assert!(version.contains("<name>hearth</name>"), "{version}");
    c.send("<iq type='get' id='d4' to='nobody@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert!(c.stanza().contains("<service-unavailable "));
}

/// The fingerprint the log gives for `algorithm` (`SHA-256`, `SHA-1`).
fn logged_fingerprint(log: &str, algorithm: &str) -> String {
    let label = format!("TLS certificate {algorithm} fingerprint: ");
    let line = log.lines().find(|line| line.contains(&label));
    let line = line.unwrap_or_else(|| panic!("no {algorithm} fingerprint in\n{log}"));
    line.split(&label).nth(1).unwrap().trim().to_owned()
}

/// `AB:CD:…` of the DER certificate in a PEM file.
fn fingerprint(pem: &Path, algorithm: &'static ring::digest::Algorithm) -> String {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_file(pem).unwrap();
    let digest = ring::digest::digest(algorithm, &der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

#[test]
fn certificate_is_generated_once_and_both_fingerprints_logged() {
    let mut server = TestServer::start("");
    let cert = server.data_dir().join("tls/cert.pem");
    let first = std::fs::read(&cert).unwrap();
    // Clients show one or the other (Profanity only SHA-1): both are logged, of this file.
    let log = server.log();
    assert_eq!(
        logged_fingerprint(&log, "SHA-256"),
        fingerprint(&cert, &ring::digest::SHA256)
    );
    assert_eq!(
        logged_fingerprint(&log, "SHA-1"),
        fingerprint(&cert, &ring::digest::SHA1_FOR_LEGACY_USE_ONLY)
    );
    assert!(server.stop().success());
    server.spawn();
    let second = std::fs::read(server.data_dir().join("tls/cert.pem")).unwrap();
    assert_eq!(first, second);
}

#[test]
fn cli_misuse_is_a_one_line_error_with_exit_2() {
    let run = |args: &[&str]| hearth_command().args(args).output().unwrap();
    for args in [
        &["frobnicate"][..],
        &["adduser"],
        &["serve", "--bogus"],
        &["users", "extra"],
        &["adduser", "a@localhost", "b@localhost"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("hearth:"), "{err}");
    }
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["adduser", "--help"],
        &["check", "--help"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("hearth"),
            "{args:?}"
        );
    }
}

#[test]
fn adduser_for_another_domain_is_refused() {
    let server = TestServer::start("");
    let out = server.hearth(&["adduser", "x@example.org", "--password-stdin"], "pw");
    assert_eq!(out.status.code(), Some(2));
    let out = server.hearth(&["adduser", "localhost", "--password-stdin"], "pw");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_rejects_unknown_keys_with_line_and_prints_settings() {
    let dir = temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "domain = \"example.lan\"\n[limits]\nmax_stanzas = 5\n",
    )
    .unwrap();
    let out = hearth_command()
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_stanzas") && err.contains('3'), "{err}");
    let good = dir.join("good.toml");
    std::fs::write(&good, "domain = \"example.lan\"\n").unwrap();
    let out = hearth_command()
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let settings = String::from_utf8_lossy(&out.stdout);
    assert!(
        settings.contains("example.lan") && settings.contains("max_stanza_bytes"),
        "{settings}"
    );
}
