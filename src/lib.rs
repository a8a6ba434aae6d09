//! hearth: a single-binary XMPP server for small boards on a home or office LAN.
//!
//! Data flows one way: bytes → [`xml`] framer → [`stanza`] typed views →
//! [`dispatch`] and the [`router`] → sessions ([`c2s`]) or [`store`] →
//! bytes. One single-threaded event loop ([`server`]) holds every session.
#![deny(unsafe_code)]
// Peer input must never panic the server: no unwrap/expect/panic and no indexing that can
// go out of bounds outside tests (`get`, `?` and `let … else` instead).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod audience;
pub mod blocking;
pub mod c2s;
pub mod carbons;
pub mod cli;
pub mod component;
pub mod config;
pub mod contact;
pub mod control;
pub mod csi;
pub mod disco;
pub mod dispatch;
pub mod extdisco;
pub mod feature;
pub mod features;
pub mod iq;
pub mod jid;
pub mod last;
pub mod limits;
pub mod listener;
pub mod mam;
pub mod memory;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod privacy;
pub mod private;
pub mod proxy;
pub mod push;
pub mod register;
pub mod reload;
pub mod reply;
pub mod roster;
pub mod roster_push;
pub mod route;
pub mod router;
pub mod run;
pub mod s2s;
pub mod sasl;
pub mod server;
pub mod sm;
pub mod stanza;
pub mod stanza_id;
pub mod store;
pub mod stream;
pub mod stun;
pub mod subscription;
#[allow(unsafe_code)] // sd_notify needs clock_gettime
pub mod systemd;
pub mod time;
pub mod tls;
pub mod upload;
pub mod usercache;
pub mod vcard;
pub mod verdict;
pub mod version;
pub mod xml;
