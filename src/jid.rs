//! JIDs (RFC 7622): owns parsing, validating and normalising XMPP addresses
//! into one compact value used as a routing and storage key.
//!
//! It must never hand out a `Jid` that was not validated and normalised, so
//! equal addresses always compare equal. Full PRECIS (RFC 8264/8265/8266)
//! and NFC are NOT implemented: the localpart is case-folded with Unicode
//! `to_lowercase` as a stand-in for UsernameCaseMapped, the domainpart is
//! lowercased (no IDNA/punycode conversion), the resource is kept as sent.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// RFC 7622 §3: each part is at most 1023 bytes.
const MAX_PART_BYTES: usize = 1023;

/// A validated, normalised `local@domain/resource` address.
///
/// One heap string plus two `u16` offsets (parts ≤ 1023 bytes, so the whole
/// address is < 3072 bytes): three words in total.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Jid {
    text: Box<str>,
    /// Byte length of the localpart; 0 when there is none (a present
    /// localpart is never empty).
    local_len: u16,
    /// Byte offset just past the domainpart; equals `text.len()` when
    /// there is no resource.
    domain_end: u16,
}

/// Which part of a JID an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JidPart {
    Local,
    Domain,
    Resource,
}

impl fmt::Display for JidPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JidPart::Local => "localpart",
            JidPart::Domain => "domainpart",
            JidPart::Resource => "resourcepart",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JidError {
    /// The part is present but empty (`@d`, `l@`, `d/`, ``).
    Empty(JidPart),
    /// The part is longer than 1023 bytes after normalisation.
    TooLong(JidPart),
    /// The part contains a character it may not contain.
    IllegalChar(JidPart),
    /// A `[…]` domain that is not an IPv6 address.
    InvalidIpLiteral,
}

impl fmt::Display for JidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JidError::Empty(part) => write!(f, "empty {part}"),
            JidError::TooLong(part) => write!(f, "{part} longer than 1023 bytes"),
            JidError::IllegalChar(part) => write!(f, "illegal character in {part}"),
            JidError::InvalidIpLiteral => f.write_str("invalid IPv6 literal in domainpart"),
        }
    }
}

impl std::error::Error for JidError {}

impl Jid {
    /// Parse `[local@]domain[/resource]`: the resource is everything after
    /// the first `/` (it may contain `@` and `/`), the localpart is what
    /// precedes the first `@` before that.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (bare, resource) = match s.split_once('/') {
            Some((bare, resource)) => (bare, Some(resource)),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((local, domain)) => (Some(local), domain),
            None => (None, bare),
        };
        Jid::from_parts(local, domain, resource)
    }

    /// Build from separate parts, validating and normalising each.
    pub fn from_parts(
        local: Option<&str>,
        domain: &str,
        resource: Option<&str>,
    ) -> Result<Jid, JidError> {
        let capacity =
            local.map_or(0, |l| l.len() + 1) + domain.len() + resource.map_or(0, |r| r.len() + 1);
        let mut text = String::with_capacity(capacity);
        let local_len = match local {
            Some(local) => {
                push_local(&mut text, local)?;
                let len = text.len();
                text.push('@');
                len
            }
            None => 0,
        };
        push_domain(&mut text, domain)?;
        let domain_end = text.len();
        if let Some(resource) = resource {
            check_resource(resource)?;
            text.push('/');
            text.push_str(resource);
        }
        Ok(Jid {
            text: text.into_boxed_str(),
            local_len: to_offset(local_len, JidPart::Local)?,
            domain_end: to_offset(domain_end, JidPart::Domain)?,
        })
    }

    pub fn local(&self) -> Option<&str> {
        match self.local_len {
            0 => None,
            len => self.text.get(..usize::from(len)),
        }
    }

    pub fn domain(&self) -> &str {
        let start = match self.local_len {
            0 => 0,
            len => usize::from(len) + 1,
        };
        self.text
            .get(start..usize::from(self.domain_end))
            .unwrap_or_default()
    }

    pub fn resource(&self) -> Option<&str> {
        self.text.get(usize::from(self.domain_end) + 1..)
    }

    /// The same address without resource.
    pub fn bare(&self) -> Jid {
        let end = usize::from(self.domain_end);
        Jid {
            text: self.text.get(..end).unwrap_or_default().into(),
            local_len: self.local_len,
            domain_end: self.domain_end,
        }
    }

    pub fn is_bare(&self) -> bool {
        usize::from(self.domain_end) == self.text.len()
    }

    /// The normalised `local@domain/resource` string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The bare part of this address with `resource` attached (replacing
    /// any existing resource).
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        check_resource(resource)?;
        let bare = self
            .text
            .get(..usize::from(self.domain_end))
            .unwrap_or_default();
        let mut text = String::with_capacity(bare.len() + 1 + resource.len());
        text.push_str(bare);
        text.push('/');
        text.push_str(resource);
        Ok(Jid {
            text: text.into_boxed_str(),
            local_len: self.local_len,
            domain_end: self.domain_end,
        })
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jid({:?})", &*self.text)
    }
}

/// The address of a bound client session: a full JID that always has a
/// localpart and a resource, checked once when the session binds, so code
/// holding one never has to ask again.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionJid(Jid);

impl SessionJid {
    /// `None` unless `jid` has both a localpart and a resource.
    pub fn new(jid: Jid) -> Option<SessionJid> {
        (jid.local_len > 0 && !jid.is_bare()).then_some(SessionJid(jid))
    }

    /// The address of an entity on another server as a sender stands for it: any JID
    /// (see `router::Session::remote`).
    pub fn remote(jid: Jid) -> SessionJid {
        SessionJid(jid)
    }

    /// The account's localpart.
    pub fn user(&self) -> &str {
        self.0.local().unwrap_or_default()
    }

    pub fn jid(&self) -> &Jid {
        &self.0
    }
}

impl std::ops::Deref for SessionJid {
    type Target = Jid;
    fn deref(&self) -> &Jid {
        &self.0
    }
}

impl PartialEq<Jid> for SessionJid {
    fn eq(&self, other: &Jid) -> bool {
        self.0 == *other
    }
}

impl PartialEq<SessionJid> for Jid {
    fn eq(&self, other: &SessionJid) -> bool {
        *self == other.0
    }
}

impl fmt::Display for SessionJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for SessionJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

fn to_offset(value: usize, part: JidPart) -> Result<u16, JidError> {
    u16::try_from(value).map_err(|_| JidError::TooLong(part))
}

/// Append the case-folded localpart; RFC 7622 §3.3.1 forbids
/// `" & ' / : < > @`, and PRECIS IdentifierClass has no spaces or controls.
fn push_local(out: &mut String, local: &str) -> Result<(), JidError> {
    if local.is_empty() {
        return Err(JidError::Empty(JidPart::Local));
    }
    let start = out.len();
    for lower in local.chars().flat_map(char::to_lowercase) {
        let forbidden = matches!(lower, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@');
        if forbidden || lower.is_whitespace() || lower.is_control() {
            return Err(JidError::IllegalChar(JidPart::Local));
        }
        out.push(lower);
    }
    if out.len() - start > MAX_PART_BYTES {
        return Err(JidError::TooLong(JidPart::Local));
    }
    Ok(())
}

/// Append the lowercased domainpart without its trailing dot. Accepts an
/// IPv6 literal in brackets (written in canonical RFC 5952 form) or a
/// hostname of ASCII letters, digits, `-`, `_`, `.` and non-ASCII letters
/// (IDN U-labels; not IDNA-checked). Empty labels are refused.
fn push_domain(out: &mut String, domain: &str) -> Result<(), JidError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(JidError::Empty(JidPart::Domain));
    }
    let start = out.len();
    if let Some(literal) = domain.strip_prefix('[') {
        let address = literal
            .strip_suffix(']')
            .and_then(|inner| Ipv6Addr::from_str(inner).ok())
            .ok_or(JidError::InvalidIpLiteral)?;
        out.push('[');
        out.push_str(&address.to_string());
        out.push(']');
        return Ok(());
    }
    // Only one trailing dot is stripped: "a.." has an empty last label
    // (and would print as "a.", which reparses as a different JID).
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(JidError::IllegalChar(JidPart::Domain));
    }
    for lower in domain.chars().flat_map(char::to_lowercase) {
        let allowed = if lower.is_ascii() {
            lower.is_ascii_alphanumeric() || matches!(lower, '-' | '_' | '.')
        } else {
            !lower.is_whitespace() && !lower.is_control()
        };
        if !allowed {
            return Err(JidError::IllegalChar(JidPart::Domain));
        }
        out.push(lower);
    }
    if out.len() - start > MAX_PART_BYTES {
        return Err(JidError::TooLong(JidPart::Domain));
    }
    Ok(())
}

/// The resource is kept as sent (PRECIS OpaqueString minus its mapping):
/// non-empty, at most 1023 bytes, no control characters.
fn check_resource(resource: &str) -> Result<(), JidError> {
    if resource.is_empty() {
        return Err(JidError::Empty(JidPart::Resource));
    }
    if resource.len() > MAX_PART_BYTES {
        return Err(JidError::TooLong(JidPart::Resource));
    }
    if resource.chars().any(char::is_control) {
        return Err(JidError::IllegalChar(JidPart::Resource));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn parse(s: &str) -> Jid {
        Jid::parse(s).unwrap_or_else(|error| panic!("{s:?}: {error}"))
    }

    #[test]
    fn compact() {
        assert_eq!(std::mem::size_of::<Jid>(), 3 * std::mem::size_of::<usize>());
        assert_eq!(
            std::mem::size_of::<Option<Jid>>(),
            std::mem::size_of::<Jid>()
        );
    }

    #[test]
    fn valid_forms() {
        let full = parse("juliet@example.com/balcony");
        assert_eq!(full.local(), Some("juliet"));
        assert_eq!(full.domain(), "example.com");
        assert_eq!(full.resource(), Some("balcony"));
        assert!(!full.is_bare());
        assert_eq!(full.as_str(), "juliet@example.com/balcony");
        assert_eq!(full.to_string(), "juliet@example.com/balcony");

        let bare = parse("juliet@example.com");
        assert_eq!(bare.resource(), None);
        assert!(bare.is_bare());
        assert_eq!(full.bare(), bare);

        let domain = parse("example.com");
        assert_eq!(domain.local(), None);
        assert_eq!(domain.domain(), "example.com");
        assert!(domain.is_bare());

        let domain_resource = parse("example.com/some@thing/else");
        assert_eq!(domain_resource.local(), None);
        assert_eq!(domain_resource.domain(), "example.com");
        assert_eq!(domain_resource.resource(), Some("some@thing/else"));

        let odd_resource = parse("a@b/c@d/e f");
        assert_eq!(odd_resource.local(), Some("a"));
        assert_eq!(odd_resource.domain(), "b");
        assert_eq!(odd_resource.resource(), Some("c@d/e f"));

        let unicode = parse("\u{e9}lodie@caf\u{e9}.example/\u{2603}");
        assert_eq!(unicode.local(), Some("\u{e9}lodie"));
        assert_eq!(unicode.domain(), "caf\u{e9}.example");

        assert_eq!(parse("x@[::1]").domain(), "[::1]");
        assert_eq!(parse("[2001:DB8:0:0:0:0:0:1]/r").domain(), "[2001:db8::1]");
        assert_eq!(parse("x@192.168.1.2").domain(), "192.168.1.2");
        assert_eq!(parse("under_score.lan").domain(), "under_score.lan");
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            parse("Juliet@Example.COM/Balcony").as_str(),
            "juliet@example.com/Balcony"
        );
        assert_eq!(parse("example.com.").as_str(), "example.com");
        assert_eq!(parse("a@example.com./r").as_str(), "a@example.com/r");
        assert_eq!(parse("\u{c9}LODIE@x").local(), Some("\u{e9}lodie"));
        assert_eq!(parse("\u{3a3}\u{391}@x").local(), Some("\u{3c3}\u{3b1}"));
        assert_eq!(parse("A@B"), parse("a@b"));
        let set: HashSet<Jid> = ["A@B/r", "a@b/r", "a@B./r"]
            .iter()
            .map(|s| parse(s))
            .collect();
        assert_eq!(set.len(), 1);
        assert_ne!(parse("a@b/R"), parse("a@b/r"));
    }

    #[test]
    fn empty_parts() {
        assert_eq!(Jid::parse(""), Err(JidError::Empty(JidPart::Domain)));
        assert_eq!(Jid::parse("@b"), Err(JidError::Empty(JidPart::Local)));
        assert_eq!(Jid::parse("a@"), Err(JidError::Empty(JidPart::Domain)));
        assert_eq!(Jid::parse("a@/r"), Err(JidError::Empty(JidPart::Domain)));
        assert_eq!(Jid::parse("a@b/"), Err(JidError::Empty(JidPart::Resource)));
        assert_eq!(Jid::parse("/r"), Err(JidError::Empty(JidPart::Domain)));
        assert_eq!(Jid::parse("."), Err(JidError::Empty(JidPart::Domain)));
    }

    #[test]
    fn illegal_characters() {
        for local in [
            "a\"b",
            "a&b",
            "a'b",
            "a:b",
            "a<b",
            "a>b",
            "a b",
            "a\tb",
            "a\u{0}b",
            "a\u{85}b",
            "a\u{3000}b",
        ] {
            assert_eq!(
                Jid::from_parts(Some(local), "example.com", None),
                Err(JidError::IllegalChar(JidPart::Local)),
                "{local:?}"
            );
        }
        // '/' and '@' end the localpart when parsing; as a part they are illegal.
        assert_eq!(
            Jid::from_parts(Some("a/b"), "x", None),
            Err(JidError::IllegalChar(JidPart::Local))
        );
        assert_eq!(
            Jid::from_parts(Some("a@b"), "x", None),
            Err(JidError::IllegalChar(JidPart::Local))
        );
        for domain in [
            "a@b@c",
            "ex ample.com",
            "exa\u{0}mple",
            "a:5222",
            "a]b",
            "<a>",
            ".a",
            "a..b",
            "a..",
            "x@a../r",
            "a\u{2028}b",
        ] {
            assert_eq!(
                Jid::parse(domain),
                Err(JidError::IllegalChar(JidPart::Domain)),
                "{domain:?}"
            );
        }
        assert_eq!(
            Jid::from_parts(None, "a/b", None),
            Err(JidError::IllegalChar(JidPart::Domain))
        );
        for literal in ["[::1", "[nonsense]", "[1.2.3.4]", "[]"] {
            assert_eq!(
                Jid::parse(literal),
                Err(JidError::InvalidIpLiteral),
                "{literal:?}"
            );
        }
        assert_eq!(
            Jid::parse("a@b/r\u{0}"),
            Err(JidError::IllegalChar(JidPart::Resource))
        );
        assert_eq!(
            Jid::parse("a@b/r\u{7f}"),
            Err(JidError::IllegalChar(JidPart::Resource))
        );
    }

    #[test]
    fn part_lengths() {
        let max = "a".repeat(1023);
        let over = "a".repeat(1024);
        let longest = format!("{max}@{max}/{max}");
        let jid = parse(&longest);
        assert_eq!(jid.local(), Some(max.as_str()));
        assert_eq!(jid.domain(), max);
        assert_eq!(jid.resource(), Some(max.as_str()));
        assert_eq!(jid.bare().as_str().len(), 2047);

        assert_eq!(
            Jid::parse(&format!("{over}@b")),
            Err(JidError::TooLong(JidPart::Local))
        );
        assert_eq!(
            Jid::parse(&format!("a@{over}")),
            Err(JidError::TooLong(JidPart::Domain))
        );
        assert_eq!(
            Jid::parse(&format!("a@{over}.")),
            Err(JidError::TooLong(JidPart::Domain))
        );
        assert!(
            Jid::parse(&format!("a@{max}.")).is_ok(),
            "trailing dot not counted"
        );
        assert_eq!(
            Jid::parse(&format!("a@b/{over}")),
            Err(JidError::TooLong(JidPart::Resource))
        );
        // Multi-byte characters count in bytes: 512 × 2 bytes = 1024.
        assert_eq!(
            Jid::parse(&format!("{}@b", "\u{e9}".repeat(512))),
            Err(JidError::TooLong(JidPart::Local))
        );
    }

    #[test]
    fn resources() {
        let bare = parse("Romeo@Example.net");
        let full = bare.with_resource("Orchard 1").expect("valid");
        assert_eq!(full.as_str(), "romeo@example.net/Orchard 1");
        let other = full.with_resource("other").expect("valid");
        assert_eq!(other.as_str(), "romeo@example.net/other");
        assert_eq!(other.bare(), bare);
        assert_eq!(
            bare.with_resource(""),
            Err(JidError::Empty(JidPart::Resource))
        );
        assert_eq!(
            bare.with_resource("a\nb"),
            Err(JidError::IllegalChar(JidPart::Resource))
        );
        let domain_only = parse("example.net").with_resource("r/s").expect("valid");
        assert_eq!(domain_only.domain(), "example.net");
        assert_eq!(domain_only.resource(), Some("r/s"));
    }

    #[test]
    fn from_parts_matches_parse() {
        let built = Jid::from_parts(Some("Alice"), "Example.org.", Some("Phone")).expect("valid");
        assert_eq!(built, parse("alice@example.org/Phone"));
        assert_eq!(
            Jid::from_parts(None, "example.org", None),
            Ok(parse("example.org"))
        );
        assert_eq!(
            Jid::from_parts(Some(""), "x", None),
            Err(JidError::Empty(JidPart::Local))
        );
    }

    #[test]
    fn display_and_debug() {
        let jid: Jid = "a@b/c".parse().expect("valid");
        assert_eq!(format!("{jid}"), "a@b/c");
        assert_eq!(format!("{jid:?}"), "Jid(\"a@b/c\")");
        assert_eq!(
            JidError::TooLong(JidPart::Local).to_string(),
            "localpart longer than 1023 bytes"
        );
    }
}
