//! A catalogue of adversarial stanza shapes, each filling a given size, and
//! the framer + parser path a connection runs on them. It is what the
//! parse benchmark (`hearth-bench parse`), the mutation test and the fuzz
//! seeds share: every shape must be accepted or refused in time linear in
//! its size. It never touches a socket or a session.

use super::{parse_stanza, stanza_element, Event, Framer, FramerError, Limits, STANZA_NODES_LIMIT};

/// The client stream header every shape is sent after.
pub const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// One shape: its name, the stanza text and what the path must answer.
pub struct Shape {
    pub name: &'static str,
    pub stanza: String,
    pub expect: Result<(), FramerError>,
}

/// `unit` repeated to fill what is left of `size` after `head` and `tail`.
fn fill(head: &str, unit: &str, tail: &str, size: usize) -> String {
    let room = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", unit.repeat(room / unit.len().max(1)))
}

/// `<m>` … `</m>` around text of `size` bytes in `unit`s.
fn body(unit: &str, size: usize) -> String {
    fill("<message><body>", unit, "</body></message>", size)
}

fn declarations(count: usize) -> String {
    (0..count).map(|i| format!(" xmlns:a{i}='u'")).collect()
}

/// Node-dense shapes are refused by the parser's node cap once `units`
/// repeats of `nodes` nodes each exceed it.
fn node_capped(units: usize, nodes: usize) -> Result<(), FramerError> {
    if units.saturating_mul(nodes) + 2 > STANZA_NODES_LIMIT as usize {
        Err(FramerError::NotWellFormed)
    } else {
        Ok(())
    }
}

/// The catalogue at `size` bytes for the default limits (`max_depth` 32,
/// 32 attributes, 8 namespace declarations per element, 16 in scope).
pub fn shapes(size: usize) -> Vec<Shape> {
    use FramerError::{NotWellFormed, PolicyViolation};
    let nested = |depth: usize| format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    let attributes: String = (0..32).map(|i| format!(" a{i}='v'")).collect();
    let long = "n".repeat((size / 2).saturating_sub(40));
    let shape = |name, stanza, expect| Shape {
        name,
        stanza,
        expect,
    };
    vec![
        // The attack: thousands of declarations in scope of
        // thousands of children that declare one more each.
        shape(
            "namespace-bomb",
            fill(
                &format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'{}>",
                    declarations(size / 40)
                ),
                "<b xmlns='v'/>",
                "</auth>",
                size,
            ),
            Err(PolicyViolation),
        ),
        // The legal worst case: the scope full, every child declaring.
        shape(
            "namespaces-in-scope",
            fill(
                &format!("<message{}>", declarations(6)),
                "<b xmlns='v' xmlns:z='w'>xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx</b>",
                "</message>",
                size,
            ),
            Ok(()),
        ),
        shape(
            "prefixed-names",
            fill(
                &format!("<message{}>", declarations(6)),
                "<a5:c a0:x='1' a1:y='2' a2:z='3'>text text text text text text text text</a5:c>",
                "</message>",
                size,
            ),
            Ok(()),
        ),
        shape(
            "attributes-per-element",
            fill(
                "<message>",
                &format!("<c{attributes}>some text between them</c>"),
                "</message>",
                size,
            ),
            Ok(()),
        ),
        shape(
            "attribute-bomb",
            fill("<message", " a='v'", "/>", size),
            Err(PolicyViolation),
        ),
        shape(
            "deep-nesting",
            fill("<message>", &nested(31), "</message>", size),
            node_capped(size / nested(31).len(), 31),
        ),
        shape(
            "too-deep",
            fill("<message>", "<a>", "", size),
            Err(PolicyViolation),
        ),
        shape(
            "many-siblings",
            fill("<message>", "<a/>", "</message>", size),
            node_capped(size / 4, 1),
        ),
        shape("long-names", format!("<{long}></{long}>"), Ok(())),
        shape(
            "long-name-mismatch",
            format!("<{long}a></{long}b>"),
            Err(NotWellFormed),
        ),
        shape(
            "long-attribute-value",
            fill("<message a='", "v&amp;", "'/>", size),
            Ok(()),
        ),
        shape(
            "long-attribute-name",
            format!("<message {long}{long}='v'/>"),
            Ok(()),
        ),
        shape(
            "many-prefixes",
            fill(
                &format!(
                    "<message xmlns:{0}a='u' xmlns:{0}b='u'>",
                    "p".repeat(size / 8)
                ),
                &format!("<{}a:x/>", "p".repeat(size / 8)),
                "</message>",
                size,
            ),
            Ok(()),
        ),
        shape(
            "entity-references",
            body("&amp;&lt;&gt;&quot;&apos;&#x1F600;&#65;", size),
            Ok(()),
        ),
        shape("cdata-and-text", body("x<![CDATA[<a>&]]>y", size), Ok(())),
        shape(
            "whitespace-in-tags",
            fill(
                "<message>",
                "<a   b  =  'x'   c\n=\t\"y\"       d =\r\n'z'  />",
                "</message>",
                size,
            ),
            Ok(()),
        ),
        shape(
            "mismatch-at-the-end",
            fill("<message><body>", "<b>text</b>", "</body></messagf>", size),
            Err(NotWellFormed),
        ),
        shape("plain-text", body("The quick brown fox. ", size), Ok(())),
    ]
}

/// What a connection does with `stanza` after [`HEADER`]: frame it, wrap
/// it in the header's namespace context, parse it, find the element.
pub fn frame_and_parse(limits: Limits, stanza: &str) -> Result<(), FramerError> {
    let mut framer = Framer::new(limits);
    framer.push(HEADER.as_bytes())?;
    let Some(Event::StreamOpen(header)) = framer.next()? else {
        return Err(FramerError::NotWellFormed);
    };
    framer.push(stanza.as_bytes())?;
    let Some(Event::Stanza(text)) = framer.next()? else {
        return Err(FramerError::NotWellFormed);
    };
    let wrapped = header.wrap(text);
    let doc = parse_stanza(&wrapped)?;
    stanza_element(&doc).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_fills_its_size_and_gets_its_answer() {
        for size in [4096, 8192, 256 * 1024] {
            every_shape_at(size);
        }
    }

    fn every_shape_at(size: usize) {
        let limits = Limits::new(size, 32);
        for shape in shapes(size) {
            assert!(shape.stanza.len() <= size, "{}", shape.name);
            assert!(shape.stanza.len() > size * 3 / 4, "{}", shape.name);
            assert_eq!(
                frame_and_parse(limits, &shape.stanza),
                shape.expect,
                "{}",
                shape.name
            );
        }
    }
}
