//! The suite never collides with a hearth running on the same machine (the Quick start's
//! `hearth serve`: TCP 5222, 5223, 5281, 7777 and UDP 3478 on every address) nor with
//! itself: servers started while those ports are taken still start, and a test config
//! naming a fixed port is refused by the harness before any server runs.

mod common;

use common::*;
use std::net::{TcpListener, UdpSocket};

/// The default ports, taken on 0.0.0.0 where they are free (one a running hearth already
/// holds stays with it); held until dropped.
struct DefaultPorts {
    _tcp: Vec<TcpListener>,
    _udp: Option<UdpSocket>,
}

fn hold_default_ports() -> DefaultPorts {
    DefaultPorts {
        _tcp: [5222, 5223, 5281, 7777]
            .into_iter()
            .filter_map(|port| TcpListener::bind(("0.0.0.0", port)).ok())
            .collect(),
        _udp: UdpSocket::bind(("0.0.0.0", 3478)).ok(),
    }
}

#[test]
fn every_service_starts_while_the_default_ports_are_taken() {
    let _held = hold_default_ports();
    // The suite's config shapes: every service on (the default), each one off, and the
    // services configured by the tests themselves.
    for extra in [
        "",
        "[upload]\nenabled = false\n[proxy]\nenabled = false\n[stun]\nenabled = false\n",
        "[muc]\nenabled = false\n",
        "[upload]\nlisten = [\"127.0.0.1:0\"]\nmax_file_bytes = 1000\n",
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\nmax_relays = 1\n",
        "[stun]\nlisten = [\"127.0.0.1:0\"]\nhost = \"192.168.1.2\"\n",
    ] {
        let server = TestServer::start(extra);
        server.add_user("alice");
        let mut alice = Client::online(&server, "alice", "a");
        alice.sync();
    }
}

#[test]
#[should_panic(expected = "stun.listen = 0.0.0.0:3478 in a test config")]
fn a_test_config_with_a_fixed_port_is_refused() {
    // [stun] given without `listen`: the default port would be bound.
    TestServer::start("[stun]\nhost = \"192.168.1.2\"\n");
}

#[test]
#[should_panic(expected = "upload.listen = 127.0.0.1:5281 in a test config")]
fn a_fixed_loopback_port_is_refused_too() {
    TestServer::start("[upload]\nlisten = [\"127.0.0.1:5281\"]\n");
}
