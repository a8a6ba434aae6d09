//! A room's configuration (XEP-0045 §10.2) and its `jabber:x:data` form: owns the field
//! names, their defaults and the checks on submitted values. It never touches occupants or
//! the store; the room applies a parsed configuration.

use crate::xml::Esc;
use roxmltree::Node;
use std::fmt::Write;

pub const NS_DATA: &str = "jabber:x:data";
const FORM_TYPE: &str = "http://jabber.org/protocol/muc#roomconfig";
/// Ceiling for `historylength`: history is kept in memory, per room.
pub const MAX_HISTORY: u32 = 200;

/// Everything an owner can configure. Compact: one allocation per text field at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    pub name: Box<str>,
    pub description: Box<str>,
    pub public: bool,
    pub persistent: bool,
    pub members_only: bool,
    pub moderated: bool,
    /// `Some` when the room is password-protected.
    pub password: Option<Box<str>>,
    pub max_users: u32,
    /// Real JIDs visible to every occupant (non-anonymous), not just moderators.
    pub whois_anyone: bool,
    pub history_length: u32,
    /// Participants, not only moderators, may change the subject.
    pub change_subject: bool,
    /// Groupchat messages go into the room's archive (XEP-0313 §3.3.2).
    pub archive: bool,
}

impl RoomConfig {
    pub fn new(max_users: u32, history_length: u32) -> RoomConfig {
        RoomConfig {
            name: "".into(),
            description: "".into(),
            public: true,
            persistent: false,
            members_only: false,
            moderated: false,
            password: None,
            max_users,
            whois_anyone: false,
            history_length,
            change_subject: true,
            archive: false,
        }
    }

    /// The `muc#roomconfig` form with current values (§10.2, owner `get`).
    pub fn write_form(&self, out: &mut String) {
        let _ = write!(
            out,
            "<x xmlns='{NS_DATA}' type='form'><title>Room configuration</title>\
             <field var='FORM_TYPE' type='hidden'><value>{FORM_TYPE}</value></field>"
        );
        let text = |out: &mut String, var: &str, label: &str, value: &str| {
            let _ = write!(
                out,
                "<field var='muc#roomconfig_{var}' type='text-single' label='{label}'><value>{}</value></field>",
                Esc(value)
            );
        };
        let flag = |out: &mut String, var: &str, label: &str, value: bool| {
            let _ = write!(
                out,
                "<field var='muc#roomconfig_{var}' type='boolean' label='{label}'><value>{}</value></field>",
                u8::from(value)
            );
        };
        text(out, "roomname", "Name", &self.name);
        text(out, "roomdesc", "Description", &self.description);
        flag(out, "publicroom", "Listed in the directory", self.public);
        flag(out, "persistentroom", "Persistent", self.persistent);
        flag(out, "membersonly", "Members only", self.members_only);
        flag(out, "moderatedroom", "Moderated", self.moderated);
        flag(
            out,
            "passwordprotectedroom",
            "Password protected",
            self.password.is_some(),
        );
        let _ = write!(
            out,
            "<field var='muc#roomconfig_roomsecret' type='text-private' label='Password'><value>{}</value></field>",
            Esc(self.password.as_deref().unwrap_or_default())
        );
        text(
            out,
            "maxusers",
            "Maximum occupants",
            &self.max_users.to_string(),
        );
        let _ =
            write!(
            out,
            "<field var='muc#roomconfig_whois' type='list-single' label='Who may see real JIDs'>\
             <value>{}</value><option><value>moderators</value></option>\
             <option><value>anyone</value></option></field>",
            if self.whois_anyone { "anyone" } else { "moderators" }
        );
        text(
            out,
            "historylength",
            "Messages of history",
            &self.history_length.to_string(),
        );
        flag(
            out,
            "changesubject",
            "Occupants may change the subject",
            self.change_subject,
        );
        flag(out, "enablearchiving", "Archive messages", self.archive);
        out.push_str("</x>");
    }

    /// Applies a submitted form to a copy of this configuration. `max_users` is the service
    /// ceiling. Unknown fields and bad values make the whole submission fail (§10.2: the
    /// service returns `<not-acceptable/>`) so an owner never gets half a configuration.
    pub fn apply(&self, form: Node, max_users: u32) -> Result<RoomConfig, &'static str> {
        let mut new = self.clone();
        let mut secret = None;
        let mut protected = None;
        for field in form
            .children()
            .filter(|c| c.has_tag_name((NS_DATA, "field")))
        {
            let var = field.attribute("var").unwrap_or_default();
            let value = field
                .children()
                .find(|c| c.has_tag_name((NS_DATA, "value")))
                .and_then(|v| v.text())
                .unwrap_or_default();
            let flag = || match value {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err("a boolean field holds neither 0 nor 1"),
            };
            let number = || value.trim().parse::<u32>().map_err(|_| "not a number");
            match var.strip_prefix("muc#roomconfig_").unwrap_or(var) {
                "FORM_TYPE" if value == FORM_TYPE => {}
                "FORM_TYPE" => return Err("wrong FORM_TYPE"),
                "roomname" => new.name = value.into(),
                "roomdesc" => new.description = value.into(),
                "publicroom" => new.public = flag()?,
                "persistentroom" => new.persistent = flag()?,
                "membersonly" => new.members_only = flag()?,
                "moderatedroom" => new.moderated = flag()?,
                "passwordprotectedroom" => protected = Some(flag()?),
                "roomsecret" => secret = Some(value),
                "maxusers" => {
                    new.max_users = match value {
                        "" | "none" => max_users,
                        _ => number()?,
                    };
                    if new.max_users == 0 || new.max_users > max_users {
                        return Err("maxusers is out of range");
                    }
                }
                "whois" => {
                    new.whois_anyone = match value {
                        "anyone" => true,
                        "moderators" => false,
                        _ => return Err("whois is neither moderators nor anyone"),
                    }
                }
                "historylength" | "muc#maxhistoryfetch" => {
                    new.history_length = number()?;
                    if new.history_length > MAX_HISTORY {
                        return Err("historylength is out of range");
                    }
                }
                "changesubject" => new.change_subject = flag()?,
                "enablearchiving" => new.archive = flag()?,
                _ => return Err("unknown field"),
            }
        }
        match (protected, secret) {
            (Some(false), _) => new.password = None,
            (_, Some(secret)) if !secret.is_empty() => new.password = Some(secret.into()),
            (Some(true), _) if new.password.is_none() => {
                return Err("password protection without a password")
            }
            _ => {}
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(config: &RoomConfig, fields: &str) -> Result<RoomConfig, &'static str> {
        let xml = format!("<x xmlns='{NS_DATA}' type='submit'>{fields}</x>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        config.apply(doc.root_element(), 100)
    }

    fn field(var: &str, value: &str) -> String {
        format!("<field var='{var}'><value>{value}</value></field>")
    }

    #[test]
    fn the_form_round_trips_through_apply() {
        let mut config = RoomConfig::new(100, 20);
        config.name = "Kitchen <& co>".into();
        config.password = Some("s3cret".into());
        config.members_only = true;
        config.whois_anyone = true;
        config.archive = true;
        let mut form = String::new();
        config.write_form(&mut form);
        let doc = roxmltree::Document::parse(&form).unwrap();
        assert_eq!(
            RoomConfig::new(100, 20).apply(doc.root_element(), 100),
            Ok(config)
        );
    }

    #[test]
    fn bad_submissions_are_refused_whole() {
        let config = RoomConfig::new(100, 20);
        assert!(apply(&config, &field("muc#roomconfig_nosuch", "1")).is_err());
        assert!(apply(&config, &field("muc#roomconfig_publicroom", "maybe")).is_err());
        assert!(apply(&config, &field("muc#roomconfig_maxusers", "101")).is_err());
        assert!(apply(&config, &field("muc#roomconfig_historylength", "201")).is_err());
        assert!(apply(&config, &field("muc#roomconfig_passwordprotectedroom", "1")).is_err());
        let secret = field("muc#roomconfig_passwordprotectedroom", "1")
            + &field("muc#roomconfig_roomsecret", "pw");
        assert_eq!(
            apply(&config, &secret).unwrap().password.as_deref(),
            Some("pw")
        );
        assert_eq!(apply(&config, "").unwrap(), config);
    }
}
