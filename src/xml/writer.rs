//! Escaping writer: owns turning text and parsed elements back into XML
//! bytes for forwarding and storage.
//!
//! It must never emit peer-supplied text unescaped, and never copy a peer's
//! namespace prefixes: element namespaces are re-declared with `xmlns='…'`
//! where they change, so a forwarded stanza means the same in any stream.

use std::fmt::{self, Write};

use super::NS_XML;

/// Escapes `& < > ' "` (and CR, which a parser would otherwise turn into
/// LF): safe for text and for attribute values in either quote style.
/// Writes borrowed slices straight through; never allocates.
pub struct Esc<'a>(pub &'a str);

/// Like [`Esc`], and also escapes tab and LF, which attribute-value
/// normalisation would otherwise turn into spaces. Use it for attribute
/// values whose exact content must survive (re-serialised stanzas).
pub struct EscAttr<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(f, self.0, false)
    }
}

impl fmt::Display for EscAttr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(f, self.0, true)
    }
}

/// The escaping behind [`Esc`] (`in_attribute: false`) and [`EscAttr`], also called
/// straight on a `String` by [`super::build`], which skips the formatting machinery.
pub(super) fn escape_into<W: Write + ?Sized>(
    out: &mut W,
    text: &str,
    in_attribute: bool,
) -> fmt::Result {
    let mut plain_from = 0;
    for (index, byte) in text.bytes().enumerate() {
        let entity = match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\'' => "&apos;",
            b'"' => "&quot;",
            b'\r' => "&#13;",
            b'\n' if in_attribute => "&#10;",
            b'\t' if in_attribute => "&#9;",
            _ => continue,
        };
        // Escaped bytes are ASCII, so these are char boundaries.
        out.write_str(text.get(plain_from..index).unwrap_or_default())?;
        out.write_str(entity)?;
        plain_from = index + 1;
    }
    out.write_str(text.get(plain_from..).unwrap_or_default())
}

/// Re-serialise a parsed element into `out`.
///
/// Original prefixes are dropped: an element gets `xmlns='…'` whenever its
/// namespace differs from its parent's (`parent_ns`; pass the stream's
/// default namespace, e.g. `jabber:client`, for a top-level stanza).
/// Attributes keep their order; `xml:*` attributes keep the `xml` prefix;
/// other namespaced attributes get generated `nsN` prefixes declared on the
/// same element. `top_attrs` overrides attributes of the top element only:
/// `Some(v)` replaces in place or appends, `None` removes; keys are plain
/// names or `xml:name`.
pub fn write_element(
    out: &mut String,
    node: roxmltree::Node,
    parent_ns: &str,
    top_attrs: &[(&str, Option<&str>)],
) {
    write_element_without(out, node, parent_ns, top_attrs, |_| false);
}

/// [`write_element`] leaving out the top element's child elements for
/// which `skip` is true (e.g. a hint meant for the server only).
pub fn write_element_without(
    out: &mut String,
    node: roxmltree::Node,
    parent_ns: &str,
    top_attrs: &[(&str, Option<&str>)],
    skip: impl Fn(roxmltree::Node) -> bool,
) {
    let name = node.tag_name();
    let ns = name.namespace().unwrap_or("");
    out.push('<');
    out.push_str(name.name());
    if ns != parent_ns {
        push_attribute(out, "xmlns", ns);
    }
    write_attributes(out, node, top_attrs);
    let mut has_content = false;
    for child in node.children() {
        if child.is_element() && skip(child) {
            continue;
        }
        if child.is_element() {
            open_content(out, &mut has_content);
            write_element(out, child, ns, &[]);
        } else if child.is_text() {
            open_content(out, &mut has_content);
            // Writing into a String cannot fail.
            let _ = escape_into(out, child.text().unwrap_or_default(), false);
        }
    }
    if has_content {
        out.push_str("</");
        out.push_str(name.name());
        out.push('>');
    } else {
        out.push_str("/>");
    }
}

fn open_content(out: &mut String, has_content: &mut bool) {
    if !*has_content {
        out.push('>');
        *has_content = true;
    }
}

fn write_attributes(out: &mut String, node: roxmltree::Node, overrides: &[(&str, Option<&str>)]) {
    // Namespaces that got a generated prefix on this element; the prefix is
    // `ns` + index. Stays unallocated for the usual attribute-free case.
    let mut generated: Vec<&str> = Vec::new();
    for attribute in node.attributes() {
        match attribute.namespace() {
            None | Some(NS_XML) => {
                let is_xml = attribute.namespace().is_some();
                let value = match overrides
                    .iter()
                    .find(|(key, _)| override_matches(key, attribute.name(), is_xml))
                {
                    Some((_, replacement)) => *replacement,
                    None => Some(attribute.value()),
                };
                if let Some(value) = value {
                    out.push(' ');
                    if is_xml {
                        out.push_str("xml:");
                    }
                    out.push_str(attribute.name());
                    push_value(out, value);
                }
            }
            Some(uri) => {
                let index = match generated.iter().position(|known| *known == uri) {
                    Some(index) => index,
                    None => {
                        generated.push(uri);
                        let index = generated.len() - 1;
                        let _ = write!(out, " xmlns:ns{index}");
                        push_value(out, uri);
                        index
                    }
                };
                let _ = write!(out, " ns{index}:{}", attribute.name());
                push_value(out, attribute.value());
            }
        }
    }
    for (position, (key, value)) in overrides.iter().enumerate() {
        let Some(value) = value else { continue };
        let already_written = node
            .attributes()
            .any(|attribute| match attribute.namespace() {
                None => override_matches(key, attribute.name(), false),
                Some(NS_XML) => override_matches(key, attribute.name(), true),
                Some(_) => false,
            });
        let repeated_key = overrides
            .iter()
            .take(position)
            .any(|(earlier, _)| earlier == key);
        if !already_written && !repeated_key {
            push_attribute(out, key, value);
        }
    }
}

fn override_matches(key: &str, local_name: &str, is_xml: bool) -> bool {
    if is_xml {
        key.strip_prefix("xml:") == Some(local_name)
    } else {
        key == local_name
    }
}

fn push_attribute(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    push_value(out, value);
}

fn push_value(out: &mut String, value: &str) {
    out.push_str("='");
    let _ = escape_into(out, value, true);
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::NS_CLIENT;

    fn first_child<'a, 'input>(
        doc: &'a roxmltree::Document<'input>,
    ) -> roxmltree::Node<'a, 'input> {
        doc.root_element()
            .first_element_child()
            .expect("test input has a child")
    }

    fn serialise(wrapped: &str, top_attrs: &[(&str, Option<&str>)]) -> String {
        let doc = roxmltree::Document::parse(wrapped).expect("test input parses");
        let mut out = String::new();
        write_element(&mut out, first_child(&doc), NS_CLIENT, top_attrs);
        out
    }

    /// Structural equality: names, namespaces, attributes (as a set) and text.
    fn same_tree(a: roxmltree::Node, b: roxmltree::Node) -> bool {
        let attributes = |node: roxmltree::Node| {
            let mut list: Vec<(Option<String>, String, String)> = node
                .attributes()
                .map(|attr| {
                    (
                        attr.namespace().map(str::to_owned),
                        attr.name().to_owned(),
                        attr.value().to_owned(),
                    )
                })
                .collect();
            list.sort();
            list
        };
        let (children_a, children_b) = (content(a), content(b));
        a.tag_name() == b.tag_name()
            && attributes(a) == attributes(b)
            && children_a.len() == children_b.len()
            && children_a.iter().zip(&children_b).all(|(x, y)| {
                if x.is_element() {
                    y.is_element() && same_tree(*x, *y)
                } else {
                    x.text() == y.text()
                }
            })
    }

    /// Element and non-empty text children.
    fn content<'a, 'input>(node: roxmltree::Node<'a, 'input>) -> Vec<roxmltree::Node<'a, 'input>> {
        node.children()
            .filter(|child| child.is_element() || child.text().is_some_and(|t| !t.is_empty()))
            .collect()
    }

    fn assert_round_trip(wrapped: &str) -> String {
        let out = serialise(wrapped, &[]);
        let original = roxmltree::Document::parse(wrapped).expect("parses");
        let rewrapped = format!("<w xmlns='{NS_CLIENT}'>{out}</w>");
        let reparsed = roxmltree::Document::parse(&rewrapped).expect("output parses");
        assert!(
            same_tree(first_child(&original), first_child(&reparsed)),
            "{wrapped} -> {out}"
        );
        out
    }

    #[test]
    fn escaping() {
        assert_eq!(Esc("plain").to_string(), "plain");
        assert_eq!(
            Esc("a&b<c>d'e\"f\r\n\t").to_string(),
            "a&amp;b&lt;c&gt;d&apos;e&quot;f&#13;\n\t"
        );
        assert_eq!(
            EscAttr("a\nb\tc\rd'").to_string(),
            "a&#10;b&#9;c&#13;d&apos;"
        );
        assert_eq!(
            Esc("\u{e9}<\u{1F600}>").to_string(),
            "\u{e9}&lt;\u{1F600}&gt;"
        );
        assert_eq!(Esc("").to_string(), "");
        assert_eq!(Esc("]]>").to_string(), "]]&gt;");
    }

    #[test]
    fn nested_unknown_namespaces_and_text() {
        let wrapped = "<w xmlns='jabber:client'><message type='chat' xml:lang='en'>\
            <body>a &amp; b &lt;c&gt; 'q' \"d\"</body>\
            <a xmlns='urn:a'><b xmlns='urn:b'><c xmlns='urn:c' attr='v'>deep</c></b>\
            <x:d xmlns:x='urn:a'/><plain xmlns=''/></a></message></w>";
        let out = assert_round_trip(wrapped);
        assert_eq!(
            out,
            "<message type='chat' xml:lang='en'>\
             <body>a &amp; b &lt;c&gt; &apos;q&apos; &quot;d&quot;</body>\
             <a xmlns='urn:a'><b xmlns='urn:b'><c xmlns='urn:c' attr='v'>deep</c></b>\
             <d/><plain xmlns=''/></a></message>"
        );
    }

    #[test]
    fn prefixes_are_dropped() {
        let wrapped = "<w xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'>\
            <s:error><p:x xmlns:p='urn:p'><p:y/></p:x></s:error></w>";
        let out = assert_round_trip(wrapped);
        assert_eq!(
            out,
            "<error xmlns='http://etherx.jabber.org/streams'><x xmlns='urn:p'><y/></x></error>"
        );
    }

    #[test]
    fn namespaced_attributes_get_generated_prefixes() {
        let wrapped = "<w xmlns='jabber:client'><iq xmlns:f='urn:f' xmlns:g='urn:g' \
            f:one='1' g:two='2' f:three='3' id='i'><q xmlns='urn:q' f:four='4'/></iq></w>";
        let out = assert_round_trip(wrapped);
        assert_eq!(
            out,
            "<iq xmlns:ns0='urn:f' ns0:one='1' xmlns:ns1='urn:g' ns1:two='2' ns0:three='3' id='i'>\
             <q xmlns='urn:q' xmlns:ns0='urn:f' ns0:four='4'/></iq>"
        );
    }

    #[test]
    fn attribute_values_survive_exactly() {
        let wrapped =
            "<w xmlns='jabber:client'><m a='x&#10;y&#9;z&#13;' b=\"it's &lt;&amp;&gt;\"/></w>";
        let out = assert_round_trip(wrapped);
        assert_eq!(
            out,
            "<m a='x&#10;y&#9;z&#13;' b='it&apos;s &lt;&amp;&gt;'/>"
        );
    }

    #[test]
    fn cdata_becomes_escaped_text() {
        let out = assert_round_trip("<w xmlns='jabber:client'><m><![CDATA[<b>&]]></m></w>");
        assert_eq!(out, "<m>&lt;b&gt;&amp;</m>");
    }

    #[test]
    fn top_attribute_overrides() {
        let wrapped = "<w xmlns='jabber:client'><message from='evil@x' to='bob@y' id='1' \
            xml:lang='de'><x xmlns='urn:x' from='kept'/></message></w>";
        let out = serialise(
            wrapped,
            &[
                ("from", Some("alice@h/r'1")),
                ("to", None),
                ("type", Some("chat")),
                ("xml:lang", Some("en")),
                ("type", Some("ignored duplicate")),
                ("absent", None),
            ],
        );
        assert_eq!(
            out,
            "<message from='alice@h/r&apos;1' id='1' xml:lang='en' type='chat'>\
             <x xmlns='urn:x' from='kept'/></message>"
        );
    }

    #[test]
    fn element_in_other_parent_namespace() {
        let doc = roxmltree::Document::parse("<presence xmlns='jabber:server'/>").expect("parses");
        let mut out = String::new();
        write_element(&mut out, doc.root_element(), NS_CLIENT, &[]);
        assert_eq!(out, "<presence xmlns='jabber:server'/>");
        out.clear();
        write_element(&mut out, doc.root_element(), "jabber:server", &[]);
        assert_eq!(out, "<presence/>");
    }
}
