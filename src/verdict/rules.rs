//! The vocabulary block lists and privacy lists share: what kind of stanza is checked
//! ([`StanzaKind`]), what a list can say about it ([`Verdict`]) and how a list item's JID
//! matches an address ([`matches`]). It reads no list itself.

use crate::jid::Jid;
use crate::stanza::{PresenceType, Stanza, StanzaType};

/// What a stanza is, as privacy lists tell stanzas apart (§2.1 child elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaKind {
    Message,
    Iq,
    /// A presence notification (no type, or `unavailable`): `<presence-in/>` on the
    /// recipient's list, `<presence-out/>` on the sender's.
    Presence,
    /// Any other presence (subscriptions, probes, errors): only items without child
    /// elements (all stanzas) apply to it.
    OtherPresence,
}

impl StanzaKind {
    pub fn of(stanza: &Stanza) -> StanzaKind {
        match stanza.ty {
            StanzaType::Message(_) => StanzaKind::Message,
            StanzaType::Iq(_) => StanzaKind::Iq,
            StanzaType::Presence(PresenceType::Available | PresenceType::Unavailable) => {
                StanzaKind::Presence
            }
            StanzaType::Presence(_) => StanzaKind::OtherPresence,
        }
    }
}

/// What the block lists and privacy lists say about a stanza from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The (local) sender blocked the recipient: XEP-0191 §3.3 `<not-acceptable/>` +
    /// `<blocked/>` to the sender.
    SenderBlocks,
    /// The (local) recipient blocked the sender: `<service-unavailable/>` for messages and
    /// iq requests, silence for presence and everything else.
    RecipientBlocks,
}

/// XEP-0191 §6 (the XEP-0016 §2.1 rules): a full JID or `domain/resource` item matches only
/// itself, a bare JID matches any of its resources, a domain matches everything at it.
pub(crate) fn matches(item: &Jid, jid: &Jid) -> bool {
    if item.domain() != jid.domain() {
        return false;
    }
    match (item.local(), item.resource()) {
        (None, None) => true,
        (Some(local), None) => jid.local() == Some(local),
        _ => item == jid,
    }
}
