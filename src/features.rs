//! The features this build runs, in the order their hooks run and their stream features
//! are offered. The one list a new XEP adds its module to; the core only walks it (see
//! [`crate::feature`]).

use crate::feature::Feature;
use crate::{
    blocking, carbons, component, csi, disco, extdisco, last, mam, muc, offline, pep, ping,
    presence, privacy, private, proxy, push, register, roster, s2s, sm, stun, subscription, upload,
    vcard, version,
};

pub const ALL: &[&Feature] = &[
    // Presence first: a session's end is broadcast before rooms, lists and push forget it.
    &presence::FEATURE,
    &roster::FEATURE,
    &subscription::FEATURE,
    &csi::FEATURE,
    &pep::FEATURE,
    &pep::caps::FEATURE,
    &disco::FEATURE,
    &last::FEATURE,
    &ping::FEATURE,
    &version::FEATURE,
    &offline::FEATURE,
    &blocking::FEATURE,
    &privacy::FEATURE,
    &register::FEATURE,
    &vcard::FEATURE,
    &carbons::FEATURE,
    &extdisco::FEATURE,
    &private::FEATURE,
    &mam::FEATURE,
    &push::FEATURE,
    &sm::FEATURE,
    &muc::FEATURE,
    &upload::FEATURE,
    &proxy::FEATURE,
    &stun::FEATURE,
    // External components before federation: a component's domain is offered to it first.
    &component::FEATURE,
    // Federation: its listeners, its start and stop (the core reaches it as `send_remote`).
    &s2s::FEATURE,
];
