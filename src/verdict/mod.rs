//! Whether a stanza may pass between two JIDs: the one verdict every delivery point asks
//! for (message, iq, presence, PEP notifications), fed by the block lists (XEP-0191,
//! [`blocklist`]) and the privacy lists (XEP-0016, [`privacy_lists`]). The features that
//! edit those lists ([`crate::blocking`], [`crate::privacy`]) and those that deliver stanzas
//! sit above this module; it never routes a stanza itself.
//!
//! Cost per routed stanza: one hash-set lookup per list kind for users without lists.

pub mod blocklist;
pub mod privacy_lists;
mod rules;

pub(crate) use rules::matches;
pub use rules::{StanzaKind, Verdict};

use crate::jid::Jid;
use crate::route::reply_unavailable;
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{
    self, ErrorType, IqType, MessageType, Stanza, StanzaCondition, StanzaError, StanzaType,
};
use crate::xml::build::Element;
use blocklist::Blocklists;

pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

/// The check for every delivery point (message, iq, presence): block lists, then privacy
/// lists (`privacy_lists::allows`). The server's own address and a user's own addresses are
/// never blocked.
pub fn allows(server: &Server, from: &Jid, to: &Jid, kind: StanzaKind) -> Verdict {
    let ours: &str = &server.config().domain;
    let is_server = |jid: &Jid| jid.local().is_none() && jid.domain() == ours;
    if is_server(from)
        || is_server(to)
        || (from.local() == to.local() && from.domain() == to.domain())
    {
        return Verdict::Allow;
    }
    let lists = server.state::<Blocklists>();
    let blocks = |owner: &Jid, other: &Jid| {
        owner.domain() == ours
            && owner
                .local()
                .is_some_and(|user| lists.blocks(server, user, other))
    };
    if blocks(from, to) {
        Verdict::SenderBlocks
    } else if blocks(to, from) {
        Verdict::RecipientBlocks
    } else {
        privacy_lists::allows(server, from, to, kind)
    }
}

/// [`allows`] applied to a stanza from `session` to `to`: false when it must not go on, with
/// the answer XEP-0191 §3.3 asks for already in `out`.
pub fn gate(
    server: &Server,
    session: &Session,
    stanza: &Stanza,
    to: &Jid,
    out: &mut String,
) -> bool {
    match allows(server, &session.jid, to, StanzaKind::of(stanza)) {
        Verdict::Allow => true,
        Verdict::SenderBlocks => {
            if !stanza.is_error() {
                stanza::write_error_reply(
                    out,
                    stanza.kind,
                    stanza.id,
                    to.as_str(),
                    session.jid.as_str(),
                    &BLOCKED,
                );
            }
            false
        }
        Verdict::RecipientBlocks => {
            let answered = match stanza.ty {
                StanzaType::Message(ty) => ty != MessageType::Error,
                StanzaType::Iq(ty) => matches!(ty, IqType::Get | IqType::Set),
                StanzaType::Presence(_) => false,
            };
            if answered {
                reply_unavailable(server, session, stanza, out);
            }
            false
        }
    }
}

/// XEP-0191 §3.3: what a user who blocked the recipient is told when sending to them.
const BLOCKED: StanzaError<'static> = StanzaError {
    condition: StanzaCondition::NotAcceptable,
    kind: ErrorType::Cancel,
    text: None,
    app: Some(("blocked", NS_BLOCKING_ERRORS)),
};

/// The `unavailable` presence from `from` that tells `to` it can no longer see `from`
/// (after a block in [`crate::blocking`], or a privacy list change in [`crate::privacy`]).
pub(crate) fn write_unavailable(out: &mut String, from: &Jid, to: &Jid) {
    Element::new("presence")
        .attr("type", "unavailable")
        .attr("from", from.as_str())
        .attr("to", to.as_str())
        .empty(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn xml(write: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        write(&mut out);
        out
    }

    #[test]
    fn blocked_error_is_not_acceptable_with_blocked_xep_0191_s3_3() {
        let out = xml(|out| {
            stanza::write_error_reply(
                out,
                stanza::Kind::Message,
                Some("m1"),
                "b@h",
                "u@h/r",
                &BLOCKED,
            )
        });
        let doc = roxmltree::Document::parse(&out).unwrap();
        let message = doc.root_element();
        assert_eq!(message.attribute("type"), Some("error"));
        assert_eq!(message.attribute("from"), Some("b@h"));
        assert_eq!(message.attribute("to"), Some("u@h/r"));
        let error = message.first_element_child().unwrap();
        assert_eq!(error.attribute("type"), Some("cancel"));
        let conditions: Vec<_> = error
            .children()
            .filter(|c| c.is_element())
            .map(|c| (c.tag_name().namespace(), c.tag_name().name()))
            .collect();
        assert_eq!(
            conditions,
            [
                (Some(stanza::error::NS_STANZA_ERRORS), "not-acceptable"),
                (Some(NS_BLOCKING_ERRORS), "blocked"),
            ]
        );
    }

    #[test]
    fn unavailable_goes_from_the_user_to_the_contact() {
        let out = xml(|out| write_unavailable(out, &jid("u@h/r"), &jid("c@h/x")));
        let doc = roxmltree::Document::parse(&out).unwrap();
        let presence = doc.root_element();
        assert_eq!(presence.tag_name().name(), "presence");
        assert_eq!(presence.attribute("type"), Some("unavailable"));
        assert_eq!(presence.attribute("from"), Some("u@h/r"));
        assert_eq!(presence.attribute("to"), Some("c@h/x"));
    }

    #[test]
    fn matching_rules() {
        let full = jid("bob@h/phone");
        let bare = jid("bob@h");
        let domain = jid("h");
        let domain_resource = jid("h/r");
        assert!(matches(&full, &jid("bob@h/phone")));
        assert!(!matches(&full, &jid("bob@h/laptop")));
        assert!(!matches(&full, &bare));
        assert!(matches(&bare, &jid("bob@h/laptop")));
        assert!(matches(&bare, &bare));
        assert!(!matches(&bare, &jid("bobby@h")));
        assert!(!matches(&bare, &jid("bob@other")));
        assert!(matches(&domain, &jid("anyone@h/x")));
        assert!(matches(&domain, &jid("h")));
        assert!(!matches(&domain, &jid("anyone@sub.h")));
        assert!(matches(&domain_resource, &jid("h/r")));
        assert!(!matches(&domain_resource, &jid("a@h/r")));
        assert!(matches(&jid("BOB@h"), &jid("bob@h/x")));
    }
}
