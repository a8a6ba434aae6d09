//! XEP-0363 HTTP File Upload, the XMPP side: the service on `upload.<domain>` answers
//! discovery and hands out upload slots, and owns the table of slots and stored files
//! that the HTTPS side ([`http`]) serves. File contents live in their own directory and
//! never in the database; this module must never read or write file contents on the
//! event loop (that is [`http`]'s job, in bounded pieces off the loop).

pub mod http;

use crate::config::Config;
use crate::disco;
use crate::feature::Deferred;
use crate::feature::{Feature, Service};
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{self, IqType, Kind, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::xml::build::Element;
use log::{info, warn};
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub const NS: &str = "urn:xmpp:http:upload:0";

/// A slot not used within this time is forgotten (its quota share comes back).
pub const SLOT_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Longest file name accepted, in bytes.
const MAX_NAME_BYTES: usize = 200;

pub const FEATURE: Feature = Feature {
    name: "upload",
    listen: Some(|config| {
        let listeners = http::bind(config)?;
        Ok(Box::new(move |ex, server| {
            http::start(ex, server, listeners)
        }))
    }),
    state: Some(crate::feature::init::<Upload>),
    service: Some(Service {
        serves: |server, domain| server.state::<Upload>().serves(domain),
        domain: |server| server.state::<Upload>().domain().map(str::to_owned),
        name: "HTTP File Upload",
        federated: false,
        handle: |server, session, stanza, out| handle(server, session, stanza, out),
    }),
    account_deleted: Some(|server, user| {
        server.state::<Upload>().forget_user(user);
        None
    }),
    ..Feature::NONE
};

/// A granted upload not yet completed.
pub struct Slot {
    pub owner: Box<str>,
    pub name: Box<str>,
    pub size: u64,
    pub content_type: Box<str>,
    /// The `Authorization` header value the PUT must carry.
    pub secret: Box<str>,
    pub granted: Instant,
    /// A PUT is running: a second one is refused.
    pub busy: bool,
}

/// A completed upload, as described by its `.meta` file.
pub struct Stored {
    pub owner: Box<str>,
    pub name: Box<str>,
    pub size: u64,
    pub content_type: Box<str>,
    pub stored: SystemTime,
}

/// The service: its domain, file directory, slots and files by token.
pub struct Upload {
    domain: Option<Box<str>>,
    pub dir: PathBuf,
    base_url: OnceCell<Box<str>>,
    pub slots: RefCell<HashMap<Box<str>, Slot>>,
    pub files: RefCell<HashMap<Box<str>, Stored>>,
}

impl Upload {
    /// The service as configured, with the files already on disk read back.
    pub fn load(config: &Config) -> Upload {
        let dir = config
            .upload
            .dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("upload"));
        let files = match config.upload_domain() {
            Some(_) => read_files(&dir),
            None => HashMap::new(),
        };
        Upload {
            domain: config.upload_domain().map(String::into_boxed_str),
            dir,
            base_url: OnceCell::new(),
            slots: RefCell::default(),
            files: RefCell::new(files),
        }
    }

    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Whether stanzas to `domain` belong to this service.
    pub fn serves(&self, domain: &str) -> bool {
        self.domain.as_deref() == Some(domain)
    }

    /// Set once the HTTPS port is bound (the default URL names its port).
    pub fn set_base_url(&self, url: &str) {
        let _ = self.base_url.set(url.trim_end_matches('/').into());
    }

    /// What a user holds, stored files and granted slots together: (files, bytes).
    fn usage(&self, owner: &str) -> (u64, u64) {
        let files = self.files.borrow();
        let slots = self.slots.borrow();
        let sizes = (files
            .values()
            .filter(|f| &*f.owner == owner)
            .map(|f| f.size))
        .chain(
            slots
                .values()
                .filter(|s| &*s.owner == owner)
                .map(|s| s.size),
        );
        sizes.fold((0, 0), |(count, bytes), size| (count + 1, bytes + size))
    }

    /// Where a token's file, its description and its upload in progress live.
    pub fn paths(&self, token: &str) -> [PathBuf; 3] {
        ["data", "meta", "part"].map(|ext| self.dir.join(format!("{token}.{ext}")))
    }

    /// A deleted account's files go with it, and its slots can no longer be used.
    pub fn forget_user(&self, user: &str) {
        self.slots
            .borrow_mut()
            .retain(|_, slot| &*slot.owner != user);
        let mut gone = Vec::new();
        self.files.borrow_mut().retain(|token, file| {
            let keep = &*file.owner != user;
            if !keep {
                gone.extend(self.paths(token));
            }
            keep
        });
        if !gone.is_empty() {
            info!(
                "upload: {} files of deleted account {user} removed",
                gone.len() / 3
            );
            smol::unblock(move || {
                for path in gone {
                    let _ = std::fs::remove_file(path);
                }
            })
            .detach();
        }
    }

    /// Forgets slots not used in time.
    pub fn expire_slots(&self, now: Instant) {
        self.slots
            .borrow_mut()
            .retain(|_, slot| slot.busy || now.duration_since(slot.granted) < SLOT_LIFETIME);
    }
}

/// Reads `<token>.meta` (owner, name and content type on three lines) for every
/// `<token>.data`; leftovers of interrupted uploads are removed.
fn read_files(dir: &Path) -> HashMap<Box<str>, Stored> {
    let mut files = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let token = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        match path.extension().and_then(|e| e.to_str()) {
            Some("part") => {
                let _ = std::fs::remove_file(&path);
            }
            Some("data") => {
                let meta = std::fs::read_to_string(path.with_extension("meta"));
                let info = std::fs::metadata(&path);
                match (meta, info) {
                    (Ok(meta), Ok(info)) => {
                        let mut lines = meta.lines();
                        let (Some(owner), Some(name), Some(content_type)) =
                            (lines.next(), lines.next(), lines.next())
                        else {
                            warn!("upload {token}: unreadable description, skipped");
                            continue;
                        };
                        files.insert(
                            token.into(),
                            Stored {
                                owner: owner.into(),
                                name: name.into(),
                                size: info.len(),
                                content_type: content_type.into(),
                                stored: info.modified().unwrap_or_else(|_| SystemTime::now()),
                            },
                        );
                    }
                    _ => warn!("upload {token}: no description, skipped"),
                }
            }
            _ => {}
        }
    }
    files
}

/// Every stanza whose `to` is on the service's domain.
pub fn handle(server: &Server, session: &Session, stanza: &Stanza, out: &mut String) -> Deferred {
    let upload = &server.state::<Upload>();
    let from = upload.domain().unwrap_or_default();
    let to = session.jid.as_str();
    let fail = |out: &mut String, error: &StanzaError| {
        stanza::write_error_reply(out, stanza.kind, stanza.id, from, to, error)
    };
    let is_request = matches!(
        stanza.ty,
        StanzaType::Iq(IqType::Get | IqType::Set) | StanzaType::Message(_)
    ) && !stanza.is_error();
    let addressed_to_service = stanza.to.as_ref().is_some_and(|j| j.local().is_none());
    let max = server.config().upload.max_file_bytes;
    let answered = disco::service_query(out, stanza, from, to, |out| {
        Element::new("identity")
            .attr("category", "store")
            .attr("type", "file")
            .attr("name", "HTTP File Upload")
            .empty(out);
        for feature in [NS, disco::NS_INFO, disco::NS_ITEMS] {
            Element::new("feature").attr("var", feature).empty(out);
        }
        // XEP-0363 §7: the size limit as an XEP-0128 extension form.
        let max = max.to_string();
        Element::new("x")
            .ns("jabber:x:data")
            .attr("type", "result")
            .children(out, |out| {
                for (var, ty, value) in [
                    ("FORM_TYPE", Some("hidden"), NS),
                    ("max-file-size", None, max.as_str()),
                ] {
                    Element::new("field")
                        .attr("var", var)
                        .attr_opt("type", ty)
                        .children(out, |out| Element::new("value").text(out, value));
                }
            });
    });
    if answered {
        return Deferred::None;
    }
    let request = match (stanza.ty, stanza.payload()) {
        (StanzaType::Iq(IqType::Get), Some(request))
            if addressed_to_service && request.has_tag_name((NS, "request")) =>
        {
            SlotRequest::try_from(request).map_err(Refusal::Error)
        }
        _ if is_request => {
            fail(out, &StanzaError::new(StanzaCondition::ServiceUnavailable));
            return Deferred::None;
        }
        _ => return Deferred::None,
    };
    let reply = stanza::reply(Kind::Iq, "result", stanza.id, from, to);
    match request.and_then(|request| grant(server, session, &request)) {
        Ok(slot) => reply.children(out, |out| slot.write(out)),
        Err(Refusal::TooLarge(max)) => {
            let max = max.to_string();
            stanza::reply(Kind::Iq, "error", stanza.id, from, to).children(out, |out| {
                write_too_large(out, &max);
            });
        }
        Err(Refusal::Error(error)) => fail(out, &error),
    }
    Deferred::None
}

/// §5: `not-acceptable` with the service's limit in `<file-too-large/>`.
fn write_too_large(out: &mut String, max: &str) {
    Element::new("error")
        .attr("type", "modify")
        .children(out, |out| {
            let ns = stanza::error::NS_STANZA_ERRORS;
            Element::new("not-acceptable").ns(ns).empty(out);
            Element::new("text")
                .ns(ns)
                .attr("xml:lang", "en")
                .text(out, "File too large");
            Element::new("file-too-large")
                .ns(NS)
                .children(out, |out| Element::new("max-file-size").text(out, max));
        });
}

enum Refusal {
    TooLarge(u64),
    Error(StanzaError<'static>),
}

/// A slot request (XEP-0363 §4): file name, size and content type.
#[derive(Debug, PartialEq)]
struct SlotRequest<'a> {
    name: &'a str,
    size: u64,
    content_type: &'a str,
}

impl<'a> TryFrom<roxmltree::Node<'a, '_>> for SlotRequest<'a> {
    type Error = StanzaError<'static>;

    /// A name that is not one path segment, a missing, bad or zero size or an unusable
    /// content type is `bad-request` with a text saying which.
    fn try_from(request: roxmltree::Node<'a, '_>) -> Result<Self, Self::Error> {
        let bad = |text| StanzaError::new(StanzaCondition::BadRequest).with_text(text);
        let name = request.attribute("filename").unwrap_or_default();
        if !valid_name(name) {
            return Err(bad("Unusable file name"));
        }
        let size: u64 = request
            .attribute("size")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("Missing or bad size"))?;
        let content_type = request
            .attribute("content-type")
            .unwrap_or("application/octet-stream");
        if !valid_content_type(content_type) {
            return Err(bad("Unusable content type"));
        }
        if size == 0 {
            // §4: the size is that of the file to upload; an empty file is nothing to
            // share, and would take a quota slot of no bytes.
            return Err(bad("Empty files are not accepted"));
        }
        Ok(SlotRequest {
            name,
            size,
            content_type,
        })
    }
}

/// A granted slot: where to put the file (with the secret header) and where to get it.
struct Granted {
    url: String,
    secret: String,
}

impl Granted {
    /// `<slot/>` (§4).
    fn write(&self, out: &mut String) {
        Element::new("slot").ns(NS).children(out, |out| {
            Element::new("put")
                .attr("url", &self.url)
                .children(out, |out| {
                    Element::new("header")
                        .attr("name", "Authorization")
                        .text(out, &self.secret);
                });
            Element::new("get").attr("url", &self.url).empty(out);
        });
    }
}

/// Checks a slot request against the limits and quota and records the slot.
fn grant(server: &Server, session: &Session, request: &SlotRequest) -> Result<Granted, Refusal> {
    let upload = &server.state::<Upload>();
    let config = &server.config().upload;
    let SlotRequest {
        name,
        size,
        content_type,
    } = *request;
    if size > config.max_file_bytes {
        return Err(Refusal::TooLarge(config.max_file_bytes));
    }
    let owner = session.jid.user();
    upload.expire_slots(Instant::now());
    let (files, bytes) = upload.usage(owner);
    let over_files = files >= u64::from(config.quota_files_per_user);
    if over_files || bytes.saturating_add(size) > config.quota_bytes_per_user {
        let what = if over_files { "files" } else { "bytes" };
        info!("upload: {owner} is at the {what} quota, a slot refused");
        return Err(Refusal::Error(
            StanzaError::new(StanzaCondition::ResourceConstraint).with_text("Upload quota used up"),
        ));
    }
    let Some(base) = upload.base_url.get() else {
        return Err(Refusal::Error(StanzaError::new(
            StanzaCondition::ServiceUnavailable,
        )));
    };
    let token = format!("{}{}", server.random_id(), server.random_id());
    let secret = format!("{}{}", server.random_id(), server.random_id());
    let url = format!("{base}/upload/{token}/{}", percent_encode(name));
    upload.slots.borrow_mut().insert(
        token.into(),
        Slot {
            owner: owner.into(),
            name: name.into(),
            size,
            content_type: content_type.into(),
            secret: secret.as_str().into(),
            granted: Instant::now(),
            busy: false,
        },
    );
    Ok(Granted { url, secret })
}

/// Creates (or truncates) a file only the server's user can read, whatever the umask.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Creates the file directory (and its parents) owner-only, whatever the umask.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A media type that fits on one header line.
pub fn valid_content_type(text: &str) -> bool {
    !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A name that is one path segment: no separators, no control characters, not `.`/`..`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The inverse of [`percent_encode`]; `None` for bad escapes or non-UTF-8 results.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl crate::feature::State for Upload {
    fn new(config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        Upload::load(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(attrs: &str) -> Result<(String, u64, String), StanzaError<'static>> {
        let xml = format!("<request xmlns='urn:xmpp:http:upload:0' {attrs}/>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        SlotRequest::try_from(doc.root_element())
            .map(|r| (r.name.to_owned(), r.size, r.content_type.to_owned()))
    }

    fn bad(attrs: &str, text: &str) {
        let error = slot(attrs).unwrap_err();
        assert_eq!(error.condition, StanzaCondition::BadRequest, "{attrs}");
        assert_eq!(error.text, Some(text), "{attrs}");
    }

    #[test]
    fn a_request_names_file_size_and_type_xep_0363_s4() {
        assert_eq!(
            slot("filename='a b.jpg' size='12' content-type='image/jpeg'").unwrap(),
            ("a b.jpg".into(), 12, "image/jpeg".into())
        );
        assert_eq!(
            slot("filename='a' size='1'").unwrap().2,
            "application/octet-stream"
        );
    }

    #[test]
    fn unusable_requests_are_bad_request_with_the_reason() {
        bad("filename='../a' size='1'", "Unusable file name");
        bad("size='1'", "Unusable file name");
        bad("filename='a'", "Missing or bad size");
        bad("filename='a' size='-1'", "Missing or bad size");
        bad(
            "filename='a' size='1' content-type='t\u{e9}xt'",
            "Unusable content type",
        );
        bad("filename='a' size='0'", "Empty files are not accepted");
    }

    #[test]
    fn file_too_large_carries_the_limit_xep_0363_s5() {
        let mut out = String::new();
        write_too_large(&mut out, "1024");
        let doc = roxmltree::Document::parse(&out).unwrap();
        let error = doc.root_element();
        assert_eq!(error.attribute("type"), Some("modify"));
        let ns = stanza::error::NS_STANZA_ERRORS;
        assert!(error
            .children()
            .any(|c| c.has_tag_name((ns, "not-acceptable"))));
        let large = error
            .children()
            .find(|c| c.has_tag_name((NS, "file-too-large")))
            .unwrap();
        assert_eq!(stanza::child_text(large, "max-file-size", NS), Some("1024"));
    }

    #[test]
    fn the_slot_puts_with_the_secret_and_gets_from_the_same_url() {
        let granted = Granted {
            url: "https://h/upload/t/a%27b".into(),
            secret: "s".into(),
        };
        let mut out = String::new();
        granted.write(&mut out);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let slot = doc.root_element();
        let put = stanza::child(slot, "put", NS).unwrap();
        let get = stanza::child(slot, "get", NS).unwrap();
        assert_eq!(put.attribute("url"), Some("https://h/upload/t/a%27b"));
        assert_eq!(get.attribute("url"), put.attribute("url"));
        assert_eq!(stanza::child_text(put, "header", NS), Some("s"));
    }

    #[test]
    fn names_are_one_segment() {
        assert!(valid_name("photo 1.jpg"));
        assert!(valid_name("été.txt"));
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb", &"x".repeat(201)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn unused_slots_expire_busy_ones_stay() {
        let upload = Upload::load(&Config::default());
        let now = Instant::now();
        for (token, busy) in [("idle", false), ("busy", true)] {
            let slot = Slot {
                owner: "alice".into(),
                name: "a.txt".into(),
                size: 1,
                content_type: "text/plain".into(),
                secret: "s".into(),
                granted: now,
                busy,
            };
            upload.slots.borrow_mut().insert(token.into(), slot);
        }
        upload.expire_slots(now + SLOT_LIFETIME - Duration::from_secs(1));
        assert_eq!(upload.usage("alice"), (2, 2));
        upload.expire_slots(now + SLOT_LIFETIME);
        let slots = upload.slots.borrow();
        assert!(slots.contains_key("busy") && !slots.contains_key("idle"));
    }

    #[test]
    fn percent_round_trip() {
        let name = "été 100%/x?.jpg";
        let encoded = percent_encode(name);
        assert_eq!(encoded, "%C3%A9t%C3%A9%20100%25%2Fx%3F.jpg");
        assert_eq!(percent_decode(&encoded).as_deref(), Some(name));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
