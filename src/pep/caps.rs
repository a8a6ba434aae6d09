//! Entity capabilities (XEP-0115): the server-wide cache of verified feature sets by `ver`,
//! the disco#info queries the server sends to learn unknown ones, which set each session
//! has (one shared pointer per session), and the server's own `ver`. It never trusts a
//! feature set whose hash does not match the `ver` it was announced under.

use crate::disco;
use crate::feature::{Feature, StreamStage};
use crate::jid::Jid;
use crate::router::Session;
use crate::sasl::base64;
use crate::server::Server;
use crate::stanza::{IqType, Stanza, StanzaType};
use crate::xml::build::Element;
use crate::xml::{Esc, NS_XML};
use roxmltree::Node;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::rc::Rc;

pub const NS: &str = "http://jabber.org/protocol/caps";
/// The node the server names itself with in its own caps.
pub const SERVER_NODE: &str = "https://hearth";
const NS_DATA: &str = "jabber:x:data";

/// Verified sets kept; past it the cache starts over (clients share few distinct sets).
const MAX_KNOWN: usize = 256;
/// Queries awaiting an answer; past it the oldest is given up.
const MAX_PENDING: usize = 64;
/// Sessions waiting on one query.
const MAX_WAITERS: usize = 64;

pub const FEATURE: Feature = Feature {
    name: "caps",
    state: Some(crate::feature::init::<Caps>),
    server_info_node: Some(is_server_node),
    on_server_response: Some(|server, session, stanza| {
        on_response(server, session, stanza);
    }),
    stream_features: Some(|server, stage, out| {
        if stage == StreamStage::Authenticated {
            write_stream_feature(out, server);
        }
    }),
    ..Feature::NONE
};

/// A verified feature set, sorted; shared by every session announcing its `ver`.
pub type Features = Rc<[Box<str>]>;

/// The server-wide cache and the queries in flight.
#[derive(Default)]
pub struct Caps {
    known: RefCell<HashMap<Box<str>, Features>>,
    pending: RefCell<Vec<Query>>,
}

struct Query {
    id: Box<str>,
    ver: Box<str>,
    /// The session asked: only its answer counts.
    asked: Jid,
    /// Sessions that announced this `ver` meanwhile.
    waiters: Vec<Jid>,
}

/// `node+notify`, the feature that asks for a node's events (XEP-0163 §4.4).
pub fn notify_feature(node: &str) -> String {
    format!("{node}+notify")
}

/// Whether the session's verified capabilities contain `feature`.
pub fn wants(session: &Session, feature: &str) -> bool {
    session
        .presence
        .caps
        .borrow()
        .as_ref()
        .is_some_and(|features| features.binary_search_by(|f| (**f).cmp(feature)).is_ok())
}

/// On each available broadcast presence: adopts the announced capabilities when known,
/// else asks the client for them; on initial presence with known capabilities, the last
/// items of interesting nodes follow (XEP-0163 §6).
pub fn on_available(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    initial: bool,
    out: &mut String,
) {
    let announced = stanza
        .child("c", NS)
        .filter(|c| c.attribute("hash") == Some("sha-1"))
        .and_then(|c| Some((c.attribute("node")?, c.attribute("ver")?)));
    let Some((node, ver)) = announced else {
        if initial {
            session.presence.caps.take();
        }
        return;
    };
    let known = server.state::<Caps>().known.borrow().get(ver).cloned();
    match known {
        Some(features) => {
            let changed = session
                .presence
                .caps
                .replace(Some(features.clone()))
                .is_none_or(|old| !Rc::ptr_eq(&old, &features));
            if initial || changed {
                super::deliver_last(server, session, out);
            }
        }
        None => {
            session.presence.caps.take();
            ask(server, session, node, ver, out);
        }
    }
}

fn ask(server: &Server, session: &Session, node: &str, ver: &str, out: &mut String) {
    let caps = server.state::<Caps>();
    let mut pending = caps.pending.borrow_mut();
    if let Some(query) = pending.iter_mut().find(|q| &*q.ver == ver) {
        if query.waiters.len() < MAX_WAITERS && !query.waiters.contains(&session.jid) {
            query.waiters.push(session.jid.jid().clone());
        }
        return;
    }
    if pending.len() >= MAX_PENDING {
        pending.remove(0);
    }
    let id = format!("caps-{}", server.random_id());
    let _ = write!(
        out,
        "<iq type='get' id='{id}' from='{}' to='{}'><query xmlns='{}' node='{}#{}'/></iq>",
        Esc(&server.config().domain),
        Esc(session.jid.as_str()),
        disco::NS_INFO,
        Esc(node),
        Esc(ver)
    );
    pending.push(Query {
        id: id.into(),
        ver: ver.into(),
        asked: session.jid.jid().clone(),
        waiters: vec![session.jid.jid().clone()],
    });
}

/// An iq result or error addressed to the server: when it answers one of the caps queries,
/// the verified set is cached and given to the waiting sessions. False when it is not ours.
pub fn on_response(server: &Server, session: &Session, stanza: &Stanza) -> bool {
    let query = {
        let caps = server.state::<Caps>();
        let mut pending = caps.pending.borrow_mut();
        let Some(index) = pending
            .iter()
            .position(|q| Some(&*q.id) == stanza.id && q.asked == session.jid)
        else {
            return false;
        };
        pending.remove(index)
    };
    let answer = stanza
        .payload()
        .filter(|_| stanza.ty == StanzaType::Iq(IqType::Result))
        .filter(|p| p.has_tag_name((disco::NS_INFO, "query")));
    let features = match answer.map(|q| verified(q, &query.ver)) {
        Some(Ok(features)) => features,
        // Seen with Profanity at every login: it announces a `ver`, adds features, and
        // answers the query for the old `node#ver` with its new set. Naming both hashes
        // shows the admin the client changed its set (its next presence carries the new
        // `ver`, which is asked about and verified in turn).
        Some(Err(Some(actual))) => {
            log::info!(
                "{}: capabilities {} not verified: the disco#info answer for it hashes to {actual}; not cached",
                session.jid,
                query.ver
            );
            return true;
        }
        Some(Err(None)) | None => {
            log::info!(
                "{}: capabilities {} not verified: no usable disco#info answer",
                session.jid,
                query.ver
            );
            return true;
        }
    };
    let caps = server.state::<Caps>();
    let mut known = caps.known.borrow_mut();
    if known.len() >= MAX_KNOWN {
        known.clear();
    }
    known.insert(query.ver, features.clone());
    drop(known);
    let router = server.router.borrow();
    for jid in &query.waiters {
        if let Some(waiter) = router.find(jid) {
            *waiter.presence.caps.borrow_mut() = Some(features.clone());
            let mut last = String::new();
            if waiter.available.get() {
                super::deliver_last(server, waiter, &mut last);
            }
            if !last.is_empty() {
                server.deliver(waiter, last.into(), false);
            }
        }
    }
    true
}

/// The features of a disco#info answer when its XEP-0115 §5.1 hash is `ver`; otherwise the
/// hash it does have, if it may be hashed at all (§5.4).
fn verified(query: Node, ver: &str) -> Result<Features, Option<String>> {
    let (string, mut features) = verification_string(query).ok_or(None)?;
    let actual = hash(&string);
    if actual != ver {
        return Err(Some(actual));
    }
    features.sort_unstable();
    Ok(features.into_iter().map(Box::from).collect())
}

/// The base64 SHA-1 of a verification string.
fn hash(string: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, string.as_bytes());
    base64::encode(digest.as_ref())
}

/// An extended-information form: FORM_TYPE and the other fields with their values.
type Form<'a> = (&'a str, Vec<(&'a str, Vec<&'a str>)>);

/// XEP-0115 §5.1 (with the §5.4 duplicate checks): the verification string of a disco#info
/// answer and its features. `None` for an answer that must not be cached.
fn verification_string<'a>(query: Node<'a, '_>) -> Option<(String, Vec<&'a str>)> {
    let mut identities: Vec<[&str; 4]> = Vec::new();
    let mut features: Vec<&str> = Vec::new();
    let mut forms: Vec<Form> = Vec::new();
    for child in query.children().filter(Node::is_element) {
        match (child.tag_name().namespace(), child.tag_name().name()) {
            (Some(disco::NS_INFO), "identity") => identities.push([
                child.attribute("category")?,
                child.attribute("type")?,
                child.attribute((NS_XML, "lang")).unwrap_or_default(),
                child.attribute("name").unwrap_or_default(),
            ]),
            (Some(disco::NS_INFO), "feature") => features.push(child.attribute("var")?),
            (Some(NS_DATA), "x") if child.attribute("type") == Some("result") => {
                let mut form_type = None;
                let mut fields = Vec::new();
                for field in child
                    .children()
                    .filter(|f| f.has_tag_name((NS_DATA, "field")))
                {
                    let values: Vec<&str> = field
                        .children()
                        .filter(|v| v.has_tag_name((NS_DATA, "value")))
                        .map(|v| v.text().unwrap_or_default())
                        .collect();
                    match field.attribute("var") {
                        Some("FORM_TYPE") => form_type = values.first().copied(),
                        Some(var) => fields.push((var, values)),
                        None => {}
                    }
                }
                // Forms without FORM_TYPE are left out (§5.4 step 3.6).
                if let Some(form_type) = form_type {
                    forms.push((form_type, fields));
                }
            }
            _ => {}
        }
    }
    identities.sort_unstable();
    features.sort_unstable();
    forms.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let duplicates = identities.windows(2).any(|w| matches!(w, [a, b] if a == b))
        || features.windows(2).any(|w| matches!(w, [a, b] if a == b))
        || forms.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0));
    if duplicates {
        return None;
    }
    let mut string = String::new();
    for identity in &identities {
        string.push_str(&identity.join("/"));
        string.push('<');
    }
    for feature in &features {
        string.push_str(feature);
        string.push('<');
    }
    for (form_type, fields) in &mut forms {
        string.push_str(form_type);
        string.push('<');
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (var, values) in fields {
            string.push_str(var);
            string.push('<');
            values.sort_unstable();
            for value in values {
                string.push_str(value);
                string.push('<');
            }
        }
    }
    Some((string, features))
}

/// The server's own `ver` (XEP-0115 §6.3), from the one identity, the features
/// [`disco`] advertises for the domain and the XEP-0157 contact form.
pub fn server_ver(server: &Server) -> String {
    let mut string = format!("{}<", disco::SERVER_IDENTITY.join("/"));
    for feature in disco::server_features(server) {
        string.push_str(feature);
        string.push('<');
    }
    crate::contact::append_to_ver(&mut string, &server.config().contact);
    hash(&string)
}

/// `<c/>` for the stream features after authentication (XEP-0115 §6.3).
fn write_stream_feature(out: &mut String, server: &Server) {
    let ver = server_ver(server);
    Element::new("c")
        .ns(NS)
        .attr("hash", "sha-1")
        .attr("node", SERVER_NODE)
        .attr("ver", &ver)
        .empty(out);
}

/// Whether a disco#info `node` names the server's current capabilities.
fn is_server_node(server: &Server, node: &str) -> bool {
    node.strip_prefix(SERVER_NODE)
        .and_then(|rest| rest.strip_prefix('#'))
        .is_some_and(|ver| ver == server_ver(server))
}

impl crate::feature::State for Caps {
    fn new(_config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        Caps::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.3, the complex example: its string and its `ver`.
    #[test]
    fn complex_example_of_the_xep() {
        let xml = "<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
          <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
          <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
          <feature var='http://jabber.org/protocol/caps'/>\
          <feature var='http://jabber.org/protocol/disco#info'/>\
          <feature var='http://jabber.org/protocol/disco#items'/>\
          <feature var='http://jabber.org/protocol/muc'/>\
          <x xmlns='jabber:x:data' type='result'>\
            <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
            <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
            <field var='os'><value>Mac</value></field>\
            <field var='os_version'><value>10.5.1</value></field>\
            <field var='software'><value>Psi</value></field>\
            <field var='software_version'><value>0.11</value></field>\
          </x></query>";
        let doc = roxmltree::Document::parse(xml).unwrap();
        let (string, _) = verification_string(doc.root_element()).unwrap();
        assert_eq!(
            string,
            "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<\
             http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
             http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<\
             ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
        );
        let features = verified(doc.root_element(), "q07IKJEyjvHSyhy//CH0CxmKi8w=").unwrap();
        assert_eq!(features.len(), 4);
        assert_eq!(
            verified(doc.root_element(), "AAAA").err(),
            Some(Some("q07IKJEyjvHSyhy//CH0CxmKi8w=".into()))
        );
    }

    #[test]
    fn duplicates_are_not_cached() {
        let xml = "<query xmlns='http://jabber.org/protocol/disco#info'>\
          <identity category='client' type='pc'/><feature var='a'/><feature var='a'/></query>";
        let doc = roxmltree::Document::parse(xml).unwrap();
        assert!(verification_string(doc.root_element()).is_none());
    }
}
