//! What a client reads, as values: every received stanza is parsed with roxmltree in the
//! namespace context its stream header declared, into an owned [`Element`] (name, namespace,
//! attributes, children, text). Assertions on it cannot be broken by attribute order, quotes
//! or prefixes, and cannot pass with a wrong namespace. Expected XML written as a literal is
//! compared the same way: `assert_eq!(stanza, "<presence from='a@localhost/r'/>")` parses both.

use super::{Client, Got};
use hearth::jid::Jid;
use hearth::xml::StreamHeader;
use std::collections::BTreeMap;
use std::fmt;

pub const CLIENT_NS: &str = "jabber:client";
pub const STREAM_NS: &str = "http://etherx.jabber.org/streams";
pub const TLS_NS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL_NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 6120 §4.9.3: stream error conditions.
pub const STREAM_ERRORS_NS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3.3: stanza error conditions.
pub const STANZA_ERRORS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0203.
pub const DELAY_NS: &str = "urn:xmpp:delay";
pub const ROSTER_NS: &str = "jabber:iq:roster";

/// One element (a stanza or a part of one), parsed. Equality is structural: name,
/// namespace, attributes as a set, children in order, text.
#[derive(Clone)]
pub struct Element {
    name: String,
    ns: String,
    /// Unqualified attributes by name; namespaced ones as `{ns}name`.
    attrs: BTreeMap<String, String>,
    children: Vec<Element>,
    /// The element's own text (not its children's), concatenated.
    text: String,
    /// The bytes as received, for failure messages.
    xml: String,
}

impl Element {
    /// Parses `xml` (one element) inside the stream opened by `header`.
    pub fn parse_in_stream(xml: &str, header: &StreamHeader) -> Element {
        let mut open = format!("<{}", header.qname);
        if let Some(ns) = &header.default_ns {
            open.push_str(&format!(" xmlns='{}'", escape(ns)));
        }
        for (prefix, uri) in &header.prefixes {
            open.push_str(&format!(" xmlns:{prefix}='{}'", escape(uri)));
        }
        let wrapped = format!("{open}>{xml}</{}>", header.qname);
        let doc = roxmltree::Document::parse(&wrapped)
            .unwrap_or_else(|e| panic!("not well-formed in its stream ({e}): {xml}"));
        let mut elements = doc.root_element().children().filter(|n| n.is_element());
        let element = elements
            .next()
            .unwrap_or_else(|| panic!("no element: {xml}"));
        assert!(elements.next().is_none(), "more than one element: {xml}");
        Element::from_node(element, &wrapped)
    }

    /// Parses a literal as if a client stream (`jabber:client`, `stream:`) had carried it.
    pub fn parse(xml: &str) -> Element {
        let header = StreamHeader {
            qname: "stream:stream".into(),
            default_ns: Some(CLIENT_NS.into()),
            prefixes: vec![("stream".into(), STREAM_NS.into())],
            ..StreamHeader::default()
        };
        Element::parse_in_stream(xml, &header)
    }

    fn from_node(node: roxmltree::Node, input: &str) -> Element {
        let attrs = node
            .attributes()
            .map(|a| {
                let name = match a.namespace() {
                    Some(ns) => format!("{{{ns}}}{}", a.name()),
                    None => a.name().to_string(),
                };
                (name, a.value().to_string())
            })
            .collect();
        Element {
            name: node.tag_name().name().to_string(),
            ns: node.tag_name().namespace().unwrap_or_default().to_string(),
            attrs,
            children: node
                .children()
                .filter(|c| c.is_element())
                .map(|c| Element::from_node(c, input))
                .collect(),
            text: node
                .children()
                .filter(|c| c.is_text())
                .filter_map(|c| c.text())
                .collect(),
            xml: input[node.range()].to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace URI; empty when there is none.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True for `name` in `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// An unqualified attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    /// Every attribute name (namespaced ones as `{ns}name`).
    pub fn attr_names(&self) -> impl Iterator<Item = &str> {
        self.attrs.keys().map(String::as_str)
    }

    /// A JID-valued attribute as a value (panics on an invalid JID: the server sent it).
    pub fn jid_attr(&self, name: &str) -> Option<Jid> {
        self.attr(name).map(|text| {
            Jid::parse(text).unwrap_or_else(|e| panic!("invalid {name} ({e:?}): {self}"))
        })
    }

    pub fn from(&self) -> Option<Jid> {
        self.jid_attr("from")
    }

    pub fn to(&self) -> Option<Jid> {
        self.jid_attr("to")
    }

    /// True when `from` is the JID `jid` (compared as values).
    pub fn is_from(&self, jid: &str) -> bool {
        self.from() == Some(jid_value(jid))
    }

    pub fn children(&self) -> &[Element] {
        &self.children
    }

    /// The first child `name` in `ns`, if any.
    pub fn find(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(name, ns))
    }

    /// The first child `name` in `ns`; panics without one.
    pub fn child(&self, name: &str, ns: &str) -> &Element {
        self.find(name, ns)
            .unwrap_or_else(|| panic!("no <{name} xmlns='{ns}'> in {self}"))
    }

    /// The text of the first child `name` in `ns`, if there is that child.
    pub fn child_text(&self, name: &str, ns: &str) -> Option<&str> {
        self.find(name, ns).map(Element::text)
    }

    /// The element's own text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The stanza error (RFC 6120 §8.3) as (type, defined condition): the `<error>` child in
    /// the stanza's namespace and its one child in the stanza-errors namespace other than
    /// `<text>`.
    pub fn error_condition(&self) -> Option<(&str, &str)> {
        let error = self.find("error", &self.ns)?;
        let mut conditions = error
            .children
            .iter()
            .filter(|c| c.ns == STANZA_ERRORS_NS && c.name != "text");
        let condition = conditions
            .next()
            .unwrap_or_else(|| panic!("no defined condition: {self}"));
        assert!(conditions.next().is_none(), "two conditions: {self}");
        let kind = error
            .attr("type")
            .unwrap_or_else(|| panic!("error without a type: {self}"));
        Some((kind, condition.name()))
    }

    /// Asserts this is a stanza error (`type='error'`) of `kind` with `condition`.
    pub fn assert_error(&self, kind: &str, condition: &str) {
        assert_eq!(self.attr("type"), Some("error"), "{self}");
        assert_eq!(self.error_condition(), Some((kind, condition)), "{self}");
    }

    /// The bytes this element was parsed from.
    pub fn xml(&self) -> &str {
        &self.xml
    }
}

/// A JID the test wrote, as a value.
pub fn jid_value(jid: &str) -> Jid {
    Jid::parse(jid).unwrap_or_else(|e| panic!("bad JID in the test: {jid} ({e:?})"))
}

impl PartialEq for Element {
    fn eq(&self, other: &Element) -> bool {
        self.name == other.name
            && self.ns == other.ns
            && self.attrs == other.attrs
            && self.children == other.children
            && self.text == other.text
    }
}

/// `element == "<literal/>"`: the literal is parsed as a client stream would carry it.
impl PartialEq<&str> for Element {
    fn eq(&self, literal: &&str) -> bool {
        *self == Element::parse(literal)
    }
}

impl PartialEq<String> for Element {
    fn eq(&self, literal: &String) -> bool {
        *self == Element::parse(literal)
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.xml)
    }
}

/// The received bytes, so a failed `assert_eq!` shows XML.
impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.xml)
    }
}

/// To be retired with the substring helpers: lets unconverted suites keep reading the bytes
/// of helpers that now return an [`Element`] (`reply.contains(…)`, `&roster_set(…)`).
impl std::ops::Deref for Element {
    type Target = str;
    fn deref(&self) -> &str {
        &self.xml
    }
}

/// XEP-0082 DateTime in UTC, as XEP-0203 requires for a delay stamp: `CCYY-MM-DDThh:mm:ss`,
/// optional fractions, then `Z`.
pub fn assert_xep0082_datetime(stamp: &str) {
    let (date, time) = stamp.split_once('T').unwrap_or_else(|| panic!("{stamp}"));
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let date: Vec<&str> = date.split('-').collect();
    assert!(
        date.len() == 3 && digits(date[0], 4) && digits(date[1], 2) && digits(date[2], 2),
        "{stamp}"
    );
    let time = time
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("not UTC: {stamp}"));
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let hms: Vec<&str> = hms.split(':').collect();
    assert!(
        hms.len() == 3 && hms.iter().all(|p| digits(p, 2)),
        "{stamp}"
    );
    assert!(
        !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()),
        "{stamp}"
    );
}

fn escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
}

impl Client {
    /// The next stanza, parsed (a header, close or EOF is a failure).
    pub fn receive(&mut self) -> Element {
        let xml = self.stanza();
        self.receive_parsed(&xml)
    }

    /// Reads stanzas until one satisfies `wanted`, skipping the others; returns it.
    pub fn expect_where(&mut self, wanted: impl Fn(&Element) -> bool) -> Element {
        loop {
            match self.next() {
                Got::Stanza(xml) => {
                    let stanza = self.receive_parsed(&xml);
                    if wanted(&stanza) {
                        return stanza;
                    }
                }
                Got::Header(_) => {}
                other => panic!(
                    "expected a matching stanza, got {other:?}; transcript: {}",
                    self.transcript
                ),
            }
        }
    }

    /// The next `<message>` from `jid` (compared as a value), in `jabber:client`.
    pub fn expect_message_from(&mut self, jid: &str) -> Element {
        self.expect_kind_from("message", jid)
    }

    /// The next `<presence>` from `jid` (compared as a value), in `jabber:client`.
    pub fn expect_presence_from(&mut self, jid: &str) -> Element {
        self.expect_kind_from("presence", jid)
    }

    /// Everything that arrives before a ping round-trip, parsed (the answer not included).
    pub fn sync_and_collect(&mut self) -> Vec<Element> {
        self.send("<iq type='get' id='collect'><ping xmlns='urn:xmpp:ping'/></iq>");
        let mut received = Vec::new();
        loop {
            let stanza = self.receive();
            if stanza.is("iq", CLIENT_NS) && stanza.attr("id") == Some("collect") {
                assert_eq!(stanza.attr("type"), Some("result"), "{stanza}");
                return received;
            }
            received.push(stanza);
        }
    }

    fn expect_kind_from(&mut self, kind: &str, jid: &str) -> Element {
        let stanza = self.expect_where(|s| s.name() == kind && s.is_from(jid));
        assert_eq!(stanza.ns(), CLIENT_NS, "{stanza}");
        stanza
    }

    /// The `<iq>` with `id`, whatever its type, in `jabber:client`.
    pub fn expect_iq(&mut self, id: &str) -> Element {
        let iq = self.expect_where(|s| s.name() == "iq" && s.attr("id") == Some(id));
        assert_eq!(iq.ns(), CLIENT_NS, "{iq}");
        iq
    }

    /// The `<iq>` with `id`, which must be a result.
    pub fn expect_iq_result(&mut self, id: &str) -> Element {
        let iq = self.expect_iq(id);
        assert_eq!(iq.attr("type"), Some("result"), "{iq}");
        iq
    }

    /// The `<iq>` with `id`, which must be an error of `kind` with `condition`.
    pub fn expect_iq_error(&mut self, id: &str, kind: &str, condition: &str) -> Element {
        let iq = self.expect_iq(id);
        iq.assert_error(kind, condition);
        iq
    }

    pub(super) fn receive_parsed(&self, xml: &str) -> Element {
        let header = self
            .header
            .as_ref()
            .unwrap_or_else(|| panic!("a stanza before any stream header: {xml}"));
        Element::parse_in_stream(xml, header)
    }
}

/// The type and defined condition of an `<iq type='error'/>` received as text.
pub fn iq_error(reply: &str) -> (String, String) {
    let iq = Element::parse(reply);
    assert_eq!(iq.attr("type"), Some("error"), "{reply}");
    let (kind, condition) = iq
        .error_condition()
        .unwrap_or_else(|| panic!("no error: {reply}"));
    (kind.to_string(), condition.to_string())
}
