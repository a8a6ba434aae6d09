//! Incremental XMPP stream framer (RFC 6120 §4, §11): owns cutting the
//! endless client byte stream into the stream header, whole top-level
//! stanzas (as raw text), whitespace keepalives and the stream close.
//!
//! It must never build trees for stanzas (that happens later, per stanza,
//! with [`super::parse_stanza`]), never buffer more than `max_stanza` bytes
//! plus the chunk just pushed, and never accept restricted XML (comments,
//! processing instructions other than the leading XML declaration, DTDs,
//! entity references other than the five predefined ones).
//!
//! The scanner is a byte-at-a-time state machine, so the events do not
//! depend on how the input was split into chunks. It validates UTF-8 and
//! XML 1.0 characters, tag and attribute syntax, references, nesting depth
//! and that every end tag names the innermost open element (RFC 6120
//! §11.1: a mismatch is `not-well-formed` at once). It bounds attributes
//! and namespace declarations per element and in scope, so that parsing a
//! stanza afterwards costs time linear in its size whatever its shape.
//! What remains for the parser: names beyond ASCII, duplicate attributes
//! and namespace prefixes.
//!
//! CDATA sections are allowed inside stanzas: RFC 6120 §11.1 does not list
//! them as restricted. At stream level they are character data → BadFormat.
//!
//! Memory: the buffer starts without allocation, holds only the unconsumed
//! tail (at most one partial stanza once [`Framer::next`] returned `None`)
//! and is freed entirely whenever it has been fully consumed, so an idle
//! session holds no buffer at all. Consumed bytes are compacted away on the
//! next [`Framer::push`], which keeps compaction linear in the input size.

use std::fmt;
use std::ops::Range;

use super::writer::EscAttr;
use super::{NS_STREAMS, NS_XML};

/// Per-connection limits, all enforced while bytes arrive, before any
/// parser sees the stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest stanza (or stream header incl. XML declaration) in bytes.
    pub max_stanza: usize,
    /// Deepest element nesting; the stanza element itself is depth 1.
    pub max_depth: usize,
    /// Most attributes on one start tag (namespace declarations included).
    pub max_attributes: u16,
    /// Most namespace declarations (`xmlns`, `xmlns:p`) on one start tag.
    pub max_namespaces: u16,
    /// Most namespace declarations in scope at once: the stream header's
    /// plus those of every open element of the stanza.
    pub max_namespaces_in_scope: u16,
}

/// Default for [`Limits::max_attributes`]: the widest XMPP elements
/// (`<item>` in MUC/roster/pubsub, data form fields) carry fewer than ten.
pub const DEFAULT_MAX_ATTRIBUTES: u16 = 32;
/// Default for [`Limits::max_namespaces`]: a stanza element declares at
/// most its own namespace and a prefix or two (`xmlns:stream`, XEP-0131).
pub const DEFAULT_MAX_NAMESPACES: u16 = 8;
/// Default for [`Limits::max_namespaces_in_scope`]: the header's two plus
/// one per nesting level of a deep payload (pubsub item → atom entry…).
/// roxmltree copies every in-scope declaration into each element that
/// declares one, so this bound is what keeps parsing linear in the size.
pub const DEFAULT_MAX_NAMESPACES_IN_SCOPE: u16 = 16;

impl Limits {
    /// The given size and depth with the default markup limits.
    pub const fn new(max_stanza: usize, max_depth: usize) -> Limits {
        Limits {
            max_stanza,
            max_depth,
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
            max_namespaces: DEFAULT_MAX_NAMESPACES,
            max_namespaces_in_scope: DEFAULT_MAX_NAMESPACES_IN_SCOPE,
        }
    }
}

/// Why the stream cannot continue; each maps to one RFC 6120 stream error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramerError {
    NotWellFormed,
    RestrictedXml,
    PolicyViolation,
    InvalidNamespace,
    BadFormat,
    /// The stream is not in UTF-8 (RFC 6120 §4.9.3.22, §11.6).
    UnsupportedEncoding,
}

impl FramerError {
    /// The RFC 6120 §4.9.3 stream error condition element name.
    pub fn condition(self) -> &'static str {
        match self {
            FramerError::NotWellFormed => "not-well-formed",
            FramerError::RestrictedXml => "restricted-xml",
            FramerError::PolicyViolation => "policy-violation",
            FramerError::InvalidNamespace => "invalid-namespace",
            FramerError::BadFormat => "bad-format",
            FramerError::UnsupportedEncoding => "unsupported-encoding",
        }
    }
}

impl fmt::Display for FramerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.condition())
    }
}

impl std::error::Error for FramerError {}

/// One framing result. `Stanza` borrows the framer's buffer until the next
/// call to `push`/`next`/`reset`.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    StreamOpen(StreamHeader),
    Stanza(&'a str),
    /// One run of whitespace between stanzas (a keepalive), reported once
    /// at its first byte however the run is split across chunks.
    Whitespace,
    StreamClose,
}

/// The validated attributes and namespace context of a stream header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// Qualified name as sent (usually `stream:stream`); `</qname>` closes.
    pub qname: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
    /// `xmlns='…'`, normally `jabber:client`.
    pub default_ns: Option<String>,
    /// `xmlns:prefix='uri'` declarations as (prefix, uri), in header order.
    pub prefixes: Vec<(String, String)>,
}

impl StreamHeader {
    /// Wrap a stanza text in an element carrying the header's namespace
    /// declarations so roxmltree resolves prefixes and the default
    /// namespace exactly as they were in scope in the stream.
    pub fn wrap(&self, stanza: &str) -> String {
        use std::fmt::Write;
        let decls: usize = self
            .prefixes
            .iter()
            .map(|(prefix, uri)| prefix.len() + uri.len() + 10)
            .sum();
        let default_len = self.default_ns.as_ref().map_or(0, |ns| ns.len() + 10);
        let mut out = String::with_capacity(stanza.len() + decls + default_len + 8);
        out.push_str("<w");
        // Writing into a String cannot fail.
        if let Some(ns) = &self.default_ns {
            let _ = write!(out, " xmlns='{}'", EscAttr(ns));
        }
        for (prefix, uri) in &self.prefixes {
            let _ = write!(out, " xmlns:{prefix}='{}'", EscAttr(uri));
        }
        out.push('>');
        out.push_str(stanza);
        out.push_str("</w>");
        out
    }
}

/// The incremental framer; see the module docs for guarantees.
pub struct Framer {
    buf: Vec<u8>,
    /// First unconsumed byte of `buf`.
    start: usize,
    /// Next byte of `buf` to scan; `start..scan` is the item in progress.
    scan: usize,
    limits: Limits,
    lexer: Lexer,
    /// Qualified name of the open stream element, for recognising its close.
    stream_qname: Box<str>,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Framer {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            limits,
            lexer: Lexer::new(),
            stream_qname: Box::from(""),
        }
    }

    /// Append input. The caller must drain [`Framer::next`] until `None`
    /// before pushing again; otherwise, once the undrained bytes exceed
    /// `max_stanza`, this fails with PolicyViolation. After the stream
    /// close, input is ignored.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FramerError> {
        match self.lexer.phase {
            Phase::Failed(error) => return Err(error),
            Phase::Closed => return Ok(()),
            Phase::Prolog | Phase::Stream => {}
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scan = self.scan.saturating_sub(self.start);
            self.start = 0;
        }
        if self.buf.len() > self.limits.max_stanza {
            return Err(self.fail(FramerError::PolicyViolation));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete event, or `None` when more bytes are needed (or
    /// the stream was closed). Once an error is returned, every later call
    /// returns it again.
    // Not an `Iterator`: a `Stanza` borrows the buffer (a lending iterator).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Event<'_>>, FramerError> {
        match self.lexer.phase {
            Phase::Failed(error) => return Err(error),
            Phase::Closed => return Ok(None),
            Phase::Prolog | Phase::Stream => {}
        }
        if self.lexer.phase == Phase::Prolog && self.start == 0 && not_utf8(&self.buf) {
            return Err(self.fail(FramerError::UnsupportedEncoding));
        }
        let item_kind = match self.advance() {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                self.release_if_drained();
                return Ok(None);
            }
            Err(error) => return Err(self.fail(error)),
        };
        let item = self.start..self.scan;
        self.start = self.scan;
        match item_kind {
            Item::Whitespace => Ok(Some(Event::Whitespace)),
            Item::Header => match self.open_stream(item) {
                Ok(header) => Ok(Some(Event::StreamOpen(header))),
                Err(error) => Err(self.fail(error)),
            },
            Item::Close => {
                if !self.is_stream_close(item) {
                    return Err(self.fail(FramerError::NotWellFormed));
                }
                self.lexer.phase = Phase::Closed;
                self.release();
                Ok(Some(Event::StreamClose))
            }
            Item::Stanza => {
                // The lexer validated UTF-8 and a stanza ends at an ASCII
                // '>', so this conversion cannot fail in practice.
                match self.buf.get(item).map(std::str::from_utf8) {
                    Some(Ok(stanza)) => Ok(Some(Event::Stanza(stanza))),
                    _ => {
                        self.lexer.phase = Phase::Failed(FramerError::NotWellFormed);
                        Err(FramerError::NotWellFormed)
                    }
                }
            }
        }
    }

    /// Start a fresh stream (after STARTTLS and after SASL success). Drops
    /// any buffered input: bytes sent before the new stream must not be
    /// interpreted in it (STARTTLS command injection), and clients wait for
    /// the server before sending the new header.
    pub fn reset(&mut self) {
        *self = Framer::new(self.limits);
    }

    /// Unconsumed bytes held (at most one partial item once drained).
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Bytes allocated for the buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Change the stanza size limit from the next byte on: RFC 6120 §13.12
    /// lets a server accept far less before authentication than after.
    pub fn set_max_stanza(&mut self, max_stanza: usize) {
        self.limits.max_stanza = max_stanza;
    }

    /// Scan until an item completes or the input runs out.
    fn advance(&mut self) -> Result<Option<Item>, FramerError> {
        while let Some(&byte) = self.buf.get(self.scan) {
            let offset = self.scan.saturating_sub(self.start);
            self.scan += 1;
            if offset >= self.limits.max_stanza {
                return Err(FramerError::PolicyViolation);
            }
            // The item so far, this byte included: end tags are compared
            // with their start tags' names in place.
            let item = self.buf.get(self.start..self.scan).unwrap_or_default();
            match self.lexer.step(byte, offset, item, &self.limits)? {
                Step::More => {}
                Step::Skip => self.start = self.scan,
                Step::Done(kind) => return Ok(Some(kind)),
            }
        }
        Ok(None)
    }

    /// Validate the prolog + header start tag by parsing it with a matching
    /// close tag appended.
    fn open_stream(&mut self, item: Range<usize>) -> Result<StreamHeader, FramerError> {
        let text = self
            .buf
            .get(item)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .ok_or(FramerError::NotWellFormed)?;
        let Open { name, name_len, .. } = self.lexer.tag;
        let qname = usize::try_from(name)
            .ok()
            .zip(usize::try_from(name.saturating_add(name_len)).ok())
            .and_then(|(start, end)| text.get(start..end))
            .ok_or(FramerError::NotWellFormed)?;
        let document = format!("{text}</{qname}>");
        let options = roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: 4,
            ..roxmltree::ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(&document, options)
            .map_err(|_| FramerError::NotWellFormed)?;
        let root = doc.root_element();
        if root.tag_name().namespace() != Some(NS_STREAMS) || root.tag_name().name() != "stream" {
            return Err(FramerError::InvalidNamespace);
        }
        let attribute = |name: &str| root.attribute(name).map(str::to_owned);
        let mut header = StreamHeader {
            qname: qname.to_owned(),
            to: attribute("to"),
            from: attribute("from"),
            id: attribute("id"),
            version: attribute("version"),
            lang: root.attribute((NS_XML, "lang")).map(str::to_owned),
            default_ns: None,
            prefixes: Vec::new(),
        };
        for namespace in root.namespaces() {
            match namespace.name() {
                None if !namespace.uri().is_empty() => {
                    header.default_ns = Some(namespace.uri().to_owned());
                }
                Some(prefix) if prefix != "xml" => {
                    header
                        .prefixes
                        .push((prefix.to_owned(), namespace.uri().to_owned()));
                }
                _ => {}
            }
        }
        self.stream_qname = qname.into();
        Ok(header)
    }

    /// Whether a stream-level end tag names the open stream element.
    fn is_stream_close(&self, item: Range<usize>) -> bool {
        let Some(tag) = self.buf.get(item) else {
            return false;
        };
        let name = tag
            .strip_prefix(b"</")
            .and_then(|rest| rest.strip_suffix(b">"))
            .map(|name| name.trim_ascii_end());
        name == Some(self.stream_qname.as_bytes())
    }

    fn fail(&mut self, error: FramerError) -> FramerError {
        self.lexer.phase = Phase::Failed(error);
        self.release();
        error
    }

    fn release_if_drained(&mut self) {
        if self.start == self.buf.len() {
            self.release();
        }
    }

    /// Free the buffer: idle sessions dominate memory, and one allocation
    /// per read burst is cheap next to parsing the stanzas in it.
    fn release(&mut self) {
        self.buf = Vec::new();
        self.lexer.open = Vec::new();
        self.start = 0;
        self.scan = 0;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the stream header: whitespace and one XML declaration.
    Prolog,
    Stream,
    Closed,
    Failed(FramerError),
}

/// What the lexer found at the byte it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Byte belongs to the item in progress.
    More,
    /// Byte consumed without an event (whitespace continuing a run).
    Skip,
    /// Byte completes an item: `start..=byte` is its text.
    Done(Item),
}

/// A completed item of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Whitespace,
    Header,
    Stanza,
    Close,
}

/// Lexical position inside the markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Character data (or stream-level / prolog whitespace).
    Text,
    /// After `<`.
    Lt,
    StartName,
    /// Inside a start tag, where an attribute name, `/` or `>` may follow.
    InTag,
    AttrName,
    /// After an attribute name, before `=`.
    AttrEq,
    /// After `=`, before the opening quote.
    AttrQuote,
    /// Inside an attribute value delimited by this quote byte.
    AttrValue(u8),
    /// After an attribute value: whitespace, `/` or `>` must follow.
    AfterValue,
    /// After `/` in a start tag.
    EmptySlash,
    /// In an end tag; true once whitespace followed the name.
    EndName(bool),
    /// After `<!`, with this many bytes of `[CDATA[` matched.
    Bang(u8),
    /// Inside CDATA, with this many trailing `]` (saturating at 2).
    Cdata(u8),
    /// After `<?` in the prolog, with this many bytes of `xml` matched.
    PiTarget(u8),
    /// Inside the XML declaration; true if the previous byte was `?`.
    PiBody(bool),
    /// After `&`; Some(quote) when inside an attribute value.
    Ref(Option<u8>),
}

const CDATA_OPEN: &[u8] = b"[CDATA[";
const XML_TARGET: &[u8] = b"xml";
/// Longest reference body kept between `&` and `;`: `#x10FFFF` and
/// `#1114111` fit; longer bodies are never a predefined entity, and
/// character references padded with that many zeros are refused.
const REF_NAME_MAX: usize = 12;

/// One open element of the stanza in progress: where its name lies in the
/// item (offsets stay valid because compaction only drops bytes before
/// the item) and how many namespaces it declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    name: u32,
    name_len: u32,
    namespaces: u16,
}

struct Lexer {
    phase: Phase,
    lex: Lex,
    utf8: Utf8,
    /// Open elements inside the stream (the stanza first). Its length is
    /// the depth, so it never holds more than `max_depth` entries; it is
    /// freed with the buffer.
    open: Vec<Open>,
    /// Inside a stream-level whitespace run already reported.
    in_whitespace_run: bool,
    /// The start tag being read: its name, attribute and namespace counts.
    tag: Open,
    attributes: u16,
    /// Start of the attribute or end-tag name being read.
    mark: u32,
    /// Namespaces declared by the stream header and the open elements.
    in_scope: u16,
    ref_name: [u8; REF_NAME_MAX],
    ref_len: u8,
}

/// RFC 6120 §4.9.3.22: a stream whose first bytes say UTF-16 or UTF-32 (a byte order mark,
/// or `<` next to a NUL byte, RFC 7303 §3.2), never valid UTF-8 XML, is an unsupported
/// encoding rather than merely not well-formed.
fn not_utf8(start: &[u8]) -> bool {
    matches!(start, [0xFE | 0xFF | 0, ..] | [b'<', 0, ..])
}

/// Item offsets fit in u32: `max_stanza` is at most 16 MiB (config bounds).
fn offset32(offset: usize) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

/// The bytes of `item` in `start..end` (empty if out of range).
fn span(item: &[u8], start: u32, end: usize) -> &[u8] {
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    item.get(start..end).unwrap_or_default()
}

impl Lexer {
    fn new() -> Self {
        Lexer {
            phase: Phase::Prolog,
            lex: Lex::Text,
            utf8: Utf8::default(),
            open: Vec::new(),
            in_whitespace_run: false,
            tag: Open {
                name: 0,
                name_len: 0,
                namespaces: 0,
            },
            attributes: 0,
            mark: 0,
            in_scope: 0,
            ref_name: [0; REF_NAME_MAX],
            ref_len: 0,
        }
    }

    fn depth(&self) -> usize {
        self.open.len()
    }

    /// Feed one byte at `offset` within the current item; `item` is the
    /// item's text up to and including this byte.
    fn step(
        &mut self,
        byte: u8,
        offset: usize,
        item: &[u8],
        limits: &Limits,
    ) -> Result<Step, FramerError> {
        self.utf8.check(byte)?;
        match self.lex {
            Lex::Text => self.text(byte),
            Lex::Lt => self.after_lt(byte, offset, limits.max_depth),
            Lex::StartName => match byte {
                _ if is_name_byte(byte) => Ok(Step::More),
                _ => {
                    self.tag.name_len = offset32(offset).saturating_sub(self.tag.name);
                    self.in_tag(byte, offset, limits)
                }
            },
            Lex::InTag | Lex::AfterValue => self.in_tag(byte, offset, limits),
            Lex::AttrName => match byte {
                _ if is_name_byte(byte) => Ok(Step::More),
                b'=' | b' ' | b'\t' | b'\n' | b'\r' => {
                    let name = span(item, self.mark, offset);
                    self.attribute_named(name, limits)?;
                    self.to(if byte == b'=' {
                        Lex::AttrQuote
                    } else {
                        Lex::AttrEq
                    })
                }
                _ => Err(FramerError::NotWellFormed),
            },
            Lex::AttrEq => match byte {
                b'=' => self.to(Lex::AttrQuote),
                _ if is_space(byte) => Ok(Step::More),
                _ => Err(FramerError::NotWellFormed),
            },
            Lex::AttrQuote => match byte {
                b'"' | b'\'' => self.to(Lex::AttrValue(byte)),
                _ if is_space(byte) => Ok(Step::More),
                _ => Err(FramerError::NotWellFormed),
            },
            Lex::AttrValue(quote) => match byte {
                _ if byte == quote => self.to(Lex::AfterValue),
                b'<' => Err(FramerError::NotWellFormed),
                b'&' => self.begin_ref(Some(quote)),
                _ => Ok(Step::More),
            },
            Lex::EmptySlash => match byte {
                b'>' => self.empty_tag_end(),
                _ => Err(FramerError::NotWellFormed),
            },
            Lex::EndName(after_space) => match byte {
                b'>' => self.end_tag_end(offset, item),
                _ if is_space(byte) => self.to(Lex::EndName(true)),
                _ if !after_space && is_name_byte(byte) => Ok(Step::More),
                _ => Err(FramerError::NotWellFormed),
            },
            Lex::Bang(matched) => self.bang(byte, matched),
            Lex::Cdata(brackets) => match byte {
                b']' => self.to(Lex::Cdata((brackets + 1).min(2))),
                b'>' if brackets == 2 => self.to(Lex::Text),
                _ => self.to(Lex::Cdata(0)),
            },
            Lex::PiTarget(matched) => match XML_TARGET.get(usize::from(matched)) {
                Some(&expected) if expected == byte => self.to(Lex::PiTarget(matched + 1)),
                None if is_space(byte) => self.to(Lex::PiBody(false)),
                _ => Err(FramerError::RestrictedXml),
            },
            Lex::PiBody(after_question) => match byte {
                b'>' if after_question => self.to(Lex::Text),
                _ => self.to(Lex::PiBody(byte == b'?')),
            },
            Lex::Ref(in_attr) => self.reference(byte, in_attr),
        }
    }

    fn to(&mut self, lex: Lex) -> Result<Step, FramerError> {
        self.lex = lex;
        Ok(Step::More)
    }

    /// Between attributes (XML 1.0 requires whitespace before each one).
    fn in_tag(&mut self, byte: u8, offset: usize, limits: &Limits) -> Result<Step, FramerError> {
        match byte {
            b'>' => Ok(self.start_tag_end()),
            b'/' => self.to(Lex::EmptySlash),
            _ if is_space(byte) => self.to(Lex::InTag),
            _ if self.lex == Lex::InTag && is_name_start(byte) => {
                self.attributes = self.attributes.saturating_add(1);
                if self.attributes > limits.max_attributes {
                    return Err(FramerError::PolicyViolation);
                }
                self.mark = offset32(offset);
                self.to(Lex::AttrName)
            }
            _ => Err(FramerError::NotWellFormed),
        }
    }

    /// Count a namespace declaration against the per-element and in-scope
    /// bounds before any parser resolves it.
    fn attribute_named(&mut self, name: &[u8], limits: &Limits) -> Result<(), FramerError> {
        let declares = name == b"xmlns" || name.starts_with(b"xmlns:");
        if declares {
            self.tag.namespaces = self.tag.namespaces.saturating_add(1);
            let in_scope = self.in_scope.saturating_add(self.tag.namespaces);
            if self.tag.namespaces > limits.max_namespaces
                || in_scope > limits.max_namespaces_in_scope
            {
                return Err(FramerError::PolicyViolation);
            }
        }
        Ok(())
    }

    fn text(&mut self, byte: u8) -> Result<Step, FramerError> {
        match self.phase {
            Phase::Stream if self.depth() == 0 => {
                if byte == b'<' {
                    self.in_whitespace_run = false;
                    self.to(Lex::Lt)
                } else if !is_space(byte) {
                    Err(FramerError::BadFormat)
                } else if self.in_whitespace_run {
                    Ok(Step::Skip)
                } else {
                    self.in_whitespace_run = true;
                    Ok(Step::Done(Item::Whitespace))
                }
            }
            Phase::Stream => match byte {
                b'<' => self.to(Lex::Lt),
                b'&' => self.begin_ref(None),
                _ => Ok(Step::More),
            },
            // Text before the root element (including a U+FEFF, which RFC
            // 6120 §11.6 says is not a byte order mark) is not well-formed.
            _ => match byte {
                b'<' => self.to(Lex::Lt),
                _ if is_space(byte) => Ok(Step::More),
                _ => Err(FramerError::NotWellFormed),
            },
        }
    }

    fn after_lt(&mut self, byte: u8, offset: usize, max_depth: usize) -> Result<Step, FramerError> {
        let in_prolog = self.phase == Phase::Prolog;
        match byte {
            b'/' if in_prolog => Err(FramerError::NotWellFormed),
            b'/' => {
                self.mark = offset32(offset + 1);
                self.to(Lex::EndName(false))
            }
            b'?' if in_prolog => self.to(Lex::PiTarget(0)),
            b'?' => Err(FramerError::RestrictedXml),
            b'!' => self.to(Lex::Bang(0)),
            _ if is_name_start(byte) => {
                if !in_prolog && self.depth() >= max_depth {
                    return Err(FramerError::PolicyViolation);
                }
                self.tag = Open {
                    name: offset32(offset),
                    name_len: 0,
                    namespaces: 0,
                };
                self.attributes = 0;
                self.to(Lex::StartName)
            }
            _ => Err(FramerError::NotWellFormed),
        }
    }

    fn bang(&mut self, byte: u8, matched: u8) -> Result<Step, FramerError> {
        match CDATA_OPEN.get(usize::from(matched)) {
            // Comments, DOCTYPE and other markup declarations.
            _ if matched == 0 && byte != b'[' => Err(FramerError::RestrictedXml),
            Some(&expected) if expected == byte => {
                if usize::from(matched) + 1 < CDATA_OPEN.len() {
                    self.to(Lex::Bang(matched + 1))
                } else if self.depth() > 0 {
                    self.to(Lex::Cdata(0))
                } else if self.phase == Phase::Prolog {
                    Err(FramerError::NotWellFormed)
                } else {
                    Err(FramerError::BadFormat)
                }
            }
            _ => Err(FramerError::NotWellFormed),
        }
    }

    fn start_tag_end(&mut self) -> Step {
        self.lex = Lex::Text;
        // Scope only grows by what passed `attribute_named`'s bound.
        self.in_scope = self.in_scope.saturating_add(self.tag.namespaces);
        if self.phase == Phase::Prolog {
            self.phase = Phase::Stream;
            Step::Done(Item::Header)
        } else {
            // Bounded by `max_depth` (checked at `<`).
            self.open.push(self.tag);
            Step::More
        }
    }

    fn empty_tag_end(&mut self) -> Result<Step, FramerError> {
        self.lex = Lex::Text;
        match self.phase {
            // `<stream:stream/>` opens no stream to exchange stanzas in.
            Phase::Prolog => Err(FramerError::BadFormat),
            _ if self.depth() == 0 => Ok(Step::Done(Item::Stanza)),
            _ => Ok(Step::More),
        }
    }

    /// RFC 6120 §11.1 / XML 1.0 "Element Type Match": an end tag must name
    /// the innermost open element exactly (qualified name, byte for byte).
    /// At stream level the framer checks it against the stream's name.
    fn end_tag_end(&mut self, offset: usize, item: &[u8]) -> Result<Step, FramerError> {
        self.lex = Lex::Text;
        let Some(open) = self.open.pop() else {
            return Ok(Step::Done(Item::Close));
        };
        let name = span(item, self.mark, offset).trim_ascii_end();
        let expected = span(
            item,
            open.name,
            usize::try_from(open.name.saturating_add(open.name_len)).unwrap_or(usize::MAX),
        );
        if name != expected {
            return Err(FramerError::NotWellFormed);
        }
        self.in_scope = self.in_scope.saturating_sub(open.namespaces);
        Ok(if self.open.is_empty() {
            Step::Done(Item::Stanza)
        } else {
            Step::More
        })
    }

    fn begin_ref(&mut self, in_attr: Option<u8>) -> Result<Step, FramerError> {
        self.ref_len = 0;
        self.to(Lex::Ref(in_attr))
    }

    fn reference(&mut self, byte: u8, in_attr: Option<u8>) -> Result<Step, FramerError> {
        let len = usize::from(self.ref_len);
        if byte == b';' {
            check_reference(self.ref_name.get(..len).unwrap_or_default())?;
            return self.to(in_attr.map_or(Lex::Text, Lex::AttrValue));
        }
        if !is_name_byte(byte) && byte != b'#' {
            return Err(FramerError::NotWellFormed);
        }
        let is_char_ref = self.ref_name.first() == Some(&b'#') && len > 0;
        match self.ref_name.get_mut(len) {
            Some(slot) => {
                *slot = byte;
                self.ref_len += 1;
                Ok(Step::More)
            }
            None if is_char_ref => Err(FramerError::NotWellFormed),
            None => Err(FramerError::RestrictedXml),
        }
    }
}

/// Accept the five predefined entities and character references to legal
/// XML characters. Other entity names are restricted XML (RFC 6120 §11.1);
/// a reference to an illegal character breaks the XML 1.0 "Legal
/// Character" well-formedness constraint.
fn check_reference(name: &[u8]) -> Result<(), FramerError> {
    let (digits, radix) = match name {
        b"lt" | b"gt" | b"amp" | b"quot" | b"apos" => return Ok(()),
        [b'#', b'x', hex @ ..] => (hex, 16),
        [b'#', decimal @ ..] => (decimal, 10),
        [first, ..] if is_name_start(*first) => return Err(FramerError::RestrictedXml),
        _ => return Err(FramerError::NotWellFormed),
    };
    let all_digits = digits.iter().all(|&digit| {
        if radix == 16 {
            digit.is_ascii_hexdigit()
        } else {
            digit.is_ascii_digit()
        }
    });
    let code = std::str::from_utf8(digits)
        .ok()
        .filter(|_| all_digits && !digits.is_empty())
        .and_then(|digits| u32::from_str_radix(digits, radix).ok())
        .ok_or(FramerError::NotWellFormed)?;
    if is_xml_char(code) {
        Ok(())
    } else {
        Err(FramerError::NotWellFormed)
    }
}

/// XML 1.0 `Char` production.
fn is_xml_char(code: u32) -> bool {
    matches!(code, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Approximate NameStartChar: any non-ASCII byte is let through here and
/// judged precisely by roxmltree when the item is parsed.
fn is_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte == b':' || byte >= 0x80
}

fn is_name_byte(byte: u8) -> bool {
    is_name_start(byte) || byte.is_ascii_digit() || byte == b'-' || byte == b'.'
}

/// Incremental UTF-8 validator that also rejects characters outside the
/// XML 1.0 `Char` production (C0 controls other than tab/LF/CR, U+FFFE,
/// U+FFFF; surrogates are already invalid UTF-8).
#[derive(Debug, Default, Clone, Copy)]
struct Utf8 {
    /// Continuation bytes still expected.
    need: u8,
    /// Allowed range of the next continuation byte.
    low: u8,
    high: u8,
    /// The sequence started with 0xEF (U+F000..U+FFFF).
    lead_ef: bool,
}

impl Utf8 {
    fn check(&mut self, byte: u8) -> Result<(), FramerError> {
        if self.need == 0 {
            let (need, low, high) = match byte {
                0x09 | 0x0A | 0x0D | 0x20..=0x7F => return Ok(()),
                0xC2..=0xDF => (1, 0x80, 0xBF),
                0xE0 => (2, 0xA0, 0xBF),
                0xE1..=0xEC | 0xEE | 0xEF => (2, 0x80, 0xBF),
                0xED => (2, 0x80, 0x9F),
                0xF0 => (3, 0x90, 0xBF),
                0xF1..=0xF3 => (3, 0x80, 0xBF),
                0xF4 => (3, 0x80, 0x8F),
                _ => return Err(FramerError::NotWellFormed),
            };
            *self = Utf8 {
                need,
                low,
                high,
                lead_ef: byte == 0xEF,
            };
            return Ok(());
        }
        if byte < self.low || byte > self.high {
            return Err(FramerError::NotWellFormed);
        }
        self.need -= 1;
        self.low = 0x80;
        // EF BF BE / EF BF BF are U+FFFE / U+FFFF.
        self.high = if self.lead_ef && byte == 0xBF {
            0xBD
        } else {
            0xBF
        };
        self.lead_ef = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' \
        xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
        version='1.0' xml:lang='en'>";

    const LIMITS: Limits = Limits::new(1024, 8);

    /// Owned copy of an event (or the error that ended the run).
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Open(StreamHeader),
        Stanza(String),
        Whitespace,
        Close,
        Error(FramerError),
    }

    /// Drain all available events into `seen`; false once an error ended it.
    fn drain(framer: &mut Framer, seen: &mut Vec<Seen>) -> bool {
        loop {
            match framer.next() {
                Ok(Some(Event::StreamOpen(header))) => seen.push(Seen::Open(header)),
                Ok(Some(Event::Stanza(text))) => seen.push(Seen::Stanza(text.to_owned())),
                Ok(Some(Event::Whitespace)) => seen.push(Seen::Whitespace),
                Ok(Some(Event::StreamClose)) => seen.push(Seen::Close),
                Ok(None) => return true,
                Err(error) => {
                    seen.push(Seen::Error(error));
                    return false;
                }
            }
        }
    }

    /// Feed `input` in chunks of the given sizes (cycled), draining after each.
    fn feed_chunked(limits: Limits, input: &[u8], sizes: &mut dyn FnMut() -> usize) -> Vec<Seen> {
        let mut framer = Framer::new(limits);
        let mut seen = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let size = sizes().clamp(1, rest.len());
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            if let Err(error) = framer.push(chunk) {
                seen.push(Seen::Error(error));
                return seen;
            }
            assert!(framer.buffered() <= limits.max_stanza + chunk.len());
            if !drain(&mut framer, &mut seen) {
                // Errors are sticky.
                assert_eq!(framer.push(b"<a/>").err(), seen.last().and_then(error_of));
                return seen;
            }
            assert!(framer.buffered() <= limits.max_stanza);
        }
        seen
    }

    fn error_of(seen: &Seen) -> Option<FramerError> {
        match seen {
            Seen::Error(error) => Some(*error),
            _ => None,
        }
    }

    fn feed(input: &[u8]) -> Vec<Seen> {
        feed_chunked(LIMITS, input, &mut || usize::MAX)
    }

    /// RFC 6120 §4.9.3.22: UTF-16/32 openings, whole or byte by byte.
    #[test]
    fn non_utf8_stream_is_unsupported_encoding() {
        let utf16le: Vec<u8> = HEADER.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let utf16be: Vec<u8> = HEADER.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let with_bom = [&[0xFF, 0xFE][..], &utf16le].concat();
        for input in [&with_bom[..], &utf16le, &utf16be, &[0xFE, 0xFF, 0, b'<']] {
            let whole = feed(input);
            assert_eq!(whole, [Seen::Error(FramerError::UnsupportedEncoding)]);
            assert_eq!(feed_chunked(LIMITS, input, &mut || 1), whole);
        }
        // Later invalid bytes stay not well-formed.
        let late = feed(format!("{HEADER}<a>\0</a>").as_bytes());
        assert_eq!(late.last(), Some(&Seen::Error(FramerError::NotWellFormed)));
    }

    fn stanzas(seen: &[Seen]) -> Vec<&str> {
        seen.iter()
            .filter_map(|event| match event {
                Seen::Stanza(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn last_error(input: &[u8]) -> Option<FramerError> {
        feed(input).last().and_then(error_of)
    }

    fn with_header(body: &str) -> Vec<u8> {
        format!("{HEADER}{body}").into_bytes()
    }

    /// Tiny deterministic LCG for split points and garbage.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next()).unwrap_or(0) % bound.max(1)
        }
    }

    #[test]
    fn header_fields_and_namespaces() {
        let seen = feed(HEADER.as_bytes());
        let [Seen::Open(header)] = seen.as_slice() else {
            panic!("unexpected {seen:?}");
        };
        assert_eq!(header.qname, "stream:stream");
        assert_eq!(header.to.as_deref(), Some("example.com"));
        assert_eq!(header.from, None);
        assert_eq!(header.id, None);
        assert_eq!(header.version.as_deref(), Some("1.0"));
        assert_eq!(header.lang.as_deref(), Some("en"));
        assert_eq!(header.default_ns.as_deref(), Some("jabber:client"));
        assert_eq!(
            header.prefixes,
            vec![("stream".to_owned(), NS_STREAMS.to_owned())]
        );
    }

    #[test]
    fn stanzas_whitespace_and_close() {
        let seen = feed(&with_header(
            "<presence/>\n \n<message to='a@b' note='x>y \"q\"'><body>a &amp; b &#65;&#x1F600;</body></message>\
             <iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq></stream:stream>",
        ));
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert_eq!(seen[1], Seen::Stanza("<presence/>".to_owned()));
        assert_eq!(seen[2], Seen::Whitespace);
        assert_eq!(
            seen[3],
            Seen::Stanza(
                "<message to='a@b' note='x>y \"q\"'><body>a &amp; b &#65;&#x1F600;</body></message>"
                    .to_owned()
            )
        );
        assert_eq!(
            seen[4],
            Seen::Stanza("<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>".to_owned())
        );
        assert_eq!(seen[5], Seen::Close);
    }

    #[test]
    fn whitespace_run_is_one_event_however_split() {
        let input = with_header("  \r\n\t <a/>\n");
        let expected = [
            Seen::Whitespace,
            Seen::Stanza("<a/>".to_owned()),
            Seen::Whitespace,
        ];
        assert_eq!(feed(&input)[1..], expected[..]);
        assert_eq!(feed_chunked(LIMITS, &input, &mut || 1)[1..], expected[..]);
    }

    #[test]
    fn other_prefixes_and_unprefixed_streams() {
        let seen =
            feed(b"<s:stream xmlns:s='http://etherx.jabber.org/streams'><a/></stream:stream>");
        assert_eq!(seen.last(), Some(&Seen::Error(FramerError::NotWellFormed)));
        let seen = feed(b"<s:stream xmlns:s='http://etherx.jabber.org/streams'><a/></s:stream >");
        assert_eq!(seen.last(), Some(&Seen::Close));
        let seen = feed(b"<stream xmlns='http://etherx.jabber.org/streams'></stream>");
        let Some(Seen::Open(header)) = seen.first() else {
            panic!("{seen:?}");
        };
        assert_eq!(header.qname, "stream");
        assert_eq!(header.default_ns.as_deref(), Some(NS_STREAMS));
        assert_eq!(seen.last(), Some(&Seen::Close));
    }

    #[test]
    fn header_namespace_errors() {
        assert_eq!(
            last_error(b"<stream:stream xmlns:stream='urn:wrong'>"),
            Some(FramerError::InvalidNamespace)
        );
        assert_eq!(
            last_error(b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"),
            Some(FramerError::InvalidNamespace)
        );
        assert_eq!(last_error(b"<stream>"), Some(FramerError::InvalidNamespace));
        assert_eq!(
            last_error(b"<stream:stream xmlns='jabber:client'>"),
            Some(FramerError::NotWellFormed)
        );
        assert_eq!(
            last_error(
                b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='1' a='2'>"
            ),
            Some(FramerError::NotWellFormed)
        );
        assert_eq!(
            last_error(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>"),
            Some(FramerError::BadFormat)
        );
    }

    #[test]
    fn prolog_rules() {
        // Declaration only at the very start, once.
        let open = "<stream xmlns='http://etherx.jabber.org/streams'>";
        assert_eq!(
            last_error(format!(" <?xml version='1.0'?>{open}").as_bytes()),
            Some(FramerError::NotWellFormed)
        );
        assert_eq!(
            last_error(format!("<?xml version='1.0'?><?xml version='1.0'?>{open}").as_bytes()),
            Some(FramerError::NotWellFormed)
        );
        assert_eq!(
            last_error(format!("<?xml encoding='UTF-8'?>{open}").as_bytes()),
            Some(FramerError::NotWellFormed)
        );
        assert!(matches!(
            feed(format!("<?xml version='1.0' encoding='UTF-8'?>{open}").as_bytes()).as_slice(),
            [Seen::Open(_)]
        ));
        assert_eq!(
            last_error(b"<?xml-stylesheet href='a'?>"),
            Some(FramerError::RestrictedXml)
        );
        assert_eq!(last_error(b"<?php ?>"), Some(FramerError::RestrictedXml));
        assert_eq!(
            last_error(b"<!DOCTYPE stream>"),
            Some(FramerError::RestrictedXml)
        );
        assert_eq!(last_error(b"<!-- hi -->"), Some(FramerError::RestrictedXml));
        assert_eq!(last_error(b"hello"), Some(FramerError::NotWellFormed));
        assert_eq!(
            last_error(b"\xEF\xBB\xBF<stream>"),
            Some(FramerError::NotWellFormed)
        );
        assert_eq!(last_error(b"</stream>"), Some(FramerError::NotWellFormed));
        assert_eq!(
            last_error(b"<![CDATA[x]]>"),
            Some(FramerError::NotWellFormed)
        );
        assert!(matches!(
            feed(b"\n<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>").as_slice(),
            [Seen::Open(_)]
        ));
    }

    #[test]
    fn restricted_xml_in_stream() {
        for body in [
            "<?xml version='1.0'?>",
            "<?pi x?>",
            "<!-- c -->",
            "<message><!-- c --></message>",
            "<message><?pi?></message>",
            "<message><!DOCTYPE x></message>",
            "<message>&nbsp;</message>",
            "<message a='&foo;'/>",
            "<message>&averyveryverylongname;</message>",
        ] {
            assert_eq!(
                last_error(&with_header(body)),
                Some(FramerError::RestrictedXml),
                "{body}"
            );
        }
        assert_eq!(
            last_error(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='&x;'>"),
            Some(FramerError::RestrictedXml)
        );
    }

    #[test]
    fn references() {
        let ok = "<m a='&lt;&gt;&amp;&quot;&apos;&#9;&#x10FFFF;'>&#xD7FF;&#57344;&#0065;</m>";
        assert_eq!(stanzas(&feed(&with_header(ok))), vec![ok]);
        for body in [
            "<m>&#0;</m>",
            "<m>&#x1;</m>",
            "<m>&#xD800;</m>",
            "<m>&#xFFFE;</m>",
            "<m>&#x110000;</m>",
            "<m>&#99999999999999;</m>",
            "<m>&#;</m>",
            "<m>&#x;</m>",
            "<m>&#X41;</m>",
            "<m>&#+65;</m>",
            "<m>&#12a;</m>",
            "<m>&;</m>",
            "<m>&1a;</m>",
            "<m>& amp;</m>",
            "<m a='&amp'/>",
            "<m>&#0000000000065;</m>",
        ] {
            assert_eq!(
                last_error(&with_header(body)),
                Some(FramerError::NotWellFormed),
                "{body}"
            );
        }
    }

    #[test]
    fn utf8_and_illegal_characters() {
        let good = "<m>h\u{e9}llo \u{20ac} \u{1F600} \u{FFFD} \u{7f}</m>";
        assert_eq!(stanzas(&feed(&with_header(good))), vec![good]);
        for bad in [
            &b"<m>\x00</m>"[..],
            b"<m>\x01</m>",
            b"<m>\x1f</m>",
            b"<m>\xff</m>",
            b"<m>\xc0\x80</m>",         // overlong
            b"<m>\xe0\x80\x80</m>",     // overlong
            b"<m>\xed\xa0\x80</m>",     // surrogate
            b"<m>\xf4\x90\x80\x80</m>", // above U+10FFFF
            b"<m>\xef\xbf\xbe</m>",     // U+FFFE
            b"<m>\xef\xbf\xbf</m>",     // U+FFFF
            b"<m>\xc3</m>",             // truncated
            b"<m a='\x80'/>",
        ] {
            let mut input = HEADER.as_bytes().to_vec();
            input.extend_from_slice(bad);
            assert_eq!(
                last_error(&input),
                Some(FramerError::NotWellFormed),
                "{bad:?}"
            );
            assert_eq!(
                feed_chunked(LIMITS, &input, &mut || 1)
                    .last()
                    .and_then(error_of),
                Some(FramerError::NotWellFormed)
            );
        }
        // A NUL first byte says UTF-16/32 (§4.9.3.22); inside the stream it is not well-formed.
        assert_eq!(last_error(b"\x00"), Some(FramerError::UnsupportedEncoding));
    }

    #[test]
    fn stream_level_text_is_bad_format() {
        assert_eq!(
            last_error(&with_header("hello")),
            Some(FramerError::BadFormat)
        );
        assert_eq!(
            last_error(&with_header("<a/>x<b/>")),
            Some(FramerError::BadFormat)
        );
        assert_eq!(
            last_error(&with_header("&amp;")),
            Some(FramerError::BadFormat)
        );
        assert_eq!(
            last_error(&with_header("<![CDATA[ ]]>")),
            Some(FramerError::BadFormat)
        );
    }

    #[test]
    fn cdata_inside_stanzas() {
        let body = "<m><body><![CDATA[<not> a </tag> ]] ]>&x;]]></body></m>";
        assert_eq!(stanzas(&feed(&with_header(body))), vec![body]);
        assert_eq!(
            last_error(&with_header("<m><![CDAT[x]]></m>")),
            Some(FramerError::NotWellFormed)
        );
    }

    #[test]
    fn malformed_tags() {
        for body in [
            "<1a/>",
            "< a/>",
            "<a/ >",
            "<a b='<'/>",
            "<a <b/>",
            "<a b='1' & />",
            "<a></a b>",
            "<a></a/>",
            "<a></ a>",
            "</b>",
        ] {
            assert_eq!(
                last_error(&with_header(body)),
                Some(FramerError::NotWellFormed),
                "{body}"
            );
        }
    }

    /// Stanza bodies whose end tags do not match their start tags (RFC
    /// 6120 §11.1, XML 1.0 "Element Type Match").
    const BAD_END_TAGS: &[&str] = &[
        "<message to='x@y'><body>oops</message>",
        "<a></b>",
        "<a><b></a></b>",
        "<a><b></b></b>",
        "<a><b/></b>",
        "<a></a></a>",
        "<ab></a>",
        "<a></ab>",
        "<a><aa></a></aa>",
        "<a></A>",
        "<a></>",
        "<a></ >",
        "<a:b xmlns:a='u'></a:c>",
        "<a:b xmlns:a='u'></b>",
        "<b></a:b>",
        "<a:b xmlns:a='u' xmlns:x='u'></x:b>",
        "<a:b xmlns:a='u'></a:b:>",
        "<\u{e9}></e>",
        "</foo>",
        "</message>",
        "<a/></a>",
        "<a></a></stream:stream2>",
    ];

    #[test]
    fn end_tags_must_match_their_start_tags() {
        for body in BAD_END_TAGS {
            let input = with_header(body);
            assert_eq!(
                last_error(&input),
                Some(FramerError::NotWellFormed),
                "{body}"
            );
            let bytewise = feed_chunked(LIMITS, &input, &mut || 1);
            assert_eq!(
                bytewise.last().and_then(error_of),
                Some(FramerError::NotWellFormed),
                "{body} byte by byte"
            );
        }
        // The error comes at the bad end tag, not at a later timeout.
        let seen = feed(&with_header("<message><body>oops</message>"));
        assert_eq!(seen.last(), Some(&Seen::Error(FramerError::NotWellFormed)));
        for good in [
            "<a:b xmlns:a='u'><a:c/></a:b >",
            "<a><a><a>x</a></a></a>",
            "<a><b></b><b/><bb></bb></a>",
            "<\u{e9}t\u{e9}></\u{e9}t\u{e9}>",
        ] {
            assert_eq!(stanzas(&feed(&with_header(good))), vec![good]);
            assert_chunking_invariant(LIMITS, &with_header(good), 7);
        }
    }

    #[test]
    fn attribute_syntax() {
        for bad in [
            "<a b='1'c='2'/>",
            "<a b/>",
            "<a b=/>",
            "<a b='1' / >",
            "<a ='1'/>",
            "<a b=1/>",
            "<a b='1'=/>",
        ] {
            assert_eq!(
                last_error(&with_header(bad)),
                Some(FramerError::NotWellFormed),
                "{bad}"
            );
        }
        let good = "<a b = '1'\tc=\"2\"\n/>";
        assert_eq!(stanzas(&feed(&with_header(good))), vec![good]);
    }

    fn with_attributes(count: usize, value: &dyn Fn(usize) -> String) -> String {
        (0..count).map(value).collect()
    }

    #[test]
    fn attribute_and_namespace_limits() {
        let attrs = |n| with_attributes(n, &|i| format!(" a{i}='v'"));
        let decls = |n| with_attributes(n, &|i| format!(" xmlns:p{i}='u'"));
        let limits = Limits::new(256 * 1024, 32);
        let run = |body: &str| feed_chunked(limits, &with_header(body), &mut || usize::MAX);
        let accepted = |body: &str| stanzas(&run(body)).len() == 1;
        let refused =
            |body: &str| run(body).last() == Some(&Seen::Error(FramerError::PolicyViolation));
        assert!(accepted(&format!("<m{}/>", attrs(32))));
        assert!(refused(&format!("<m{}/>", attrs(33))));
        assert!(accepted(&format!("<m{}/>", decls(8))));
        assert!(refused(&format!("<m{}/>", decls(9))));
        assert!(refused(&format!("<m xmlns='a'{}/>", decls(8))));
        // The header declares two; 14 more levels fit in 16, 15 do not.
        let nested = |levels: usize| {
            let open: String = (0..levels).map(|i| format!("<e xmlns='u{i}'>")).collect();
            format!("{open}{}", "</e>".repeat(levels))
        };
        assert!(accepted(&nested(14)));
        assert!(refused(&nested(15)));
        // Siblings' declarations go out of scope with them.
        let siblings = format!("<m xmlns='a'>{}</m>", "<b xmlns='v'/>".repeat(100));
        assert!(accepted(&siblings));
        let closed = format!("<m>{}{}</m>", nested(14), nested(14));
        assert!(accepted(&closed));
        // The header itself is bounded the same way.
        let header = format!(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'{}>",
            decls(8)
        );
        assert_eq!(
            last_error(header.as_bytes()),
            Some(FramerError::PolicyViolation)
        );
        // The namespace bomb of the issue: refused at the ninth declaration.
        let bomb = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X'{}>{}</auth>",
            decls(2000),
            "<b xmlns='v'/>".repeat(2000)
        );
        let input = with_header(&bomb);
        for sizes in [usize::MAX, 1, 13] {
            let seen = feed_chunked(limits, &input, &mut || sizes);
            assert_eq!(
                seen.last(),
                Some(&Seen::Error(FramerError::PolicyViolation))
            );
        }
    }

    #[test]
    fn depth_limit() {
        let limits = Limits::new(1024, 3);
        let ok = with_header("<a><b><c/><c></c></b></a>");
        assert_eq!(
            stanzas(&feed_chunked(limits, &ok, &mut || usize::MAX)).len(),
            1
        );
        let deep = with_header("<a><b><c><d/></c></b></a>");
        assert_eq!(
            feed_chunked(limits, &deep, &mut || usize::MAX).last(),
            Some(&Seen::Error(FramerError::PolicyViolation))
        );
    }

    #[test]
    fn size_limit_applies_before_the_stanza_is_complete() {
        let limits = Limits::new(200, 8);
        let exact = format!("<m>{}</m>", "x".repeat(200 - 7));
        let seen = feed_chunked(limits, &with_header(&exact), &mut || usize::MAX);
        assert_eq!(stanzas(&seen), vec![exact.as_str()]);
        let over = format!("<m>{}</m>", "x".repeat(200 - 6));
        let seen = feed_chunked(limits, &with_header(&over), &mut || usize::MAX);
        assert_eq!(
            seen.last(),
            Some(&Seen::Error(FramerError::PolicyViolation))
        );

        let mut framer = Framer::new(limits);
        assert!(framer.push(HEADER.as_bytes()).is_ok());
        assert!(matches!(framer.next(), Ok(Some(Event::StreamOpen(_)))));
        assert!(framer.push(b"<m>").is_ok());
        assert!(matches!(framer.next(), Ok(None)));
        let filler = [b'x'; 100];
        assert!(framer.push(&filler).is_ok());
        assert!(matches!(framer.next(), Ok(None)));
        assert!(framer.push(&filler).is_ok());
        assert_eq!(framer.next().err(), Some(FramerError::PolicyViolation));
        assert_eq!(framer.capacity(), 0, "failed framer frees its buffer");

        // The header is limited too.
        let long_header = format!(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
            "a".repeat(200)
        );
        let seen = feed_chunked(limits, long_header.as_bytes(), &mut || 7);
        assert_eq!(
            seen.last(),
            Some(&Seen::Error(FramerError::PolicyViolation))
        );
    }

    #[test]
    fn undrained_pushes_are_bounded() {
        let limits = Limits::new(64, 8);
        let mut framer = Framer::new(limits);
        assert!(framer.push(&[b' '; 40]).is_ok());
        assert!(framer.push(&[b' '; 40]).is_ok());
        assert_eq!(framer.push(b" ").err(), Some(FramerError::PolicyViolation));
    }

    #[test]
    fn data_after_close_is_ignored() {
        let mut input = with_header("<a/></stream:stream>");
        input.extend_from_slice(b"\xff\x00 garbage <b/>");
        let seen = feed(&input);
        assert_eq!(seen.last(), Some(&Seen::Close));
        assert_eq!(feed_chunked(LIMITS, &input, &mut || 3), seen);

        let mut framer = Framer::new(LIMITS);
        assert!(framer.push(&input).is_ok());
        let mut events = Vec::new();
        assert!(drain(&mut framer, &mut events));
        assert!(framer.push(b"\xff<c/>").is_ok());
        assert!(matches!(framer.next(), Ok(None)));
        assert_eq!(framer.capacity(), 0);
    }

    #[test]
    fn wrong_close_tag_at_stream_level() {
        assert_eq!(
            last_error(&with_header("</stream>")),
            Some(FramerError::NotWellFormed)
        );
        assert_eq!(
            last_error(&with_header("</stream:streamx>")),
            Some(FramerError::NotWellFormed)
        );
    }

    #[test]
    fn reset_starts_a_new_stream() {
        let mut framer = Framer::new(LIMITS);
        assert!(framer
            .push(&with_header(
                "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><junk"
            ))
            .is_ok());
        let mut seen = Vec::new();
        assert!(drain(&mut framer, &mut seen));
        assert_eq!(seen.len(), 2);
        assert!(framer.buffered() > 0);
        framer.reset();
        assert_eq!(framer.buffered(), 0);
        assert_eq!(framer.capacity(), 0);
        assert!(framer.push(HEADER.as_bytes()).is_ok());
        assert!(matches!(framer.next(), Ok(Some(Event::StreamOpen(_)))));
        assert!(framer.push(b"<presence/>").is_ok());
        assert_eq!(framer.next(), Ok(Some(Event::Stanza("<presence/>"))));
    }

    #[test]
    fn buffer_memory_behaviour() {
        // Part of the per-session budget; the open-element stack replaced
        // the depth counter.
        assert!(
            std::mem::size_of::<Framer>() <= 160,
            "{}",
            std::mem::size_of::<Framer>()
        );
        let mut framer = Framer::new(Limits::new(64 * 1024, 8));
        assert_eq!(framer.capacity(), 0);
        assert!(framer.push(HEADER.as_bytes()).is_ok());
        assert!(matches!(framer.next(), Ok(Some(Event::StreamOpen(_)))));
        assert!(matches!(framer.next(), Ok(None)));
        assert_eq!(framer.capacity(), 0, "idle after the header");

        let big = format!("<message><body>{}</body></message>", "y".repeat(40_000));
        let (first, second) = big.as_bytes().split_at(20_000);
        assert!(framer.push(first).is_ok());
        assert!(matches!(framer.next(), Ok(None)));
        assert_eq!(framer.buffered(), first.len());
        assert!(framer.push(second).is_ok());
        assert_eq!(framer.next(), Ok(Some(Event::Stanza(big.as_str()))));
        assert!(framer.capacity() >= big.len());
        assert!(matches!(framer.next(), Ok(None)));
        assert_eq!(framer.capacity(), 0, "released after the big stanza");
        assert_eq!(framer.buffered(), 0);

        // A partial stanza is kept; consumed bytes are compacted away.
        assert!(framer.push(b"<a/><b>").is_ok());
        assert_eq!(framer.next(), Ok(Some(Event::Stanza("<a/>"))));
        assert!(matches!(framer.next(), Ok(None)));
        assert_eq!(framer.buffered(), 3);
        assert!(framer.push(b"</b>").is_ok());
        assert_eq!(framer.buffered(), 7);
        assert_eq!(framer.next(), Ok(Some(Event::Stanza("<b></b>"))));
    }

    const SAMPLE_STREAMS: &[&str] = &[
        "<?xml version='1.0' encoding='UTF-8'?>\n<stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>\
         <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFAYgBj</auth> \
         <iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r\u{e9}s</resource></bind></iq>\n\
         <message to=\"x@y\" a='>'><body>&lt;hi&gt; \u{1F600} <![CDATA[<x>]]]]></body></message>\r\n\
         <presence/>   </stream:stream>trailing",
        "<s:stream xmlns:s='http://etherx.jabber.org/streams'><a><b><c/></b></a><d/></s:stream>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><m>&#x1F600;&#0;</m>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>  <a/>  x",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><a><!-- x --></a>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><a>\u{e9}\u{20ac}\u{1F600}",
        "<stream:stream xmlns:stream='urn:bad'><a/>",
        "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
         ><a><b><c><d><e><f><g><h><i/></h></g></f></e></d></c></b></a>",
    ];

    fn assert_chunking_invariant(limits: Limits, input: &[u8], seed: u64) {
        let whole = feed_chunked(limits, input, &mut || usize::MAX);
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(
                feed_chunked(limits, input, &mut || size),
                whole,
                "chunk size {size} for {input:?}"
            );
        }
        for round in 0..8 {
            let mut lcg = Lcg(seed ^ round);
            let random = feed_chunked(limits, input, &mut || 1 + lcg.below(40));
            assert_eq!(random, whole, "random split {round} for {input:?}");
        }
    }

    #[test]
    fn chunking_never_changes_the_events() {
        for (index, sample) in SAMPLE_STREAMS.iter().enumerate() {
            assert_chunking_invariant(LIMITS, sample.as_bytes(), index as u64);
        }
        let seen = feed(SAMPLE_STREAMS[0].as_bytes());
        assert_eq!(seen.len(), 10, "{seen:?}");
        assert_eq!(seen.last(), Some(&Seen::Close));
    }

    #[test]
    fn garbage_never_panics_and_is_chunking_invariant() {
        // Mostly structure (so stanzas, depth and size limits are reached),
        // sometimes noise.
        const STRUCTURE: &[&[u8]] = &[
            b"<a>",
            b"</a>",
            b"<b/>",
            b"<c x='1>'>",
            b"</c>",
            b"text",
            b"&amp;",
            b"&#x41;",
            b" ",
            b"\n",
            b"<![CDATA[<]]>",
            b"\xc3\xa9",
            b"<m><b>",
            b"</b></m>",
            b"</stream:stream>",
        ];
        const NOISE: &[&[u8]] = &[
            b"<",
            b">",
            b"/",
            b"'",
            b"\"",
            b"&",
            b";",
            b"a",
            b"b:c",
            b"!",
            b"?",
            b"[",
            b"]",
            b"#",
            b"x",
            b"1",
            b"=",
            b"-",
            b"[CDATA[",
            b"]]>",
            b"\xc3",
            b"\xa9",
            b"\xef\xbf",
            b"\xff",
            b"\x00",
            b"</stream:stream>",
            b"<?xml ",
            b"?>",
            b"<!--",
            b"stream",
        ];
        let header = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";
        let limits = Limits::new(96, 4);
        let mut lcg = Lcg(0x5eed);
        let mut outcomes = [0usize; 4]; // stanzas, errors, closes, policy violations
        for case in 0..600u64 {
            let mut input = Vec::new();
            if case % 4 != 0 {
                input.extend_from_slice(header);
            }
            for _ in 0..lcg.below(60) {
                let pool = if lcg.below(30) == 0 { NOISE } else { STRUCTURE };
                let token = pool.get(lcg.below(pool.len())).copied().unwrap_or(b"");
                input.extend_from_slice(token);
            }
            let seen = feed_chunked(limits, &input, &mut || usize::MAX);
            for event in &seen {
                match event {
                    Seen::Stanza(text) => {
                        assert!(text.starts_with('<') && text.ends_with('>'), "{text:?}");
                        assert!(text.len() <= limits.max_stanza);
                        outcomes[0] += 1;
                    }
                    Seen::Error(FramerError::PolicyViolation) => outcomes[3] += 1,
                    Seen::Error(_) => outcomes[1] += 1,
                    Seen::Close => outcomes[2] += 1,
                    Seen::Open(_) | Seen::Whitespace => {}
                }
            }
            assert_chunking_invariant(limits, &input, case);
        }
        assert!(outcomes.iter().all(|&count| count > 5), "{outcomes:?}");
    }
}
