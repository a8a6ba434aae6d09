//! vcard-temp (XEP-0054): a user's vCard, read by anyone, written by its owner, size-limited
//! and persisted; and its avatar hash in the user's available presence (XEP-0153). This
//! module owns vCard semantics; it never routes a stanza.

use crate::feature::Deferred;
use crate::feature::Feature;
use crate::iq::Iq;
use crate::iq::IqTarget;
use crate::router::Session;
use crate::sasl::base64;
use crate::server::Server;
use crate::stanza::{self, IqType, PresenceType, Stanza, StanzaCondition, StanzaError, StanzaType};
use crate::usercache::UserCache;
use crate::xml::build::Element;
use crate::xml::{self, write_element, NS_CLIENT};
use log::warn;
use roxmltree::Node;
use std::rc::Rc;

pub const NS: &str = "vcard-temp";
pub const NS_UPDATE: &str = "vcard-temp:x:update";

pub const FEATURE: Feature = Feature {
    name: "vcard",
    answers_remote: true,
    state: Some(crate::feature::init::<PhotoHashes>),
    iq: &[NS],
    on_iq: |iq, out| Some(handle(iq, out)),
    server_disco: &[NS],
    user_offline: Some(user_offline),
    ..Feature::NONE
};

/// Photo hashes of online users, for their every available presence.
#[derive(Default)]
pub struct PhotoHashes(UserCache<Option<Rc<str>>>);

/// XEP-0153: the hex SHA-1 of the photo in `user`'s vCard, if it has one.
pub fn photo_hash(server: &Server, user: &str) -> Option<Rc<str>> {
    let loaded = server
        .state::<PhotoHashes>()
        .0
        .get_or_load(server, user, || {
            server
                .store
                .vcard_photo_hash(user)
                .map(|hash| hash.map(Rc::from))
        });
    loaded.unwrap_or_else(|e| {
        warn!("{user}: cannot read the vCard photo hash: {e}");
        None
    })
}

/// The user's last session ended: keep nothing of theirs in memory.
pub fn user_offline(server: &Server, user: &str) {
    server.state::<PhotoHashes>().0.forget(user);
}

/// XEP-0153 §4.1: runs `f` on the user's available presence with
/// `<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>` added when their vCard has a
/// photo and the client left the element out; on anything else, on the stanza as it is.
pub fn with_photo_update<R>(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    f: impl FnOnce(&Stanza) -> R,
) -> R {
    let user = session.jid.user();
    if stanza.ty != StanzaType::Presence(PresenceType::Available)
        || stanza.child("x", NS_UPDATE).is_some()
    {
        return f(stanza);
    }
    let Some(hash) = photo_hash(server, user) else {
        return f(stanza);
    };
    let mut wrapped = String::new();
    Element::new("w")
        .ns(NS_CLIENT)
        .children(&mut wrapped, |out| {
            write_element(out, stanza.node, NS_CLIENT, &[]);
            let update = |out: &mut String| {
                Element::new("x")
                    .ns(NS_UPDATE)
                    .children(out, |out| Element::new("photo").text(out, &hash));
            };
            // The update goes in as the presence's last child.
            if let Some(open) = out.strip_suffix("/>").map(str::len) {
                out.truncate(open);
                out.push('>');
                update(out);
                out.push_str("</presence>");
            } else if let Some(open) = out.strip_suffix("</presence>").map(str::len) {
                out.truncate(open);
                update(out);
                out.push_str("</presence>");
            }
        });
    // The stanza was parsed once already, so this parse cannot fail short of a bug;
    // if it does, the presence goes out as the client sent it.
    let Ok(doc) = xml::parse_stanza(&wrapped) else {
        return f(stanza);
    };
    match xml::stanza_element(&doc).ok().map(Stanza::parse) {
        Some(Ok(updated)) => f(&updated),
        _ => f(stanza),
    }
}

/// The vCard re-serialised for storage, or `policy-violation` when it is larger than
/// `limits.max_vcard_bytes` (for accounts and chat rooms alike).
pub(crate) fn limited_xml(server: &Server, vcard: Node) -> Result<String, StanzaError<'static>> {
    let mut xml = String::new();
    write_element(&mut xml, vcard, "", &[]);
    if xml.len() > server.config().limits.max_vcard_bytes as usize {
        return Err(StanzaError::new(StanzaCondition::PolicyViolation)
            .with_text("the vCard is larger than this server allows"));
    }
    Ok(xml)
}

/// XEP-0153 §3.1: the photo is the base64 BINVAL of PHOTO; its hash is the hex SHA-1 of
/// the decoded bytes. Line breaks inside the base64 are allowed.
pub(crate) fn photo_hash_of(vcard: Node) -> Option<String> {
    let photo = stanza::child(vcard, "PHOTO", NS)?;
    base64_photo_hash(stanza::child_text(photo, "BINVAL", NS)?)
}

/// The hex SHA-1 of a base64 image (whitespace allowed), if it decodes to any bytes.
pub(crate) fn base64_photo_hash(binval: &str) -> Option<String> {
    let compact: String = binval.split_ascii_whitespace().collect();
    let bytes = base64::decode(&compact).filter(|b| !b.is_empty())?;
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &bytes);
    Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// A `vcard-temp` request, checked (XEP-0054 §3.1, §3.2).
#[derive(Debug, PartialEq)]
enum Request<'a, 'i> {
    /// Anyone may read any account's vCard (the asker's own when sent to the server).
    Get { user: &'a str },
    /// Only the owner writes their own.
    Set { user: &'a str, vcard: Node<'a, 'i> },
}

impl<'a, 'i> Request<'a, 'i> {
    /// The payload is a `<vCard/>` (else bad-request); a set of another account's vCard is
    /// `forbidden`. `None` for a result or error, which is no request.
    fn parse(
        ty: IqType,
        target: IqTarget<'a>,
        own: &'a str,
        payload: Node<'a, 'i>,
    ) -> Option<Result<Self, StanzaCondition>> {
        if payload.tag_name().name() != "vCard" {
            return Some(Err(StanzaCondition::BadRequest));
        }
        let user = match target {
            IqTarget::Server => own,
            IqTarget::Account(user) => user,
        };
        match ty {
            IqType::Get => Some(Ok(Request::Get { user })),
            IqType::Set if user != own => Some(Err(StanzaCondition::Forbidden)),
            IqType::Set => Some(Ok(Request::Set {
                user,
                vcard: payload,
            })),
            IqType::Result | IqType::Error => None,
        }
    }
}

/// An empty vCard, the answer for a user who has none (§3.1 allows it).
pub(crate) fn write_empty(out: &mut String) {
    Element::new("vCard").ns(NS).empty(out);
}

/// `vcard-temp` get (own or another account's) and set (own only).
pub fn handle(iq: &Iq, out: &mut String) -> Deferred {
    let server = iq.server;
    let reply = iq.reply();
    let request = match Request::parse(iq.ty, iq.target, iq.user(), iq.payload) {
        None => return Deferred::None,
        Some(Err(condition)) => {
            reply.fail(out, condition);
            return Deferred::None;
        }
        Some(Ok(request)) => request,
    };
    match request {
        Request::Get { user } => {
            match server.store.vcard(user) {
                Ok(Some(bytes)) => reply.result_with(out, &String::from_utf8_lossy(&bytes)),
                Ok(None) => reply.result_of(out, write_empty),
                Err(e) => {
                    warn!("{user}: cannot read the vCard: {e}");
                    reply.fail(out, StanzaCondition::ResourceConstraint);
                }
            }
            Deferred::None
        }
        Request::Set { user, vcard } => {
            let xml = match limited_xml(server, vcard) {
                Ok(xml) => xml,
                Err(error) => {
                    reply.error(out, &error);
                    return Deferred::None;
                }
            };
            let hash = photo_hash_of(vcard);
            // XEP-0398: the photo becomes the user's XEP-0084 avatar too.
            let avatar = hash
                .as_deref()
                .and_then(|hash| crate::pep::avatar::from_vcard(server, user, vcard, hash));
            let server = server.clone();
            let user = user.to_owned();
            Deferred::Reply(Box::pin(async move {
                if let Some(avatar) = avatar {
                    if let Err(e) = avatar.await {
                        warn!("{user}: vCard photo not published as avatar: {e}");
                    }
                }
                let result = server.store.set_vcard(&user, xml.into_bytes(), hash).await;
                server.state::<PhotoHashes>().0.forget(&user);
                reply.after_write(result, "vCard")
            }))
        }
    }
}

impl crate::feature::State for PhotoHashes {
    fn new(_config: &crate::config::Config, _store: &crate::store::Store) -> Self {
        PhotoHashes::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ty: IqType, target: IqTarget, payload: &str, expected: Result<&str, StanzaCondition>) {
        let doc = roxmltree::Document::parse(payload).unwrap();
        let parsed = Request::parse(ty, target, "alice", doc.root_element()).unwrap();
        let user = parsed.map(|request| match request {
            Request::Get { user } | Request::Set { user, .. } => user,
        });
        assert_eq!(user, expected, "{payload}");
    }

    const VCARD: &str = "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>";

    #[test]
    fn get_reads_own_or_any_account_xep_0054_s3_1() {
        check(IqType::Get, IqTarget::Server, VCARD, Ok("alice"));
        check(IqType::Get, IqTarget::Account("bob"), VCARD, Ok("bob"));
    }

    #[test]
    fn set_writes_own_xep_0054_s3_2() {
        check(IqType::Set, IqTarget::Server, VCARD, Ok("alice"));
        check(IqType::Set, IqTarget::Account("alice"), VCARD, Ok("alice"));
    }

    #[test]
    fn set_of_another_account_is_forbidden() {
        check(
            IqType::Set,
            IqTarget::Account("bob"),
            VCARD,
            Err(StanzaCondition::Forbidden),
        );
    }

    #[test]
    fn another_element_is_bad_request() {
        for ty in [IqType::Get, IqType::Set] {
            check(
                ty,
                IqTarget::Server,
                "<card xmlns='vcard-temp'/>",
                Err(StanzaCondition::BadRequest),
            );
        }
    }

    #[test]
    fn photo_hash_is_sha1_of_decoded_binval() {
        let xml = "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVs\n  bG8=</BINVAL></PHOTO></vCard>";
        let doc = roxmltree::Document::parse(xml).unwrap();
        // SHA-1("hello")
        assert_eq!(
            photo_hash_of(doc.root_element()).as_deref(),
            Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
        );
        for none in [
            "<vCard xmlns='vcard-temp'><FN>x</FN></vCard>",
            "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>!!</BINVAL></PHOTO></vCard>",
            "<vCard xmlns='vcard-temp'><PHOTO><EXTVAL>http://x</EXTVAL></PHOTO></vCard>",
        ] {
            let doc = roxmltree::Document::parse(none).unwrap();
            assert_eq!(photo_hash_of(doc.root_element()), None, "{none}");
        }
    }
}
