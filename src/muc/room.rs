//! One chat room (XEP-0045): its occupants with their roles, the affiliation list, history and
//! subject, and what every occupant is sent when any of them changes. Each handler checks the
//! permission rules of §§7–10 before it changes anything. A room never parses addresses of
//! other rooms, never touches the store directly (it hands [`Room::record`] to the caller) and
//! never routes to anyone who is not an occupant, except invitations.

use super::form::{ConfigForm, RoomConfig, NS_DATA};
use super::history::{self, Past};
use super::{Ctx, NS_ADMIN, NS_MUC, NS_OWNER, NS_USER};
use crate::feature::Deferred;
use crate::jid::Jid;
use crate::offline::{Pending, NS_DELAY};
use crate::route::account_exists;
use crate::router::{MessageTarget, Session};
use crate::server::Server;
use crate::stanza::{self, ErrorType, IqType, MessageType, StanzaCondition, StanzaError};
use crate::time;
use crate::xml::build::Element;
use crate::xml::{write_element, Esc, NS_CLIENT};
use roxmltree::Node;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::rc::Rc;
use std::time::Instant;

pub const NS_SID: &str = "urn:xmpp:sid:0";

/// History is kept in memory (and, for a persistent room, written whole to the store every
/// few seconds): a room holds at most this many bytes of it, whatever its `historylength`,
/// so large messages cannot make a room big on a small board.
const MAX_HISTORY_BYTES: usize = 128 * 1024;

/// Groupchat flood control per occupant: a burst of this many messages…
const BURST: f32 = 10.0;
/// …refilled at this many per second.
const REFILL_PER_SEC: f32 = 2.0;

/// §5.2 affiliations, ordered by privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn name(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Affiliation> {
        [
            Affiliation::Outcast,
            Affiliation::None,
            Affiliation::Member,
            Affiliation::Admin,
            Affiliation::Owner,
        ]
        .into_iter()
        .find(|a| a.name() == text)
    }
}

/// §5.1 roles, ordered by privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        [
            Role::None,
            Role::Visitor,
            Role::Participant,
            Role::Moderator,
        ]
        .into_iter()
        .find(|r| r.name() == text)
    }
}

/// What a joining occupant's `<history/>` asks for (§7.2.14). Values that are no number
/// or date are ignored, as if absent: the occupant still joins.
#[derive(Debug, Default, PartialEq, Eq)]
struct HistoryRequest {
    max_stanzas: Option<u64>,
    max_chars: Option<u64>,
    seconds: Option<u64>,
    /// Unix seconds.
    since: Option<u64>,
}

impl HistoryRequest {
    /// From the join presence's `<x xmlns='…muc'/>`, if it had one.
    fn parse(muc: Option<Node>) -> HistoryRequest {
        let Some(history) = muc.and_then(|x| stanza::child(x, "history", NS_MUC)) else {
            return HistoryRequest::default();
        };
        let number = |name| history.attribute(name)?.trim().parse::<u64>().ok();
        HistoryRequest {
            max_stanzas: number("maxstanzas"),
            max_chars: number("maxchars"),
            seconds: number("seconds"),
            since: history.attribute("since").and_then(time::parse_datetime),
        }
    }
}

/// A mediated invitation or its decline (§7.8.2): a message to the room with `muc#user`.
#[derive(Debug, PartialEq, Eq)]
enum UserMessage<'a> {
    /// Invite the bare JID `invitee`.
    Invite {
        invitee: Jid,
        reason: Option<&'a str>,
    },
    /// Tell `inviter` the invitation was declined.
    Decline {
        inviter: Jid,
        reason: Option<&'a str>,
    },
}

impl<'a> UserMessage<'a> {
    /// A `<decline/>` wins over an `<invite/>`; neither is `bad-request`, a `to` that is
    /// missing or no JID `jid-malformed`.
    fn parse(x: Node<'a, '_>) -> Result<UserMessage<'a>, StanzaCondition> {
        let to = |element: Node| {
            element
                .attribute("to")
                .and_then(|to| Jid::parse(to).ok())
                .ok_or(StanzaCondition::JidMalformed)
        };
        if let Some(decline) = stanza::child(x, "decline", NS_USER) {
            return Ok(UserMessage::Decline {
                inviter: to(decline)?,
                reason: stanza::child_text(decline, "reason", NS_USER),
            });
        }
        let invite = stanza::child(x, "invite", NS_USER).ok_or(StanzaCondition::BadRequest)?;
        Ok(UserMessage::Invite {
            invitee: to(invite)?.bare(),
            reason: stanza::child_text(invite, "reason", NS_USER),
        })
    }
}

/// A `muc#owner` request (§10), tied to the iq type that may carry it.
#[derive(Debug, PartialEq, Eq)]
enum OwnerRequest<'a> {
    /// `get`: the configuration form (§10.2).
    GetConfig,
    /// `set` with a submitted form (§10.2).
    Configure(ConfigForm<'a>),
    /// `set` with a cancelled form (§10.1.3).
    Cancel,
    /// `set` with `<destroy/>` (§10.9): the alternate venue and the reason, passed on as
    /// given.
    Destroy {
        venue: Option<&'a str>,
        reason: Option<&'a str>,
    },
}

impl<'a> OwnerRequest<'a> {
    /// A `set` with neither `<destroy/>` nor a form of type `submit` or `cancel` is
    /// `bad-request`; a form that cannot be applied is `not-acceptable` (§10.2) with the
    /// reason as text.
    fn parse(query: Node<'a, '_>, ty: IqType) -> Result<OwnerRequest<'a>, StanzaError<'static>> {
        if ty == IqType::Get {
            return Ok(OwnerRequest::GetConfig);
        }
        if let Some(destroy) = stanza::child(query, "destroy", NS_OWNER) {
            return Ok(OwnerRequest::Destroy {
                venue: destroy.attribute("jid"),
                reason: stanza::child_text(destroy, "reason", NS_OWNER),
            });
        }
        let bad_request = || StanzaError::new(StanzaCondition::BadRequest);
        let form = stanza::child(query, "x", NS_DATA).ok_or_else(bad_request)?;
        match form.attribute("type") {
            Some("submit") => ConfigForm::parse(form)
                .map(OwnerRequest::Configure)
                .map_err(|why| StanzaError::new(StanzaCondition::NotAcceptable).with_text(why)),
            Some("cancel") => Ok(OwnerRequest::Cancel),
            _ => Err(bad_request()),
        }
    }
}

/// A `muc#admin` request (§8, §9), tied to the iq type that may carry it.
#[derive(Debug, PartialEq, Eq)]
enum AdminRequest<'a> {
    /// `get`: who holds an affiliation or a role (§8.5, §9.2, §9.5, §9.8, §10.5, §10.8).
    List(Listed),
    /// `set`: role and affiliation changes, applied in order.
    Change(Vec<AdminChange<'a>>),
}

/// What a list request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listed {
    Affiliation(Affiliation),
    Role(Role),
}

/// One `<item/>` of an admin `set`: an item with a `role` changes the role, otherwise its
/// `affiliation` changes the affiliation.
#[derive(Debug, PartialEq, Eq)]
enum AdminChange<'a> {
    Role(RoleChange<'a>),
    Affiliation(AffiliationChange<'a>),
}

/// Kick, voice or moderator by nick (§8.2–§8.5, §9.6–§9.7).
#[derive(Debug, PartialEq, Eq)]
struct RoleChange<'a> {
    nick: &'a str,
    role: Role,
    reason: Option<&'a str>,
}

/// Membership, ban, admin or owner by bare JID or by an occupant's nick (§9.1–§9.5).
#[derive(Debug, PartialEq, Eq)]
struct AffiliationChange<'a> {
    target: Target<'a>,
    affiliation: Affiliation,
    reason: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// A bare JID (a full one names its bare JID).
    Jid(Jid),
    Nick(&'a str),
}

impl<'a> AdminRequest<'a> {
    /// A request without an `<item/>` is `bad-request`, as is a list request naming no
    /// known affiliation or role and any change item that is malformed ([`AdminChange::parse`]).
    fn parse(query: Node<'a, '_>, ty: IqType) -> Result<AdminRequest<'a>, StanzaCondition> {
        let mut items = query
            .children()
            .filter(|c| c.has_tag_name((NS_ADMIN, "item")))
            .peekable();
        let first = *items.peek().ok_or(StanzaCondition::BadRequest)?;
        if ty == IqType::Get {
            let affiliation = first.attribute("affiliation").and_then(Affiliation::parse);
            let role = first.attribute("role").and_then(Role::parse);
            return match (affiliation, role) {
                (Some(affiliation), _) => Ok(AdminRequest::List(Listed::Affiliation(affiliation))),
                (None, Some(role)) => Ok(AdminRequest::List(Listed::Role(role))),
                (None, None) => Err(StanzaCondition::BadRequest),
            };
        }
        items
            .map(AdminChange::parse)
            .collect::<Result<_, _>>()
            .map(AdminRequest::Change)
    }
}

impl<'a> AdminChange<'a> {
    /// An unknown role or affiliation, or no `nick` (role) or neither `jid` nor `nick`
    /// (affiliation) is `bad-request`; a `jid` that is no JID is `jid-malformed`.
    fn parse(item: Node<'a, '_>) -> Result<AdminChange<'a>, StanzaCondition> {
        let reason = stanza::child_text(item, "reason", NS_ADMIN);
        let nick = item.attribute("nick");
        if let Some(role) = item.attribute("role") {
            return Ok(AdminChange::Role(RoleChange {
                role: Role::parse(role).ok_or(StanzaCondition::BadRequest)?,
                nick: nick.ok_or(StanzaCondition::BadRequest)?,
                reason,
            }));
        }
        let affiliation = item
            .attribute("affiliation")
            .ok_or(StanzaCondition::BadRequest)?;
        let affiliation = Affiliation::parse(affiliation).ok_or(StanzaCondition::BadRequest)?;
        let target = match (item.attribute("jid"), nick) {
            (Some(jid), _) => Target::Jid(
                Jid::parse(jid)
                    .map_err(|_| StanzaCondition::JidMalformed)?
                    .bare(),
            ),
            (None, Some(nick)) => Target::Nick(nick),
            (None, None) => return Err(StanzaCondition::BadRequest),
        };
        Ok(AdminChange::Affiliation(AffiliationChange {
            target,
            affiliation,
            reason,
        }))
    }
}

/// One nick in the room. Several sessions of the same user may share it (§7.2.11): they all
/// get the room's traffic, and the others see one occupant.
pub struct Occupant {
    pub nick: Box<str>,
    /// The user's bare real JID.
    pub jid: Jid,
    pub sessions: Vec<Rc<Session>>,
    pub role: Role,
    /// The children of the occupant's last presence (show, status, …), re-serialised.
    presence: Box<str>,
    /// Flood control: messages the occupant may still send right now, and when it was filled.
    allowance: f32,
    filled: Instant,
}

impl Occupant {
    /// Takes one message from the allowance, or says the occupant must wait.
    fn take_message(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.filled).as_secs_f32() * REFILL_PER_SEC;
        self.allowance = (self.allowance + refill).min(BURST);
        self.filled = now;
        if self.allowance < 1.0 {
            return false;
        }
        self.allowance -= 1.0;
        true
    }
}

/// What an occupant's presence says besides its item.
#[derive(Default)]
struct Status<'a> {
    unavailable: bool,
    codes: &'a [u16],
    new_nick: Option<&'a str>,
    reason: Option<&'a str>,
    /// Extra `muc#user` children, e.g. `<destroy/>`.
    extra: &'a str,
}

/// What the store must do after a change to a room.
pub enum Persist {
    Save(Vec<u8>),
    Delete,
}

pub struct Room {
    /// The room's bare JID.
    pub jid: Jid,
    pub config: RoomConfig,
    /// Created and not yet configured (§10.1.2): only owners may enter.
    pub locked: bool,
    /// Destroyed by an owner: the caller drops it.
    pub destroyed: bool,
    /// Bare JID → affiliation, for every affiliation but `none`; a map, so that a change
    /// costs the same in a room with a thousand members as in one with three.
    affiliations: HashMap<Jid, Affiliation>,
    pub occupants: Vec<Occupant>,
    history: VecDeque<Past>,
    /// (nick of who set it, text).
    subject: Option<(Box<str>, Box<str>)>,
    /// The room's vCard and avatar (XEP-0486).
    pub vcard: Option<super::vcard::RoomVcard>,
}

impl Room {
    pub fn new(jid: Jid, config: RoomConfig) -> Room {
        Room {
            jid,
            config,
            locked: false,
            destroyed: false,
            affiliations: HashMap::new(),
            occupants: Vec::new(),
            history: VecDeque::new(),
            subject: None,
            vcard: None,
        }
    }

    /// A room nobody needs any more: destroyed, or empty and not persistent (a locked room
    /// was never configured, so it is never persistent).
    pub fn is_gone(&self) -> bool {
        self.destroyed || (self.occupants.is_empty() && (!self.config.persistent || self.locked))
    }

    pub fn affiliation(&self, bare: &Jid) -> Affiliation {
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// Whether giving `bare` an affiliation would take the room past `muc.max_affiliations`
    /// (changing an existing one never does).
    fn affiliations_full(&self, server: &Server, bare: &Jid) -> bool {
        let max = server.config().muc.max_affiliations as usize;
        let full = !self.affiliations.contains_key(bare) && self.affiliations.len() >= max;
        if full {
            log::info!(
                "muc: {} has {max} affiliations (muc.max_affiliations), one more refused",
                self.jid
            );
        }
        full
    }

    pub fn is_owner(&self, bare: &Jid) -> bool {
        self.affiliation(bare) == Affiliation::Owner
    }

    pub fn set_affiliation(&mut self, bare: Jid, affiliation: Affiliation) {
        if affiliation == Affiliation::None {
            self.affiliations.remove(&bare);
        } else {
            self.affiliations.insert(bare, affiliation);
        }
    }

    /// Drops the affiliations of the JIDs `gone` names (deleted accounts: a later account of
    /// the same name is someone else and inherits nothing). The record to save, if any went.
    pub fn drop_affiliations(&mut self, gone: impl Fn(&Jid) -> bool) -> Option<Persist> {
        let before = self.affiliations.len();
        self.affiliations.retain(|jid, _| !gone(jid));
        if self.affiliations.len() == before {
            return None;
        }
        self.saved()
    }

    fn by_session(&self, id: u64) -> Option<usize> {
        self.occupants
            .iter()
            .position(|o| o.sessions.iter().any(|s| s.id == id))
    }

    fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| &*o.nick == nick)
    }

    fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// The occupant count the directory and room info show.
    pub fn occupant_count(&self) -> usize {
        self.occupants.len()
    }

    pub fn display_name(&self) -> &str {
        match &*self.config.name {
            "" => self.jid.local().unwrap_or_default(),
            name => name,
        }
    }

    // ----- presence ---------------------------------------------------------------------

    /// Presence to `room/nick`: join, presence update, nick change or leave (§7.2–§7.6).
    /// `created` is set when the service just made the room for this user.
    pub fn on_presence(&mut self, ctx: &mut Ctx, nick: &str, unavailable: bool, created: bool) {
        let session = ctx.session;
        match self.by_session(session.id) {
            Some(i) if unavailable => self.leave(ctx.server, i, session, Some(ctx.stanza.node)),
            Some(i) if self.occupants.get(i).is_some_and(|o| &*o.nick == nick) => {
                if let Some(occupant) = self.occupants.get_mut(i) {
                    occupant.presence = presence_children(ctx.stanza.node).into();
                }
                self.broadcast_presence(ctx.server, i, &Status::default());
                let muc = ctx.stanza.child("x", NS_MUC);
                if muc.is_some() {
                    self.send_state(ctx.server, i, session, false, muc);
                }
            }
            Some(i) => self.change_nick(ctx, i, nick),
            None if unavailable => {}
            None => self.join(ctx, nick, created),
        }
    }

    fn join(&mut self, ctx: &mut Ctx, nick: &str, created: bool) {
        let bare = ctx.session.jid.bare();
        let affiliation = self.affiliation(&bare);
        let muc = ctx.stanza.child("x", NS_MUC);
        let held_by_other = self
            .by_nick(nick)
            .and_then(|i| self.occupants.get(i))
            .is_some_and(|o| o.jid != bare);
        let refusal = if self.locked && affiliation != Affiliation::Owner {
            // §10.1.2: a locked room does not exist for anyone but its owner.
            Some(StanzaCondition::ItemNotFound)
        } else if affiliation == Affiliation::Outcast {
            Some(StanzaCondition::Forbidden)
        } else if self.config.members_only && affiliation < Affiliation::Member {
            Some(StanzaCondition::RegistrationRequired)
        } else if self.config.password.as_deref().is_some_and(|password| {
            muc.and_then(|x| stanza::child_text(x, "password", NS_MUC)) != Some(password)
        }) {
            Some(StanzaCondition::NotAuthorized)
        } else if held_by_other {
            Some(StanzaCondition::Conflict)
        } else if self.by_nick(nick).is_none()
            && self.occupants.len() >= self.config.max_users as usize
            && affiliation < Affiliation::Admin
        {
            Some(StanzaCondition::ServiceUnavailable)
        } else {
            None
        };
        if let Some(condition) = refusal {
            let mut error = StanzaError::new(condition);
            if condition == StanzaCondition::ServiceUnavailable {
                // §7.2.10: the room is full for now.
                error.kind = ErrorType::Wait;
            }
            ctx.fail(&error);
            return;
        }
        let server = ctx.server;
        let session = ctx.session;
        let held = self
            .by_nick(nick)
            .and_then(|i| Some((i, self.occupants.get_mut(i)?)));
        let (index, first) = match held {
            Some((i, occupant)) => {
                occupant.sessions.push(session.clone());
                (i, false)
            }
            None => {
                self.occupants.push(Occupant {
                    nick: nick.into(),
                    jid: bare,
                    sessions: vec![session.clone()],
                    role: self.default_role(affiliation),
                    presence: presence_children(ctx.stanza.node).into(),
                    allowance: BURST,
                    filled: Instant::now(),
                });
                (self.occupants.len() - 1, true)
            }
        };
        if first {
            self.broadcast_to_others(server, index);
        }
        self.send_state(server, index, session, created, muc);
    }

    /// What a joining session gets (§7.2.3): everyone else's presence, its own presence with
    /// 110, then history and subject. A session that joins again (e.g. after losing track of
    /// the room, XEP-0410) gets the same.
    fn send_state(
        &self,
        server: &Server,
        index: usize,
        session: &Session,
        created: bool,
        muc: Option<Node>,
    ) {
        let Some(viewer) = self.occupants.get(index) else {
            return;
        };
        for (i, other) in self.occupants.iter().enumerate() {
            if i != index {
                let xml = self.presence_xml(other, viewer, session, &Status::default());
                server.deliver(session, xml.into(), false);
            }
        }
        let mut codes = vec![110];
        if self.config.whois_anyone {
            codes.push(100);
        }
        if created {
            codes.push(201);
        }
        let status = Status {
            codes: &codes,
            ..Status::default()
        };
        let xml = self.presence_xml(viewer, viewer, session, &status);
        server.deliver(session, xml.into(), false);
        self.send_history(server, session, muc);
        self.send_subject(server, session);
    }

    /// The new occupant's presence to every other occupant.
    fn broadcast_to_others(&self, server: &Server, index: usize) {
        let Some(subject) = self.occupants.get(index) else {
            return;
        };
        for (i, viewer) in self.occupants.iter().enumerate() {
            if i == index {
                continue;
            }
            for session in &viewer.sessions {
                let xml = self.presence_xml(subject, viewer, session, &Status::default());
                server.deliver(session, xml.into(), false);
            }
        }
    }

    /// §7.2.14: what `<history/>` asks for, oldest first, each with a delay from the room.
    fn send_history(&self, server: &Server, session: &Session, muc: Option<Node>) {
        let wanted = HistoryRequest::parse(muc);
        let max_stanzas = wanted.max_stanzas.unwrap_or(u64::MAX);
        let mut max_chars = wanted.max_chars.unwrap_or(u64::MAX);
        let now = time::unix_now();
        let not_before = [wanted.seconds.map(|s| now.saturating_sub(s)), wanted.since]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        let mut picked: Vec<String> = Vec::new();
        for past in self.history.iter().rev() {
            if picked.len() as u64 >= max_stanzas || past.at < not_before {
                break;
            }
            let xml = self.message_xml(
                &past.nick,
                session.jid.as_str(),
                past.id.as_deref(),
                &past.inner,
                Some(past.at),
            );
            match max_chars.checked_sub(xml.chars().count() as u64) {
                Some(left) => max_chars = left,
                None => break,
            }
            picked.push(xml);
        }
        for xml in picked.into_iter().rev() {
            server.deliver(session, xml.into(), false);
        }
    }

    /// §7.2.15: the subject always follows the history, empty when there is none.
    fn send_subject(&self, server: &Server, session: &Session) {
        // §7.2.15: from the occupant who set it, or the room when none did.
        let from = match &self.subject {
            Some((nick, _)) => format!("{}/{nick}", self.jid),
            None => self.jid.as_str().to_owned(),
        };
        let mut xml = String::new();
        Element::new("message")
            .attr("type", "groupchat")
            .attr("from", &from)
            .attr("to", session.jid.as_str())
            .children(&mut xml, |out| match &self.subject {
                Some((_, text)) => Element::new("subject").text(out, text),
                None => Element::new("subject").empty(out),
            });
        server.deliver(session, xml.into(), false);
    }

    /// §7.6: unavailable with 303 and the new nick, then available under the new nick.
    fn change_nick(&mut self, ctx: &mut Ctx, index: usize, nick: &str) {
        if self.by_nick(nick).is_some() {
            ctx.error(StanzaCondition::Conflict);
            return;
        }
        self.broadcast_presence(
            ctx.server,
            index,
            &Status {
                unavailable: true,
                codes: &[303],
                new_nick: Some(nick),
                ..Status::default()
            },
        );
        let Some(occupant) = self.occupants.get_mut(index) else {
            return;
        };
        occupant.nick = nick.into();
        occupant.presence = presence_children(ctx.stanza.node).into();
        self.broadcast_presence(ctx.server, index, &Status::default());
    }

    /// One session leaves (§7.14) or is gone. The occupant leaves with its last session;
    /// until then only the leaving session hears of it.
    fn leave(&mut self, server: &Server, index: usize, session: &Session, presence: Option<Node>) {
        let Some(occupant) = self.occupants.get_mut(index) else {
            return;
        };
        let status = Status {
            unavailable: true,
            codes: &[110],
            ..Status::default()
        };
        if occupant.sessions.len() > 1 {
            occupant.sessions.retain(|s| s.id != session.id);
            if let Some(occupant) = self.occupants.get(index) {
                let xml = self.presence_xml(occupant, occupant, session, &status);
                server.deliver(session, xml.into(), false);
            }
            return;
        }
        let mut gone = self.occupants.remove(index);
        if let Some(presence) = presence {
            gone.presence = presence_children(presence).into();
        }
        self.announce_removal(
            server,
            &gone,
            &Status {
                unavailable: true,
                ..Status::default()
            },
        );
    }

    /// Sends `status` about `index` to every occupant, with 110 for the occupant itself.
    fn broadcast_presence(&self, server: &Server, index: usize, status: &Status) {
        let Some(subject) = self.occupants.get(index) else {
            return;
        };
        let mut own_codes = vec![110];
        own_codes.extend_from_slice(status.codes);
        let own = Status {
            codes: &own_codes,
            ..*status
        };
        for (i, viewer) in self.occupants.iter().enumerate() {
            let status = if i == index { &own } else { status };
            for session in &viewer.sessions {
                let xml = self.presence_xml(subject, viewer, session, status);
                server.deliver(session, xml.into(), false);
            }
        }
    }

    /// Tells the remaining occupants, and the removed one's sessions (with 110), that it left.
    fn announce_removal(&self, server: &Server, gone: &Occupant, status: &Status) {
        for viewer in &self.occupants {
            for session in &viewer.sessions {
                let xml = self.presence_xml(gone, viewer, session, status);
                server.deliver(session, xml.into(), false);
            }
        }
        let mut own_codes = vec![110];
        own_codes.extend_from_slice(status.codes);
        let own = Status {
            codes: &own_codes,
            ..*status
        };
        for session in &gone.sessions {
            let xml = self.presence_xml(gone, gone, session, &own);
            server.deliver(session, xml.into(), false);
        }
    }

    /// `subject`'s presence as `viewer` sees it on `session`: real JIDs only for moderators,
    /// in non-anonymous rooms, and to the occupant itself (§7.2.3, §7.2.4).
    fn presence_xml(
        &self,
        subject: &Occupant,
        viewer: &Occupant,
        session: &Session,
        status: &Status,
    ) -> String {
        let from = format!("{}/{}", self.jid, subject.nick);
        let role = if status.unavailable && status.new_nick.is_none() {
            Role::None
        } else {
            subject.role
        };
        let affiliation = if status.extra.is_empty() {
            self.affiliation(&subject.jid)
        } else {
            Affiliation::None
        };
        let sees_jid = self.config.whois_anyone
            || viewer.role == Role::Moderator
            || std::ptr::eq(subject, viewer);
        let jid = subject
            .sessions
            .first()
            .filter(|_| sees_jid)
            .map(|first| first.jid.as_str());
        let mut xml = String::with_capacity(256);
        Element::new("presence")
            .attr("from", &from)
            .attr("to", session.jid.as_str())
            .attr_opt("type", status.unavailable.then_some("unavailable"))
            .children(&mut xml, |out| {
                // The occupant's own presence children, as stored.
                out.push_str(&subject.presence);
                Element::new("x").ns(NS_USER).children(out, |out| {
                    let item = Element::new("item")
                        .attr("affiliation", affiliation.name())
                        .attr("role", role.name())
                        .attr_opt("jid", jid)
                        .attr_opt("nick", status.new_nick);
                    match status.reason {
                        Some(reason) => item.children(out, |out| {
                            Element::new("reason").text(out, reason);
                        }),
                        None => item.empty(out),
                    }
                    for code in status.codes {
                        Element::new("status")
                            .attr("code", &code.to_string())
                            .empty(out);
                    }
                    // Written by this module with Element (`<destroy/>`).
                    out.push_str(status.extra);
                });
            });
        xml
    }

    // ----- messages -----------------------------------------------------------------------

    fn message_xml(
        &self,
        nick: &str,
        to: &str,
        id: Option<&str>,
        inner: &str,
        delayed: Option<u64>,
    ) -> String {
        let from = format!("{}/{nick}", self.jid);
        let stamp = delayed.map(time::format_datetime);
        let mut xml = String::with_capacity(inner.len() + 200);
        Element::new("message")
            .attr("type", "groupchat")
            .attr("from", &from)
            .attr("to", to)
            .attr_opt("id", id)
            .children(&mut xml, |out| {
                // The message's children, already re-serialised by `on_groupchat`.
                out.push_str(inner);
                if let Some(stamp) = &stamp {
                    Element::new("delay")
                        .ns(NS_DELAY)
                        .attr("from", self.jid.as_str())
                        .attr("stamp", stamp)
                        .empty(out);
                }
            });
        xml
    }

    /// §7.4: a groupchat message goes to every occupant with a stanza-id from the room;
    /// a subject-only message changes the subject (§8.1).
    pub fn on_groupchat(&mut self, ctx: &mut Ctx) -> Option<Persist> {
        let Some(occupant) = self
            .by_session(ctx.session.id)
            .and_then(|i| self.occupants.get_mut(i))
        else {
            ctx.error(StanzaCondition::NotAcceptable);
            return None;
        };
        if occupant.role < Role::Participant {
            ctx.error(StanzaCondition::Forbidden);
            return None;
        }
        if !occupant.take_message() {
            ctx.error(StanzaCondition::ResourceConstraint);
            return None;
        }
        let role = occupant.role;
        let nick = occupant.nick.clone();
        let stanza = ctx.stanza;
        let body = stanza.child("body", NS_CLIENT);
        let subject = stanza.child("subject", NS_CLIENT);
        let mut record = None;
        if let (Some(subject), None) = (subject, body) {
            if role != Role::Moderator && !self.config.change_subject {
                ctx.error(StanzaCondition::Forbidden);
                return None;
            }
            let text = subject.text().unwrap_or_default();
            self.subject = (!text.is_empty()).then(|| (nick.clone(), text.into()));
            record = self.saved();
        }
        let by = self.jid.as_str();
        let mut inner = String::new();
        for child in stanza.node.children().filter(|c| c.is_element()) {
            // A client cannot speak for the room (XEP-0359 §3).
            let forged =
                child.has_tag_name((NS_SID, "stanza-id")) && child.attribute("by") == Some(by);
            if !forged {
                write_element(&mut inner, child, NS_CLIENT, &[]);
            }
        }
        let sid = if self.config.archive && body.is_some() {
            let archived = self.message_xml(&nick, by, stanza.id, &inner, None);
            crate::mam::archive_groupchat(ctx.server, &self.jid, &nick, archived)
        } else {
            ctx.server.random_id()
        };
        Element::new("stanza-id")
            .ns(NS_SID)
            .attr("id", &sid)
            .attr("by", by)
            .empty(&mut inner);
        for viewer in &self.occupants {
            for session in &viewer.sessions {
                let xml = self.message_xml(&nick, session.jid.as_str(), stanza.id, &inner, None);
                ctx.server.deliver(session, xml.into(), false);
            }
        }
        if body.is_some() && self.config.history_length > 0 {
            self.history.push_back(Past {
                nick,
                at: time::unix_now(),
                id: stanza.id.map(Into::into),
                inner: inner.into(),
            });
            self.trim_history();
        }
        record
    }

    /// Keeps at most `historylength` messages and [`MAX_HISTORY_BYTES`] of them.
    fn trim_history(&mut self) {
        let mut bytes: usize = self.history.iter().map(|p| p.inner.len()).sum();
        while self.history.len() > self.config.history_length as usize || bytes > MAX_HISTORY_BYTES
        {
            match self.history.pop_front() {
                Some(oldest) => bytes -= oldest.inner.len(),
                None => break,
            }
        }
    }

    /// §7.5: a private message goes to every session of the addressed occupant.
    pub fn on_private_message(&self, ctx: &mut Ctx, nick: &str, ty: MessageType) {
        let Some(from) = self
            .by_session(ctx.session.id)
            .and_then(|i| self.occupants.get(i))
        else {
            ctx.error(StanzaCondition::NotAcceptable);
            return;
        };
        if ty == MessageType::Groupchat {
            ctx.error(StanzaCondition::BadRequest);
            return;
        }
        let Some(to) = self.by_nick(nick).and_then(|i| self.occupants.get(i)) else {
            ctx.error(StanzaCondition::ItemNotFound);
            return;
        };
        let from = format!("{}/{}", self.jid, from.nick);
        for session in &to.sessions {
            let mut xml = String::new();
            write_element(
                &mut xml,
                ctx.stanza.node,
                NS_CLIENT,
                &[("from", Some(&from)), ("to", Some(session.jid.as_str()))],
            );
            ctx.server.deliver(session, xml.into(), false);
        }
    }

    /// §7.8.2 mediated invitations and their declines (a normal message with `muc#user`).
    pub fn on_user_message(&mut self, ctx: &mut Ctx, x: Node) -> (Deferred, Option<Persist>) {
        let (invitee, reason) = match UserMessage::parse(x) {
            Ok(UserMessage::Decline { inviter, reason }) => {
                self.forward_decline(ctx, &inviter, reason);
                return (Deferred::None, None);
            }
            Ok(UserMessage::Invite { invitee, reason }) => (invitee, reason),
            Err(condition) => {
                ctx.error(condition);
                return (Deferred::None, None);
            }
        };
        let Some(inviter) = self
            .by_session(ctx.session.id)
            .and_then(|i| self.occupants.get(i))
        else {
            ctx.error(StanzaCondition::NotAcceptable);
            return (Deferred::None, None);
        };
        if local_user(ctx.server, &invitee).is_none() {
            ctx.error(StanzaCondition::ItemNotFound);
            return (Deferred::None, None);
        }
        let inviter_affiliation = self.affiliation(&inviter.jid);
        let mut record = None;
        if self.config.members_only {
            // Only those who may grant membership invite into a members-only room; the
            // invitation makes the invitee a member (§7.8.2).
            if inviter_affiliation < Affiliation::Admin {
                ctx.error(StanzaCondition::Forbidden);
                return (Deferred::None, None);
            }
            if self.affiliation(&invitee) < Affiliation::Member {
                if self.affiliations_full(ctx.server, &invitee) {
                    // As for an admin's grant: the list is full, so no new member.
                    ctx.error(StanzaCondition::NotAllowed);
                    return (Deferred::None, None);
                }
                self.set_affiliation(invitee.clone(), Affiliation::Member);
                record = self.saved();
            }
        }
        let mut xml = String::new();
        Element::new("message")
            .attr("from", self.jid.as_str())
            .attr("to", invitee.as_str())
            .children(&mut xml, |out| {
                Element::new("x").ns(NS_USER).children(out, |out| {
                    Element::new("invite")
                        .attr("from", ctx.session.jid.as_str())
                        .children(out, |out| write_reason(out, reason));
                    if let Some(password) = &self.config.password {
                        Element::new("password").text(out, password);
                    }
                });
                Element::new("body").text(out, "You are invited to a chat room.");
            });
        (deliver_to_user(ctx, &invitee, xml), record)
    }

    /// A decline goes back to the inviter with the decliner's bare JID (§7.8.2).
    fn forward_decline(&self, ctx: &mut Ctx, inviter: &Jid, reason: Option<&str>) {
        let decliner = ctx.session.jid.bare();
        let mut xml = String::new();
        Element::new("message")
            .attr("from", self.jid.as_str())
            .attr("to", inviter.as_str())
            .children(&mut xml, |out| {
                Element::new("x").ns(NS_USER).children(out, |out| {
                    Element::new("decline")
                        .attr("from", decliner.as_str())
                        .children(out, |out| write_reason(out, reason));
                });
            });
        deliver_to_user(ctx, inviter, xml);
    }

    // ----- iq -------------------------------------------------------------------------------

    /// An iq to `room/nick`: XEP-0410 self-ping is answered here, anything else between
    /// occupants is passed on with the sender's room JID (§7.5 / §17.3).
    pub fn on_occupant_iq(&self, ctx: &mut Ctx, nick: &str, ty: IqType) {
        let Some(from) = self
            .by_session(ctx.session.id)
            .and_then(|i| self.occupants.get(i))
        else {
            if matches!(ty, IqType::Get | IqType::Set) {
                ctx.error(StanzaCondition::NotAcceptable);
            }
            return;
        };
        let is_ping = ctx
            .stanza
            .payload()
            .is_some_and(|p| p.has_tag_name((crate::ping::NS, "ping")));
        if &*from.nick == nick && is_ping && ty == IqType::Get {
            let own = format!("{}/{}", self.jid, nick);
            stanza::write_iq_result(ctx.out, ctx.stanza.id, &own, ctx.session.jid.as_str());
            return;
        }
        let target = self
            .by_nick(nick)
            .and_then(|i| self.occupants.get(i))
            .and_then(|o| o.sessions.first());
        let Some(target) = target else {
            if matches!(ty, IqType::Get | IqType::Set) {
                ctx.error(StanzaCondition::ItemNotFound);
            }
            return;
        };
        let from = format!("{}/{}", self.jid, from.nick);
        let mut xml = String::new();
        write_element(
            &mut xml,
            ctx.stanza.node,
            NS_CLIENT,
            &[("from", Some(&from)), ("to", Some(target.jid.as_str()))],
        );
        ctx.server.deliver(target, xml.into(), false);
    }

    /// disco#info of the room (§6.4) with the `muc#roominfo` form.
    pub fn write_info(&self, out: &mut String) {
        Element::new("identity")
            .attr("category", "conference")
            .attr("type", "text")
            .attr("name", self.display_name())
            .empty(out);
        let config = &self.config;
        let features = [
            super::NS_MUC,
            crate::disco::NS_INFO,
            crate::ping::NS,
            NS_SID,
            crate::vcard::NS,
            if config.public {
                "muc_public"
            } else {
                "muc_hidden"
            },
            if config.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if config.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if config.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            if config.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            if config.whois_anyone {
                "muc_nonanonymous"
            } else {
                "muc_semianonymous"
            },
        ];
        let archive = [crate::mam::NS, crate::mam::NS_EXTENDED]
            .into_iter()
            .filter(|_| config.archive);
        for feature in features.into_iter().chain(archive) {
            Element::new("feature").attr("var", feature).empty(out);
        }
        let occupants = self.occupant_count().to_string();
        let subject = self.subject.as_ref().map_or("", |(_, text)| text);
        let field = |out: &mut String, var, value| {
            Element::new("field")
                .attr("var", var)
                .children(out, |out| Element::new("value").text(out, value));
        };
        Element::new("x")
            .ns(NS_DATA)
            .attr("type", "result")
            .children(out, |out| {
                Element::new("field")
                    .attr("var", "FORM_TYPE")
                    .attr("type", "hidden")
                    .children(out, |out| {
                        Element::new("value").text(out, "http://jabber.org/protocol/muc#roominfo");
                    });
                field(out, "muc#roominfo_description", &config.description);
                field(out, "muc#roominfo_occupants", &occupants);
                field(out, "muc#roominfo_subject", subject);
                field(out, "muc#roomconfig_roomname", self.display_name());
                // XEP-0486 §2: the avatar's hash, so clients fetch the vCard only when it
                // changed.
                if let Some(photo) = self.vcard.as_ref().and_then(|v| v.photo.as_deref()) {
                    Element::new("field")
                        .attr("var", "muc#roominfo_avatarhash")
                        .attr("type", "text-multi")
                        .children(out, |out| Element::new("value").text(out, photo));
                }
            });
    }

    /// A XEP-0313 query of the room's archive (§3.3.2): for occupants, and for members of a
    /// members-only room.
    pub fn on_mam(&self, ctx: &mut Ctx, ty: IqType) -> Deferred {
        if !self.config.archive {
            ctx.error(StanzaCondition::FeatureNotImplemented);
            return Deferred::None;
        }
        let present = self.by_session(ctx.session.id).is_some();
        let member = self.config.members_only
            && self.affiliation(&ctx.session.jid.bare()) >= Affiliation::Member;
        if !present && !member {
            ctx.error(StanzaCondition::Forbidden);
            return Deferred::None;
        }
        let jid = self.jid.as_str();
        crate::mam::query(ctx.server, ctx.session, ctx.stanza, ty, jid, jid, ctx.out)
    }

    /// `muc#owner` (§10): the configuration form, its submission, and destruction.
    /// Returns what the store must do with the room's record.
    pub fn on_owner(&mut self, ctx: &mut Ctx, ty: IqType, query: Node) -> Option<Persist> {
        if !self.is_owner(&ctx.session.jid.bare()) {
            ctx.error(StanzaCondition::Forbidden);
            return None;
        }
        let request = match OwnerRequest::parse(query, ty) {
            Ok(request) => request,
            Err(error) => {
                ctx.fail(&error);
                return None;
            }
        };
        let to = ctx.session.jid.as_str();
        let from = &*self.jid.as_str().to_owned();
        match request {
            OwnerRequest::GetConfig => {
                stanza::write_iq_result_with(ctx.out, ctx.stanza.id, from, to, |out| {
                    Element::new("query")
                        .ns(NS_OWNER)
                        .children(out, |out| self.config.write_form(out));
                });
                None
            }
            OwnerRequest::Destroy { venue, reason } => {
                self.destroy(ctx.server, venue, reason);
                stanza::write_iq_result(ctx.out, ctx.stanza.id, from, to);
                Some(Persist::Delete)
            }
            OwnerRequest::Cancel => {
                // §10.1.3: cancelling the first configuration destroys the new room.
                if self.locked {
                    self.destroyed = true;
                }
                stanza::write_iq_result(ctx.out, ctx.stanza.id, from, to);
                None
            }
            OwnerRequest::Configure(form) => self.configure(ctx, &form),
        }
    }

    /// A submitted configuration (§10.2): applied whole or not at all.
    fn configure(&mut self, ctx: &mut Ctx, form: &ConfigForm) -> Option<Persist> {
        let config = match self.config.apply(form, ctx.max_occupants) {
            Ok(config) => config,
            Err(why) => {
                ctx.fail(&StanzaError::new(StanzaCondition::NotAcceptable).with_text(why));
                return None;
            }
        };
        let from = &*self.jid.as_str().to_owned();
        let was_persistent = self.config.persistent;
        let was_locked = std::mem::replace(&mut self.locked, false);
        self.config = config;
        self.trim_history();
        stanza::write_iq_result(ctx.out, ctx.stanza.id, from, ctx.session.jid.as_str());
        if self.config.members_only {
            self.remove_where(ctx.server, &[322], |room, o| {
                room.affiliation(&o.jid) < Affiliation::Member
            });
        }
        if !was_locked {
            // §10.2.1: occupants learn that the configuration changed.
            for viewer in &self.occupants {
                for session in &viewer.sessions {
                    let mut xml = String::new();
                    Element::new("message")
                        .attr("type", "groupchat")
                        .attr("from", from)
                        .attr("to", session.jid.as_str())
                        .children(&mut xml, |out| {
                            Element::new("x").ns(NS_USER).children(out, |out| {
                                Element::new("status").attr("code", "104").empty(out);
                            });
                        });
                    ctx.server.deliver(session, xml.into(), false);
                }
            }
        }
        match (was_persistent, self.config.persistent) {
            (_, true) => self.saved(),
            (true, false) => Some(Persist::Delete),
            (false, false) => None,
        }
    }

    /// §10.9: every occupant is told, with the alternate venue if there is one.
    fn destroy(&mut self, server: &Server, venue: Option<&str>, reason: Option<&str>) {
        let mut extra = String::new();
        Element::new("destroy")
            .attr_opt("jid", venue)
            .children(&mut extra, |out| {
                if let Some(reason) = reason {
                    Element::new("reason").text(out, reason);
                }
            });
        let status = Status {
            unavailable: true,
            extra: &extra,
            ..Status::default()
        };
        for occupant in &self.occupants {
            for session in &occupant.sessions {
                let xml = self.presence_xml(occupant, occupant, session, &status);
                server.deliver(session, xml.into(), false);
            }
        }
        self.occupants.clear();
        self.destroyed = true;
    }

    /// Removes every occupant `matches` picks, announcing it with `codes`.
    fn remove_where(
        &mut self,
        server: &Server,
        codes: &[u16],
        matches: impl Fn(&Room, &Occupant) -> bool,
    ) {
        let mut i = 0;
        while let Some(occupant) = self.occupants.get(i) {
            if matches(self, occupant) {
                let gone = self.occupants.remove(i);
                self.announce_removal(
                    server,
                    &gone,
                    &Status {
                        unavailable: true,
                        codes,
                        ..Status::default()
                    },
                );
            } else {
                i += 1;
            }
        }
    }

    /// `muc#admin` (§8, §9): list retrieval, role and affiliation changes.
    /// Saves the record when affiliations changed in a persistent room.
    pub fn on_admin(&mut self, ctx: &mut Ctx, ty: IqType, query: Node) -> Option<Persist> {
        let changes = match AdminRequest::parse(query, ty) {
            Ok(AdminRequest::List(listed)) => {
                self.write_list(ctx, listed);
                return None;
            }
            Ok(AdminRequest::Change(changes)) => changes,
            Err(condition) => {
                ctx.error(condition);
                return None;
            }
        };
        let actor_jid = ctx.session.jid.bare();
        let actor_affiliation = self.affiliation(&actor_jid);
        let actor_role = self.role_of(ctx.session);
        let mut changed = false;
        for change in changes {
            let result = match change {
                AdminChange::Role(change) => {
                    self.set_role(ctx.server, change, actor_affiliation, actor_role)
                }
                AdminChange::Affiliation(change) => {
                    changed = true;
                    self.change_affiliation(ctx.server, change, &actor_jid, actor_affiliation)
                }
            };
            if let Err(condition) = result {
                ctx.error(condition);
                return changed.then(|| self.saved()).flatten();
            }
        }
        stanza::write_iq_result(
            ctx.out,
            ctx.stanza.id,
            self.jid.as_str(),
            ctx.session.jid.as_str(),
        );
        changed.then(|| self.saved()).flatten()
    }

    /// The role of `session`'s occupant; `none` when it is not in the room.
    fn role_of(&self, session: &Session) -> Role {
        self.by_session(session.id)
            .and_then(|i| self.occupants.get(i))
            .map_or(Role::None, |o| o.role)
    }

    /// Answers a list request (§8.5, §9.2, §9.5, §9.8, §10.5, §10.8): admins and owners see
    /// affiliations (`none` is everyone else, so no list), moderators see roles.
    fn write_list(&self, ctx: &mut Ctx, listed: Listed) {
        let allowed = match listed {
            Listed::Affiliation(affiliation) => {
                affiliation != Affiliation::None
                    && self.affiliation(&ctx.session.jid.bare()) >= Affiliation::Admin
            }
            Listed::Role(_) => self.role_of(ctx.session) == Role::Moderator,
        };
        if !allowed {
            ctx.error(StanzaCondition::Forbidden);
            return;
        }
        let to = ctx.session.jid.as_str();
        stanza::write_iq_result_with(ctx.out, ctx.stanza.id, self.jid.as_str(), to, |out| {
            Element::new("query")
                .ns(NS_ADMIN)
                .children(out, |out| self.write_items(out, listed));
        });
    }

    /// The `<item/>`s of everyone holding the affiliation or role `listed`.
    fn write_items(&self, out: &mut String, listed: Listed) {
        match listed {
            Listed::Affiliation(affiliation) => {
                for (jid, _) in self.affiliations.iter().filter(|(_, a)| **a == affiliation) {
                    Element::new("item")
                        .attr("affiliation", affiliation.name())
                        .attr("jid", jid.as_str())
                        .empty(out);
                }
            }
            Listed::Role(role) => {
                for occupant in self.occupants.iter().filter(|o| o.role == role) {
                    Element::new("item")
                        .attr("role", role.name())
                        .attr("nick", &occupant.nick)
                        .attr("affiliation", self.affiliation(&occupant.jid).name())
                        .attr("jid", occupant.jid.as_str())
                        .empty(out);
                }
            }
        }
    }

    /// Kick, voice and moderator changes by nick (§8.2–§8.5, §9.6–§9.7).
    fn set_role(
        &mut self,
        server: &Server,
        RoleChange { nick, role, reason }: RoleChange,
        actor_affiliation: Affiliation,
        actor_role: Role,
    ) -> Result<(), StanzaCondition> {
        if actor_role != Role::Moderator {
            return Err(StanzaCondition::Forbidden);
        }
        let index = self.by_nick(nick).ok_or(StanzaCondition::ItemNotFound)?;
        let target = self
            .occupants
            .get(index)
            .ok_or(StanzaCondition::ItemNotFound)?;
        let target_affiliation = self.affiliation(&target.jid);
        // Nobody acts on an admin or owner unless they outrank them, and only admins and
        // owners hand out or take away the moderator role.
        if target_affiliation >= Affiliation::Admin && actor_affiliation <= target_affiliation {
            return Err(StanzaCondition::NotAllowed);
        }
        if (role == Role::Moderator || target.role == Role::Moderator)
            && actor_affiliation < Affiliation::Admin
        {
            return Err(StanzaCondition::NotAllowed);
        }
        if role == Role::None {
            let gone = self.occupants.remove(index);
            self.announce_removal(
                server,
                &gone,
                &Status {
                    unavailable: true,
                    codes: &[307],
                    reason,
                    ..Status::default()
                },
            );
        } else if let Some(target) = self.occupants.get_mut(index) {
            target.role = role;
            self.broadcast_presence(
                server,
                index,
                &Status {
                    reason,
                    ..Status::default()
                },
            );
        }
        Ok(())
    }

    /// Membership, bans and admin/owner grants by JID or nick (§9.1–§9.5, §10.3–§10.8).
    fn change_affiliation(
        &mut self,
        server: &Server,
        change: AffiliationChange,
        actor: &Jid,
        actor_affiliation: Affiliation,
    ) -> Result<(), StanzaCondition> {
        let AffiliationChange {
            target,
            affiliation,
            reason,
        } = change;
        if actor_affiliation < Affiliation::Admin {
            return Err(StanzaCondition::Forbidden);
        }
        let target = match target {
            Target::Jid(jid) => jid,
            Target::Nick(nick) => self
                .by_nick(nick)
                .and_then(|i| self.occupants.get(i))
                .ok_or(StanzaCondition::ItemNotFound)?
                .jid
                .clone(),
        };
        let current = self.affiliation(&target);
        if actor_affiliation < Affiliation::Owner
            && (current >= Affiliation::Admin || affiliation >= Affiliation::Admin)
        {
            return Err(StanzaCondition::NotAllowed);
        }
        let last_owner = || {
            let owners = self
                .affiliations
                .values()
                .filter(|a| **a == Affiliation::Owner);
            owners.count() == 1
        };
        if current == Affiliation::Owner && affiliation != Affiliation::Owner && last_owner() {
            // §10.7: a room always keeps an owner.
            return Err(StanzaCondition::Conflict);
        }
        // RFC 6120 §8.3.3.10 `not-allowed` (type cancel): the room's policy allows no
        // further entry, and asking again later will not change that until someone is
        // removed. `resource-constraint` (§8.3.3.18, type wait) would tell the client to retry.
        if affiliation != Affiliation::None && self.affiliations_full(server, &target) {
            return Err(StanzaCondition::NotAllowed);
        }
        if target == *actor && affiliation == Affiliation::Outcast {
            return Err(StanzaCondition::Conflict);
        }
        self.set_affiliation(target.clone(), affiliation);
        let code = if affiliation == Affiliation::Outcast {
            Some(301)
        } else if self.config.members_only && affiliation < Affiliation::Member {
            Some(321)
        } else {
            None
        };
        match code {
            Some(code) => {
                let codes = [code];
                let mut i = 0;
                while let Some(occupant) = self.occupants.get(i) {
                    if occupant.jid == target {
                        let gone = self.occupants.remove(i);
                        self.announce_removal(
                            server,
                            &gone,
                            &Status {
                                unavailable: true,
                                codes: &codes,
                                reason,
                                ..Status::default()
                            },
                        );
                    } else {
                        i += 1;
                    }
                }
            }
            None => {
                let role = self.default_role(affiliation);
                for i in 0..self.occupants.len() {
                    let Some(occupant) = self.occupants.get_mut(i) else {
                        continue;
                    };
                    if occupant.jid == target {
                        occupant.role = role;
                        self.broadcast_presence(
                            server,
                            i,
                            &Status {
                                reason,
                                ..Status::default()
                            },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// A session is gone: its occupant leaves if this was its last session.
    pub fn session_ended(&mut self, server: &Server, session: &Session) {
        if let Some(index) = self.by_session(session.id) {
            self.leave(server, index, session, None);
        }
    }

    // ----- persistence ----------------------------------------------------------------------

    /// The record to save after a change, for a persistent room.
    pub(super) fn saved(&self) -> Option<Persist> {
        self.config.persistent.then(|| Persist::Save(self.record()))
    }

    /// The stored form of a persistent room: configuration, affiliations, subject and vCard.
    pub fn record(&self) -> Vec<u8> {
        let c = &self.config;
        let mut xml = format!(
            "<room name='{}' desc='{}' public='{}' persistent='{}' members='{}' moderated='{}' \
             max='{}' anyone='{}' history='{}' subject_change='{}' archive='{}'",
            Esc(&c.name),
            Esc(&c.description),
            u8::from(c.public),
            u8::from(c.persistent),
            u8::from(c.members_only),
            u8::from(c.moderated),
            c.max_users,
            u8::from(c.whois_anyone),
            c.history_length,
            u8::from(c.change_subject),
            u8::from(c.archive),
        );
        if let Some(password) = &c.password {
            let _ = write!(xml, " password='{}'", crate::xml::EscAttr(password));
        }
        xml.push('>');
        for (jid, affiliation) in &self.affiliations {
            let _ = write!(
                xml,
                "<aff jid='{}' a='{}'/>",
                Esc(jid.as_str()),
                affiliation.name()
            );
        }
        if let Some((nick, text)) = &self.subject {
            let _ = write!(
                xml,
                "<subject nick='{}'>{}</subject>",
                crate::xml::EscAttr(nick),
                Esc(text)
            );
        }
        if let Some(vcard) = &self.vcard {
            xml.push_str(&vcard.xml);
        }
        xml.push_str("</room>");
        xml.into_bytes()
    }

    /// The stored form of the room's history; `None` when there is none to keep.
    pub(super) fn history_record(&self) -> Option<Vec<u8>> {
        (!self.history.is_empty()).then(|| history::encode(&self.history))
    }

    /// Puts back a stored history, bounded by the room's current settings; false when the
    /// record is damaged (the room then starts without history).
    pub(super) fn restore_history(&mut self, record: &[u8]) -> bool {
        let Some(restored) = history::decode(record) else {
            return false;
        };
        self.history = restored;
        self.trim_history();
        true
    }

    /// Reads back [`Room::record`]; `None` for a damaged record.
    pub fn from_record(jid: Jid, record: &[u8], defaults: RoomConfig) -> Option<Room> {
        let text = std::str::from_utf8(record).ok()?;
        let doc = roxmltree::Document::parse(text).ok()?;
        let root = doc.root_element();
        let attr = |name| root.attribute(name);
        let flag = |name| attr(name) == Some("1");
        let number = |name, default| attr(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        let config = RoomConfig {
            name: attr("name").unwrap_or_default().into(),
            description: attr("desc").unwrap_or_default().into(),
            public: flag("public"),
            persistent: true,
            members_only: flag("members"),
            moderated: flag("moderated"),
            password: attr("password").map(Into::into),
            max_users: number("max", defaults.max_users),
            whois_anyone: flag("anyone"),
            history_length: number("history", defaults.history_length),
            change_subject: flag("subject_change"),
            archive: flag("archive"),
        };
        let mut room = Room::new(jid, config);
        for child in root.children().filter(|c| c.is_element()) {
            match child.tag_name().name() {
                "aff" => {
                    let jid = Jid::parse(child.attribute("jid")?).ok()?;
                    let affiliation = Affiliation::parse(child.attribute("a")?)?;
                    room.set_affiliation(jid, affiliation);
                }
                "subject" => {
                    room.subject = Some((
                        child.attribute("nick").unwrap_or_default().into(),
                        child.text().unwrap_or_default().into(),
                    ));
                }
                // Records written before room avatars have none.
                "vCard" if child.has_tag_name((crate::vcard::NS, "vCard")) => {
                    let mut xml = String::new();
                    write_element(&mut xml, child, "", &[]);
                    room.vcard = super::vcard::RoomVcard::new(xml, child);
                }
                _ => {}
            }
        }
        Some(room)
    }
}

/// A `<reason/>` passed on from an invitation or decline, when it had one.
fn write_reason(out: &mut String, reason: Option<&str>) {
    if let Some(reason) = reason {
        Element::new("reason").text(out, reason);
    }
}

/// A presence's children as the room passes them on: the join element (which may hold the
/// room password) stays behind.
fn presence_children(presence: Node) -> String {
    let mut xml = String::new();
    for child in presence.children().filter(|c| c.is_element()) {
        if child.tag_name().namespace() != Some(NS_MUC) {
            write_element(&mut xml, child, NS_CLIENT, &[]);
        }
    }
    xml
}

/// The localpart of `jid` when it names an account on this server.
fn local_user<'j>(server: &Server, jid: &'j Jid) -> Option<&'j str> {
    jid.local()
        .filter(|local| jid.domain() == server.config().domain && account_exists(server, local))
}

/// A message from the room to a local user's bare JID, stored offline if nobody is online.
fn deliver_to_user(ctx: &mut Ctx, to: &Jid, xml: String) -> Deferred {
    let server = ctx.server;
    let Some(local) = local_user(server, to) else {
        ctx.error(StanzaCondition::ItemNotFound);
        return Deferred::None;
    };
    let target = server
        .router
        .borrow()
        .message_targets(&to.bare(), MessageType::Normal);
    match target {
        MessageTarget::Sessions(sessions) => {
            let xml: Rc<str> = xml.into();
            for session in &sessions {
                server.deliver(session, xml.clone(), true);
            }
            Deferred::None
        }
        MessageTarget::Offline => Deferred::StoreOffline(Pending::new(
            server,
            local,
            xml,
            ctx.stanza,
            ctx.session.jid.as_str(),
        )),
        MessageTarget::Drop | MessageTarget::Error(_) => Deferred::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(items: &str, ty: IqType) -> Result<AdminRequest<'static>, StanzaCondition> {
        // Leaked so the parsed request may borrow it: a test's few bytes.
        let xml = format!("<query xmlns='{NS_ADMIN}'>{items}</query>").leak();
        let doc = Box::leak(Box::new(roxmltree::Document::parse(xml).unwrap()));
        AdminRequest::parse(doc.root_element(), ty)
    }

    fn owner(payload: &str, ty: IqType) -> Result<OwnerRequest<'static>, StanzaError<'static>> {
        // Leaked so the parsed request may borrow it: a test's few bytes.
        let xml = format!("<query xmlns='{NS_OWNER}'>{payload}</query>").leak();
        let doc = Box::leak(Box::new(roxmltree::Document::parse(xml).unwrap()));
        OwnerRequest::parse(doc.root_element(), ty)
    }

    #[test]
    fn owner_get_asks_for_the_form() {
        assert_eq!(owner("", IqType::Get), Ok(OwnerRequest::GetConfig));
    }

    #[test]
    fn owner_destroy_carries_venue_and_reason() {
        let destroy = "<destroy jid='new@rooms'><reason>moved</reason></destroy>";
        assert_eq!(
            owner(destroy, IqType::Set),
            Ok(OwnerRequest::Destroy {
                venue: Some("new@rooms"),
                reason: Some("moved"),
            })
        );
        assert_eq!(
            owner("<destroy/>", IqType::Set),
            Ok(OwnerRequest::Destroy {
                venue: None,
                reason: None
            })
        );
    }

    #[test]
    fn owner_submit_and_cancel() {
        let submit = format!(
            "<x xmlns='{NS_DATA}' type='submit'><field var='muc#roomconfig_roomname'><value>n</value></field></x>"
        );
        let Ok(OwnerRequest::Configure(form)) = owner(&submit, IqType::Set) else {
            panic!("a submitted form configures");
        };
        let config = RoomConfig::new(10, 5);
        assert_eq!(config.apply(&form, 10).unwrap().name.as_ref(), "n");
        let cancel = format!("<x xmlns='{NS_DATA}' type='cancel'/>");
        assert_eq!(owner(&cancel, IqType::Set), Ok(OwnerRequest::Cancel));
    }

    #[test]
    fn owner_set_without_destroy_or_form_is_bad_request() {
        for payload in [
            String::new(),
            format!("<x xmlns='{NS_DATA}' type='form'/>"),
            format!("<x xmlns='{NS_DATA}'/>"),
            "<x xmlns='jabber:x:oob' type='submit'/>".to_owned(),
        ] {
            assert_eq!(
                owner(&payload, IqType::Set),
                Err(StanzaError::new(StanzaCondition::BadRequest)),
                "{payload}"
            );
        }
    }

    #[test]
    fn an_unacceptable_form_is_not_acceptable_with_the_reason() {
        let submit = format!(
            "<x xmlns='{NS_DATA}' type='submit'><field var='muc#roomconfig_nosuch'><value>1</value></field></x>"
        );
        assert_eq!(
            owner(&submit, IqType::Set),
            Err(StanzaError::new(StanzaCondition::NotAcceptable).with_text("unknown field"))
        );
    }

    #[test]
    fn admin_get_lists_an_affiliation_or_a_role() {
        assert_eq!(
            admin("<item affiliation='outcast'/>", IqType::Get),
            Ok(AdminRequest::List(Listed::Affiliation(
                Affiliation::Outcast
            )))
        );
        assert_eq!(
            admin("<item role='moderator'/>", IqType::Get),
            Ok(AdminRequest::List(Listed::Role(Role::Moderator)))
        );
        // An unknown affiliation falls back to the role beside it.
        assert_eq!(
            admin("<item affiliation='king' role='visitor'/>", IqType::Get),
            Ok(AdminRequest::List(Listed::Role(Role::Visitor)))
        );
    }

    #[test]
    fn admin_get_without_a_known_list_is_bad_request() {
        for items in [
            "",
            "<item/>",
            "<item role='king'/>",
            "<other affiliation='member'/>",
        ] {
            assert_eq!(
                admin(items, IqType::Get),
                Err(StanzaCondition::BadRequest),
                "{items}"
            );
        }
    }

    #[test]
    fn admin_set_changes_roles_by_nick() {
        assert_eq!(
            admin(
                "<item nick='ca' role='none'><reason>calm down</reason></item>",
                IqType::Set
            ),
            Ok(AdminRequest::Change(vec![AdminChange::Role(RoleChange {
                nick: "ca",
                role: Role::None,
                reason: Some("calm down"),
            })]))
        );
    }

    #[test]
    fn admin_set_changes_affiliations_by_jid_or_nick() {
        let bob = Jid::parse("bob@localhost").unwrap();
        assert_eq!(
            admin(
                "<item jid='bob@localhost/phone' nick='x' affiliation='admin'/>\
                 <item nick='ca' affiliation='outcast'/>",
                IqType::Set
            ),
            Ok(AdminRequest::Change(vec![
                AdminChange::Affiliation(AffiliationChange {
                    target: Target::Jid(bob),
                    affiliation: Affiliation::Admin,
                    reason: None,
                }),
                AdminChange::Affiliation(AffiliationChange {
                    target: Target::Nick("ca"),
                    affiliation: Affiliation::Outcast,
                    reason: None,
                }),
            ]))
        );
    }

    #[test]
    fn malformed_admin_items_are_bad_request() {
        for items in [
            "",
            "<item nick='ca'/>",
            "<item nick='ca' role='king'/>",
            "<item role='none'/>",
            "<item jid='a@h' affiliation='king'/>",
            "<item affiliation='member'/>",
            // One bad item refuses the whole request.
            "<item nick='ca' role='none'/><item nick='ca'/>",
        ] {
            assert_eq!(
                admin(items, IqType::Set),
                Err(StanzaCondition::BadRequest),
                "{items}"
            );
        }
    }

    #[test]
    fn an_admin_item_with_a_bad_jid_is_jid_malformed() {
        assert_eq!(
            admin("<item jid='@h' affiliation='member'/>", IqType::Set),
            Err(StanzaCondition::JidMalformed)
        );
    }

    #[test]
    fn affiliation_lists_parse() {
        let mut room = Room::new(
            Jid::parse("l@rooms.localhost").unwrap(),
            RoomConfig::new(10, 5),
        );
        room.set_affiliation(Jid::parse("a@localhost").unwrap(), Affiliation::Member);
        room.set_affiliation(Jid::parse("c@localhost").unwrap(), Affiliation::Owner);
        let mut out = String::new();
        Element::new("query")
            .ns(NS_ADMIN)
            .children(&mut out, |out| {
                room.write_items(out, Listed::Affiliation(Affiliation::Member));
            });
        let doc = roxmltree::Document::parse(&out).unwrap();
        let items: Vec<_> = doc
            .root_element()
            .children()
            .map(|i| (i.attribute("affiliation"), i.attribute("jid")))
            .collect();
        assert_eq!(items, [(Some("member"), Some("a@localhost"))]);
    }

    #[test]
    fn role_lists_parse() {
        let mut room = Room::new(
            Jid::parse("l@rooms.localhost").unwrap(),
            RoomConfig::new(10, 5),
        );
        let jid = Jid::parse("a@localhost").unwrap();
        room.set_affiliation(jid.clone(), Affiliation::Admin);
        room.occupants.push(Occupant {
            nick: "<al>".into(),
            jid,
            sessions: Vec::new(),
            role: Role::Moderator,
            presence: "".into(),
            allowance: BURST,
            filled: Instant::now(),
        });
        let mut out = String::new();
        Element::new("query")
            .ns(NS_ADMIN)
            .children(&mut out, |out| {
                room.write_items(out, Listed::Role(Role::Moderator));
                room.write_items(out, Listed::Role(Role::Visitor));
            });
        let doc = roxmltree::Document::parse(&out).unwrap();
        let item = doc.root_element().first_element_child().unwrap();
        assert_eq!(
            ["role", "nick", "affiliation", "jid"].map(|a| item.attribute(a)),
            [
                Some("moderator"),
                Some("<al>"),
                Some("admin"),
                Some("a@localhost")
            ]
        );
        assert_eq!(doc.root_element().children().count(), 1);
    }

    #[test]
    fn records_round_trip() {
        let jid = Jid::parse("den@rooms.localhost").unwrap();
        let mut config = RoomConfig::new(30, 5);
        config.name = "The <den>".into();
        config.persistent = true;
        config.members_only = true;
        config.password = Some("pa\tss'".into());
        let mut room = Room::new(jid.clone(), config.clone());
        room.set_affiliation(Jid::parse("a@localhost").unwrap(), Affiliation::Owner);
        room.set_affiliation(Jid::parse("b@localhost").unwrap(), Affiliation::Outcast);
        room.subject = Some(("al ice".into(), "news & more".into()));
        let card = "<vCard xmlns='vcard-temp'><FN>a &amp; b</FN><PHOTO><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard>";
        let doc = roxmltree::Document::parse(card).unwrap();
        room.vcard = super::super::vcard::RoomVcard::new(card.into(), doc.root_element());
        let back = Room::from_record(jid, &room.record(), RoomConfig::new(1, 1)).unwrap();
        assert_eq!(back.config, config);
        assert_eq!(back.affiliations, room.affiliations);
        assert_eq!(back.subject, room.subject);
        assert_eq!(back.vcard, room.vcard);
        let photo = back.vcard.and_then(|v| v.photo);
        assert_eq!(
            photo.as_deref(),
            Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
        );
        assert!(Room::from_record(back.jid.clone(), b"<room", config).is_none());
    }

    /// A record written before rooms had vCards still loads, without one.
    #[test]
    fn records_without_a_vcard_still_load() {
        let jid = Jid::parse("old@rooms.localhost").unwrap();
        let record =
            "<room name='Old' desc='' public='1' persistent='1' members='0' moderated='0' \
             max='20' anyone='0' history='5' subject_change='0' archive='0'>\
             <aff jid='a@localhost' a='owner'/><subject nick='a'>hi</subject></room>";
        let room = Room::from_record(jid, record.as_bytes(), RoomConfig::new(1, 1)).unwrap();
        assert_eq!(room.config.name.as_ref(), "Old");
        assert!(room.is_owner(&Jid::parse("a@localhost").unwrap()));
        assert_eq!(room.vcard, None);
    }

    #[test]
    fn history_is_bounded_by_count_and_bytes() {
        let jid = Jid::parse("h@rooms.localhost").unwrap();
        let mut room = Room::new(jid, RoomConfig::new(10, 3));
        let past = |size: usize| Past {
            nick: "n".into(),
            at: 0,
            id: None,
            inner: "x".repeat(size).into(),
        };
        for _ in 0..5 {
            room.history.push_back(past(10));
            room.trim_history();
        }
        assert_eq!(room.history.len(), 3);
        room.history.push_back(past(MAX_HISTORY_BYTES - 15));
        room.trim_history();
        assert_eq!(
            room.history.len(),
            2,
            "one small message fits beside the big one"
        );
        room.history.push_back(past(MAX_HISTORY_BYTES));
        room.trim_history();
        assert_eq!(room.history.len(), 1);
    }

    #[test]
    fn stored_history_comes_back_bounded_by_the_room() {
        let jid = Jid::parse("h@rooms.localhost").unwrap();
        let mut room = Room::new(jid.clone(), RoomConfig::new(10, 5));
        assert_eq!(room.history_record(), None, "nothing to keep");
        for at in 0..5 {
            room.history.push_back(Past {
                nick: "n".into(),
                at,
                id: None,
                inner: format!("<body>{at}</body>").into(),
            });
        }
        let record = room.history_record().unwrap();
        let mut smaller = Room::new(jid, RoomConfig::new(10, 3));
        assert!(smaller.restore_history(&record));
        let kept: Vec<u64> = smaller.history.iter().map(|p| p.at).collect();
        assert_eq!(kept, [2, 3, 4], "the newest, oldest first");
        assert!(!smaller.restore_history(b"\x07damaged"));
        assert_eq!(smaller.history.len(), 3, "a damaged record changes nothing");
    }

    #[test]
    fn a_room_message_parses_with_its_delay() {
        let room = Room::new(
            Jid::parse("m@rooms.localhost").unwrap(),
            RoomConfig::new(10, 5),
        );
        let inner = "<body xmlns='jabber:client'>a &amp; b</body>";
        let xml = room.message_xml("n'1", "a@localhost/r", Some("i<"), inner, Some(60));
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let message = doc.root_element();
        assert_eq!(
            ["type", "from", "to", "id"].map(|a| message.attribute(a)),
            [
                Some("groupchat"),
                Some("m@rooms.localhost/n'1"),
                Some("a@localhost/r"),
                Some("i<")
            ]
        );
        assert_eq!(
            stanza::child_text(message, "body", NS_CLIENT),
            Some("a & b")
        );
        let delay = stanza::child(message, "delay", NS_DELAY).expect("delay");
        assert_eq!(
            (delay.attribute("from"), delay.attribute("stamp")),
            (Some("m@rooms.localhost"), Some("1970-01-01T00:01:00Z"))
        );
    }

    #[test]
    fn room_info_parses_with_its_form() {
        let mut config = RoomConfig::new(10, 5);
        config.name = "<Den>".into();
        config.archive = true;
        let room = Room::new(Jid::parse("d@rooms.localhost").unwrap(), config);
        let mut out = String::new();
        Element::new("query")
            .ns(crate::disco::NS_INFO)
            .children(&mut out, |out| room.write_info(out));
        let doc = roxmltree::Document::parse(&out).unwrap();
        let query = doc.root_element();
        let identity = stanza::child(query, "identity", crate::disco::NS_INFO).expect("identity");
        assert_eq!(identity.attribute("name"), Some("<Den>"));
        let features: Vec<_> = query
            .children()
            .filter_map(|c| c.attribute("var"))
            .collect();
        assert!(features.contains(&crate::mam::NS), "{features:?}");
        let form = stanza::child(query, "x", NS_DATA).expect("form");
        let name = form
            .children()
            .find(|f| f.attribute("var") == Some("muc#roomconfig_roomname"))
            .expect("name");
        assert_eq!(stanza::child_text(name, "value", NS_DATA), Some("<Den>"));
    }

    fn user_message(x: &str) -> Result<UserMessage<'static>, StanzaCondition> {
        // Leaked so the parsed message may borrow it: a test's few bytes.
        let xml = format!("<x xmlns='{NS_USER}'>{x}</x>").leak();
        let doc = Box::leak(Box::new(roxmltree::Document::parse(xml).unwrap()));
        UserMessage::parse(doc.root_element())
    }

    #[test]
    fn an_invitation_names_a_bare_invitee() {
        assert_eq!(
            user_message("<invite to='b@localhost/phone'><reason>come</reason></invite>"),
            Ok(UserMessage::Invite {
                invitee: Jid::parse("b@localhost").unwrap(),
                reason: Some("come"),
            })
        );
    }

    #[test]
    fn a_decline_goes_back_to_the_inviter() {
        assert_eq!(
            user_message("<invite to='c@localhost'/><decline to='a@localhost/r'/>"),
            Ok(UserMessage::Decline {
                inviter: Jid::parse("a@localhost/r").unwrap(),
                reason: None,
            })
        );
    }

    #[test]
    fn invitations_without_a_valid_to_are_refused() {
        assert_eq!(user_message(""), Err(StanzaCondition::BadRequest));
        for x in [
            "<invite/>",
            "<invite to='@x'/>",
            "<decline/>",
            "<decline to=''/>",
        ] {
            assert_eq!(user_message(x), Err(StanzaCondition::JidMalformed), "{x}");
        }
    }

    #[test]
    fn history_requests_read_numbers_and_dates() {
        let parse = |history: &str| {
            let xml = format!("<x xmlns='{NS_MUC}'>{history}</x>");
            let doc = roxmltree::Document::parse(&xml).unwrap();
            HistoryRequest::parse(Some(doc.root_element()))
        };
        assert_eq!(
            parse("<history maxstanzas=' 5 ' maxchars='0' seconds='60' since='1970-01-01T00:01:00Z'/>"),
            HistoryRequest {
                max_stanzas: Some(5),
                max_chars: Some(0),
                seconds: Some(60),
                since: Some(60),
            }
        );
        assert_eq!(
            parse("<history maxstanzas='-1' since='yesterday'/>"),
            HistoryRequest::default()
        );
        assert_eq!(parse(""), HistoryRequest::default());
        assert_eq!(HistoryRequest::parse(None), HistoryRequest::default());
    }

    #[test]
    fn the_allowance_refills() {
        let mut occupant = Occupant {
            nick: "n".into(),
            jid: Jid::parse("a@localhost").unwrap(),
            sessions: Vec::new(),
            role: Role::Participant,
            presence: "".into(),
            allowance: BURST,
            filled: Instant::now(),
        };
        let sent = (0..100).take_while(|_| occupant.take_message()).count();
        assert_eq!(sent, BURST as usize);
        occupant.filled -= std::time::Duration::from_secs(1);
        assert!(occupant.take_message());
    }
}
