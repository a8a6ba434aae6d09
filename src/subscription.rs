//! Presence subscriptions (RFC 6121 §3 and Appendix A): the state machine of each end. A
//! stanza between two local users changes both rosters in one store op; between a local user
//! and an address on another server only the local end's half runs here (the outbound rules
//! for a local sender, the inbound rules for a local target) and the stanza crosses over
//! s2s, the peer's server running the other half. The roster pushes and presence the change
//! calls for go out once it is committed. A `subscribed` with no request pending is a
//! pre-approval (§3.4): kept on the item, it answers the contact's later request at once.

use crate::audience::{self, deliver_to_bare, deliver_to_user, send_presence_of};
use crate::feature::Deferred;
use crate::feature::{Feature, StreamStage, Wait};
use crate::jid::Jid;
use crate::roster_push;
use crate::route::{reply_error, reply_remote_not_found};
use crate::router::Session;
use crate::server::Server;
use crate::stanza::{PresenceType, Stanza, StanzaCondition};
use crate::store::{RosterItem, RosterTxn, StoreError, Stored};
use crate::verdict::{self, StanzaKind, Verdict};
use crate::xml::build::Element;
use crate::xml::{write_element, Esc, NS_CLIENT};
use log::warn;
use std::rc::Rc;

/// The stream feature that advertises pre-approval (RFC 6121 §3.4).
pub const NS_PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";

pub const FEATURE: Feature = Feature {
    name: "subscription",
    stream_features: Some(|_, stage, out| {
        if stage == StreamStage::Authenticated {
            Element::new("sub").ns(NS_PRE_APPROVAL).empty(out);
        }
    }),
    account_deleting: Some(cancel_elsewhere),
    account_deleted: Some(forget_deleted),
    ..Feature::NONE
};

/// What the event loop does once a subscription change is committed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (user localpart, changed item): a roster push to the user's interested resources.
    pub pushes: Vec<(String, Stored)>,
    pub deliveries: Vec<Delivery>,
    /// Refused before anything changed; answered to the sender.
    pub error: Option<StanzaCondition>,
}

impl Outcome {
    /// `xml` goes to `end` (whose bare JID is `jid`): every available resource of an
    /// account here, the server of an address elsewhere.
    fn send(&mut self, end: &End, jid: &str, xml: String) {
        match end {
            End::Account(user) => self.deliveries.push(Delivery::Stanza {
                to: user.clone(),
                xml,
            }),
            End::Remote => self.deliveries.push(Delivery::Remote {
                to: jid.into(),
                xml,
            }),
            End::Nobody => {}
        }
    }

    /// The local user `from`'s presence (its unavailable when not `available`) goes to the
    /// bare JID `to`.
    fn presence(&mut self, from: &str, to: &str, available: bool) {
        self.deliveries.push(Delivery::Presence {
            from: from.into(),
            to: to.into(),
            available,
        });
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A stanza for every available resource of a local user.
    Stanza { to: String, xml: String },
    /// A stanza for a bare JID on another server, sent over s2s.
    Remote { to: String, xml: String },
    /// The presence of each available resource of the local user `from` (or `unavailable`
    /// from each), sent on `from`'s behalf to the bare JID `to` (here or elsewhere).
    Presence {
        from: String,
        to: String,
        available: bool,
    },
}

/// Where one end of a subscription is, which says which half of each rule runs here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// An account on this server (its localpart): its roster changes here.
    Account(String),
    /// An address on another server: what it is sent leaves over s2s, and its roster is
    /// its own server's business.
    Remote,
    /// No account (a local name without one, or a domain federation does not reach):
    /// nothing reaches it (§8.5.1), silently.
    Nobody,
}

impl End {
    /// Where the bare JID `jid` is, for this server.
    pub fn of(server: &Server, jid: &Jid) -> End {
        if jid.domain() != server.config().domain {
            return if audience::reaches(server, jid) {
                End::Remote
            } else {
                End::Nobody
            };
        }
        match jid.local() {
            Some(local) if crate::route::account_exists(server, local) => {
                End::Account(local.into())
            }
            _ => End::Nobody,
        }
    }
}

/// One subscription stanza from `from` to `to` (both bare JIDs).
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: PresenceType,
    pub from: String,
    pub to: String,
    /// Where the sender is: an account here (a client's stanza, outbound rules) or
    /// [`End::Remote`] (a peer's, inbound rules only).
    pub sender: End,
    pub target: End,
    /// The stanza as the target receives it (bare `from`, bare `to`).
    pub xml: String,
    pub max_items: usize,
}

/// A generated subscription stanza between two bare JIDs.
pub fn stanza(ty: &str, from: &str, to: &str) -> String {
    format!(
        "<presence type='{ty}' to='{}' from='{}'/>",
        Esc(to),
        Esc(from)
    )
}

impl Change {
    /// Runs on the store's writer thread; may run more than once, so it starts afresh.
    pub fn apply(&self, txn: &RosterTxn) -> Result<Outcome, StoreError> {
        let mut out = Outcome::default();
        match self.kind {
            PresenceType::Subscribe => self.subscribe(txn, &mut out)?,
            PresenceType::Subscribed => self.subscribed(txn, &mut out)?,
            PresenceType::Unsubscribe => self.unsubscribe(txn, &mut out)?,
            PresenceType::Unsubscribed => self.unsubscribed(txn, &mut out)?,
            _ => {}
        }
        Ok(out)
    }

    /// §3.1.2 at the sender's end, §3.1.3 at the target's.
    fn subscribe(&self, txn: &RosterTxn, out: &mut Outcome) -> Result<(), StoreError> {
        if let End::Account(sender) = &self.sender {
            let item = match txn.item(sender, &self.to)? {
                Some(item) if item.to || item.ask => None,
                Some(item) => Some(item),
                None if txn.count(sender)? >= self.max_items => {
                    out.error = Some(StanzaCondition::ResourceConstraint);
                    return Ok(());
                }
                None => Some(RosterItem {
                    jid: self.to.clone(),
                    ..RosterItem::default()
                }),
            };
            if let Some(mut item) = item {
                item.ask = true;
                out.pushes.push((sender.clone(), txn.put(sender, &item)?));
            }
        }
        let target = match &self.target {
            End::Account(target) => target,
            // §3.1.2: routed whatever the sender's state, so the contact's server (which
            // may have lost its half) answers again.
            End::Remote => {
                out.send(&self.target, &self.to, self.xml.clone());
                return Ok(());
            }
            // §8.5.1: no such user — silently ignored, which also tells a prober nothing
            // about which accounts exist. The sender's `ask` stays, as for a contact who
            // never answers.
            End::Nobody => return Ok(()),
        };
        match txn.item(target, &self.from)? {
            Some(item) if item.from => {}
            Some(mut item) if item.approved => {
                // §3.4.2: pre-approved, so approved now without asking the target.
                item.approved = false;
                item.from = true;
                out.pushes.push((target.clone(), txn.put(target, &item)?));
            }
            _ => {
                if txn.pending(target, &self.from)? {
                    return Ok(());
                }
                if self.sender == End::Remote && txn.pending_count(target)? >= self.max_items {
                    // Requests from other servers are bounded like the roster they would
                    // join: past it, a new one is dropped as if never answered.
                    warn!(
                        "{target}: subscription request from {} dropped: roster.max_items waiting",
                        self.from
                    );
                    return Ok(());
                }
                // Kept until answered and shown again at each login.
                txn.set_pending(target, &self.from, self.xml.as_bytes())?;
                out.send(&self.target, &self.to, self.xml.clone());
                return Ok(());
            }
        }
        // Approved: the target's server answers on its behalf (§3.1.3), then sends the
        // target's presence.
        let subscribed = stanza("subscribed", &self.to, &self.from);
        let granted = match &self.sender {
            End::Account(sender) => {
                let granted = grant_to(txn, sender, &self.to, out)?;
                if granted {
                    out.send(&self.sender, &self.from, subscribed);
                }
                granted
            }
            // The peer's server decides what the answer changes (§3.1.6).
            End::Remote => {
                out.send(&self.sender, &self.from, subscribed);
                true
            }
            End::Nobody => false,
        };
        if granted {
            out.presence(target, &self.from, true);
        }
        Ok(())
    }

    /// §3.1.5 (the sender approves) and §3.1.6 (the target learns it).
    fn subscribed(&self, txn: &RosterTxn, out: &mut Outcome) -> Result<(), StoreError> {
        if let End::Account(sender) = &self.sender {
            let pending = txn.pending(sender, &self.to)?;
            let mut item = match txn.item(sender, &self.to)? {
                // §3.4.2: already subscribed or already pre-approved: nothing to do.
                Some(item) if !pending && (item.from || item.approved) => return Ok(()),
                Some(item) => item,
                None if txn.count(sender)? >= self.max_items => {
                    out.error = Some(StanzaCondition::ResourceConstraint);
                    return Ok(());
                }
                None => RosterItem {
                    jid: self.to.clone(),
                    ..RosterItem::default()
                },
            };
            if !pending {
                // §3.4.2: noted on the item, not delivered to the target.
                item.approved = true;
                out.pushes.push((sender.clone(), txn.put(sender, &item)?));
                return Ok(());
            }
            txn.clear_pending(sender, &self.to)?;
            item.from = true;
            item.approved = false;
            out.pushes.push((sender.clone(), txn.put(sender, &item)?));
        }
        match &self.target {
            End::Account(target) => {
                if grant_to(txn, target, &self.from, out)? {
                    out.send(&self.target, &self.to, self.xml.clone());
                }
            }
            End::Remote => out.send(&self.target, &self.to, self.xml.clone()),
            End::Nobody => {}
        }
        if let End::Account(sender) = &self.sender {
            out.presence(sender, &self.to, true);
        }
        Ok(())
    }

    /// §3.3: the sender cancels its subscription to the target.
    fn unsubscribe(&self, txn: &RosterTxn, out: &mut Outcome) -> Result<(), StoreError> {
        if let End::Account(sender) = &self.sender {
            clear_to(txn, sender, &self.to, out)?;
        }
        match &self.target {
            End::Account(target) => {
                let (changed, had_from) = clear_from(txn, target, &self.from, out)?;
                if changed {
                    out.send(&self.target, &self.to, self.xml.clone());
                }
                if had_from {
                    out.presence(target, &self.from, false);
                }
            }
            End::Remote => out.send(&self.target, &self.to, self.xml.clone()),
            End::Nobody => {}
        }
        Ok(())
    }

    /// §3.2: the sender cancels (or denies) the target's subscription to it.
    fn unsubscribed(&self, txn: &RosterTxn, out: &mut Outcome) -> Result<(), StoreError> {
        let had_from = match &self.sender {
            End::Account(sender) => clear_from(txn, sender, &self.to, out)?.1,
            _ => false,
        };
        match &self.target {
            End::Account(target) => {
                if clear_to(txn, target, &self.from, out)? {
                    out.send(&self.target, &self.to, self.xml.clone());
                }
            }
            End::Remote => out.send(&self.target, &self.to, self.xml.clone()),
            End::Nobody => {}
        }
        if let (true, End::Account(sender)) = (had_from, &self.sender) {
            out.presence(sender, &self.to, false);
        }
        Ok(())
    }
}

/// `owner` stops receiving `other`'s presence and stops asking for it. True if it changed.
fn clear_to(
    txn: &RosterTxn,
    owner: &str,
    other: &str,
    out: &mut Outcome,
) -> Result<bool, StoreError> {
    let Some(mut item) = txn.item(owner, other)? else {
        return Ok(false);
    };
    if !(item.to || item.ask) {
        return Ok(false);
    }
    item.to = false;
    item.ask = false;
    out.pushes.push((owner.into(), txn.put(owner, &item)?));
    Ok(true)
}

/// `other` stops receiving `owner`'s presence, its pending request is dropped and a
/// pre-approval withdrawn. Returns (`other` lost a subscription or request, it was subscribed).
fn clear_from(
    txn: &RosterTxn,
    owner: &str,
    other: &str,
    out: &mut Outcome,
) -> Result<(bool, bool), StoreError> {
    let pending = txn.pending(owner, other)?;
    if pending {
        txn.clear_pending(owner, other)?;
    }
    let mut had_from = false;
    let mut changed = pending;
    if let Some(mut item) = txn.item(owner, other)? {
        if item.from || item.approved {
            // §3.4: `unsubscribed` also cancels a pre-approval.
            had_from = item.from;
            changed |= item.from;
            item.from = false;
            item.approved = false;
            out.pushes.push((owner.into(), txn.put(owner, &item)?));
        }
    }
    Ok((changed, had_from))
}

/// `owner` asked for `other`'s presence and got it approved. True if it changed.
fn grant_to(
    txn: &RosterTxn,
    owner: &str,
    other: &str,
    out: &mut Outcome,
) -> Result<bool, StoreError> {
    let Some(mut item) = txn.item(owner, other)? else {
        return Ok(false);
    };
    if !item.ask {
        return Ok(false);
    }
    item.ask = false;
    item.to = true;
    out.pushes.push((owner.into(), txn.put(owner, &item)?));
    Ok(true)
}

/// A subscription stanza (`to` is set): from a local user's client (the outbound rules, and
/// the inbound ones too when the contact is local) or from a peer server on behalf of one of
/// its users (`session.remote`: the inbound rules for a local user only).
pub fn handle(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    kind: PresenceType,
    to: &Jid,
    out: &mut String,
) -> Deferred {
    let here = to.domain() == server.config().domain;
    let sender = if session.remote {
        // A peer speaks only for its own users, to ours.
        if !here {
            return Deferred::None;
        }
        End::Remote
    } else {
        if !here && !audience::reaches(server, to) {
            // RFC 6120 §10.4.3: federation is off or refuses the domain.
            reply_remote_not_found(server, session, stanza, out);
            return Deferred::None;
        }
        End::Account(session.jid.user().into())
    };
    if here && to.local().is_none() {
        // The server itself keeps no roster.
        return Deferred::None;
    }
    // §3.1.2 (and §3.1.3 for a full-JID `to`): the stanza is between the bare JIDs of both
    // ends, stamped by the server.
    let (from, bare_to) = (session.jid.bare(), to.bare());
    if from == bare_to {
        // A subscription to oneself: one's own resources share presence anyway.
        return Deferred::None;
    }
    let mut xml = String::new();
    write_element(
        &mut xml,
        stanza.node,
        NS_CLIENT,
        &[
            ("from", Some(from.as_str())),
            ("to", Some(bare_to.as_str())),
        ],
    );
    let target = End::of(server, &bare_to);
    // A new request reaches a local target: it may have to wake a device (XEP-0357).
    let request = match (&target, kind) {
        (End::Account(target), PresenceType::Subscribe) => Some(target.clone()),
        _ => None,
    };
    let change = Change {
        kind,
        from: from.to_string(),
        to: bare_to.to_string(),
        sender,
        target,
        xml,
        max_items: server.config().roster.max_items as usize,
    };
    // Both a full roster and a store failure are resource constraints for the sender; a
    // stanza federation would not take, a remote server not found.
    let refusal = |condition| {
        let mut refused = String::new();
        reply_error(server, session, stanza, condition, &mut refused);
        refused
    };
    let refused = refusal(StanzaCondition::ResourceConstraint);
    let unrouted = refusal(StanzaCondition::RemoteServerNotFound);
    let server = server.clone();
    Deferred::Reply(Box::pin(async move {
        let result = server
            .store
            .roster_update(move |txn| change.apply(txn))
            .await;
        match result {
            Ok(outcome) if outcome.error.is_some() => refused,
            Ok(outcome) => {
                let pending = request.filter(|target| {
                    outcome.deliveries.iter().any(
                        |delivery| matches!(delivery, Delivery::Stanza { to, .. } if to == target),
                    )
                });
                let routed = carry_out(&server, outcome);
                if let Some(target) = pending {
                    crate::push::on_subscription_request(&server, &target, from.as_str());
                }
                if routed {
                    String::new()
                } else {
                    unrouted
                }
            }
            Err(e) => {
                warn!("subscription change not stored: {e}");
                refused
            }
        }
    }))
}

/// Sends what a committed change calls for: roster pushes first, then stanzas. False if a
/// stanza for another server was refused by federation.
pub fn carry_out(server: &Server, outcome: Outcome) -> bool {
    for (user, stored) in &outcome.pushes {
        roster_push::push(server, user, stored);
    }
    let mut routed = true;
    for delivery in outcome.deliveries {
        match delivery {
            Delivery::Stanza { to, xml } => {
                deliver_to_user(server, &to, xml.into(), crate::router::Hold::Urgent)
            }
            Delivery::Remote { to, xml } => {
                routed &= Jid::parse(&to).is_ok_and(|to| {
                    deliver_to_bare(server, &to, xml.into(), crate::router::Hold::Urgent)
                });
            }
            Delivery::Presence {
                from,
                to,
                available,
            } => {
                let Ok(to) = Jid::parse(&to) else { continue };
                send_presence_of(server, &from, &to, available);
                let local = to.local().filter(|_| to.domain() == server.config().domain);
                if let (true, Some(local)) = (available, local) {
                    // What follows `from`'s presence now reaches `to`: its PEP too.
                    crate::pep::presence_granted(server, &from, local);
                }
            }
        }
    }
    routed
}

/// The account `user` is being deleted: its contacts on other servers hear, while its roster
/// is still stored, what they would if it cancelled both directions (RFC 6121 §3.3
/// `unsubscribe` for a subscription or request it had, §3.2 `unsubscribed` for one it had
/// granted), so their servers take it off their rosters' states. Local contacts are told by
/// [`forget_deleted`] once the deletion commits.
fn cancel_elsewhere(server: &Server, user: &str) {
    let roster = match server.store.roster(user) {
        Ok(roster) => roster,
        Err(e) => {
            warn!("{user}: contacts elsewhere not told of the deletion: {e}");
            return;
        }
    };
    let from = format!("{user}@{}", server.config().domain);
    for item in roster.live() {
        let Ok(contact) = Jid::parse(&item.jid) else {
            continue;
        };
        if !audience::reaches(server, &contact) {
            continue;
        }
        let cancels = [
            ("unsubscribe", item.to || item.ask),
            ("unsubscribed", item.from),
        ];
        for (ty, due) in cancels {
            if due {
                let xml = stanza(ty, &from, contact.as_str()).into();
                server.send_remote(&contact, xml, false);
            }
        }
    }
}

/// An account's deletion committed: it leaves its contacts' rosters. Queued once the account
/// is gone, so it also takes whatever contacts' roster changes were queued for the name in
/// between.
fn forget_deleted(server: &Rc<Server>, user: &str) -> Wait {
    let server = server.clone();
    let jid = format!("{user}@{}", server.config().domain);
    let forget = server.store.roster_update({
        let jid = jid.clone();
        move |txn| txn.forget_contact(&jid)
    });
    Some(Box::pin(async move {
        match forget.await {
            Ok(unlinked) => account_deleted(&server, &jid, &unlinked),
            Err(e) => warn!("{jid}: not taken off contacts' rosters: {e}"),
        }
    }))
}

/// The account `jid` (a bare JID) was deleted and taken off the rosters of `unlinked`: as if
/// it had cancelled both directions (RFC 6121 §3.3 `unsubscribe` for a subscription or request
/// it had, §3.2 `unsubscribed` for one it had granted or was asked for), each user is pushed
/// the removal of the item (§2.5.2: `subscription='remove'`) and then told.
pub fn account_deleted(server: &Server, jid: &str, unlinked: &[crate::store::Unlinked]) {
    let Ok(from) = Jid::parse(jid) else { return };
    for gone in unlinked {
        let (mut unsubscribe, mut unsubscribed) = (gone.requested, false);
        if let Some((item, tombstone)) = &gone.item {
            roster_push::push(server, &gone.user, tombstone);
            unsubscribe |= item.from;
            unsubscribed = item.to || item.ask;
        }
        let Ok(to) = Jid::from_parts(Some(&gone.user), &server.config().domain, None) else {
            continue;
        };
        // Like any subscription stanza, none reaches a user who blocks the account.
        if verdict::allows(server, &from, &to, StanzaKind::OtherPresence) != Verdict::Allow {
            continue;
        }
        for (ty, due) in [("unsubscribe", unsubscribe), ("unsubscribed", unsubscribed)] {
            if due {
                let xml = stanza(ty, jid, to.as_str());
                deliver_to_user(server, &gone.user, xml.into(), crate::router::Hold::Urgent);
            }
        }
    }
}

/// The account `user` was deleted while no server ran: it leaves every roster all the same.
pub fn account_deleted_offline(
    config: &crate::config::Config,
    store: &crate::store::Store,
    user: &str,
) -> Result<(), String> {
    let jid = format!("{user}@{}", config.domain);
    let forget = store.roster_update(move |txn| txn.forget_contact(&jid));
    smol::block_on(forget)
        .map(drop)
        .map_err(|e| format!("contacts' rosters: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{open, TempDir};
    use crate::store::Store;

    /// A contact's bare JID: a local name on domain `h`, or an address elsewhere as is.
    fn bare(contact: &str) -> String {
        if contact.contains('@') {
            contact.into()
        } else {
            format!("{contact}@h")
        }
    }

    /// "N", "T", "F" or "B", then "+PO" (ask), "+PI" (pending in) and/or "+PA"
    /// (pre-approved), as Appendix A.
    fn set(store: &Store, user: &'static str, contact: &'static str, state: &'static str) {
        smol::block_on(store.roster_update(move |txn| {
            let contact_jid = bare(contact);
            let base = &state[..1];
            if base != "N" || state.contains("+PO") || state.contains("+PA") {
                let item = RosterItem {
                    jid: contact_jid.clone(),
                    to: base == "T" || base == "B",
                    from: base == "F" || base == "B",
                    ask: state.contains("+PO"),
                    approved: state.contains("+PA"),
                    ..RosterItem::default()
                };
                txn.put(user, &item)?;
            }
            if state.contains("+PI") {
                txn.set_pending(user, &contact_jid, b"<presence/>")?;
            }
            Ok(())
        }))
        .unwrap();
    }

    fn get(store: &Store, user: &'static str, contact: &'static str) -> String {
        let item = store.roster_item(user, &bare(contact)).unwrap();
        let item = item.unwrap_or_default();
        let mut state = match (item.to, item.from) {
            (false, false) => "N",
            (true, false) => "T",
            (false, true) => "F",
            (true, true) => "B",
        }
        .to_string();
        if item.ask {
            state.push_str("+PO");
        }
        if item.approved {
            state.push_str("+PA");
        }
        let pending = store.pending_in(user).unwrap().len();
        if pending > 0 {
            state.push_str("+PI");
        }
        state
    }

    /// alice@h sends `kind` to bob@h, both accounts here.
    fn local_change(kind: PresenceType, xml: &str) -> Change {
        Change {
            kind,
            from: "alice@h".into(),
            to: "bob@h".into(),
            sender: End::Account("alice".into()),
            target: End::Account("bob".into()),
            xml: xml.into(),
            max_items: 10,
        }
    }

    /// RFC 6121 Appendix A: alice sends `kind` to bob; both states before and after.
    #[test]
    fn appendix_a_transitions_for_both_ends() {
        use PresenceType::*;
        let rows = [
            (Subscribe, "N", "N", "N+PO", "N+PI"),
            (Subscribe, "N+PI", "N+PO", "N+PO+PI", "N+PO+PI"),
            (Subscribe, "T", "F", "T", "F"),
            (Subscribe, "F", "T", "F+PO", "T+PI"),
            (Subscribe, "B", "B", "B", "B"),
            (Subscribed, "N+PI", "N+PO", "F", "T"),
            (Subscribed, "N+PO+PI", "N+PO+PI", "F+PO", "T+PI"),
            (Subscribed, "T+PI", "F+PO", "B", "B"),
            // §3.4 pre-approval: noted, used by the next request, withdrawn by `unsubscribed`.
            (Subscribed, "N", "N", "N+PA", "N"),
            (Subscribed, "T", "F", "T+PA", "F"),
            (Subscribed, "F", "T", "F", "T"),
            (Subscribed, "N+PA", "N", "N+PA", "N"),
            (Subscribe, "N", "N+PA", "T", "F"),
            (Subscribe, "F", "T+PA", "B", "B"),
            (Unsubscribed, "N+PA", "N", "N", "N"),
            (Unsubscribe, "N+PO", "N+PI", "N", "N"),
            (Unsubscribe, "T", "F", "N", "N"),
            (Unsubscribe, "B", "B", "F", "T"),
            (Unsubscribe, "T+PI", "F+PO", "N+PI", "N+PO"),
            (Unsubscribed, "N+PI", "N+PO", "N", "N"),
            (Unsubscribed, "F", "T", "N", "N"),
            (Unsubscribed, "B", "B", "T", "F"),
            (Unsubscribed, "F+PO", "T+PI", "N+PO", "N+PI"),
        ];
        for (kind, alice, bob, alice_after, bob_after) in rows {
            let dir = TempDir::new("appendix-a");
            let store = open(&dir);
            set(&store, "alice", "bob", alice);
            set(&store, "bob", "alice", bob);
            let change = local_change(kind, "<presence/>");
            smol::block_on(store.roster_update(move |txn| change.apply(txn))).unwrap();
            assert_eq!(
                (get(&store, "alice", "bob"), get(&store, "bob", "alice")),
                (alice_after.to_string(), bob_after.to_string()),
                "{kind:?} from alice {alice} to bob {bob}"
            );
        }
    }

    #[test]
    fn what_each_side_is_sent() {
        let dir = TempDir::new("subscription-deliveries");
        let store = open(&dir);
        let run = |kind| {
            let change = local_change(kind, "<presence id='x'/>");
            smol::block_on(store.roster_update(move |txn| change.apply(txn))).unwrap()
        };
        let first = run(PresenceType::Subscribe);
        assert_eq!(first.pushes.len(), 1);
        assert_eq!(
            first.deliveries,
            [Delivery::Stanza {
                to: "bob".into(),
                xml: "<presence id='x'/>".into()
            }]
        );
        // A repeated request is neither stored again nor delivered again.
        let again = run(PresenceType::Subscribe);
        assert!(again.pushes.is_empty() && again.deliveries.is_empty());
        // Bob has approved already: his server answers for him and sends his presence.
        set(&store, "bob", "alice", "F");
        let auto = run(PresenceType::Subscribe);
        assert_eq!(
            auto.deliveries,
            [
                Delivery::Stanza {
                    to: "alice".into(),
                    xml: "<presence type='subscribed' to='alice@h' from='bob@h'/>".into()
                },
                Delivery::Presence {
                    from: "bob".into(),
                    to: "alice@h".into(),
                    available: true
                }
            ]
        );
    }

    /// Deliveries in short: "user" (a local user's resources), ">jid" (over s2s), and
    /// "from>to+" / "from>to-" (presence, available or not).
    fn brief(outcome: &Outcome) -> Vec<String> {
        outcome
            .deliveries
            .iter()
            .map(|delivery| match delivery {
                Delivery::Stanza { to, .. } => to.clone(),
                Delivery::Remote { to, .. } => format!(">{to}"),
                Delivery::Presence {
                    from,
                    to,
                    available,
                } => format!("{from}>{to}{}", if *available { "+" } else { "-" }),
            })
            .collect()
    }

    /// RFC 6121 §3 and Appendix A with the contact on another server: only the local end's
    /// half runs here. Outbound (alice@h to romeo@r): alice's roster changes and the stanza
    /// is routed; inbound (romeo@r to bob@h): bob's roster changes, bob's resources are told
    /// and answers go back over s2s.
    #[test]
    fn one_end_elsewhere_changes_only_the_local_roster_rfc6121_appendix_a() {
        use PresenceType::*;
        // (kind, alice's state for romeo before, after, deliveries)
        let outbound: &[(PresenceType, &str, &str, &[&str])] = &[
            (Subscribe, "N", "N+PO", &[">romeo@r"]),
            // §3.1.2: routed whatever the state, the contact's server answers again.
            (Subscribe, "T", "T", &[">romeo@r"]),
            (Subscribe, "F", "F+PO", &[">romeo@r"]),
            (Subscribed, "N+PI", "F", &[">romeo@r", "alice>romeo@r+"]),
            (Subscribed, "T+PI", "B", &[">romeo@r", "alice>romeo@r+"]),
            // §3.4: a pre-approval stays here.
            (Subscribed, "N", "N+PA", &[]),
            (Subscribed, "F", "F", &[]),
            (Unsubscribe, "B", "F", &[">romeo@r"]),
            (Unsubscribe, "N+PO", "N", &[">romeo@r"]),
            (Unsubscribed, "B", "T", &[">romeo@r", "alice>romeo@r-"]),
            (Unsubscribed, "N+PI", "N", &[">romeo@r"]),
        ];
        for &(kind, before, after, sent) in outbound {
            let dir = TempDir::new("outbound");
            let store = open(&dir);
            set(&store, "alice", "romeo@r", before);
            let change = Change {
                kind,
                from: "alice@h".into(),
                to: "romeo@r".into(),
                sender: End::Account("alice".into()),
                target: End::Remote,
                xml: "<presence/>".into(),
                max_items: 10,
            };
            let outcome = smol::block_on(store.roster_update(move |txn| change.apply(txn)));
            let outcome = outcome.unwrap();
            assert_eq!(
                get(&store, "alice", "romeo@r"),
                after,
                "{kind:?} from {before}"
            );
            assert_eq!(brief(&outcome), sent, "{kind:?} from {before}");
        }
        // (kind, bob's state for romeo before, after, deliveries)
        let inbound: &[(PresenceType, &str, &str, &[&str])] = &[
            (Subscribe, "N", "N+PI", &["bob"]),
            (Subscribe, "T", "T+PI", &["bob"]),
            // §3.1.3: already approved, answered on bob's behalf with his presence.
            (Subscribe, "F", "F", &[">romeo@r", "bob>romeo@r+"]),
            (Subscribe, "N+PA", "F", &[">romeo@r", "bob>romeo@r+"]),
            // §3.1.6: an approval only counts when asked for.
            (Subscribed, "N+PO", "T", &["bob"]),
            (Subscribed, "F+PO", "B", &["bob"]),
            (Subscribed, "N", "N", &[]),
            (Subscribed, "F", "F", &[]),
            // §3.3.3: romeo stops hearing bob, and is told bob is gone.
            (Unsubscribe, "B", "T", &["bob", "bob>romeo@r-"]),
            (Unsubscribe, "N+PI", "N", &["bob"]),
            (Unsubscribe, "T", "T", &[]),
            // §3.2.3: bob stops hearing romeo, or his request was denied.
            (Unsubscribed, "B", "F", &["bob"]),
            (Unsubscribed, "N+PO", "N", &["bob"]),
            (Unsubscribed, "F", "F", &[]),
        ];
        for &(kind, before, after, sent) in inbound {
            let dir = TempDir::new("inbound");
            let store = open(&dir);
            set(&store, "bob", "romeo@r", before);
            let change = Change {
                kind,
                from: "romeo@r".into(),
                to: "bob@h".into(),
                sender: End::Remote,
                target: End::Account("bob".into()),
                xml: "<presence/>".into(),
                max_items: 10,
            };
            let outcome = smol::block_on(store.roster_update(move |txn| change.apply(txn)));
            let outcome = outcome.unwrap();
            assert_eq!(
                get(&store, "bob", "romeo@r"),
                after,
                "{kind:?} from {before}"
            );
            assert_eq!(brief(&outcome), sent, "{kind:?} from {before}");
        }
    }

    /// Requests from other servers wait in a bounded list: past `max_items` of them a new
    /// one is dropped, unseen.
    #[test]
    fn waiting_requests_from_elsewhere_are_bounded() {
        let dir = TempDir::new("pending-bound");
        let store = open(&dir);
        let request = |from: &str| Change {
            kind: PresenceType::Subscribe,
            from: from.into(),
            to: "bob@h".into(),
            sender: End::Remote,
            target: End::Account("bob".into()),
            xml: "<presence/>".into(),
            max_items: 2,
        };
        for (from, delivered) in [("a@r", true), ("b@r", true), ("c@r", false)] {
            let change = request(from);
            let outcome = smol::block_on(store.roster_update(move |txn| change.apply(txn)));
            assert_eq!(!outcome.unwrap().deliveries.is_empty(), delivered, "{from}");
        }
        assert_eq!(store.pending_in("bob").unwrap().len(), 2);
    }
}
