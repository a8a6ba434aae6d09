//! A room's configuration (XEP-0045 §10.2) and its `jabber:x:data` form: owns the field
//! names, their defaults and the checks on submitted values. It never touches occupants or
//! the store; the room applies a parsed configuration.

use crate::xml::build::Element;
use roxmltree::Node;

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
        let max_users = self.max_users.to_string();
        let history_length = self.history_length.to_string();
        let whois = if self.whois_anyone {
            "anyone"
        } else {
            "moderators"
        };
        Element::new("x")
            .ns(NS_DATA)
            .attr("type", "form")
            .children(out, |out| {
                Element::new("title").text(out, "Room configuration");
                Element::new("field")
                    .attr("var", "FORM_TYPE")
                    .attr("type", "hidden")
                    .children(out, |out| value(out, FORM_TYPE));
                let text = |out: &mut String, var, label, current| {
                    field(var, "text-single", label).children(out, |out| value(out, current));
                };
                let flag = |out: &mut String, var, label, current: bool| {
                    let current = if current { "1" } else { "0" };
                    field(var, "boolean", label).children(out, |out| value(out, current));
                };
                text(out, "muc#roomconfig_roomname", "Name", &self.name);
                text(
                    out,
                    "muc#roomconfig_roomdesc",
                    "Description",
                    &self.description,
                );
                flag(
                    out,
                    "muc#roomconfig_publicroom",
                    "Listed in the directory",
                    self.public,
                );
                flag(
                    out,
                    "muc#roomconfig_persistentroom",
                    "Persistent",
                    self.persistent,
                );
                flag(
                    out,
                    "muc#roomconfig_membersonly",
                    "Members only",
                    self.members_only,
                );
                flag(
                    out,
                    "muc#roomconfig_moderatedroom",
                    "Moderated",
                    self.moderated,
                );
                flag(
                    out,
                    "muc#roomconfig_passwordprotectedroom",
                    "Password protected",
                    self.password.is_some(),
                );
                field("muc#roomconfig_roomsecret", "text-private", "Password").children(
                    out,
                    |out| {
                        value(out, self.password.as_deref().unwrap_or_default());
                    },
                );
                text(
                    out,
                    "muc#roomconfig_maxusers",
                    "Maximum occupants",
                    &max_users,
                );
                field(
                    "muc#roomconfig_whois",
                    "list-single",
                    "Who may see real JIDs",
                )
                .children(out, |out| {
                    value(out, whois);
                    for option in ["moderators", "anyone"] {
                        Element::new("option").children(out, |out| value(out, option));
                    }
                });
                text(
                    out,
                    "muc#roomconfig_historylength",
                    "Messages of history",
                    &history_length,
                );
                flag(
                    out,
                    "muc#roomconfig_changesubject",
                    "Occupants may change the subject",
                    self.change_subject,
                );
                flag(
                    out,
                    "muc#roomconfig_enablearchiving",
                    "Archive messages",
                    self.archive,
                );
            });
    }

    /// Applies a submitted form to a copy of this configuration. `max_users` is the service
    /// ceiling. A value out of range fails the whole submission (§10.2: the service returns
    /// `<not-acceptable/>`) so an owner never gets half a configuration.
    pub fn apply(&self, form: &ConfigForm, max_users: u32) -> Result<RoomConfig, &'static str> {
        let mut new = self.clone();
        let set = |field: &mut bool, value: Option<bool>| {
            if let Some(value) = value {
                *field = value;
            }
        };
        if let Some(name) = form.name {
            new.name = name.into();
        }
        if let Some(description) = form.description {
            new.description = description.into();
        }
        set(&mut new.public, form.public);
        set(&mut new.persistent, form.persistent);
        set(&mut new.members_only, form.members_only);
        set(&mut new.moderated, form.moderated);
        set(&mut new.whois_anyone, form.whois_anyone);
        set(&mut new.change_subject, form.change_subject);
        set(&mut new.archive, form.archive);
        if let Some(wanted) = form.max_users {
            new.max_users = wanted.unwrap_or(max_users);
            if new.max_users > max_users {
                return Err("maxusers is out of range");
            }
        }
        if let Some(history_length) = form.history_length {
            new.history_length = history_length;
        }
        match (form.protected, form.secret) {
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

/// A `<field/>` of the configuration form.
fn field<'a>(var: &'a str, ty: &'a str, label: &'a str) -> Element<'a> {
    Element::new("field")
        .attr("var", var)
        .attr("type", ty)
        .attr("label", label)
}

fn value(out: &mut String, text: &str) {
    Element::new("value").text(out, text);
}

/// A submitted `muc#roomconfig` form (§10.2): the fields it sets, each checked on its own.
/// What also depends on the room (a protected room's existing password) or the service
/// (the `maxusers` ceiling) is checked by [`RoomConfig::apply`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigForm<'a> {
    name: Option<&'a str>,
    description: Option<&'a str>,
    public: Option<bool>,
    persistent: Option<bool>,
    members_only: Option<bool>,
    moderated: Option<bool>,
    protected: Option<bool>,
    secret: Option<&'a str>,
    /// `Some(None)`: as many as the service allows (`""` or `none`).
    max_users: Option<Option<u32>>,
    whois_anyone: Option<bool>,
    history_length: Option<u32>,
    change_subject: Option<bool>,
    archive: Option<bool>,
}

impl<'a> ConfigForm<'a> {
    /// Unknown fields and bad values refuse the whole form, with the reason (the room
    /// answers `not-acceptable` with it as text). A field given twice counts as given last.
    pub fn parse(form: Node<'a, '_>) -> Result<ConfigForm<'a>, &'static str> {
        let mut parsed = ConfigForm::default();
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
                "1" | "true" => Ok(Some(true)),
                "0" | "false" => Ok(Some(false)),
                _ => Err("a boolean field holds neither 0 nor 1"),
            };
            let number = || value.trim().parse::<u32>().map_err(|_| "not a number");
            match var.strip_prefix("muc#roomconfig_").unwrap_or(var) {
                "FORM_TYPE" if value == FORM_TYPE => {}
                "FORM_TYPE" => return Err("wrong FORM_TYPE"),
                "roomname" => parsed.name = Some(value),
                "roomdesc" => parsed.description = Some(value),
                "publicroom" => parsed.public = flag()?,
                "persistentroom" => parsed.persistent = flag()?,
                "membersonly" => parsed.members_only = flag()?,
                "moderatedroom" => parsed.moderated = flag()?,
                "passwordprotectedroom" => parsed.protected = flag()?,
                "roomsecret" => parsed.secret = Some(value),
                "maxusers" => {
                    let wanted = match value {
                        "" | "none" => None,
                        _ => Some(number()?),
                    };
                    if wanted == Some(0) {
                        return Err("maxusers is out of range");
                    }
                    parsed.max_users = Some(wanted);
                }
                "whois" => {
                    parsed.whois_anyone = match value {
                        "anyone" => Some(true),
                        "moderators" => Some(false),
                        _ => return Err("whois is neither moderators nor anyone"),
                    }
                }
                "historylength" | "muc#maxhistoryfetch" => {
                    let length = number()?;
                    if length > MAX_HISTORY {
                        return Err("historylength is out of range");
                    }
                    parsed.history_length = Some(length);
                }
                "changesubject" => parsed.change_subject = flag()?,
                "enablearchiving" => parsed.archive = flag()?,
                _ => return Err("unknown field"),
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(config: &RoomConfig, fields: &str) -> Result<RoomConfig, &'static str> {
        let xml = format!("<x xmlns='{NS_DATA}' type='submit'>{fields}</x>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        config.apply(&ConfigForm::parse(doc.root_element())?, 100)
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
        let form = ConfigForm::parse(doc.root_element()).unwrap();
        assert_eq!(RoomConfig::new(100, 20).apply(&form, 100), Ok(config));
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

    fn form(fields: &str) -> Result<ConfigForm<'static>, &'static str> {
        // Leaked so the parsed form may borrow it: a test's few bytes.
        let xml = format!("<x xmlns='{NS_DATA}' type='submit'>{fields}</x>").leak();
        let doc = Box::leak(Box::new(roxmltree::Document::parse(xml).unwrap()));
        ConfigForm::parse(doc.root_element())
    }

    #[test]
    fn each_field_parses_to_its_value() {
        let fields = [
            field("FORM_TYPE", FORM_TYPE),
            field("muc#roomconfig_roomname", "Den"),
            field("muc#roomconfig_roomdesc", ""),
            field("muc#roomconfig_publicroom", "false"),
            field("muc#roomconfig_persistentroom", "true"),
            field("muc#roomconfig_membersonly", "1"),
            field("muc#roomconfig_moderatedroom", "0"),
            field("muc#roomconfig_passwordprotectedroom", "1"),
            field("muc#roomconfig_roomsecret", "pw"),
            field("muc#roomconfig_maxusers", " 7 "),
            field("muc#roomconfig_whois", "anyone"),
            field("muc#maxhistoryfetch", "9"),
            field("muc#roomconfig_changesubject", "0"),
            field("muc#roomconfig_enablearchiving", "1"),
        ]
        .concat();
        assert_eq!(
            form(&fields),
            Ok(ConfigForm {
                name: Some("Den"),
                description: Some(""),
                public: Some(false),
                persistent: Some(true),
                members_only: Some(true),
                moderated: Some(false),
                protected: Some(true),
                secret: Some("pw"),
                max_users: Some(Some(7)),
                whois_anyone: Some(true),
                history_length: Some(9),
                change_subject: Some(false),
                archive: Some(true),
            })
        );
        assert_eq!(form(""), Ok(ConfigForm::default()));
        let unlimited = form(&field("muc#roomconfig_maxusers", "none")).unwrap();
        assert_eq!(unlimited.max_users, Some(None));
    }

    #[test]
    fn bad_fields_are_refused_with_the_reason() {
        for (var, value, why) in [
            ("FORM_TYPE", "urn:other", "wrong FORM_TYPE"),
            ("muc#roomconfig_nosuch", "1", "unknown field"),
            (
                "muc#roomconfig_publicroom",
                "maybe",
                "a boolean field holds neither 0 nor 1",
            ),
            ("muc#roomconfig_maxusers", "many", "not a number"),
            ("muc#roomconfig_maxusers", "0", "maxusers is out of range"),
            (
                "muc#roomconfig_whois",
                "everyone",
                "whois is neither moderators nor anyone",
            ),
            (
                "muc#roomconfig_historylength",
                "201",
                "historylength is out of range",
            ),
        ] {
            assert_eq!(form(&field(var, value)), Err(why), "{var}={value}");
        }
    }

    #[test]
    fn the_form_is_a_data_form_with_typed_fields() {
        let mut out = String::new();
        RoomConfig::new(100, 20).write_form(&mut out);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let x = doc.root_element();
        assert_eq!(
            (x.tag_name().namespace(), x.attribute("type")),
            (Some(NS_DATA), Some("form"))
        );
        let whois = x
            .children()
            .find(|f| f.attribute("var") == Some("muc#roomconfig_whois"))
            .expect("whois");
        assert_eq!(whois.attribute("type"), Some("list-single"));
        let options: Vec<_> = whois
            .children()
            .filter(|c| c.has_tag_name((NS_DATA, "option")))
            .map(|o| o.first_element_child().and_then(|v| v.text()))
            .collect();
        assert_eq!(options, [Some("moderators"), Some("anyone")]);
    }
}
