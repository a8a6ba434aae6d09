//! Configuration: owns the TOML file format, its embedded defaults and its validation.
//!
//! Every error names the file, the line and column, and the key (`listen.starttls`), on one
//! line, so `hearth check` and a failing `hearth serve` say exactly what to fix. This module
//! must never act on the settings (bind, create directories, read certificates): it only reads
//! the one file and checks values that can be checked without touching anything else.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// Inclusive bounds for `limits.max_stanza_bytes`; below 4 KiB ordinary roster pushes fail, and
/// above 16 MiB one peer could hold most of a small board's memory.
pub const STANZA_BYTES_RANGE: (u32, u32) = (4096, 16 * 1024 * 1024);
/// Inclusive bounds for `limits.max_depth`.
pub const DEPTH_RANGE: (u16, u16) = (4, 1024);
/// Inclusive bounds for `limits.max_stanza_bytes_preauth`: a SCRAM message or a registration
/// form fits in 2 KiB.
pub const PREAUTH_STANZA_BYTES_RANGE: (u32, u32) = (2048, 16 * 1024 * 1024);
/// Inclusive bounds for `limits.max_attributes`.
pub const ATTRIBUTES_RANGE: (u16, u16) = (4, 256);
/// Inclusive bounds for `limits.max_namespaces` (the stream header alone declares two) and
/// `limits.max_namespaces_in_scope`: parsing costs up to their product per element.
pub const NAMESPACES_RANGE: (u16, u16) = (2, 32);
pub const NAMESPACES_IN_SCOPE_RANGE: (u16, u16) = (4, 64);

/// The effective settings. Field and table names are the user-facing file format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The one XMPP domain this server hosts (normalised, no localpart or resource).
    #[serde(deserialize_with = "domain")]
    pub domain: String,
    /// Database, self-signed certificate and control socket live here. A relative path is
    /// relative to the working directory of the process, as for every other path here.
    #[serde(deserialize_with = "non_empty_path")]
    pub data_dir: PathBuf,
    pub listen: Listen,
    pub tls: Tls,
    pub auth: Auth,
    pub limits: Limits,
    pub rate: Rate,
    pub keepalive: Keepalive,
    pub registration: Registration,
    pub roster: Roster,
    pub muc: Muc,
    pub pep: Pep,
    pub sm: Sm,
    pub mam: Mam,
    pub push: Push,
    pub upload: Upload,
    pub proxy: Proxy,
    pub stun: Stun,
    pub extdisco: ExtDisco,
    pub contact: Contact,
    pub s2s: S2s,
    /// The external components' port and limits (`[component]`).
    pub component: ComponentListener,
    /// External components that may connect (`[[components]]`, XEP-0114).
    pub components: Vec<Component>,
}

/// XEP-0363 HTTP File Upload (`[upload]`): the service `upload.<domain>` and its HTTPS port.
/// Files live in `dir`, never in the database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upload {
    pub enabled: bool,
    #[serde(deserialize_with = "socket_addrs")]
    pub listen: Vec<SocketAddr>,
    /// Base of the slot URLs; absent means `https://<domain>:<first listen port>`.
    pub url: Option<String>,
    #[serde(deserialize_with = "file_bytes")]
    pub max_file_bytes: u64,
    #[serde(deserialize_with = "file_bytes")]
    pub quota_bytes_per_user: u64,
    #[serde(deserialize_with = "positive")]
    pub expire_days: u32,
    /// Stored files and granted slots per user, whatever their size (empty files count too).
    #[serde(deserialize_with = "positive_count")]
    pub quota_files_per_user: u32,
    /// Open HTTPS connections from one IP address; more are closed at once.
    #[serde(deserialize_with = "positive_count")]
    pub max_connections_per_ip: u32,
    /// A connection must finish its TLS handshake and request head within this.
    #[serde(deserialize_with = "first_byte_secs")]
    pub first_byte_secs: u32,
    /// Where files are kept; absent means `<data_dir>/upload`.
    #[serde(deserialize_with = "optional_path")]
    pub dir: Option<PathBuf>,
}

impl Default for Upload {
    fn default() -> Self {
        Upload {
            enabled: true,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5281))],
            url: None,
            max_file_bytes: 10 * 1024 * 1024,
            quota_bytes_per_user: 100 * 1024 * 1024,
            expire_days: 30,
            quota_files_per_user: 1000,
            max_connections_per_ip: 8,
            first_byte_secs: 10,
            dir: None,
        }
    }
}

/// XEP-0065 SOCKS5 bytestreams proxy (`[proxy]`) for local users: `proxy.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy {
    pub enabled: bool,
    #[serde(deserialize_with = "socket_addrs")]
    pub listen: Vec<SocketAddr>,
    /// The address clients are told to connect to; absent means the domain.
    pub host: Option<String>,
    /// Relays (activated or waiting pairs) at one time.
    #[serde(deserialize_with = "small_count")]
    pub max_relays: u32,
    /// Open SOCKS5 connections from one IP address; more are closed at once.
    #[serde(deserialize_with = "positive_count")]
    pub max_connections_per_ip: u32,
    /// A connection must finish its SOCKS5 handshake within this.
    #[serde(deserialize_with = "first_byte_secs")]
    pub first_byte_secs: u32,
    /// A connection waiting for its other end or for activation is closed after this.
    #[serde(deserialize_with = "first_byte_secs")]
    pub wait_secs: u32,
    /// Connections waiting at one time from an address with a logged-in session.
    #[serde(deserialize_with = "small_count")]
    pub max_waiting_per_ip: u32,
    /// The same for an address with no logged-in session.
    #[serde(deserialize_with = "small_count")]
    pub max_waiting_per_stranger: u32,
    /// Bytes one relay carries (both directions together) before it is cut.
    #[serde(deserialize_with = "file_bytes")]
    pub max_relay_bytes: u64,
    /// Seconds one relay may last.
    #[serde(deserialize_with = "timeout_secs")]
    pub max_relay_secs: u32,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            enabled: true,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 7777))],
            host: None,
            max_relays: 16,
            max_connections_per_ip: 8,
            first_byte_secs: 10,
            wait_secs: 30,
            max_waiting_per_ip: 8,
            max_waiting_per_stranger: 1,
            max_relay_bytes: 1 << 30,
            max_relay_secs: 3600,
        }
    }
}

/// The built-in STUN server (`[stun]`, RFC 8489 Binding only): lets phones on the LAN find
/// their addresses for calls; advertised over XEP-0215 as a `stun` service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stun {
    pub enabled: bool,
    /// UDP addresses to answer on.
    #[serde(deserialize_with = "socket_addrs")]
    pub listen: Vec<SocketAddr>,
    /// The host clients are told to use; absent means the domain.
    pub host: Option<String>,
}

impl Default for Stun {
    fn default() -> Self {
        Stun {
            enabled: true,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 3478))],
            host: None,
        }
    }
}

/// XEP-0215 external services (`[[extdisco.services]]`): STUN and TURN servers run
/// elsewhere (coturn and the like), offered to local users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtDisco {
    pub services: Vec<ExternalService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalService {
    #[serde(rename = "type")]
    pub kind: ServiceKind,
    #[serde(deserialize_with = "non_empty")]
    pub host: String,
    #[serde(deserialize_with = "port")]
    pub port: u16,
    #[serde(default)]
    pub transport: Transport,
    /// The TURN server's shared secret (coturn `static-auth-secret`): users get
    /// time-limited credentials derived from it ("TURN REST API").
    #[serde(default, deserialize_with = "secret")]
    pub secret: Option<Secret>,
    /// How long derived credentials stay valid.
    #[serde(default = "default_ttl", deserialize_with = "ttl_secs")]
    pub ttl_secs: u32,
}

fn default_ttl() -> u32 {
    86_400
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Stun,
    Stuns,
    Turn,
    Turns,
}

impl ServiceKind {
    /// The XEP-0215 registry name, also the config spelling.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Stun => "stun",
            ServiceKind::Stuns => "stuns",
            ServiceKind::Turn => "turn",
            ServiceKind::Turns => "turns",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A secret that never shows in logs, `Debug` output or `hearth check`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(SECRET_MASK)
    }
}

/// What `hearth check` prints in place of a secret.
const SECRET_MASK: &str = "(hidden)";

/// XEP-0157 contact addresses (`[contact]`): URIs such as `mailto:` or `xmpp:`, shown in
/// the server's disco#info when any is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Contact {
    #[serde(deserialize_with = "uris")]
    pub abuse: Vec<String>,
    #[serde(deserialize_with = "uris")]
    pub admin: Vec<String>,
    #[serde(deserialize_with = "uris")]
    pub support: Vec<String>,
}

/// Client ports. Either list may be empty, not both.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ListenFields")]
pub struct Listen {
    /// Plain-text client ports where STARTTLS is offered (RFC 6120 §5).
    pub starttls: Vec<SocketAddr>,
    /// XEP-0368 ports where TLS starts before the stream.
    pub direct_tls: Vec<SocketAddr>,
}

/// Certificate chain and private key in PEM. Both or neither; neither means a self-signed
/// certificate kept in `data_dir/tls/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "TlsFields")]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Refuse authentication until the stream is encrypted.
    pub require_encryption: bool,
    /// Offer SASL PLAIN; it is only ever offered inside TLS.
    pub allow_plain: bool,
    /// Answer XEP-0078 `jabber:iq:auth`; only inside TLS.
    pub legacy_auth: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest stanza accepted; a bigger one ends the stream with `policy-violation`.
    #[serde(deserialize_with = "stanza_bytes")]
    pub max_stanza_bytes: u32,
    /// Deepest element nesting accepted.
    #[serde(deserialize_with = "depth")]
    pub max_depth: u16,
    /// Largest stanza accepted before authentication (RFC 6120 §13.12); never more than
    /// `max_stanza_bytes`.
    #[serde(deserialize_with = "preauth_stanza_bytes")]
    pub max_stanza_bytes_preauth: u32,
    /// Most attributes on one element; past it `policy-violation`.
    #[serde(deserialize_with = "attributes")]
    pub max_attributes: u16,
    /// Most namespace declarations on one element; past it `policy-violation`.
    #[serde(deserialize_with = "namespaces")]
    pub max_namespaces: u16,
    /// Most namespace declarations in scope (stream header and open elements together).
    #[serde(deserialize_with = "namespaces_in_scope")]
    pub max_namespaces_in_scope: u16,
    /// Streams not authenticated after this long are closed with `connection-timeout`.
    #[serde(deserialize_with = "timeout_secs")]
    pub auth_timeout_secs: u32,
    /// Messages kept for one offline user; past it senders get `service-unavailable`.
    #[serde(deserialize_with = "offline_quota")]
    pub offline_quota: u32,
    /// The session's byte budget: all it holds for its client (stanzas routed to it, replies
    /// not yet written, stanzas not yet acknowledged, a parked session's queues). Half full of
    /// unwritten output, its input waits; past it the stream ends.
    #[serde(deserialize_with = "queue_bytes")]
    pub outbound_queue_bytes: u32,
    /// Largest vCard (XEP-0054) a user may store; past it `policy-violation`.
    #[serde(deserialize_with = "stored_bytes")]
    pub max_vcard_bytes: u32,
    /// Largest private XML (XEP-0049) a user may store per namespace.
    #[serde(deserialize_with = "stored_bytes")]
    pub max_private_bytes: u32,
    /// Open client connections in all; past it new ones get `resource-constraint`.
    #[serde(deserialize_with = "positive")]
    pub max_connections: u32,
    /// Open connections from one IP address; past it `policy-violation`.
    #[serde(deserialize_with = "positive")]
    pub max_connections_per_ip: u32,
    /// Connections from one IP address that have not authenticated yet.
    #[serde(deserialize_with = "positive")]
    pub max_unauthenticated_per_ip: u32,
    /// A wrong password's `<failure/>` waits this long, doubling with each further failure
    /// from the same address or for the same account.
    #[serde(deserialize_with = "millis")]
    pub auth_failure_delay_ms: u32,
    /// The cap on that doubling delay.
    #[serde(deserialize_with = "millis")]
    pub auth_failure_delay_max_ms: u32,
    /// Share of `max_connections` (percent) that connections not yet authenticated may use,
    /// so logins still get in during a flood from many addresses.
    #[serde(deserialize_with = "percent")]
    pub max_unauthenticated_percent: u32,
    /// Failed logins for one account per minute, from all addresses together; past it
    /// further attempts fail at once without a password check until the minute is over.
    #[serde(deserialize_with = "positive_count")]
    pub auth_attempts_per_account_per_min: u32,
}

/// What one account (all its resources together) may send. Excess first pauses reading
/// (the client's TCP window absorbs a burst without loss); sustained excess is warned about
/// and then ends the stream with `policy-violation`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rate {
    #[serde(deserialize_with = "positive")]
    pub stanzas_per_sec: u32,
    #[serde(deserialize_with = "positive")]
    pub stanza_burst: u32,
    #[serde(deserialize_with = "positive")]
    pub bytes_per_sec: u32,
    #[serde(deserialize_with = "positive")]
    pub byte_burst: u32,
    /// Throttled continuously this long: one headline message warns the user.
    #[serde(deserialize_with = "timeout_secs")]
    pub warn_after_secs: u32,
    /// Throttled continuously this long: the stream ends.
    #[serde(deserialize_with = "timeout_secs")]
    pub disconnect_after_secs: u32,
}

/// Dead-peer detection for authenticated streams.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Keepalive {
    /// A silent session is probed after this long: `<r/>`, an XEP-0199 ping or whitespace.
    #[serde(deserialize_with = "timeout_secs")]
    pub idle_secs: u32,
    /// No bytes at all this long after `<r/>` or the ping: `connection-timeout`. Also each
    /// socket's TCP_USER_TIMEOUT, which ends a session whose host stopped acknowledging.
    #[serde(deserialize_with = "timeout_secs")]
    pub ping_timeout_secs: u32,
    /// A write to a client blocked this long ends the session (its queue goes offline).
    #[serde(deserialize_with = "timeout_secs")]
    pub write_timeout_secs: u32,
}

/// In-band registration (XEP-0077).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registration {
    /// `open` lets anyone create an account over an encrypted stream before login.
    pub mode: RegistrationMode,
    /// Accounts one IP address may create per hour in `open` mode.
    #[serde(deserialize_with = "per_hour")]
    pub per_ip_per_hour: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    Closed,
    Open,
}

impl RegistrationMode {
    fn name(self) -> &'static str {
        match self {
            RegistrationMode::Closed => "closed",
            RegistrationMode::Open => "open",
        }
    }
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            mode: RegistrationMode::Closed,
            per_ip_per_hour: 5,
        }
    }
}

/// `[roster]`: RFC 6121 §2 limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Roster {
    /// Items one user may keep; past it roster sets get `not-allowed` and
    /// subscriptions that would add an item get `resource-constraint`.
    /// Also the most subscription requests from other servers that wait for one user's
    /// answer; a further one is dropped.
    #[serde(deserialize_with = "max_items")]
    pub max_items: u32,
}

impl Default for Roster {
    fn default() -> Self {
        Roster { max_items: 500 }
    }
}

/// XEP-0045 chat rooms (`[muc]`): the service lives on its own subdomain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Muc {
    pub enabled: bool,
    /// The service's domain; absent means `rooms.<domain>`.
    #[serde(deserialize_with = "optional_domain")]
    pub domain: Option<String>,
    /// Rooms one user may own at a time.
    #[serde(deserialize_with = "small_count")]
    pub max_rooms_per_user: u32,
    /// Default and ceiling for a room's `maxusers`.
    #[serde(deserialize_with = "small_count")]
    pub max_occupants: u32,
    /// Groupchat messages a new room keeps for joining occupants (at most 200).
    #[serde(deserialize_with = "small_count")]
    pub history_default: u32,
    /// Who may create rooms: any local user, or only the listed admins.
    pub creators: Creators,
    /// Bare JIDs allowed to create rooms when `creators = "admins"` (normalised).
    #[serde(deserialize_with = "bare_jids")]
    pub admins: Vec<String>,
    /// Affiliations (members, admins, owners, outcasts) one room keeps.
    #[serde(deserialize_with = "positive_count")]
    pub max_affiliations: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Creators {
    Local,
    Admins,
}

impl Default for Muc {
    fn default() -> Self {
        Muc {
            enabled: true,
            domain: None,
            max_rooms_per_user: 10,
            max_occupants: 100,
            history_default: 20,
            creators: Creators::Local,
            admins: Vec::new(),
            max_affiliations: 1000,
        }
    }
}

/// `[pep]`: personal eventing (XEP-0163) limits per account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pep {
    /// Nodes one account may have; a publish that would create one more gets
    /// `not-allowed`.
    #[serde(deserialize_with = "max_items")]
    pub max_nodes: u32,
    /// Ceiling of a node's `pubsub#max_items` (also what `max` means).
    #[serde(deserialize_with = "max_items")]
    pub max_items: u32,
    /// Largest item payload in bytes; bigger ones get `payload-too-big`.
    #[serde(deserialize_with = "positive")]
    pub max_item_bytes: u32,
    /// Items one retrieval reply carries at most, in bytes (always at least one item); the
    /// rest is reached with XEP-0059 paging.
    #[serde(deserialize_with = "stored_bytes")]
    pub max_reply_bytes: u32,
}

impl Default for Pep {
    fn default() -> Self {
        Pep {
            max_nodes: 64,
            max_items: 64,
            max_item_bytes: 64 * 1024,
            max_reply_bytes: 256 * 1024,
        }
    }
}

/// XEP-0198 stream management (`[sm]`): acks and resumption after a dropped connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sm {
    pub enabled: bool,
    /// How long a session whose connection dropped stays resumable; meanwhile the user
    /// stays available and messages wait for it.
    #[serde(deserialize_with = "timeout_secs")]
    pub resume_timeout_secs: u32,
    /// Stanzas sent and not yet acknowledged; past it the stream ends with
    /// `resource-constraint`.
    #[serde(deserialize_with = "positive")]
    pub max_unacked: u32,
}

impl Default for Sm {
    fn default() -> Self {
        Sm {
            enabled: true,
            resume_timeout_secs: 300,
            max_unacked: 1000,
        }
    }
}

/// XEP-0313 message archives (`[mam]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mam {
    /// Archive 1:1 messages and answer archive queries.
    pub enabled: bool,
    /// Archived messages older than this are deleted; 0 keeps them forever.
    #[serde(deserialize_with = "small_count")]
    pub retention_days: u32,
}

impl Default for Mam {
    fn default() -> Self {
        Mam {
            enabled: true,
            retention_days: 365,
        }
    }
}

/// XEP-0357 push notifications (`[push]`): waking a phone's app through its app server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Push {
    /// Accept registrations, advertise `urn:xmpp:push:0` and send notifications.
    pub enabled: bool,
    /// Registrations (one per device) an account may have; one more gets `policy-violation`.
    #[serde(deserialize_with = "push_registrations")]
    pub max_registrations_per_user: u32,
    /// Put the message body into notifications. Off: the app server (often run by a third
    /// party) then learns that a message came and from whom, never what it says.
    pub include_body: bool,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            enabled: true,
            max_registrations_per_user: 10,
            include_body: false,
        }
    }
}

/// Federation (`[s2s]`, RFC 6120 server-to-server streams): other XMPP servers, on the LAN or
/// the public network, reach this one's users and it reaches theirs. Off by default: a server
/// that federates is reachable by strangers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S2s {
    pub enabled: bool,
    /// Where other servers connect (RFC 6120 §3.2: port 5269).
    #[serde(deserialize_with = "socket_addrs")]
    pub listen: Vec<SocketAddr>,
    /// Streams in both directions must be encrypted with STARTTLS before anything else.
    pub require_encryption: bool,
    /// Only peers whose certificate verifies (against the system's roots, or a pin below)
    /// are accepted; off, a peer without one is authenticated by Server Dialback (XEP-0220),
    /// the normal case on a LAN of self-signed certificates.
    pub require_valid_certs: bool,
    /// Peer domains allowed to federate; empty means every domain not denied.
    #[serde(deserialize_with = "domains")]
    pub allow: Vec<String>,
    /// Peer domains refused in both directions.
    #[serde(deserialize_with = "domains")]
    pub deny: Vec<String>,
    /// Where a peer is when DNS cannot say (a LAN): domain = "host:port".
    #[serde(deserialize_with = "routes")]
    pub routes: std::collections::BTreeMap<String, String>,
    /// A peer's certificate, pinned by the SHA-256 fingerprint its `hearth check` and log
    /// show (hex, colons optional): that certificate authenticates the peer as if a CA
    /// had signed it, and no other does.
    #[serde(deserialize_with = "pins")]
    pub pins: std::collections::BTreeMap<String, String>,
    /// A connection attempt (DNS, TCP, TLS, authentication) must finish within this.
    #[serde(deserialize_with = "first_byte_secs")]
    pub connect_timeout_secs: u32,
    /// Stanzas for an unreachable peer wait at most this long, then bounce
    /// (`remote-server-timeout`, presence dropped).
    #[serde(deserialize_with = "first_byte_secs")]
    pub queue_timeout_secs: u32,
    /// A connection that carried nothing for this long is closed (both directions).
    #[serde(deserialize_with = "timeout_secs")]
    pub idle_timeout_secs: u32,
    /// Bytes queued for one peer domain; a stanza past this bounces at once.
    #[serde(deserialize_with = "queue_bytes")]
    pub max_queue_bytes: u32,
    /// Incoming connections from one peer domain, and from one IP address.
    #[serde(deserialize_with = "positive_count")]
    pub max_connections_per_domain: u32,
    #[serde(deserialize_with = "positive_count")]
    pub max_connections_per_ip: u32,
    /// Incoming connections at one time from all peers together.
    #[serde(deserialize_with = "positive_count")]
    pub max_connections: u32,
    /// An incoming connection must authenticate within this.
    #[serde(deserialize_with = "first_byte_secs")]
    pub auth_timeout_secs: u32,
    /// Largest stanza a peer may send.
    #[serde(deserialize_with = "stanza_bytes")]
    pub max_stanza_bytes: u32,
    /// Stanzas per second one peer domain may send on average, and in a burst.
    #[serde(deserialize_with = "positive_count")]
    pub stanzas_per_sec: u32,
    #[serde(deserialize_with = "positive_count")]
    pub stanza_burst: u32,
}

impl Default for S2s {
    fn default() -> Self {
        S2s {
            enabled: false,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5269))],
            require_encryption: true,
            require_valid_certs: false,
            allow: Vec::new(),
            deny: Vec::new(),
            routes: Default::default(),
            pins: Default::default(),
            connect_timeout_secs: 15,
            queue_timeout_secs: 60,
            idle_timeout_secs: 600,
            max_queue_bytes: 1024 * 1024,
            max_connections_per_domain: 4,
            max_connections_per_ip: 8,
            max_connections: 200,
            auth_timeout_secs: 30,
            max_stanza_bytes: 256 * 1024,
            stanzas_per_sec: 200,
            stanza_burst: 1000,
        }
    }
}

/// The port external components (XEP-0114: gateways, bridges, bots) connect to (`[component]`).
/// It listens only when `[[components]]` names at least one, and on loopback by default: a
/// component is trusted with its whole domain, and the handshake is not encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentListener {
    #[serde(deserialize_with = "socket_addrs")]
    pub listen: Vec<SocketAddr>,
    /// A second connection for a connected component's domain replaces the first; off, it
    /// is refused with `<conflict/>`.
    pub replace: bool,
    /// A connection must complete its handshake within this.
    #[serde(deserialize_with = "first_byte_secs")]
    pub auth_timeout_secs: u32,
    /// Largest stanza a component may send.
    #[serde(deserialize_with = "stanza_bytes")]
    pub max_stanza_bytes: u32,
    /// Bytes queued for one component; past this it is not reading and is cut off.
    #[serde(deserialize_with = "queue_bytes")]
    pub max_queue_bytes: u32,
}

impl Default for ComponentListener {
    fn default() -> Self {
        ComponentListener {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5347))],
            replace: false,
            auth_timeout_secs: 10,
            max_stanza_bytes: 256 * 1024,
            max_queue_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One external component (`[[components]]`): it serves `domain` and authenticates with
/// `secret` (XEP-0114 §3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    #[serde(deserialize_with = "domain")]
    pub domain: String,
    #[serde(deserialize_with = "required_secret")]
    pub secret: Secret,
    /// Stanzas per second it may send on average, and in a burst (a gateway speaks for
    /// many users, so more than a client).
    #[serde(default = "component_rate", deserialize_with = "positive_count")]
    pub stanzas_per_sec: u32,
    #[serde(default = "component_burst", deserialize_with = "positive_count")]
    pub stanza_burst: u32,
}

fn component_rate() -> u32 {
    500
}

fn component_burst() -> u32 {
    2000
}

impl S2s {
    /// Whether federation with `domain` is allowed by the allow and deny lists.
    pub fn allows(&self, domain: &str) -> bool {
        !self.deny.iter().any(|d| d == domain)
            && (self.allow.is_empty() || self.allow.iter().any(|d| d == domain))
    }
}

impl Config {
    /// The file-upload service's domain, when the service is enabled.
    pub fn upload_domain(&self) -> Option<String> {
        self.upload
            .enabled
            .then(|| format!("upload.{}", self.domain))
    }

    /// The bytestreams proxy's domain, when the proxy is enabled.
    pub fn proxy_domain(&self) -> Option<String> {
        self.proxy.enabled.then(|| format!("proxy.{}", self.domain))
    }

    /// The external component configured for `domain` (`[[components]]`).
    pub fn component_for(&self, domain: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.domain == domain)
    }

    /// The chat-room service's domain, when the service is enabled.
    pub fn muc_domain(&self) -> Option<String> {
        self.muc.enabled.then(|| {
            self.muc
                .domain
                .clone()
                .unwrap_or_else(|| format!("rooms.{}", self.domain))
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".into(),
            data_dir: PathBuf::from("./hearth-data"),
            listen: Listen::default(),
            tls: Tls::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            rate: Rate::default(),
            keepalive: Keepalive::default(),
            registration: Registration::default(),
            roster: Roster::default(),
            muc: Muc::default(),
            pep: Pep::default(),
            sm: Sm::default(),
            mam: Mam::default(),
            push: Push::default(),
            upload: Upload::default(),
            proxy: Proxy::default(),
            stun: Stun::default(),
            extdisco: ExtDisco::default(),
            contact: Contact::default(),
            s2s: S2s::default(),
            component: ComponentListener::default(),
            components: Vec::new(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            starttls: vec![SocketAddr::from(([0, 0, 0, 0], 5222))],
            direct_tls: vec![SocketAddr::from(([0, 0, 0, 0], 5223))],
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            require_encryption: true,
            allow_plain: true,
            legacy_auth: true,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_stanza_bytes_preauth: 8 * 1024,
            max_attributes: crate::xml::framer::DEFAULT_MAX_ATTRIBUTES,
            max_namespaces: crate::xml::framer::DEFAULT_MAX_NAMESPACES,
            max_namespaces_in_scope: crate::xml::framer::DEFAULT_MAX_NAMESPACES_IN_SCOPE,
            auth_timeout_secs: 30,
            offline_quota: 1000,
            outbound_queue_bytes: 1024 * 1024,
            max_vcard_bytes: 64 * 1024,
            max_private_bytes: 64 * 1024,
            // A family's devices each have their own address on the LAN; a burst of 16
            // half-open streams from one of them is already an attack.
            max_connections: 512,
            max_connections_per_ip: 32,
            max_unauthenticated_per_ip: 16,
            auth_failure_delay_ms: 250,
            auth_failure_delay_max_ms: 8000,
            max_unauthenticated_percent: 75,
            auth_attempts_per_account_per_min: 10,
        }
    }
}

impl Default for Rate {
    /// People type far below 1 stanza/s; 20/s sustained with a burst of 100 covers a login
    /// (roster, presence of every contact, offline flush) and a pasted backlog. 20 KB/s with
    /// a 200 KB burst lets an avatar or a long paste through at once, while one account can
    /// never take more than a small share of a Pi's CPU and disk.
    fn default() -> Self {
        Rate {
            stanzas_per_sec: 20,
            stanza_burst: 100,
            bytes_per_sec: 20_000,
            byte_burst: 200_000,
            warn_after_secs: 10,
            disconnect_after_secs: 60,
        }
    }
}

impl Default for Keepalive {
    /// Phones keep NAT mappings for a few minutes: a ping after 5 idle minutes finds dead
    /// peers without waking healthy ones often.
    fn default() -> Self {
        Keepalive {
            idle_secs: 300,
            ping_timeout_secs: 60,
            write_timeout_secs: 30,
        }
    }
}

impl Tls {
    /// The configured certificate and key, or `None` for the self-signed fallback.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

/// Reads and validates the config file, or returns the defaults when there is none.
/// The error is one line: `FILE:LINE:COLUMN: KEY: what is wrong`.
pub fn load(path: Option<&Path>) -> Result<Config, String> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{}: not valid UTF-8 (TOML must be UTF-8)", path.display()))?;
    parse(&text).map_err(|error| format!("{}:{error}", path.display()))
}

/// Parses config text; errors are `LINE:COLUMN: KEY: message` (the key when one applies).
fn parse(text: &str) -> Result<Config, String> {
    let root = toml::de::DeTable::parse(text).map_err(|error| describe(text, &error))?;
    let config = Config::deserialize(toml::Deserializer::from(root))
        .map_err(|error| describe(text, &error))?;
    if config.muc_domain().as_deref() == Some(config.domain.as_str()) {
        // Every stanza to the domain would go to the chat-room service.
        return Err(" muc.domain: must differ from domain".into());
    }
    let muc = config.muc_domain();
    if muc.is_some() && (muc == config.upload_domain() || muc == config.proxy_domain()) {
        // The upload and proxy services would never see their stanzas.
        return Err(" muc.domain: must differ from the upload and proxy services' domains".into());
    }
    component_domains_differ(&config)?;
    Ok(config)
}

/// Each component's domain is its own: not the server's, a service's or another component's
/// (stanzas to it would never reach it).
fn component_domains_differ(config: &Config) -> Result<(), String> {
    let taken = [
        Some(config.domain.clone()),
        config.muc_domain(),
        config.upload_domain(),
        config.proxy_domain(),
    ];
    for (i, component) in config.components.iter().enumerate() {
        let domain = Some(component.domain.clone());
        let earlier = config.components.get(..i).unwrap_or_default();
        if taken.contains(&domain) || earlier.iter().any(|c| c.domain == component.domain) {
            return Err(format!(
                " components.domain: `{}` must differ from the server's, its services' and the \
                 other components' domains",
                component.domain
            ));
        }
    }
    Ok(())
}

/// Turns a toml error into one line with its position and the dotted key it is about.
fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().replace(['\n', '\r'], " ");
    let Some(span) = error.span() else {
        return format!(" {message}");
    };
    let (line, column) = line_and_column(text, span.start);
    // Parse again only on this error path: the tree was consumed by deserialisation.
    let mut key = Vec::new();
    if let Ok(root) = toml::de::DeTable::parse(text) {
        key_at(root.get_ref(), span.start, &mut key);
    }
    if key.is_empty() {
        format!("{line}:{column}: {message}")
    } else {
        format!("{line}:{column}: {}: {message}", key.join("."))
    }
}

/// 1-based line and column (in characters) of byte offset `offset`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let line_start = before
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let column = before
        .get(line_start..)
        .unwrap_or_default()
        .iter()
        .filter(|&&byte| byte & 0xC0 != 0x80) // count UTF-8 lead bytes, i.e. characters
        .count()
        + 1;
    (line, column)
}

/// Fills `path` with the keys leading to the deepest key or value whose span holds `offset`.
fn key_at(table: &toml::de::DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        let inside = |span: std::ops::Range<usize>| span.contains(&offset) || span.start == offset;
        // An array of tables (`[[extdisco.services]]`) names the key without an index.
        let tables = value.get_ref().as_table().into_iter().chain(
            value
                .get_ref()
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item.get_ref().as_table()),
        );
        let nested = tables.into_iter().any(|inner| key_at(inner, offset, path));
        if nested || inside(key.span()) || inside(value.span()) {
            path.insert(0, key.get_ref().to_string());
            return true;
        }
    }
    false
}

/// What the `[listen]` table holds before the cross-field checks.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ListenFields {
    #[serde(deserialize_with = "socket_addrs")]
    starttls: Vec<SocketAddr>,
    #[serde(deserialize_with = "socket_addrs")]
    direct_tls: Vec<SocketAddr>,
}

impl Default for ListenFields {
    fn default() -> Self {
        let Listen {
            starttls,
            direct_tls,
        } = Listen::default();
        ListenFields {
            starttls,
            direct_tls,
        }
    }
}

impl TryFrom<ListenFields> for Listen {
    type Error = String;

    fn try_from(fields: ListenFields) -> Result<Self, String> {
        if fields.starttls.is_empty() && fields.direct_tls.is_empty() {
            return Err("no client port: starttls and direct_tls are both empty".into());
        }
        // Port 0 asks the kernel for a free port, so it may appear more than once.
        let all = || {
            fields
                .starttls
                .iter()
                .chain(&fields.direct_tls)
                .filter(|a| a.port() != 0)
        };
        if let Some(repeated) = all()
            .enumerate()
            .find_map(|(index, addr)| all().skip(index + 1).find(|other| *other == addr))
        {
            return Err(format!("{repeated} is listed twice"));
        }
        Ok(Listen {
            starttls: fields.starttls,
            direct_tls: fields.direct_tls,
        })
    }
}

/// What the `[tls]` table holds before the both-or-neither check.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TlsFields {
    #[serde(deserialize_with = "optional_path")]
    cert: Option<PathBuf>,
    #[serde(deserialize_with = "optional_path")]
    key: Option<PathBuf>,
}

impl TryFrom<TlsFields> for Tls {
    type Error = String;

    fn try_from(fields: TlsFields) -> Result<Self, String> {
        match (&fields.cert, &fields.key) {
            (Some(_), None) => Err("cert is set but key is not (give both or neither)".into()),
            (None, Some(_)) => Err("key is set but cert is not (give both or neither)".into()),
            _ => Ok(Tls {
                cert: fields.cert,
                key: fields.key,
            }),
        }
    }
}

fn domain<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    normalize_domain(&text).map_err(serde::de::Error::custom)
}

fn domains<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| normalize_domain(text).map_err(serde::de::Error::custom))
        .collect()
}

/// `domain = "host:port"`: the host a name or an IP address (IPv6 in brackets).
fn routes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let table = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
    let mut routes = std::collections::BTreeMap::new();
    for (domain, target) in table {
        let domain = normalize_domain(&domain).map_err(serde::de::Error::custom)?;
        let valid = target.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "`{target}` is not a host and port like \"192.168.1.20:5269\""
            )));
        }
        routes.insert(domain, target);
    }
    Ok(routes)
}

/// `domain = "AB:CD:…"`: a SHA-256 fingerprint, kept as 64 lowercase hex digits.
fn pins<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let table = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
    let mut pins = std::collections::BTreeMap::new();
    for (domain, fingerprint) in table {
        let domain = normalize_domain(&domain).map_err(serde::de::Error::custom)?;
        let hex: String = fingerprint
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "`{fingerprint}` is not a SHA-256 fingerprint (64 hex digits, colons optional)"
            )));
        }
        pins.insert(domain, hex);
    }
    Ok(pins)
}

fn non_empty_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    if path.as_os_str().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(path)
}

fn optional_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    non_empty_path(deserializer).map(Some)
}

fn socket_addrs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{text}` is not an IP address with a port, like \"0.0.0.0:5222\" or \"[::]:5222\""
                ))
            })
        })
        .collect()
}

/// Reads an integer and checks it against inclusive bounds, with one message for too small,
/// too large and negative values alike.
fn integer_in<'de, D: Deserializer<'de>>(
    deserializer: D,
    (min, max): (i64, i64),
) -> Result<i64, D::Error> {
    let value = i64::deserialize(deserializer)?;
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be between {min} and {max}, not {value}"
        )))
    }
}

fn optional_domain<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    domain(deserializer).map(Some)
}

fn bare_jids<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| match crate::jid::Jid::parse(text) {
            Ok(jid) if jid.local().is_some() && jid.is_bare() => Ok(jid.as_str().to_owned()),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is not a bare JID like \"user@example.org\""
            ))),
        })
        .collect()
}

fn small_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (0, 100_000))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn positive_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1, 100_000))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn first_byte_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1, 600))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn percent<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1, 100))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn stanza_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let (min, max) = STANZA_BYTES_RANGE;
    let value = integer_in(deserializer, (min.into(), max.into()))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn depth<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let (min, max) = DEPTH_RANGE;
    let value = integer_in(deserializer, (min.into(), max.into()))?;
    u16::try_from(value).map_err(serde::de::Error::custom)
}

fn preauth_stanza_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let (min, max) = PREAUTH_STANZA_BYTES_RANGE;
    let value = integer_in(deserializer, (min.into(), max.into()))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn attributes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let (min, max) = ATTRIBUTES_RANGE;
    let value = integer_in(deserializer, (min.into(), max.into()))?;
    u16::try_from(value).map_err(serde::de::Error::custom)
}

fn namespaces<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let (min, max) = NAMESPACES_RANGE;
    let value = integer_in(deserializer, (min.into(), max.into()))?;
    u16::try_from(value).map_err(serde::de::Error::custom)
}

fn namespaces_in_scope<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let (min, max) = NAMESPACES_IN_SCOPE_RANGE;
    let value = integer_in(deserializer, (min.into(), max.into()))?;
    u16::try_from(value).map_err(serde::de::Error::custom)
}

fn offline_quota<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (0, 1_000_000))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn max_items<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1, 100_000))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn push_registrations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1, 100))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn queue_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (16 * 1024, 256 * 1024 * 1024))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn positive<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1, u32::MAX.into()))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (0, 3_600_000))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn stored_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1024, 16 * 1024 * 1024))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn per_hour<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1, 1_000_000))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn file_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = integer_in(deserializer, (1, 1 << 40))?;
    u64::try_from(value).map_err(serde::de::Error::custom)
}

fn timeout_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (1, u32::MAX.into()))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

fn non_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(text)
}

fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let value = integer_in(deserializer, (1, u16::MAX.into()))?;
    u16::try_from(value).map_err(serde::de::Error::custom)
}

fn required_secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
    non_empty(deserializer).map(Secret)
}

fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    non_empty(deserializer).map(|text| Some(Secret(text)))
}

/// A minute at least (clients refresh before expiry), 30 days at most.
fn ttl_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = integer_in(deserializer, (60, 30 * 86_400))?;
    u32::try_from(value).map_err(serde::de::Error::custom)
}

/// RFC 3986 URIs with a scheme (`mailto:`, `xmpp:`, `https:`), as XEP-0157 wants.
fn uris<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(deserializer)?;
    for text in &list {
        let scheme = text.split_once(':').map_or("", |(scheme, _)| scheme);
        let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && text.len() > scheme.len() + 1
            && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is not a URI like \"mailto:abuse@example.org\" or \"xmpp:admin@example.org\""
            )));
        }
    }
    Ok(list)
}

impl Config {
    /// The effective settings as a complete config file, which [`load`] reads back unchanged
    /// but for secrets, which it masks.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let addrs = |list: &[SocketAddr]| {
            let quoted: Vec<String> = list.iter().map(|addr| quote(&addr.to_string())).collect();
            format!("[{}]", quoted.join(", "))
        };
        let path = |path: &Path| quote(&path.to_string_lossy());
        // Writing to a String cannot fail.
        let _ = writeln!(out, "domain = {}", quote(&self.domain));
        let _ = writeln!(out, "data_dir = {}", path(&self.data_dir));
        let _ = writeln!(out, "\n[listen]");
        let _ = writeln!(out, "starttls = {}", addrs(&self.listen.starttls));
        let _ = writeln!(out, "direct_tls = {}", addrs(&self.listen.direct_tls));
        let _ = writeln!(out, "\n[tls]");
        match self.tls.files() {
            Some((cert, key)) => {
                let _ = writeln!(out, "cert = {}", path(cert));
                let _ = writeln!(out, "key = {}", path(key));
            }
            None => {
                let tls_dir = self.data_dir.join("tls");
                let _ = writeln!(
                    out,
                    "# no cert/key: self-signed certificate in {}",
                    tls_dir.to_string_lossy().replace(['\n', '\r'], " ")
                );
            }
        }
        let auth = &self.auth;
        let _ = writeln!(out, "\n[auth]");
        let _ = writeln!(out, "require_encryption = {}", auth.require_encryption);
        let _ = writeln!(out, "allow_plain = {}", auth.allow_plain);
        let _ = writeln!(out, "legacy_auth = {}", auth.legacy_auth);
        let limits = &self.limits;
        let _ = writeln!(out, "\n[limits]");
        let _ = writeln!(out, "max_stanza_bytes = {}", limits.max_stanza_bytes);
        let _ = writeln!(out, "max_depth = {}", limits.max_depth);
        let _ = writeln!(
            out,
            "max_stanza_bytes_preauth = {}",
            limits.max_stanza_bytes_preauth
        );
        let _ = writeln!(out, "max_attributes = {}", limits.max_attributes);
        let _ = writeln!(out, "max_namespaces = {}", limits.max_namespaces);
        let _ = writeln!(
            out,
            "max_namespaces_in_scope = {}",
            limits.max_namespaces_in_scope
        );
        let _ = writeln!(out, "auth_timeout_secs = {}", limits.auth_timeout_secs);
        let _ = writeln!(out, "offline_quota = {}", limits.offline_quota);
        let _ = writeln!(
            out,
            "outbound_queue_bytes = {}",
            limits.outbound_queue_bytes
        );
        let _ = writeln!(out, "max_vcard_bytes = {}", limits.max_vcard_bytes);
        let _ = writeln!(out, "max_private_bytes = {}", limits.max_private_bytes);
        let _ = writeln!(out, "max_connections = {}", limits.max_connections);
        let _ = writeln!(
            out,
            "max_connections_per_ip = {}",
            limits.max_connections_per_ip
        );
        let _ = writeln!(
            out,
            "max_unauthenticated_per_ip = {}",
            limits.max_unauthenticated_per_ip
        );
        let _ = writeln!(
            out,
            "auth_failure_delay_ms = {}",
            limits.auth_failure_delay_ms
        );
        let _ = writeln!(
            out,
            "auth_failure_delay_max_ms = {}",
            limits.auth_failure_delay_max_ms
        );
        let _ = writeln!(
            out,
            "max_unauthenticated_percent = {}",
            limits.max_unauthenticated_percent
        );
        let _ = writeln!(
            out,
            "auth_attempts_per_account_per_min = {}",
            limits.auth_attempts_per_account_per_min
        );
        let rate = &self.rate;
        let _ = writeln!(out, "\n[rate]");
        let _ = writeln!(out, "stanzas_per_sec = {}", rate.stanzas_per_sec);
        let _ = writeln!(out, "stanza_burst = {}", rate.stanza_burst);
        let _ = writeln!(out, "bytes_per_sec = {}", rate.bytes_per_sec);
        let _ = writeln!(out, "byte_burst = {}", rate.byte_burst);
        let _ = writeln!(out, "warn_after_secs = {}", rate.warn_after_secs);
        let _ = writeln!(
            out,
            "disconnect_after_secs = {}",
            rate.disconnect_after_secs
        );
        let keepalive = &self.keepalive;
        let _ = writeln!(out, "\n[keepalive]");
        let _ = writeln!(out, "idle_secs = {}", keepalive.idle_secs);
        let _ = writeln!(out, "ping_timeout_secs = {}", keepalive.ping_timeout_secs);
        let _ = writeln!(out, "write_timeout_secs = {}", keepalive.write_timeout_secs);
        let registration = &self.registration;
        let _ = writeln!(out, "\n[registration]");
        let _ = writeln!(out, "mode = {}", quote(registration.mode.name()));
        let _ = writeln!(out, "per_ip_per_hour = {}", registration.per_ip_per_hour);
        let _ = writeln!(out, "\n[roster]");
        let _ = writeln!(out, "max_items = {}", self.roster.max_items);
        let muc = &self.muc;
        let _ = writeln!(out, "\n[muc]");
        let _ = writeln!(out, "enabled = {}", muc.enabled);
        match (&muc.domain, self.muc_domain()) {
            (Some(domain), _) => {
                let _ = writeln!(out, "domain = {}", quote(domain));
            }
            (None, Some(derived)) => write_derived(&mut out, "domain", &derived, ""),
            (None, None) => {}
        }
        let _ = writeln!(out, "max_rooms_per_user = {}", muc.max_rooms_per_user);
        let _ = writeln!(out, "max_occupants = {}", muc.max_occupants);
        let _ = writeln!(out, "history_default = {}", muc.history_default);
        let creators = match muc.creators {
            Creators::Local => "local",
            Creators::Admins => "admins",
        };
        let _ = writeln!(out, "creators = {}", quote(creators));
        let admins: Vec<String> = muc.admins.iter().map(|a| quote(a)).collect();
        let _ = writeln!(out, "admins = [{}]", admins.join(", "));
        let _ = writeln!(out, "max_affiliations = {}", muc.max_affiliations);
        let _ = writeln!(out, "\n[pep]");
        let _ = writeln!(out, "max_nodes = {}", self.pep.max_nodes);
        let _ = writeln!(out, "max_items = {}", self.pep.max_items);
        let _ = writeln!(out, "max_item_bytes = {}", self.pep.max_item_bytes);
        let _ = writeln!(out, "max_reply_bytes = {}", self.pep.max_reply_bytes);
        let sm = &self.sm;
        let _ = writeln!(out, "\n[sm]");
        let _ = writeln!(out, "enabled = {}", sm.enabled);
        let _ = writeln!(out, "resume_timeout_secs = {}", sm.resume_timeout_secs);
        let _ = writeln!(out, "max_unacked = {}", sm.max_unacked);
        let _ = writeln!(out, "\n[mam]");
        let _ = writeln!(out, "enabled = {}", self.mam.enabled);
        let _ = writeln!(out, "retention_days = {}", self.mam.retention_days);
        let push = &self.push;
        let _ = writeln!(out, "\n[push]");
        let _ = writeln!(out, "enabled = {}", push.enabled);
        let _ = writeln!(
            out,
            "max_registrations_per_user = {}",
            push.max_registrations_per_user
        );
        let _ = writeln!(out, "include_body = {}", push.include_body);
        let upload = &self.upload;
        let _ = writeln!(out, "\n[upload]");
        let _ = writeln!(out, "enabled = {}", upload.enabled);
        let _ = writeln!(out, "listen = {}", addrs(&upload.listen));
        match (&upload.url, upload.listen.first()) {
            (Some(url), _) => {
                let _ = writeln!(out, "url = {}", quote(url));
            }
            (None, Some(first)) if upload.enabled => {
                let url = format!("https://{}:{}", self.domain, first.port());
                let note = match first.port() {
                    0 => "; port 0 stands for the port bound at start",
                    _ => "",
                };
                write_derived(&mut out, "url", &url, note);
            }
            (None, _) => {}
        }
        let _ = writeln!(out, "max_file_bytes = {}", upload.max_file_bytes);
        let _ = writeln!(
            out,
            "quota_bytes_per_user = {}",
            upload.quota_bytes_per_user
        );
        let _ = writeln!(out, "expire_days = {}", upload.expire_days);
        let _ = writeln!(
            out,
            "quota_files_per_user = {}",
            upload.quota_files_per_user
        );
        let _ = writeln!(
            out,
            "max_connections_per_ip = {}",
            upload.max_connections_per_ip
        );
        let _ = writeln!(out, "first_byte_secs = {}", upload.first_byte_secs);
        match &upload.dir {
            Some(dir) => {
                let _ = writeln!(out, "dir = {}", path(dir));
            }
            None if upload.enabled => {
                let dir = self.data_dir.join("upload");
                write_derived(&mut out, "dir", &dir.to_string_lossy(), "");
            }
            None => {}
        }
        let proxy = &self.proxy;
        let _ = writeln!(out, "\n[proxy]");
        let _ = writeln!(out, "enabled = {}", proxy.enabled);
        let _ = writeln!(out, "listen = {}", addrs(&proxy.listen));
        match &proxy.host {
            Some(host) => {
                let _ = writeln!(out, "host = {}", quote(host));
            }
            None if proxy.enabled => write_derived(&mut out, "host", &self.domain, ""),
            None => {}
        }
        let _ = writeln!(out, "max_relays = {}", proxy.max_relays);
        let _ = writeln!(
            out,
            "max_connections_per_ip = {}",
            proxy.max_connections_per_ip
        );
        let _ = writeln!(out, "first_byte_secs = {}", proxy.first_byte_secs);
        let _ = writeln!(out, "wait_secs = {}", proxy.wait_secs);
        let _ = writeln!(out, "max_waiting_per_ip = {}", proxy.max_waiting_per_ip);
        let _ = writeln!(
            out,
            "max_waiting_per_stranger = {}",
            proxy.max_waiting_per_stranger
        );
        let _ = writeln!(out, "max_relay_bytes = {}", proxy.max_relay_bytes);
        let _ = writeln!(out, "max_relay_secs = {}", proxy.max_relay_secs);
        self.stun_to_toml(&mut out);
        self.s2s_to_toml(&mut out);
        self.components_to_toml(&mut out);
        out
    }

    /// `[component]` and each `[[components]]`, secrets masked.
    fn components_to_toml(&self, out: &mut String) {
        let listener = &self.component;
        let listen: Vec<String> = listener
            .listen
            .iter()
            .map(|a| quote(&a.to_string()))
            .collect();
        let _ = writeln!(out, "\n[component]");
        let _ = writeln!(out, "listen = [{}]", listen.join(", "));
        let _ = writeln!(out, "replace = {}", listener.replace);
        let _ = writeln!(out, "auth_timeout_secs = {}", listener.auth_timeout_secs);
        let _ = writeln!(out, "max_stanza_bytes = {}", listener.max_stanza_bytes);
        let _ = writeln!(out, "max_queue_bytes = {}", listener.max_queue_bytes);
        for component in &self.components {
            let _ = writeln!(out, "\n[[components]]");
            let _ = writeln!(out, "domain = {}", quote(&component.domain));
            let _ = writeln!(out, "secret = {}", quote(SECRET_MASK));
            let _ = writeln!(out, "stanzas_per_sec = {}", component.stanzas_per_sec);
            let _ = writeln!(out, "stanza_burst = {}", component.stanza_burst);
        }
    }

    /// `[s2s]` with its routes and pins.
    fn s2s_to_toml(&self, out: &mut String) {
        let s2s = &self.s2s;
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
            format!("[{}]", quoted.join(", "))
        };
        let listen: Vec<String> = s2s.listen.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(out, "\n[s2s]");
        let _ = writeln!(out, "enabled = {}", s2s.enabled);
        let _ = writeln!(out, "listen = {}", list(&listen));
        let _ = writeln!(out, "require_encryption = {}", s2s.require_encryption);
        let _ = writeln!(out, "require_valid_certs = {}", s2s.require_valid_certs);
        let _ = writeln!(out, "allow = {}", list(&s2s.allow));
        let _ = writeln!(out, "deny = {}", list(&s2s.deny));
        for (key, value) in [
            ("connect_timeout_secs", s2s.connect_timeout_secs),
            ("queue_timeout_secs", s2s.queue_timeout_secs),
            ("idle_timeout_secs", s2s.idle_timeout_secs),
            ("max_queue_bytes", s2s.max_queue_bytes),
            ("max_connections_per_domain", s2s.max_connections_per_domain),
            ("max_connections_per_ip", s2s.max_connections_per_ip),
            ("max_connections", s2s.max_connections),
            ("auth_timeout_secs", s2s.auth_timeout_secs),
            ("max_stanza_bytes", s2s.max_stanza_bytes),
            ("stanzas_per_sec", s2s.stanzas_per_sec),
            ("stanza_burst", s2s.stanza_burst),
        ] {
            let _ = writeln!(out, "{key} = {value}");
        }
        for (table, entries) in [("routes", &s2s.routes), ("pins", &s2s.pins)] {
            let _ = writeln!(out, "\n[s2s.{table}]");
            for (domain, value) in entries {
                let _ = writeln!(out, "{} = {}", quote(domain), quote(value));
            }
        }
    }

    /// `[stun]`, `[[extdisco.services]]` and `[contact]`; secrets are masked.
    fn stun_to_toml(&self, out: &mut String) {
        let stun = &self.stun;
        let listen: Vec<String> = stun.listen.iter().map(|a| quote(&a.to_string())).collect();
        let _ = writeln!(out, "\n[stun]");
        let _ = writeln!(out, "enabled = {}", stun.enabled);
        let _ = writeln!(out, "listen = [{}]", listen.join(", "));
        match &stun.host {
            Some(host) => {
                let _ = writeln!(out, "host = {}", quote(host));
            }
            None if stun.enabled => write_derived(out, "host", &self.domain, ""),
            None => {}
        }
        for service in &self.extdisco.services {
            let _ = writeln!(out, "\n[[extdisco.services]]");
            let _ = writeln!(out, "type = {}", quote(service.kind.name()));
            let _ = writeln!(out, "host = {}", quote(&service.host));
            let _ = writeln!(out, "port = {}", service.port);
            let _ = writeln!(out, "transport = {}", quote(service.transport.name()));
            if service.secret.is_some() {
                let _ = writeln!(out, "secret = {}", quote(SECRET_MASK));
            }
            let _ = writeln!(out, "ttl_secs = {}", service.ttl_secs);
        }
        let contact = &self.contact;
        let _ = writeln!(out, "\n[contact]");
        for (key, list) in [
            ("abuse", &contact.abuse),
            ("admin", &contact.admin),
            ("support", &contact.support),
        ] {
            let quoted: Vec<String> = list.iter().map(|uri| quote(uri)).collect();
            let _ = writeln!(out, "{key} = [{}]", quoted.join(", "));
        }
    }
}

/// A value hearth derives from others when the key is not set, as a comment line
/// (`# domain = "rooms.localhost"  (derived)`): shown by `hearth check`, and still a valid
/// config file that leaves the key unset, so the value keeps following what it derives from.
fn write_derived(out: &mut String, key: &str, value: &str, note: &str) {
    let _ = writeln!(out, "# {key} = {}  (derived{note})", quote(value));
}

/// A TOML basic string: quotes, backslashes and every control character escaped.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ch if ch.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(ch));
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// Checks that `text` is a bare JID domain and returns its normalised form.
pub(crate) fn normalize_domain(text: &str) -> Result<String, String> {
    let jid =
        crate::jid::Jid::parse(text).map_err(|e| format!("`{text}` is not a valid domain: {e}"))?;
    if jid.local().is_some() || jid.resource().is_some() {
        return Err(format!(
            "`{text}` is not a bare domain (no `user@` and no `/resource`)"
        ));
    }
    Ok(jid.domain().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("accepted {text:?} as {config:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# only a comment\n").unwrap(), Config::default());
        assert_eq!(load(None).unwrap(), Config::default());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::default();
        assert_eq!(config.domain, "localhost");
        assert_eq!(config.data_dir, Path::new("./hearth-data"));
        assert_eq!(config.listen.starttls, ["0.0.0.0:5222".parse().unwrap()]);
        assert_eq!(config.listen.direct_tls, ["0.0.0.0:5223".parse().unwrap()]);
        assert_eq!(config.tls.files(), None);
        assert!(config.auth.require_encryption && config.auth.allow_plain);
        assert!(config.auth.legacy_auth);
        assert_eq!(config.limits.max_stanza_bytes, 262144);
        assert_eq!(config.limits.max_depth, 32);
        assert_eq!(config.limits.auth_timeout_secs, 30);
        assert_eq!(config.limits.max_vcard_bytes, 65536);
        assert_eq!(config.limits.max_stanza_bytes_preauth, 8192);
        assert_eq!(config.limits.max_attributes, 32);
        assert_eq!(config.limits.max_namespaces, 8);
        assert_eq!(config.limits.max_namespaces_in_scope, 16);
        assert_eq!(config.registration.mode, RegistrationMode::Closed);
        assert_eq!(config.registration.per_ip_per_hour, 5);
    }

    #[test]
    fn full_file_is_read() {
        let config = parse(
            r#"
domain = "Example.ORG"
data_dir = "/var/lib/hearth"
[listen]
starttls = ["[::]:5222", "127.0.0.1:15222"]
direct_tls = []
[tls]
cert = "/etc/hearth/cert.pem"
key = "/etc/hearth/key.pem"
[auth]
require_encryption = false
allow_plain = false
legacy_auth = false
[limits]
max_stanza_bytes = 4096
max_depth = 1024
auth_timeout_secs = 1
"#,
        )
        .unwrap();
        assert_eq!(config.domain, "example.org");
        assert_eq!(config.data_dir, Path::new("/var/lib/hearth"));
        assert_eq!(config.listen.starttls.len(), 2);
        assert!(config.listen.direct_tls.is_empty());
        assert_eq!(
            config.tls.files(),
            Some((
                Path::new("/etc/hearth/cert.pem"),
                Path::new("/etc/hearth/key.pem")
            ))
        );
        assert!(!config.auth.require_encryption);
        assert_eq!(config.limits.max_stanza_bytes, 4096);
        assert_eq!(config.limits.max_depth, 1024);
        assert_eq!(config.limits.auth_timeout_secs, 1);
        // Partial tables keep the defaults of the keys not given.
        let partial = parse("[limits]\nmax_depth = 8\n").unwrap();
        assert_eq!(partial.limits.max_depth, 8);
        assert_eq!(partial.limits.max_stanza_bytes, 262144);
    }

    #[test]
    fn unknown_keys_rejected_with_name_and_line() {
        let error = error_of("domain = \"a.example\"\nbogus = 1\n");
        assert!(error.starts_with("2:1: bogus: "), "{error}");
        assert!(error.contains("unknown field `bogus`"), "{error}");

        let error = error_of("[limits]\nmax_depth = 8\nmax_stanzas = 5\n");
        assert!(error.starts_with("3:1: limits.max_stanzas: "), "{error}");

        let error = error_of("[auth]\n\n  plain = true\n");
        assert!(error.starts_with("3:3: auth.plain: "), "{error}");

        let error = error_of("[tls]\ncert = \"a\"\nkey = \"b\"\nchain = \"c\"\n");
        assert!(error.starts_with("4:1: tls.chain: "), "{error}");

        let error = error_of("[listening]\n");
        assert!(
            error.contains("listening") && error.starts_with("1:"),
            "{error}"
        );
    }

    #[test]
    fn bad_types_rejected_with_key() {
        let error = error_of("[auth]\nallow_plain = \"yes\"\n");
        assert!(error.starts_with("2:15: auth.allow_plain: "), "{error}");
        assert!(error.contains("invalid type"), "{error}");

        let error = error_of("[limits]\nmax_depth = \"32\"\n");
        assert!(error.starts_with("2:13: limits.max_depth: "), "{error}");

        let error = error_of("domain = 5\n");
        assert!(error.starts_with("1:10: domain: "), "{error}");

        let error = error_of("listen = 5\n");
        assert!(error.starts_with("1:10: listen: "), "{error}");

        let error = error_of("[listen]\nstarttls = \"0.0.0.0:5222\"\n");
        assert!(error.starts_with("2:12: listen.starttls: "), "{error}");
    }

    #[test]
    fn syntax_errors_have_position() {
        let error = error_of("domain = \"a\"\n[limits\n");
        assert!(error.starts_with("2:"), "{error}");
        let error = error_of("domain = \"a\"\ndomain = \"b\"\n");
        assert!(error.starts_with("2:"), "{error}");
        assert!(!error.contains('\n'));
    }

    #[test]
    fn bad_addresses_rejected_with_key() {
        let error = error_of("[listen]\nstarttls = [\"0.0.0.0\"]\n");
        assert!(error.starts_with("2:12: listen.starttls: "), "{error}");
        assert!(error.contains("`0.0.0.0` is not an IP address with a port"));

        let error = error_of("[listen]\ndirect_tls = [\"example.org:5223\"]\n");
        assert!(error.contains("listen.direct_tls: "), "{error}");

        let error = error_of("[listen]\nstarttls = [5222]\n");
        assert!(error.contains("listen.starttls: "), "{error}");

        let error = error_of("[listen]\nstarttls = []\ndirect_tls = []\n");
        assert!(error.starts_with("1:1: listen: no client port"), "{error}");

        let error =
            error_of("[listen]\nstarttls = [\"0.0.0.0:5222\"]\ndirect_tls = [\"0.0.0.0:5222\"]\n");
        assert!(error.contains("0.0.0.0:5222 is listed twice"), "{error}");
    }

    #[test]
    fn ranges_checked() {
        for (text, key) in [
            (
                "[limits]\nmax_stanza_bytes = 4095\n",
                "limits.max_stanza_bytes",
            ),
            (
                "[limits]\nmax_stanza_bytes = 16777217\n",
                "limits.max_stanza_bytes",
            ),
            (
                "[limits]\nmax_stanza_bytes = -1\n",
                "limits.max_stanza_bytes",
            ),
            ("[limits]\nmax_depth = 3\n", "limits.max_depth"),
            ("[limits]\nmax_depth = 1025\n", "limits.max_depth"),
            (
                "[limits]\nmax_stanza_bytes_preauth = 2047\n",
                "limits.max_stanza_bytes_preauth",
            ),
            ("[limits]\nmax_attributes = 3\n", "limits.max_attributes"),
            ("[limits]\nmax_namespaces = 33\n", "limits.max_namespaces"),
            (
                "[limits]\nmax_namespaces_in_scope = 65\n",
                "limits.max_namespaces_in_scope",
            ),
            (
                "[limits]\nauth_timeout_secs = 0\n",
                "limits.auth_timeout_secs",
            ),
            (
                "[limits]\nauth_timeout_secs = 4294967296\n",
                "limits.auth_timeout_secs",
            ),
        ] {
            let error = error_of(text);
            assert!(error.starts_with("2:"), "{error}");
            assert!(
                error.contains(&format!("{key}: must be between")),
                "{error}"
            );
        }
        let edges = "[limits]\nmax_stanza_bytes = 16777216\nmax_depth = 4\n";
        assert_eq!(parse(edges).unwrap().limits.max_stanza_bytes, 16777216);
    }

    #[test]
    fn protection_settings_have_defaults_and_ranges() {
        let config = Config::default();
        assert_eq!(config.rate.stanzas_per_sec, 20);
        assert_eq!(config.rate.byte_burst, 200_000);
        assert_eq!(config.keepalive.idle_secs, 300);
        assert_eq!(config.keepalive.ping_timeout_secs, 60);
        assert_eq!(config.limits.max_unauthenticated_per_ip, 16);
        for (text, key) in [
            ("[rate]\nstanzas_per_sec = 0\n", "rate.stanzas_per_sec"),
            ("[rate]\nwarn_after_secs = 0\n", "rate.warn_after_secs"),
            ("[keepalive]\nidle_secs = -5\n", "keepalive.idle_secs"),
            ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
            (
                "[limits]\nauth_failure_delay_ms = 3600001\n",
                "limits.auth_failure_delay_ms",
            ),
        ] {
            let error = error_of(text);
            assert!(
                error.contains(&format!("{key}: must be between")),
                "{error}"
            );
        }
        let error = error_of("[keepalive]\nidle = 5\n");
        assert!(error.contains("keepalive.idle: "), "{error}");
        let partial = parse("[rate]\nstanzas_per_sec = 2\n").unwrap();
        assert_eq!(partial.rate.stanza_burst, 100);
    }

    #[test]
    fn domain_and_paths_checked() {
        let error = error_of("domain = \"alice@example.org\"\n");
        assert!(error.starts_with("1:10: domain: "), "{error}");
        assert!(error_of("domain = \"example.org/res\"\n").contains("domain: "));
        assert!(error_of("domain = \"\"\n").contains("domain: "));
        assert!(error_of("data_dir = \"\"\n").contains("data_dir: must not be empty"));
        let error = error_of("[tls]\ncert = \"/c.pem\"\n");
        assert!(error.contains("tls: cert is set but key is not"), "{error}");
        let error = error_of("[tls]\nkey = \"/k.pem\"\n");
        assert!(error.contains("tls: key is set but cert is not"), "{error}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("hearth-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hearth.toml");
        std::fs::write(&file, "[limits]\nmax_depth = 2\n").unwrap();
        let error = load(Some(&file)).unwrap_err();
        assert!(
            error.starts_with(&format!("{}:2:13: limits.max_depth: ", file.display())),
            "{error}"
        );
        std::fs::write(&file, b"domain = \"\xff\"\n").unwrap();
        assert!(load(Some(&file)).unwrap_err().contains("not valid UTF-8"));
        let missing = dir.join("missing.toml");
        let error = load(Some(&missing)).unwrap_err();
        assert!(error.starts_with(&missing.display().to_string()), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn to_toml_round_trips() {
        let default = Config::default();
        assert_eq!(parse(&default.to_toml()).unwrap(), default);
        assert!(default
            .to_toml()
            .contains("# no cert/key: self-signed certificate in"));

        let custom = Config {
            domain: "chat.example".into(),
            data_dir: PathBuf::from("/srv/odd \"dir\"\\with\ttab\u{7f}"),
            listen: Listen {
                starttls: vec!["[::1]:5222".parse().unwrap()],
                direct_tls: vec![],
            },
            tls: Tls {
                cert: Some(PathBuf::from("/etc/ssl/ç.pem")),
                key: Some(PathBuf::from("/etc/ssl/k.pem")),
            },
            auth: Auth {
                require_encryption: false,
                allow_plain: true,
                legacy_auth: false,
            },
            limits: Limits {
                max_stanza_bytes: 65536,
                max_depth: 100,
                max_stanza_bytes_preauth: 4096,
                max_attributes: 40,
                max_namespaces: 4,
                max_namespaces_in_scope: 20,
                auth_timeout_secs: 600,
                offline_quota: 5,
                outbound_queue_bytes: 65536,
                max_vcard_bytes: 2048,
                max_private_bytes: 1_000_000,
                max_connections: 7,
                max_connections_per_ip: 3,
                max_unauthenticated_per_ip: 2,
                auth_failure_delay_ms: 0,
                auth_failure_delay_max_ms: 10,
                max_unauthenticated_percent: 60,
                auth_attempts_per_account_per_min: 4,
            },
            rate: Rate {
                stanzas_per_sec: 1,
                stanza_burst: 2,
                bytes_per_sec: 3,
                byte_burst: 4,
                warn_after_secs: 5,
                disconnect_after_secs: 6,
            },
            keepalive: Keepalive {
                idle_secs: 7,
                ping_timeout_secs: 8,
                write_timeout_secs: 9,
            },
            registration: Registration {
                mode: RegistrationMode::Open,
                per_ip_per_hour: 3,
            },
            roster: Roster { max_items: 7 },
            muc: Muc {
                enabled: false,
                domain: Some("conference.chat.example".into()),
                max_rooms_per_user: 3,
                max_occupants: 50,
                history_default: 5,
                creators: Creators::Admins,
                admins: vec!["boss@chat.example".into()],
                max_affiliations: 20,
            },
            pep: Pep {
                max_nodes: 9,
                max_items: 8,
                max_item_bytes: 5000,
                max_reply_bytes: 70000,
            },
            sm: Sm {
                enabled: false,
                resume_timeout_secs: 60,
                max_unacked: 10,
            },
            mam: Mam {
                enabled: false,
                retention_days: 0,
            },
            push: Push {
                enabled: false,
                max_registrations_per_user: 3,
                include_body: true,
            },
            upload: Upload {
                enabled: false,
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 8443))],
                url: Some("https://files.chat.example".into()),
                max_file_bytes: 1000,
                quota_bytes_per_user: 5000,
                expire_days: 2,
                quota_files_per_user: 7,
                max_connections_per_ip: 2,
                first_byte_secs: 3,
                dir: Some(PathBuf::from("/srv/files")),
            },
            proxy: Proxy {
                enabled: false,
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 7000))],
                host: Some("192.168.1.2".into()),
                max_relays: 3,
                max_connections_per_ip: 4,
                first_byte_secs: 5,
                wait_secs: 6,
                max_waiting_per_ip: 2,
                max_waiting_per_stranger: 0,
                max_relay_bytes: 1 << 20,
                max_relay_secs: 60,
            },
            stun: Stun {
                enabled: false,
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 3479))],
                host: Some("stun.chat.example".into()),
            },
            extdisco: ExtDisco {
                services: vec![ExternalService {
                    kind: ServiceKind::Turns,
                    host: "turn.chat.example".into(),
                    port: 5349,
                    transport: Transport::Tcp,
                    secret: None,
                    ttl_secs: 600,
                }],
            },
            contact: Contact {
                abuse: vec!["mailto:abuse@chat.example".into()],
                admin: vec![],
                support: vec!["xmpp:help@chat.example".into(), "https://x.example".into()],
            },
            s2s: S2s {
                enabled: true,
                listen: vec!["127.0.0.2:5269".parse().unwrap()],
                allow: vec!["office.lan".into()],
                routes: [("office.lan".to_string(), "192.168.1.20:5269".to_string())].into(),
                pins: [("office.lan".to_string(), "ab".repeat(32))].into(),
                ..S2s::default()
            },
            component: ComponentListener {
                listen: vec!["127.0.0.1:5348".parse().unwrap()],
                replace: true,
                ..ComponentListener::default()
            },
            components: Vec::new(),
        };
        let text = custom.to_toml();
        assert_eq!(parse(&text).unwrap(), custom, "{text}");
    }

    #[test]
    fn service_domains_must_differ() {
        let error = error_of("domain = \"d.example\"\n[muc]\ndomain = \"upload.d.example\"\n");
        assert!(error.contains("muc.domain: must differ"), "{error}");
        let error = error_of("domain = \"d.example\"\n[muc]\ndomain = \"proxy.d.example\"\n");
        assert!(error.contains("muc.domain: must differ"), "{error}");
        let text = "domain = \"d.example\"\n[muc]\ndomain = \"proxy.d.example\"\n[proxy]\nenabled = false\n";
        assert!(parse(text).is_ok());
    }

    #[test]
    fn components_section() {
        let text = "[component]\nlisten = [\"127.0.0.1:0\"]\nreplace = true\n\
                    [[components]]\ndomain = \"irc.localhost\"\nsecret = \"s3cret\"\n\
                    stanzas_per_sec = 50\n[[components]]\ndomain = \"bot.localhost\"\nsecret = \"x\"\n";
        let config = parse(text).unwrap();
        assert!(config.component.replace);
        assert_eq!(config.components.len(), 2);
        assert_eq!(config.components[0].secret.expose(), b"s3cret");
        assert_eq!(config.components[0].stanzas_per_sec, 50);
        assert_eq!(config.components[1].stanza_burst, 2000);
        // `hearth check` never prints a component's secret.
        let shown = config.to_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        let mut read_back = parse(&shown).unwrap();
        for (back, original) in read_back.components.iter_mut().zip(&config.components) {
            back.secret = original.secret.clone();
        }
        assert_eq!(read_back, config);
        assert!(Config::default().components.is_empty());
        assert_eq!(
            Config::default().component.listen,
            vec![SocketAddr::from(([127, 0, 0, 1], 5347))]
        );
        let error = error_of("[[components]]\ndomain = \"irc.localhost\"\n");
        assert!(error.contains("secret"), "{error}");
        let error = error_of("[[components]]\ndomain = \"irc.localhost\"\nsecret = \"\"\n");
        assert!(
            error.contains("components.secret") || error.contains("secret"),
            "{error}"
        );
        for domain in ["localhost", "rooms.localhost", "upload.localhost"] {
            let error = error_of(&format!(
                "[[components]]\ndomain = \"{domain}\"\nsecret = \"x\"\n"
            ));
            assert!(error.contains("components.domain: "), "{error}");
        }
        let twice = "[[components]]\ndomain = \"a.localhost\"\nsecret = \"x\"\n";
        let error = error_of(&format!("{twice}{twice}"));
        assert!(error.contains("components.domain: "), "{error}");
    }

    #[test]
    fn push_section() {
        let config =
            parse("[push]\nmax_registrations_per_user = 2\ninclude_body = true\n").unwrap();
        assert!(config.push.enabled);
        assert_eq!(config.push.max_registrations_per_user, 2);
        assert!(config.push.include_body);
        assert!(!Config::default().push.include_body);
        let error = error_of("[push]\nmax_registrations_per_user = 0\n");
        assert!(
            error.starts_with("2:") && error.contains("push.max_registrations_per_user"),
            "{error}"
        );
        assert!(error_of("[push]\nsecret = 1\n").contains("secret"));
    }

    #[test]
    fn muc_section() {
        let config =
            parse("domain = \"Example.ORG\"\n[muc]\nadmins = [\"Boss@Example.org\"]\n").unwrap();
        assert_eq!(config.muc.admins, vec!["boss@example.org".to_string()]);
        assert_eq!(config.muc_domain().as_deref(), Some("rooms.example.org"));
        let error = error_of("[muc]\nadmins = [\"example.org\"]\n");
        assert!(
            error.starts_with("2:") && error.contains("muc.admins"),
            "{error}"
        );
        let error = error_of("[muc]\ncreators = \"everyone\"\n");
        assert!(error.contains("muc.creators"), "{error}");
        assert_eq!(
            parse("[muc]\nenabled = false\n").unwrap().muc_domain(),
            None
        );
    }

    #[test]
    fn extdisco_and_contact_sections() {
        let text = "[[extdisco.services]]\ntype = \"turn\"\nhost = \"turn.example\"\nport = 3478\nsecret = \"s3cret\"\n[contact]\nabuse = [\"mailto:a@example.org\"]\n";
        let config = parse(text).unwrap();
        let [service] = config.extdisco.services.as_slice() else {
            panic!("{config:?}");
        };
        assert_eq!(service.kind, ServiceKind::Turn);
        assert_eq!(service.transport, Transport::Udp);
        assert_eq!(service.ttl_secs, 86_400);
        assert_eq!(
            service.secret.as_ref().map(Secret::expose),
            Some(&b"s3cret"[..])
        );
        assert_eq!(config.contact.abuse, ["mailto:a@example.org"]);
        // The secret shows nowhere: not in the effective settings, not in Debug output.
        let shown = config.to_toml();
        assert!(!shown.contains("s3cret") && shown.contains("secret = \"(hidden)\""));
        assert!(!format!("{config:?}").contains("s3cret"));

        for (bad, key) in [
            ("[[extdisco.services]]\ntype = \"relay\"\nhost = \"h\"\nport = 1\n", "extdisco.services.type"),
            ("[[extdisco.services]]\ntype = \"stun\"\nhost = \"h\"\nport = 0\n", "extdisco.services.port"),
            ("[[extdisco.services]]\ntype = \"stun\"\nhost = \"\"\nport = 1\n", "extdisco.services.host"),
            ("[[extdisco.services]]\ntype = \"stun\"\nhost = \"h\"\nport = 1\ntransport = \"sctp\"\n", "extdisco.services.transport"),
            ("[contact]\nabuse = [\"abuse@example.org\"]\n", "contact.abuse"),
            ("[stun]\nlisten = [\"3478\"]\n", "stun.listen"),
        ] {
            let error = error_of(bad);
            assert!(error.contains(key), "{bad}: {error}");
        }
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(line_and_column("", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("é = 1\nx", 3), (1, 3));
        assert_eq!(line_and_column("x\né = 1", 4), (2, 2));
        assert_eq!(line_and_column("ab", 99), (1, 3));
    }
}
