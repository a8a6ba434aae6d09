//! Presence subscriptions (RFC 6121 §3 and Appendix A) between local users: the state
//! machine of both ends, applied to both rosters in one store op, then the roster pushes and
//! presence it calls for. It never routes to another server (there is no federation yet):
//! a subscription stanza for another domain is refused here. A `subscribed` with no
//! request pending is a pre-approval (§3.4): kept on the item, it answers the contact's
//! later request at once.

use crate::audience::{deliver_to_user, send_presence_of};
use crate::feature::Deferred;
use crate::feature::{Feature, StreamStage, Wait};
use crate::jid::Jid;
use crate::roster_push;
use crate::route::{reply_error, served_here};
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
    /// `xml` goes to every available resource of the local user `to`.
    fn send(&mut self, to: &str, xml: String) {
        self.deliveries
            .push(Delivery::Stanza { to: to.into(), xml });
    }

    /// `from`'s presence (its unavailable when not `available`) goes to `to`.
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
    /// The presence of each available resource of `from` (or `unavailable` from each), sent
    /// on `from`'s behalf to `to`'s bare JID.
    Presence {
        from: String,
        to: String,
        available: bool,
    },
}

/// One subscription stanza from `sender` to `target` (localparts on this server).
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: PresenceType,
    pub sender: String,
    pub target: String,
    pub domain: String,
    /// The stanza as the target receives it (bare `from`, bare `to`).
    pub xml: String,
    pub target_exists: bool,
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
    fn bare(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }

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
        let (sender, target) = (self.sender.as_str(), self.target.as_str());
        let (sender_jid, target_jid) = (self.bare(sender), self.bare(target));
        let item = match txn.item(sender, &target_jid)? {
            Some(item) if item.to || item.ask => None,
            Some(item) => Some(item),
            None if txn.count(sender)? >= self.max_items => {
                out.error = Some(StanzaCondition::ResourceConstraint);
                return Ok(());
            }
            None => Some(RosterItem {
                jid: target_jid.clone(),
                ..RosterItem::default()
            }),
        };
        if let Some(mut item) = item {
            item.ask = true;
            out.pushes.push((sender.into(), txn.put(sender, &item)?));
        }
        if !self.target_exists {
            // §8.5.1: no such user — silently ignored, which also tells a prober nothing
            // about which accounts exist. The sender's `ask` stays, as for a contact who
            // never answers.
            return Ok(());
        }
        match txn.item(target, &sender_jid)? {
            Some(item) if item.from => {}
            Some(mut item) if item.approved => {
                // §3.4.2: pre-approved, so approved now without asking the target.
                item.approved = false;
                item.from = true;
                out.pushes.push((target.into(), txn.put(target, &item)?));
            }
            _ => {
                if !txn.pending(target, &sender_jid)? {
                    // Kept until answered and shown again at each login.
                    txn.set_pending(target, &sender_jid, self.xml.as_bytes())?;
                    out.send(target, self.xml.clone());
                }
                return Ok(());
            }
        }
        // Approved: the target's server answers on its behalf.
        if grant_to(txn, sender, &target_jid, out)? {
            out.send(sender, stanza("subscribed", &target_jid, &sender_jid));
            out.presence(target, sender, true);
        }
        Ok(())
    }

    /// §3.1.5 (the sender approves) and §3.1.6 (the target learns it).
    fn subscribed(&self, txn: &RosterTxn, out: &mut Outcome) -> Result<(), StoreError> {
        let (sender, target) = (self.sender.as_str(), self.target.as_str());
        let (sender_jid, target_jid) = (self.bare(sender), self.bare(target));
        let pending = txn.pending(sender, &target_jid)?;
        let mut item = match txn.item(sender, &target_jid)? {
            // §3.4.2: already subscribed or already pre-approved: nothing to do.
            Some(item) if !pending && (item.from || item.approved) => return Ok(()),
            Some(item) => item,
            None if txn.count(sender)? >= self.max_items => {
                out.error = Some(StanzaCondition::ResourceConstraint);
                return Ok(());
            }
            None => RosterItem {
                jid: target_jid.clone(),
                ..RosterItem::default()
            },
        };
        if !pending {
            // §3.4.2: noted on the item, not delivered to the target.
            item.approved = true;
            out.pushes.push((sender.into(), txn.put(sender, &item)?));
            return Ok(());
        }
        txn.clear_pending(sender, &target_jid)?;
        item.from = true;
        item.approved = false;
        out.pushes.push((sender.into(), txn.put(sender, &item)?));
        if self.target_exists && grant_to(txn, target, &sender_jid, out)? {
            out.send(target, self.xml.clone());
        }
        out.presence(sender, target, true);
        Ok(())
    }

    /// §3.3: the sender cancels its subscription to the target.
    fn unsubscribe(&self, txn: &RosterTxn, out: &mut Outcome) -> Result<(), StoreError> {
        let (sender, target) = (self.sender.as_str(), self.target.as_str());
        clear_to(txn, sender, &self.bare(target), out)?;
        if self.target_exists {
            let (changed, had_from) = clear_from(txn, target, &self.bare(sender), out)?;
            if changed {
                out.send(target, self.xml.clone());
            }
            if had_from {
                out.presence(target, sender, false);
            }
        }
        Ok(())
    }

    /// §3.2: the sender cancels (or denies) the target's subscription to it.
    fn unsubscribed(&self, txn: &RosterTxn, out: &mut Outcome) -> Result<(), StoreError> {
        let (sender, target) = (self.sender.as_str(), self.target.as_str());
        let (_, had_from) = clear_from(txn, sender, &self.bare(target), out)?;
        if self.target_exists && clear_to(txn, target, &self.bare(sender), out)? {
            out.send(target, self.xml.clone());
        }
        if had_from {
            out.presence(sender, target, false);
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

/// A subscription stanza from a client (`to` is set).
pub fn handle(
    server: &Rc<Server>,
    session: &Rc<Session>,
    stanza: &Stanza,
    kind: PresenceType,
    to: &Jid,
    out: &mut String,
) -> Deferred {
    if !served_here(server, session, stanza, to, out) {
        return Deferred::None;
    }
    let domain: &str = &server.config().domain;
    let user = session.jid.user();
    let Some(target) = to.local() else {
        return Deferred::None;
    };
    if target == user {
        // A subscription to oneself: one's own resources share presence anyway.
        return Deferred::None;
    }
    let bare_to = to.bare();
    let user_jid = session.jid.bare();
    // §3.1.2: the server stamps the bare JIDs of both ends.
    let mut xml = String::new();
    write_element(
        &mut xml,
        stanza.node,
        NS_CLIENT,
        &[
            ("from", Some(user_jid.as_str())),
            ("to", Some(bare_to.as_str())),
        ],
    );
    let change = Change {
        kind,
        sender: user.into(),
        target: target.into(),
        domain: domain.into(),
        xml,
        target_exists: crate::route::account_exists(server, target),
        max_items: server.config().roster.max_items as usize,
    };
    // Both a full roster and a store failure are resource constraints for the sender.
    let mut refused = String::new();
    reply_error(
        server,
        session,
        stanza,
        StanzaCondition::ResourceConstraint,
        &mut refused,
    );
    let server = server.clone();
    // A new request reaches the target: it may have to wake a device (XEP-0357).
    let request = (kind == PresenceType::Subscribe).then(|| (target.to_owned(), user_jid));
    Deferred::Reply(Box::pin(async move {
        let result = server
            .store
            .roster_update(move |txn| change.apply(txn))
            .await;
        match result {
            Ok(outcome) if outcome.error.is_some() => refused,
            Ok(outcome) => {
                let pending = request.filter(|(target, _)| {
                    outcome.deliveries.iter().any(
                        |delivery| matches!(delivery, Delivery::Stanza { to, .. } if to == target),
                    )
                });
                carry_out(&server, outcome);
                if let Some((target, from)) = pending {
                    crate::push::on_subscription_request(&server, &target, from.as_str());
                }
                String::new()
            }
            Err(e) => {
                warn!("subscription change not stored: {e}");
                refused
            }
        }
    }))
}

/// Sends what a committed change calls for: roster pushes first, then stanzas.
pub fn carry_out(server: &Server, outcome: Outcome) {
    for (user, stored) in &outcome.pushes {
        roster_push::push(server, user, stored);
    }
    for delivery in outcome.deliveries {
        match delivery {
            Delivery::Stanza { to, xml } => {
                deliver_to_user(server, &to, xml.into(), crate::router::Hold::Urgent)
            }
            Delivery::Presence {
                from,
                to,
                available,
            } => {
                send_presence_of(server, &from, &to, available);
                if available {
                    // What follows `from`'s presence now reaches `to`: its PEP too.
                    crate::pep::presence_granted(server, &from, &to);
                }
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

    /// "N", "T", "F" or "B", then "+PO" (ask), "+PI" (pending in) and/or "+PA"
    /// (pre-approved), as Appendix A.
    fn set(store: &Store, user: &'static str, contact: &'static str, state: &'static str) {
        smol::block_on(store.roster_update(move |txn| {
            let contact_jid = format!("{contact}@h");
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
        let item = store.roster_item(user, &format!("{contact}@h")).unwrap();
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
            let change = Change {
                kind,
                sender: "alice".into(),
                target: "bob".into(),
                domain: "h".into(),
                xml: "<presence/>".into(),
                target_exists: true,
                max_items: 10,
            };
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
        let change = |kind| Change {
            kind,
            sender: "alice".into(),
            target: "bob".into(),
            domain: "h".into(),
            xml: "<presence id='x'/>".into(),
            target_exists: true,
            max_items: 10,
        };
        let run = |kind| {
            let change = change(kind);
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
                    to: "alice".into(),
                    available: true
                }
            ]
        );
    }
}
