//! External components (XEP-0114): a separate program (a gateway such as biboumi, a bridge,
//! a bot) connects to the component port, proves the shared secret of a domain named in
//! `[[components]]`, and from then on that domain is its own: everything addressed to the
//! domain or a JID in it goes to the component's stream, and the component may send from
//! any JID in it and from nowhere else. To local users a component's entities are like
//! another server's: remote [`Session`]s whose mailbox is the component's stream, reached
//! through [`Server::send_remote`], so presence, subscriptions and rosters work toward them
//! as toward any contact. While a configured component is not connected, messages and iq
//! requests to it bounce with `service-unavailable` and presence is dropped: nothing waits.
//! It never lets a component speak for a domain not its own.

mod accept;

use crate::feature::{Feature, ServerItem, Starter, State};
use crate::jid::Jid;
use crate::route::bounce;
use crate::router::{Hold, Mailbox};
use crate::server::Server;
use crate::stanza::{StanzaCondition, StreamCondition};
use log::info;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The component protocol's stream namespace (XEP-0114 §3, the server accepting).
pub const NS_ACCEPT: &str = "jabber:component:accept";

/// The components' declaration: their port (when `[[components]]` names any), the route to
/// their domains, and their entries in the server's disco#items.
pub const FEATURE: Feature = Feature {
    name: "component",
    state: Some(crate::feature::init::<Components>),
    listen: Some(listen),
    server_items: Some(items),
    ..Feature::NONE
};

/// The components' state on this server.
pub fn components(server: &Server) -> Rc<Components> {
    server.state::<Components>()
}

/// The components connected now.
#[derive(Default)]
pub struct Components {
    /// By domain: the stream that serves it.
    connected: RefCell<BTreeMap<Box<str>, Connected>>,
}

struct Connected {
    mailbox: Rc<Mailbox>,
    /// The name of the identity it reported (disco#info), shown in the server's items.
    name: Option<Box<str>>,
}

impl State for Components {
    fn new(_: &crate::config::Config, _: &crate::store::Store) -> Components {
        Components::default()
    }
}

impl Components {
    /// Routes `domain` to the stream whose mailbox is `mailbox`. A domain already connected
    /// is refused, or with `replace` its stream is closed (`conflict`) and this one takes
    /// over.
    fn connect(&self, domain: &str, mailbox: &Rc<Mailbox>, replace: bool) -> bool {
        let mut connected = self.connected.borrow_mut();
        if let Some(old) = connected.get(domain) {
            if !replace {
                return false;
            }
            old.mailbox.close(StreamCondition::Conflict);
        }
        let entry = Connected {
            mailbox: mailbox.clone(),
            name: None,
        };
        connected.insert(domain.into(), entry);
        true
    }

    /// The stream with `mailbox` ended: its domain is no longer routed to it (unless
    /// another stream replaced it already).
    fn disconnected(&self, domain: &str, mailbox: &Rc<Mailbox>) {
        let mut connected = self.connected.borrow_mut();
        if connected
            .get(domain)
            .is_some_and(|c| Rc::ptr_eq(&c.mailbox, mailbox))
        {
            connected.remove(domain);
        }
    }

    fn set_name(&self, domain: &str, mailbox: &Rc<Mailbox>, name: &str) {
        if let Some(entry) = self.connected.borrow_mut().get_mut(domain) {
            if Rc::ptr_eq(&entry.mailbox, mailbox) {
                entry.name = Some(name.into());
            }
        }
    }

    fn mailbox(&self, domain: &str) -> Option<Rc<Mailbox>> {
        let connected = self.connected.borrow();
        connected.get(domain).map(|c| c.mailbox.clone())
    }
}

/// Binds the component port when any component is configured (a restart binds it for the
/// first one: until then a reload keeps the list empty); the starter routes their domains
/// and begins accepting.
fn listen(config: &crate::config::Config) -> Result<Starter, String> {
    if config.components.is_empty() {
        return Ok(Box::new(|_, _| {}));
    }
    let listeners = crate::listener::bind(true, &config.component.listen)?;
    // Each component, a replacement for it, and a few that fail their handshake.
    let cap = u32::try_from(config.components.len() * 2 + 4).unwrap_or(u32::MAX);
    Ok(Box::new(move |ex, server| {
        server.add_remote(Rc::new(send));
        let caps = crate::listener::Caps {
            total: cap,
            per_ip: cap,
        };
        let owner = server.clone();
        crate::listener::spawn_accept(ex, listeners, "component", caps, move |tcp, peer| {
            accept::serve(owner.clone(), tcp, peer)
        });
    }))
}

/// Sends `xml` (one stanza, `from` stamped, `to` set) to the component serving `to`'s
/// domain. False when no component is configured for it (another way out may take it);
/// true otherwise, the stanza queued or, the component being away, bounced.
fn send(server: &Server, to: &Jid, xml: Rc<str>, storable: bool) -> bool {
    let config = server.config();
    let domain = to.domain();
    if config.component_for(domain).is_none() {
        return false;
    }
    match components(server).mailbox(domain) {
        Some(mailbox) if !mailbox.is_closing() => {
            let cap = config.component.max_queue_bytes as usize;
            let pushed = mailbox.push_stanza(xml.clone(), storable, Hold::Urgent, cap);
            if pushed.is_err() {
                // It stopped reading: cut off as a client would be.
                info!(
                    "component {domain}: {} bytes queued (component.max_queue_bytes), cut off",
                    mailbox.queued_bytes()
                );
                mailbox.close(StreamCondition::PolicyViolation);
                bounce(server, &xml, StanzaCondition::ServiceUnavailable);
            }
        }
        _ => bounce(server, &xml, StanzaCondition::ServiceUnavailable),
    }
    true
}

/// The connected components in the server's disco#items (XEP-0030 §4), named as they
/// name themselves.
fn items(server: &Server) -> Vec<ServerItem> {
    let state = components(server);
    let connected = state.connected.borrow();
    connected
        .iter()
        .map(|(domain, c)| (domain.clone(), c.name.clone()))
        .collect()
}
