//! hearth: a single-binary XMPP server for small boards on a home or office LAN.
//!
//! Data flows one way: bytes → [`xml`] framer → [`stanza`] typed views →
//! [`router`] → sessions ([`c2s`]) or [`store`] → bytes. One single-threaded
//! event loop ([`server`]) holds every session.
#![deny(unsafe_code)]

pub mod c2s;
pub mod cli;
pub mod config;
pub mod control;
pub mod jid;
pub mod router;
pub mod sasl;
pub mod server;
pub mod stanza;
pub mod store;
#[allow(unsafe_code)] // termios and sd_notify need libc calls
pub mod systemd;
pub mod tls;
pub mod xml;
