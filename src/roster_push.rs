//! Roster pushes (RFC 6121 §2.1.6): an item as the client sees it, and the push of a changed
//! item, with its version (XEP-0237), to every interested resource of the user (those that
//! asked for the roster). Both the roster's own sets ([`crate::roster`]) and subscription
//! changes ([`crate::subscription`]) send them; this module changes nothing.

use crate::jid::Jid;
use crate::server::Server;
use crate::store::Stored;
use crate::xml::build::Element;

pub const NS: &str = "jabber:iq:roster";

/// One `<item/>` as RFC 6121 §2.1.2 describes it.
pub(crate) fn write_item(out: &mut String, stored: &Stored) {
    let item = &stored.item;
    let element = Element::new("item").attr("jid", &item.jid);
    if stored.removed {
        element.attr("subscription", "remove").empty(out);
        return;
    }
    let subscription = match (item.to, item.from) {
        (false, false) => "none",
        (true, false) => "to",
        (false, true) => "from",
        (true, true) => "both",
    };
    let element = element
        .attr_opt("name", item.name.as_deref())
        .attr("subscription", subscription)
        .attr_opt("ask", item.ask.then_some("subscribe"))
        .attr_opt("approved", item.approved.then_some("true"));
    if item.groups.is_empty() {
        element.empty(out);
        return;
    }
    element.children(out, |out| {
        for group in &item.groups {
            Element::new("group").text(out, group);
        }
    });
}

/// A roster push (RFC 6121 §2.1.6) of one item to `to`, carrying its version (XEP-0237).
pub(crate) fn write_push(out: &mut String, id: &str, to: &Jid, stored: &Stored) {
    let ver = stored.ver.to_string();
    Element::new("iq")
        .attr("type", "set")
        .attr("id", id)
        .attr("to", to.as_str())
        .children(out, |out| {
            Element::new("query")
                .ns(NS)
                .attr("ver", &ver)
                .children(out, |out| write_item(out, stored));
        });
}

/// A roster push (RFC 6121 §2.1.6) to every interested resource of `user`.
pub fn push(server: &Server, user: &str, stored: &Stored) {
    let router = server.router.borrow();
    for session in router.resources(user).iter().filter(|s| s.interested.get()) {
        let mut xml = String::new();
        write_push(&mut xml, &push_id(server), &session.jid, stored);
        server.deliver(session, xml.into(), false);
    }
}

pub(crate) fn push_id(server: &Server) -> String {
    format!("push{}", server.next_id())
}
