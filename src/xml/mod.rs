//! XML layer: owns cutting the client byte stream into stream headers and
//! whole stanzas ([`framer`]), parsing one stanza in the stream's namespace
//! context ([`parse_stanza`]) and escaping/re-serialising XML ([`writer`]).
//!
//! It must never interpret stanza semantics (routing, typed views): that is
//! [`crate::stanza`]'s job. Everything here treats peer input as hostile and
//! reports problems as [`FramerError`] values that map 1:1 to stream errors.

pub mod adversarial;
pub mod build;
pub mod framer;
pub mod writer;

pub use framer::{Event, Framer, FramerError, Limits, StreamHeader};
pub use writer::{write_element, write_element_without, Esc, EscAttr};

/// Namespace of the `<stream:stream>` element and its `features`/`error` children.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Default content namespace of client-to-server streams.
pub const NS_CLIENT: &str = "jabber:client";
/// The namespace permanently bound to the `xml` prefix (for `xml:lang`).
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// Upper bound on roxmltree nodes for one client stanza. The framer already
/// caps the byte size; this caps the transient tree memory (roughly 60 bytes
/// a node) for node-dense input such as `<a/><a/><a/>…`.
const STANZA_NODES_LIMIT: u32 = 8192;

/// Parse a stanza previously wrapped with [`StreamHeader::wrap`].
///
/// DTDs are refused and the node count is capped; any parse failure
/// (undeclared prefixes, duplicate attributes) is reported as
/// [`FramerError::NotWellFormed`]. The framer's limits keep it linear.
pub fn parse_stanza(wrapped: &str) -> Result<roxmltree::Document<'_>, FramerError> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: STANZA_NODES_LIMIT,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(wrapped, options)
        .map_err(|_| FramerError::NotWellFormed)
}

/// The stanza element inside a document produced by [`parse_stanza`]: the
/// wrapper root's first element child.
pub fn stanza_element<'a, 'input>(
    doc: &'a roxmltree::Document<'input>,
) -> Result<roxmltree::Node<'a, 'input>, FramerError> {
    doc.root_element()
        .first_element_child()
        .ok_or(FramerError::NotWellFormed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_header() -> StreamHeader {
        let mut framer = Framer::new(Limits::new(4096, 8));
        assert!(framer
            .push(
                b"<stream:stream to='example.com' version='1.0' xmlns='jabber:client' \
                  xmlns:stream='http://etherx.jabber.org/streams'>"
            )
            .is_ok());
        match framer.next() {
            Ok(Some(Event::StreamOpen(header))) => header,
            other => panic!("expected stream header, got {other:?}"),
        }
    }

    #[test]
    fn stanza_namespaces_resolve_like_in_the_stream() {
        let header = client_header();
        let wrapped = header.wrap("<message to='a@b'><body>hi</body><x xmlns='urn:x'/></message>");
        let doc = parse_stanza(&wrapped).expect("parses");
        let message = stanza_element(&doc).expect("has stanza");
        assert_eq!(message.tag_name().name(), "message");
        assert_eq!(message.tag_name().namespace(), Some(NS_CLIENT));
        assert_eq!(message.attribute("to"), Some("a@b"));
        let mut children = message.children().filter(|n| n.is_element());
        let body = children.next().expect("body");
        assert_eq!(body.tag_name().name(), "body");
        assert_eq!(body.tag_name().namespace(), Some(NS_CLIENT));
        assert_eq!(body.text(), Some("hi"));
        let x = children.next().expect("x");
        assert_eq!(x.tag_name().name(), "x");
        assert_eq!(x.tag_name().namespace(), Some("urn:x"));
    }

    #[test]
    fn stream_prefix_resolves_inside_stanzas() {
        let header = client_header();
        let wrapped = header.wrap("<stream:error><host-unknown xmlns='urn:e'/></stream:error>");
        let doc = parse_stanza(&wrapped).expect("parses");
        let error = stanza_element(&doc).expect("element");
        assert_eq!(error.tag_name().namespace(), Some(NS_STREAMS));
        assert_eq!(error.tag_name().name(), "error");
    }

    #[test]
    fn malformed_stanzas_are_rejected() {
        let header = client_header();
        for bad in [
            "<message><body></message></body>",
            "<message></presence>",
            "<a:b/>",
            "<message a='1' a='2'/>",
            "<message>&unknown;</message>",
        ] {
            assert_eq!(
                parse_stanza(&header.wrap(bad)).err(),
                Some(FramerError::NotWellFormed),
                "{bad}"
            );
        }
        assert!(parse_stanza("<!DOCTYPE w []><w/>").is_err());
    }

    #[test]
    fn node_dense_stanzas_hit_the_node_limit() {
        let header = client_header();
        let dense = format!("<message>{}</message>", "<a/>".repeat(10_000));
        assert_eq!(
            parse_stanza(&header.wrap(&dense)).err(),
            Some(FramerError::NotWellFormed)
        );
    }

    #[test]
    fn stanza_element_needs_a_child() {
        let doc = parse_stanza("<w/>").expect("parses");
        assert_eq!(stanza_element(&doc).err(), Some(FramerError::NotWellFormed));
    }
}
