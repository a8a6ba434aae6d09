//! A fake external component (XEP-0114) for the component tests: the test speaks the
//! component protocol on the server's component port, as a gateway would.

use super::*;

pub const NS_ACCEPT: &str = "jabber:component:accept";
pub const SECRET: &str = "gateway secret";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// `[component]` on an ephemeral loopback port, `extra` more of its keys, and one
/// `[[components]]` with [`SECRET`] for each domain.
pub fn config(domains: &[&str], extra: &str) -> String {
    let mut text = format!("[component]\nlisten = [\"127.0.0.1:0\"]\n{extra}\n");
    for domain in domains {
        text.push_str(&format!(
            "[[components]]\ndomain = \"{domain}\"\nsecret = \"{SECRET}\"\n"
        ));
    }
    text
}

/// A component stream to `server` naming `domain`, and the stream id of the server's
/// answer (its header).
pub fn open(server: &TestServer, domain: &str) -> (Client, Option<String>) {
    let addr = server.component.expect("the server listens for components");
    let mut component = Client::connect_to(addr, server.tls_client_config());
    component.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
    ));
    component.header();
    let header = component.header.as_ref().expect("a header");
    assert_eq!(header.default_ns.as_deref(), Some(NS_ACCEPT));
    let id = header.id.clone();
    (component, id)
}

/// XEP-0114 §3: the hex SHA-1 of the stream id and the secret.
pub fn handshake(id: &str, secret: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{id}{secret}").as_bytes(),
    );
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// [`open`], then the handshake with `secret`.
pub fn try_connect(server: &TestServer, domain: &str, secret: &str) -> Client {
    let (mut component, id) = open(server, domain);
    let id = id.expect("a stream id");
    component.send(&format!(
        "<handshake>{}</handshake>",
        handshake(&id, secret)
    ));
    component
}

/// A component connected as `domain`: handshake accepted, and the server's disco#info
/// query answered with an identity named `name`.
pub fn connect_named(server: &TestServer, domain: &str, name: &str) -> Client {
    let mut component = try_connect(server, domain, SECRET);
    let answer = component.receive();
    assert!(answer.is("handshake", NS_ACCEPT), "{answer}");
    assert!(
        answer.children().is_empty() && answer.text().is_empty(),
        "{answer}"
    );
    let query =
        component.expect_where(|s| s.name() == "iq" && s.find("query", NS_DISCO_INFO).is_some());
    assert_eq!(query.attr("type"), Some("get"));
    assert_eq!(query.attr("to"), Some(domain));
    component.send(&format!(
        "<iq type='result' id='{}' from='{domain}' to='{}'><query xmlns='{NS_DISCO_INFO}'>\
         <identity category='gateway' type='irc' name='{name}'/></query></iq>",
        query.attr("id").unwrap(),
        query.attr("from").unwrap()
    ));
    component
}

pub fn connect(server: &TestServer, domain: &str) -> Client {
    connect_named(server, domain, "Test gateway")
}
