//! Room steps shared by the chat-room tests (XEP-0045).

use super::*;

/// The room service of the test domain.
pub const MUC: &str = "rooms.localhost";

/// Submits `room`'s configuration form with `fields`; expects success.
pub fn configure(client: &mut Client, room: &str, fields: &str) {
    client.send(&format!(
        "<iq type='set' id='cfg' to='{room}@{MUC}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>"
    ));
    client.expect_iq_result("cfg");
}

/// One `muc#roomconfig_` field of the configuration form.
pub fn field(var: &str, value: &str) -> String {
    format!("<field var='muc#roomconfig_{var}'><value>{value}</value></field>")
}
