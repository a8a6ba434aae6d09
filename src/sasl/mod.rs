//! Server-side SASL (RFC 6120 §6, RFC 4422): one authentication attempt's state machine
//! for SCRAM-SHA-256 (RFC 7677), SCRAM-SHA-1 (RFC 5802), their -PLUS variants with the
//! `tls-exporter` channel binding (RFC 9266) and PLAIN (RFC 4616), plus the
//! credentials stored per account and a minimal SCRAM client for tools and tests.
//!
//! Owns the parsing and verification of SASL payloads (the caller does the XML and the
//! base64 of `<auth/>`/`<response/>`). It must never do I/O (accounts are read through a
//! callback), never keep a password beyond verifying one PLAIN message, and never let a
//! peer learn whether an account exists: unknown users get a normal-looking exchange
//! that fails only where a wrong password would.

pub mod base64;
pub mod client;
mod credentials;
mod hash;
mod plain;
mod scram;

pub use client::ScramClient;
pub use credentials::{
    prepare_password, set_decoy_secret, Credentials, CredentialsError, ScramKeys,
    DEFAULT_ITERATIONS, SALT_LEN,
};

pub(crate) use hash::constant_time_eq;
use hash::ScramHash;

/// Longest localpart in bytes (RFC 7622 §3.3.1).
const MAX_LOCALPART_BYTES: usize = 1023;

/// A SASL mechanism this server implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

/// The only channel-binding type this server offers (RFC 9266), as named in a gs2 header.
pub const CHANNEL_BINDING_TYPE: &str = "tls-exporter";

impl Mechanism {
    /// Every mechanism, strongest first: the order to advertise in `<mechanisms/>`.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// Parses a mechanism name exactly as registered (names are case-sensitive, RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// A `-PLUS` mechanism: SCRAM with channel binding (RFC 5802 §4).
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

/// Why an attempt failed: the RFC 6120 §6.5 conditions this server produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Aborted,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    NotAuthorized,
    TemporaryAuthFailure,
}

impl Failure {
    /// The child element name of `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`.
    pub fn condition(&self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// What to send next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// `<challenge/>` with this (not yet base64-encoded) payload; the exchange continues.
    Challenge(Vec<u8>),
    /// `<success/>`; `additional_data` empty means an element without content
    /// (RFC 6120 §6.3.10), otherwise it is base64-encoded into it (SCRAM's `v=`).
    Success {
        /// The authenticated localpart, lowercased.
        username: String,
        additional_data: Vec<u8>,
    },
    /// `<failure/>` with this condition; the exchange is over.
    Failure(Failure),
}

/// An attempt waiting for the client's next `<response/>`. Boxed so that a session
/// holds one pointer, and nothing at all between attempts.
pub struct Exchange(Box<State>);

enum State {
    /// `<auth/>` carried no initial response; an empty challenge was sent (RFC 6120 §6.4.2).
    AwaitingInitial {
        mechanism: Mechanism,
        domain: Box<str>,
        binding: Option<Box<[u8]>>,
    },
    /// SCRAM server-first-message sent; waiting for client-final-message.
    AwaitingScramFinal(scram::AwaitingFinal),
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &*self.0 {
            State::AwaitingInitial { .. } => "Exchange(AwaitingInitial)",
            State::AwaitingScramFinal(_) => "Exchange(AwaitingScramFinal)",
        })
    }
}

impl Exchange {
    /// Begins an attempt after `<auth mechanism=…/>`.
    ///
    /// `initial`: decoded initial response if the client sent one (None = absent;
    /// Some(empty) = "=" in XMPP). `domain` is the served domain, against which an
    /// authzid is checked. `binding` is the connection's `tls-exporter` data when it
    /// offers the -PLUS mechanisms (None otherwise): SCRAM checks `c=` against it and
    /// refuses a client that says `y` while it is there (RFC 5802 §6).
    /// `lookup(username) -> Option<Credentials>` reads the account.
    /// The returned exchange is `Some` exactly when the step is a challenge.
    pub fn start(
        mech: Mechanism,
        initial: Option<&[u8]>,
        domain: &str,
        binding: Option<&[u8]>,
        lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
    ) -> (Step, Option<Exchange>) {
        match initial {
            Some(message) => first_message(mech, message, domain, binding, lookup),
            None => (
                Step::Challenge(Vec::new()),
                Some(Exchange(Box::new(State::AwaitingInitial {
                    mechanism: mech,
                    domain: domain.into(),
                    binding: binding.map(Into::into),
                }))),
            ),
        }
    }

    /// Continues with the decoded payload of the client's `<response/>`.
    pub fn step(
        self,
        response: &[u8],
        lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
    ) -> (Step, Option<Exchange>) {
        match *self.0 {
            State::AwaitingInitial {
                mechanism,
                domain,
                binding,
            } => first_message(mechanism, response, &domain, binding.as_deref(), lookup),
            State::AwaitingScramFinal(awaiting) => (awaiting.finish(response), None),
        }
    }
}

fn first_message(
    mechanism: Mechanism,
    message: &[u8],
    domain: &str,
    binding: Option<&[u8]>,
    lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
) -> (Step, Option<Exchange>) {
    let Some(hash) = mechanism.scram_hash() else {
        return (plain::authenticate(message, domain, lookup), None);
    };
    let binding = scram::Binding {
        plus: mechanism.is_plus(),
        exporter: binding,
    };
    match scram::server_first(hash, binding, message, domain, lookup) {
        Ok((server_first, awaiting)) => (
            Step::Challenge(server_first),
            Some(Exchange(Box::new(State::AwaitingScramFinal(awaiting)))),
        ),
        Err(failure) => (Step::Failure(failure), None),
    }
}

/// Validates an authentication identity as a JID localpart and lowercases it.
/// This is a simplified RFC 7622 check (no PRECIS), enough to keep names that could
/// never be accounts (or that would break a JID) out of lookups.
fn normalize_username(name: &str) -> Option<String> {
    let lowered = name.to_lowercase();
    let forbidden = |c: char| {
        matches!(c, '@' | '/' | '"' | '&' | '\'' | ':' | '<' | '>')
            || c.is_whitespace()
            || c.is_control()
    };
    let acceptable = !lowered.is_empty()
        && lowered.len() <= MAX_LOCALPART_BYTES
        && !lowered.chars().any(forbidden);
    acceptable.then_some(lowered)
}

/// An authzid is only allowed to name the authenticated user's own bare JID: this
/// server has no proxy authorisation (RFC 6120 §6.3.8).
fn authzid_allowed(authzid: &str, username: &str, domain: &str) -> bool {
    match authzid.rsplit_once('@') {
        Some((local, authz_domain)) => {
            local.to_lowercase() == username && authz_domain.eq_ignore_ascii_case(domain)
        }
        None => false,
    }
}

/// Who authenticates, as PLAIN and SCRAM both establish it: the normalised authcid (checked
/// against the authzid, if one was given) with its stored credentials and whether the account
/// exists. An unknown user gets decoy credentials, so the exchange costs the same PBKDF2 run
/// and its timing does not tell whether the account exists.
fn identify(
    authcid: &str,
    authzid: Option<&str>,
    domain: &str,
    lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
) -> Result<(String, Credentials, bool), Failure> {
    let username = normalize_username(authcid).ok_or(Failure::NotAuthorized)?;
    if authzid.is_some_and(|authzid| !authzid_allowed(authzid, &username, domain)) {
        return Err(Failure::InvalidAuthzid);
    }
    match lookup(&username) {
        Some(credentials) => Ok((username, credentials, true)),
        None => {
            let decoy = Credentials::decoy(&username).ok_or(Failure::TemporaryAuthFailure)?;
            Ok((username, decoy, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "example.org";

    fn accounts(password: &str) -> impl FnMut(&str) -> Option<Credentials> {
        let credentials = Credentials::derive(password, 64).unwrap();
        move |user| (user == "juliet").then(|| credentials.clone())
    }

    fn scram_login(mechanism: Mechanism, username: &str, password: &str) -> Step {
        let mut lookup = accounts("r0meo");
        let mut client = ScramClient::new(mechanism, username, password).unwrap();
        let (step, exchange) =
            Exchange::start(mechanism, Some(&client.first()), DOMAIN, None, &mut lookup);
        let Step::Challenge(server_first) = step else {
            return step;
        };
        let client_final = client.handle_server_first(&server_first).unwrap();
        let (step, rest) = exchange.unwrap().step(&client_final, &mut lookup);
        assert!(rest.is_none());
        if let Step::Success {
            additional_data, ..
        } = &step
        {
            assert!(client.verify_server_final(additional_data));
        }
        step
    }

    #[test]
    fn mechanism_names_round_trip() {
        for mechanism in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(
            Mechanism::from_name("SCRAM-SHA-1-PLUS"),
            Some(Mechanism::ScramSha1Plus)
        );
        assert_eq!(Mechanism::from_name("SCRAM-SHA-1-plus"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::ALL[0], Mechanism::ScramSha256Plus);
    }

    #[test]
    fn failure_conditions_are_rfc6120_names() {
        assert_eq!(Failure::NotAuthorized.condition(), "not-authorized");
        assert_eq!(Failure::MalformedRequest.condition(), "malformed-request");
        assert_eq!(Failure::InvalidAuthzid.condition(), "invalid-authzid");
        assert_eq!(Failure::IncorrectEncoding.condition(), "incorrect-encoding");
        assert_eq!(Failure::InvalidMechanism.condition(), "invalid-mechanism");
        assert_eq!(Failure::Aborted.condition(), "aborted");
        assert_eq!(
            Failure::TemporaryAuthFailure.condition(),
            "temporary-auth-failure"
        );
    }

    #[test]
    fn full_scram_exchanges_with_the_client() {
        for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha1] {
            let step = scram_login(mechanism, "Juliet", "r0meo");
            let Step::Success { username, .. } = step else {
                panic!("{mechanism:?}: {step:?}");
            };
            assert_eq!(username, "juliet");
            assert_eq!(
                scram_login(mechanism, "juliet", "wrong"),
                Step::Failure(Failure::NotAuthorized)
            );
            assert_eq!(
                scram_login(mechanism, "nobody", "r0meo"),
                Step::Failure(Failure::NotAuthorized)
            );
            assert_eq!(
                scram_login(mechanism, "bad user", "r0meo"),
                Step::Failure(Failure::NotAuthorized)
            );
        }
    }

    /// A -PLUS login through [`Exchange`] with the client binding `client_data` to a
    /// connection whose exporter is `server_data`.
    fn plus_login(mechanism: Mechanism, server_data: &[u8], client_data: &[u8]) -> Step {
        let mut lookup = accounts("r0meo");
        let mut client = ScramClient::new(mechanism, "juliet", "r0meo")
            .unwrap()
            .bind_tls_exporter(client_data);
        // No initial response: the binding must survive the empty-challenge round trip.
        let (_, exchange) =
            Exchange::start(mechanism, None, DOMAIN, Some(server_data), &mut lookup);
        let (step, exchange) = exchange.unwrap().step(&client.first(), &mut lookup);
        let Step::Challenge(server_first) = step else {
            return step;
        };
        let client_final = client.handle_server_first(&server_first).unwrap();
        let (step, _) = exchange.unwrap().step(&client_final, &mut lookup);
        if let Step::Success {
            additional_data, ..
        } = &step
        {
            assert!(client.verify_server_final(additional_data));
        }
        step
    }

    #[test]
    fn plus_exchanges_with_the_client() {
        for mechanism in [Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus] {
            assert!(mechanism.is_plus());
            let step = plus_login(mechanism, &[1; 32], &[1; 32]);
            assert!(
                matches!(step, Step::Success { .. }),
                "{mechanism:?}: {step:?}"
            );
            assert_eq!(
                plus_login(mechanism, &[1; 32], &[2; 32]),
                Step::Failure(Failure::NotAuthorized)
            );
        }
    }

    #[test]
    fn scram_without_initial_response_sends_empty_challenge() {
        let mut lookup = accounts("r0meo");
        let (step, exchange) =
            Exchange::start(Mechanism::ScramSha1, None, DOMAIN, None, &mut lookup);
        assert_eq!(step, Step::Challenge(Vec::new()));
        let mut client = ScramClient::new(Mechanism::ScramSha1, "juliet", "r0meo").unwrap();
        let (step, exchange) = exchange.unwrap().step(&client.first(), &mut lookup);
        let Step::Challenge(server_first) = step else {
            panic!("{step:?}");
        };
        let client_final = client.handle_server_first(&server_first).unwrap();
        let (step, _) = exchange.unwrap().step(&client_final, &mut lookup);
        assert!(matches!(step, Step::Success { .. }), "{step:?}");
    }

    #[test]
    fn scram_with_empty_initial_response_is_malformed() {
        let mut lookup = accounts("r0meo");
        let (step, exchange) =
            Exchange::start(Mechanism::ScramSha256, Some(b""), DOMAIN, None, &mut lookup);
        assert_eq!(step, Step::Failure(Failure::MalformedRequest));
        assert!(exchange.is_none());
    }

    #[test]
    fn plain_without_initial_response_challenges_first() {
        let mut lookup = accounts("r0meo");
        let (step, exchange) = Exchange::start(Mechanism::Plain, None, DOMAIN, None, &mut lookup);
        assert_eq!(step, Step::Challenge(Vec::new()));
        let (step, exchange) = exchange.unwrap().step(b"\0juliet\0r0meo", &mut lookup);
        assert!(exchange.is_none());
        assert_eq!(
            step,
            Step::Success {
                username: "juliet".into(),
                additional_data: Vec::new()
            }
        );
    }

    #[test]
    fn usernames_are_checked_as_localparts() {
        assert_eq!(normalize_username("Juliet").as_deref(), Some("juliet"));
        assert_eq!(normalize_username("ÉLODIE").as_deref(), Some("élodie"));
        assert_eq!(normalize_username("a,b=c").as_deref(), Some("a,b=c"));
        assert_eq!(
            normalize_username(&"x".repeat(1023)).map(|s| s.len()),
            Some(1023)
        );
        for bad in [
            "",
            "a@b",
            "a/b",
            "a\"b",
            "a&b",
            "a'b",
            "a:b",
            "a<b",
            "a>b",
            "a b",
            "a\tb",
            "a\u{3000}b",
            "a\0b",
        ] {
            assert_eq!(normalize_username(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_username(&"x".repeat(1024)), None);
    }

    #[test]
    fn authzid_must_be_own_bare_jid() {
        assert!(authzid_allowed("juliet@example.org", "juliet", DOMAIN));
        assert!(authzid_allowed("JULIET@EXAMPLE.ORG", "juliet", DOMAIN));
        assert!(!authzid_allowed(
            "juliet@example.org/balcony",
            "juliet",
            DOMAIN
        ));
        assert!(!authzid_allowed("juliet", "juliet", DOMAIN));
        assert!(!authzid_allowed("romeo@example.org", "juliet", DOMAIN));
        assert!(!authzid_allowed("@example.org", "juliet", DOMAIN));
    }

    #[test]
    fn exchange_is_one_pointer() {
        assert_eq!(
            std::mem::size_of::<Exchange>(),
            std::mem::size_of::<usize>()
        );
        assert_eq!(
            std::mem::size_of::<Option<Exchange>>(),
            std::mem::size_of::<usize>()
        );
    }
}
