//! XEP-0215 External Service Discovery and the built-in STUN server as a client sees them:
//! the feature in the server's disco#info, the service list (all or one type), TURN
//! credentials derived from the configured secret, errors for unknown services, a real
//! UDP Binding request answered with the client's address, and the secret kept out of
//! `hearth check` and the log.

mod common;

use common::*;
use hearth::sasl::base64;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const NS: &str = "urn:xmpp:extdisco:2";
const SECRET: &str = "turn-shared-s3cret";

/// The `<services>` or `<credentials>` element of the answer to `payload`, as sent.
fn ask(client: &mut Client, id: &str, payload: &str) -> String {
    client.send(&format!(
        "<iq type='get' id='{id}' to='{DOMAIN}'>{payload}</iq>"
    ));
    let reply = client.expect(&format!("id='{id}'"));
    assert!(reply.contains("type='result'"), "{reply}");
    let start = reply.find("><").map(|at| at + 1).unwrap();
    reply[start..reply.len() - "</iq>".len()].to_string()
}

/// The port of the built-in STUN server as the service list gives it.
fn stun_port(services: &str) -> u16 {
    with_doc(services, |node| {
        let stun = node
            .children()
            .find(|c| c.attribute("type") == Some("stun"))
            .unwrap_or_else(|| panic!("no stun service: {services}"));
        stun.attribute("port").unwrap().parse().unwrap()
    })
}

/// A Binding request with `transaction` (RFC 8489 §5: type, length, cookie, id).
fn binding_request(transaction: [u8; 12]) -> Vec<u8> {
    let mut packet = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    packet.extend_from_slice(&transaction);
    packet
}

#[test]
fn builtin_stun_is_advertised_and_answers_binding_requests() {
    let server = TestServer::start("");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "phone");

    alice.send(&format!(
        "<iq type='get' id='info' to='{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    let info = alice.expect("id='info'");
    assert!(info.contains(&format!("<feature var='{NS}'/>")), "{info}");

    let services = ask(&mut alice, "all", &format!("<services xmlns='{NS}'/>"));
    let port = stun_port(&services);
    assert_eq!(
        services,
        format!(
            "<services xmlns='{NS}'><service type='stun' host='{DOMAIN}' port='{port}' transport='udp'/></services>"
        )
    );
    server.wait_for_log(&format!("listening for stun on 127.0.0.1:{port}"));

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(patience(Duration::from_secs(5))))
        .unwrap();
    let stun: SocketAddr = ([127, 0, 0, 1], port).into();
    let transaction = *b"hearth-test1";
    udp.send_to(&binding_request(transaction), stun).unwrap();
    let mut buf = [0u8; 1500];
    let (len, from) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(from, stun);
    let mine = udp.local_addr().unwrap();
    let [a, b, c, d] = match mine.ip() {
        std::net::IpAddr::V4(v4) => v4.octets(),
        other => panic!("{other}"),
    };
    let port_x = (mine.port() ^ 0x2112).to_be_bytes();
    let mut expected = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    expected.extend_from_slice(&transaction);
    expected.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, port_x[0], port_x[1]]);
    expected.extend_from_slice(&[a ^ 0x21, b ^ 0x12, c ^ 0xa4, d ^ 0x42]);
    assert_eq!(&buf[..len], expected.as_slice());

    // Not Binding requests: no answer at all, and the server keeps answering.
    let mut wrong_cookie = binding_request(transaction);
    wrong_cookie[4] = 0;
    let mut response = binding_request(transaction);
    response[1] = 0x01;
    response[0] = 0x01;
    for junk in [&b"hello"[..], &wrong_cookie, &response, &[0u8; 20]] {
        udp.send_to(junk, stun).unwrap();
    }
    udp.send_to(&binding_request(*b"hearth-test2"), stun)
        .unwrap();
    let (len, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(len, 32);
    assert_eq!(
        &buf[8..20],
        b"hearth-test2",
        "only the valid request is answered"
    );
}

#[test]
fn turn_credentials_come_from_the_shared_secret() {
    let server = TestServer::start(&format!(
        "[stun]\nenabled = false\n\
         [[extdisco.services]]\ntype = \"turn\"\nhost = \"turn.example.net\"\nport = 3478\nsecret = \"{SECRET}\"\nttl_secs = 3600\n\
         [[extdisco.services]]\ntype = \"turns\"\nhost = \"turn.example.net\"\nport = 5349\ntransport = \"tcp\"\nsecret = \"{SECRET}\"\n\
         [[extdisco.services]]\ntype = \"stuns\"\nhost = \"stun.example.net\"\nport = 5349\ntransport = \"tcp\"\n"
    ));
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "phone");

    let before = hearth::time::unix_now();
    let turn = ask(
        &mut alice,
        "turn",
        &format!("<services xmlns='{NS}' type='turn'/>"),
    );
    let after = hearth::time::unix_now();
    let (username, password, expires) = with_doc(&turn, |node| {
        let services: Vec<_> = node.children().filter(|c| c.is_element()).collect();
        assert_eq!(services.len(), 1, "{turn}");
        let s = services[0];
        let attr = |name| s.attribute(name).unwrap_or_default().to_string();
        (attr("username"), attr("password"), attr("expires"))
    });
    let expiry: u64 = username.strip_suffix(":alice").unwrap().parse().unwrap();
    assert!((before + 3600..=after + 3600).contains(&expiry), "{turn}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
    let expected_password = base64::encode(ring::hmac::sign(&key, username.as_bytes()).as_ref());
    assert_eq!(password, expected_password);
    assert_eq!(expires, hearth::time::format_datetime(expiry));
    assert_eq!(
        turn,
        format!(
            "<services xmlns='{NS}' type='turn'><service type='turn' host='turn.example.net' port='3478' transport='udp' username='{username}' password='{password}' expires='{expires}' restricted='1'/></services>"
        )
    );

    // All of them, in the configured order; no STUN of our own when it is off.
    let all = ask(&mut alice, "all", &format!("<services xmlns='{NS}'/>"));
    let kinds = with_doc(&all, |node| {
        node.children()
            .filter_map(|c| {
                Some(format!(
                    "{}/{}",
                    c.attribute("type")?,
                    c.attribute("transport")?
                ))
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(kinds, ["turn/udp", "turns/tcp", "stuns/tcp"], "{all}");
    assert!(
        all.contains("<service type='stuns' host='stun.example.net' port='5349' transport='tcp'/>")
    );
    let none = ask(
        &mut alice,
        "none",
        &format!("<services xmlns='{NS}' type='stun'/>"),
    );
    assert_eq!(
        none,
        format!("<services xmlns='{NS}' type='stun'></services>")
    );

    // §3.3: credentials for one service.
    let creds = ask(
        &mut alice,
        "cred",
        &format!("<credentials xmlns='{NS}'><service host='turn.example.net' type='turns'/></credentials>"),
    );
    assert!(
        creds.starts_with(&format!(
            "<credentials xmlns='{NS}'><service type='turns' host='turn.example.net' port='5349' transport='tcp' username='"
        )) && creds.ends_with(" restricted='1'/></credentials>"),
        "{creds}"
    );
    for (id, payload, condition) in [
        ("unknown", format!("<credentials xmlns='{NS}'><service host='other.example' type='turn'/></credentials>"), "item-not-found"),
        ("port", format!("<credentials xmlns='{NS}'><service host='turn.example.net' type='turn' port='1'/></credentials>"), "item-not-found"),
        ("empty", format!("<credentials xmlns='{NS}'/>"), "bad-request"),
    ] {
        alice.send(&format!("<iq type='get' id='{id}' to='{DOMAIN}'>{payload}</iq>"));
        let error = alice.expect(&format!("id='{id}'"));
        assert!(error.contains("type='error'") && error.contains(&format!("<{condition} ")), "{error}");
    }

    // The secret shows neither in the effective settings nor in the log.
    let check = server.hearth(&["check"], "");
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && shown.contains("secret = \"(hidden)\""),
        "{shown}"
    );
    assert!(!shown.contains(SECRET) && !server.log().contains(SECRET));
}

#[test]
fn stun_host_can_be_configured() {
    let server = TestServer::start("[stun]\nlisten = [\"127.0.0.1:0\"]\nhost = \"192.168.1.2\"\n");
    server.add_user("alice");
    let mut alice = Client::online(&server, "alice", "phone");
    let services = ask(&mut alice, "all", &format!("<services xmlns='{NS}'/>"));
    let port = stun_port(&services);
    assert_eq!(
        services,
        format!(
            "<services xmlns='{NS}'><service type='stun' host='192.168.1.2' port='{port}' transport='udp'/></services>"
        )
    );
}
