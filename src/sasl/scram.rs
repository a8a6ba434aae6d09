//! SCRAM server side (RFC 5802 §5, §6, §7; RFC 7677), with the `tls-exporter` channel
//! binding (RFC 9266) for the -PLUS mechanisms.
//!
//! Owns parsing of client-first/client-final messages, the gs2 channel-binding rules and
//! proof verification. It must never answer an unknown user differently from a wrong
//! password before the proof step, and never compare proofs in variable time.

use super::base64;
use super::credentials::{Credentials, HashKeys};
use super::hash::{constant_time_eq, xor, ScramHash};
use super::{identify, Failure, Step, CHANNEL_BINDING_TYPE};
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes appended (base64-encoded) to the client nonce.
const SERVER_NONCE_BYTES: usize = 18;

/// The channel-binding side of one attempt.
#[derive(Clone, Copy)]
pub(super) struct Binding<'a> {
    /// The client chose a -PLUS mechanism.
    pub plus: bool,
    /// The connection's `tls-exporter` bytes, present exactly when -PLUS is offered.
    pub exporter: Option<&'a [u8]>,
}

/// State kept between server-first-message and client-final-message.
pub(super) struct AwaitingFinal {
    /// The verifier pair of the mechanism's hash.
    keys: HashKeys,
    /// False when `keys` belong to a decoy, so the proof can never pass.
    account_exists: bool,
    username: String,
    /// What `c=` must decode to: the gs2-header exactly as received, followed by the
    /// channel-binding data when the client binds (RFC 5802 §7 `cbind-input`).
    cbind_input: Vec<u8>,
    /// Client nonce followed by server nonce.
    nonce: String,
    /// `client-first-message-bare "," server-first-message`.
    auth_message_start: String,
}

/// Handles client-first-message; returns server-first-message and the state to finish.
pub(super) fn server_first(
    hash: ScramHash,
    binding: Binding,
    client_first: &[u8],
    domain: &str,
    lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
) -> Result<(Vec<u8>, AwaitingFinal), Failure> {
    let mut random = [0; SERVER_NONCE_BYTES];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| Failure::TemporaryAuthFailure)?;
    server_first_with_nonce(
        hash,
        binding,
        client_first,
        domain,
        lookup,
        &base64::encode(&random),
    )
}

/// The gs2 channel-binding rules (RFC 5802 §6, RFC 9266): returns `cbind-input`, the
/// bytes `c=` must carry.
fn cbind_input(message: &ClientFirst, binding: Binding) -> Result<Vec<u8>, Failure> {
    let mut input = message.gs2_header.as_bytes().to_vec();
    match (message.cbind_flag, binding.plus, binding.exporter) {
        // No binding on a plain SCRAM mechanism: as before channel binding existed.
        (CbindFlag::No, false, _) => Ok(input),
        // "y": the client could bind but thinks we cannot. Fine when we offer no -PLUS;
        // when we do, someone stripped them from the features: a downgrade (§6).
        (CbindFlag::NotOffered, false, None) => Ok(input),
        (CbindFlag::NotOffered, false, Some(_)) => Err(Failure::NotAuthorized),
        // "p=" on a mechanism without binding contradicts itself.
        (CbindFlag::Bound(_), false, _) => Err(Failure::MalformedRequest),
        (CbindFlag::Bound(name), true, Some(exporter)) if name == CHANNEL_BINDING_TYPE => {
            input.extend_from_slice(exporter);
            Ok(input)
        }
        // -PLUS without "p=", another binding type, or -PLUS on a connection that
        // offers none: no binding can be verified.
        (_, true, _) => Err(Failure::NotAuthorized),
    }
}

/// [`server_first`] with a given server nonce part (the RFC examples use fixed ones).
fn server_first_with_nonce(
    hash: ScramHash,
    binding: Binding,
    client_first: &[u8],
    domain: &str,
    lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
    server_nonce: &str,
) -> Result<(Vec<u8>, AwaitingFinal), Failure> {
    let text = std::str::from_utf8(client_first).map_err(|_| Failure::MalformedRequest)?;
    let message = ClientFirst::parse(text)?;
    let cbind_input = cbind_input(&message, binding)?;
    let authzid = message.authzid.as_deref();
    let (username, credentials, account_exists) =
        identify(&message.username, authzid, domain, lookup)?;
    let nonce = format!("{}{server_nonce}", message.client_nonce);
    let server_first = format!(
        "r={nonce},s={},i={}",
        base64::encode(&credentials.salt),
        credentials.iterations
    );
    let awaiting = AwaitingFinal {
        keys: credentials.keys(hash),
        account_exists,
        username,
        cbind_input,
        nonce,
        auth_message_start: format!("{},{server_first}", message.bare),
    };
    Ok((server_first.into_bytes(), awaiting))
}

/// The gs2 `gs2-cbind-flag` (RFC 5802 §7).
#[derive(Clone, Copy)]
enum CbindFlag<'a> {
    /// "n": the client does not support channel binding.
    No,
    /// "y": the client supports it but thinks the server does not.
    NotOffered,
    /// "p=cb-name": the client binds with this type.
    Bound(&'a str),
}

/// The parts of a client-first-message this server uses.
struct ClientFirst<'a> {
    cbind_flag: CbindFlag<'a>,
    gs2_header: &'a str,
    authzid: Option<String>,
    username: String,
    client_nonce: &'a str,
    bare: &'a str,
}

impl<'a> ClientFirst<'a> {
    fn parse(text: &'a str) -> Result<Self, Failure> {
        let (cbind_field, rest) = text.split_once(',').ok_or(Failure::MalformedRequest)?;
        let cbind_flag = match cbind_field {
            "n" => CbindFlag::No,
            "y" => CbindFlag::NotOffered,
            field => match field.strip_prefix("p=") {
                // cb-name = 1*(ALPHA / DIGIT / "." / "-")
                Some(name)
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
                {
                    CbindFlag::Bound(name)
                }
                _ => return Err(Failure::MalformedRequest),
            },
        };
        let (authzid_field, bare) = rest.split_once(',').ok_or(Failure::MalformedRequest)?;
        let authzid = match authzid_field {
            "" => None,
            field => Some(unescape_saslname(
                field.strip_prefix("a=").ok_or(Failure::MalformedRequest)?,
            )?),
        };
        let gs2_header = text
            .get(..cbind_field.len() + authzid_field.len() + 2)
            .ok_or(Failure::MalformedRequest)?;
        let mut attributes = bare.split(',');
        // A leading "m=" is a mandatory extension we do not support (RFC 5802 §5.1);
        // it fails the prefix check below. Later extensions are ignored.
        let username = attributes
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(Failure::MalformedRequest)?;
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(Failure::MalformedRequest)?;
        if !is_printable(client_nonce) {
            return Err(Failure::MalformedRequest);
        }
        Ok(ClientFirst {
            cbind_flag,
            gs2_header,
            authzid,
            username: unescape_saslname(username)?,
            client_nonce,
            bare,
        })
    }
}

/// `printable = %x21-2B / %x2D-7E` (no ','), at least one character.
fn is_printable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
}

/// Decodes a `saslname`: `=2C` is ',' and `=3D` is '='; any other '=' is malformed.
fn unescape_saslname(name: &str) -> Result<String, Failure> {
    if name.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '=' => match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => out.push(','),
                (Some('3'), Some('D')) => out.push('='),
                _ => return Err(Failure::MalformedRequest),
            },
            '\0' => return Err(Failure::MalformedRequest),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl AwaitingFinal {
    /// Handles client-final-message: success carries `v=ServerSignature`.
    pub(super) fn finish(self, client_final: &[u8]) -> Step {
        match self.verify(client_final) {
            Ok(step) => step,
            Err(failure) => Step::Failure(failure),
        }
    }

    fn verify(self, client_final: &[u8]) -> Result<Step, Failure> {
        let text = std::str::from_utf8(client_final).map_err(|_| Failure::MalformedRequest)?;
        // The proof is always the last attribute; everything before it is signed.
        let (without_proof, proof_field) =
            text.rsplit_once(',').ok_or(Failure::MalformedRequest)?;
        let proof = proof_field
            .strip_prefix("p=")
            .and_then(base64::decode)
            .ok_or(Failure::MalformedRequest)?;
        let mut attributes = without_proof.split(',');
        let channel_binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .and_then(base64::decode)
            .ok_or(Failure::MalformedRequest)?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(Failure::MalformedRequest)?;
        if channel_binding != self.cbind_input || nonce != self.nonce {
            return Err(Failure::NotAuthorized);
        }

        let hash = self.keys.hash();
        let key_len = hash.len();
        let stored_key = self.keys.stored_key();
        let server_key = self.keys.server_key();
        let auth_message = format!("{},{without_proof}", self.auth_message_start);
        let client_signature = hash.hmac(stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        let proof_matches =
            proof.len() == key_len && constant_time_eq(&hash.digest(&client_key), stored_key);
        // `&`, not `&&`: the decoy path does the same work as a real one.
        if !(proof_matches & self.account_exists) {
            return Err(Failure::NotAuthorized);
        }
        let server_signature = hash.hmac(server_key, auth_message.as_bytes());
        Ok(Step::Success {
            username: self.username,
            additional_data: format!("v={}", base64::encode(&server_signature)).into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    const DOMAIN: &str = "example.org";

    /// Accounts holding "user"/"pencil" with the salt of the given RFC example.
    fn rfc_accounts(salt_b64: &str) -> impl FnMut(&str) -> Option<Credentials> {
        let salt = base64::decode(salt_b64).unwrap();
        let credentials = Credentials::with_salt("pencil", salt, NonZeroU32::new(4096).unwrap());
        move |user| (user == "user").then(|| credentials.clone())
    }

    fn first(
        hash: ScramHash,
        client_first: &str,
        lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
    ) -> Result<(String, AwaitingFinal), Failure> {
        first_bound(hash, NO_BINDING, client_first, lookup)
    }

    /// No -PLUS mechanism chosen, none offered.
    const NO_BINDING: Binding = Binding {
        plus: false,
        exporter: None,
    };

    fn first_bound(
        hash: ScramHash,
        binding: Binding,
        client_first: &str,
        lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
    ) -> Result<(String, AwaitingFinal), Failure> {
        server_first_with_nonce(
            hash,
            binding,
            client_first.as_bytes(),
            DOMAIN,
            lookup,
            "SERVERNONCE",
        )
        .map(|(message, awaiting)| (String::from_utf8(message).unwrap(), awaiting))
    }

    /// An RFC example exchange up to the server-first message: "user" with password
    /// "pencil" salted with `salt_b64`, and the RFC's nonces.
    fn rfc_first(
        hash: ScramHash,
        salt_b64: &str,
        client_first: &[u8],
        server_nonce: &str,
    ) -> (Vec<u8>, AwaitingFinal) {
        let mut lookup = rfc_accounts(salt_b64);
        server_first_with_nonce(
            hash,
            NO_BINDING,
            client_first,
            DOMAIN,
            &mut lookup,
            server_nonce,
        )
        .unwrap()
    }

    /// The RFC 5802 (SHA-1) example up to the server-first message.
    fn rfc5802_first() -> (Vec<u8>, AwaitingFinal) {
        rfc_first(
            ScramHash::Sha1,
            "QSXCR+Q6sek8bf92",
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
        )
    }

    #[test]
    fn rfc5802_sha1_example() {
        let (server_first, awaiting) = rfc5802_first();
        assert_eq!(
            server_first,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let step = awaiting.finish(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        );
        assert_eq!(
            step,
            Step::Success {
                username: "user".into(),
                additional_data: b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec(),
            }
        );
    }

    #[test]
    fn rfc7677_sha256_example() {
        let (server_first, awaiting) = rfc_first(
            ScramHash::Sha256,
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
        assert_eq!(
            server_first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let step = awaiting.finish(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        assert_eq!(
            step,
            Step::Success {
                username: "user".into(),
                additional_data: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
            }
        );
    }

    /// The RFC 5802 exchange, with the client-final message replaced.
    fn rfc5802_final(client_final: &str) -> Step {
        let (_, awaiting) = rfc5802_first();
        awaiting.finish(client_final.as_bytes())
    }

    #[test]
    fn wrong_proof_nonce_or_binding_is_not_authorized() {
        let not_authorized = Step::Failure(Failure::NotAuthorized);
        // A proof with one character changed.
        assert_eq!(
            rfc5802_final("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI5Ts="),
            not_authorized
        );
        // Truncated proof.
        assert_eq!(
            rfc5802_final("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJ"),
            not_authorized
        );
        // Tampered and truncated nonces.
        assert_eq!(
            rfc5802_final("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7k,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            not_authorized
        );
        assert_eq!(
            rfc5802_final("c=biws,r=fyko+d2lbbFgONRv9qkxdawL,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            not_authorized
        );
        // c= of "y,," instead of the "n,," actually sent.
        assert_eq!(
            rfc5802_final("c=eSws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            not_authorized
        );
    }

    #[test]
    fn malformed_client_final_is_rejected() {
        for bad in [
            "",
            "c=biws",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "c=biws,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=,x=1",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=not base64!",
            "c=bi,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "x=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        ] {
            assert_eq!(
                rfc5802_final(bad),
                Step::Failure(Failure::MalformedRequest),
                "{bad:?}"
            );
        }
        let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
        let (_, awaiting) = first(ScramHash::Sha1, "n,,n=user,r=abc", &mut lookup).unwrap();
        assert_eq!(
            awaiting.finish(b"c=biws,r=abc\xff,p=AAAA"),
            Step::Failure(Failure::MalformedRequest)
        );
    }

    #[test]
    fn extensions_in_client_final_are_signed_and_accepted() {
        // An unknown optional extension before the proof is part of AuthMessage; the
        // RFC proof then no longer matches, which shows it is not silently dropped.
        assert_eq!(
            rfc5802_final("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,x=1,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn client_first_variants() {
        let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
        let (server_first, awaiting) =
            first(ScramHash::Sha1, "y,,n=user,r=abc", &mut lookup).unwrap();
        assert!(server_first.starts_with("r=abcSERVERNONCE,s=QSXCR+Q6sek8bf92,i=4096"));
        assert_eq!(awaiting.cbind_input, b"y,,");
        let (_, awaiting) = first(
            ScramHash::Sha1,
            "n,a=user@example.org,n=USER,r=abc,x=ignored",
            &mut lookup,
        )
        .unwrap();
        assert_eq!(awaiting.cbind_input, b"n,a=user@example.org,");
        assert_eq!(awaiting.username, "user");
        assert_eq!(
            awaiting.auth_message_start.split(',').nth(2),
            Some("x=ignored")
        );
        let failure = |message: &str, lookup: &mut dyn FnMut(&str) -> Option<Credentials>| {
            first(ScramHash::Sha256, message, lookup).err()
        };
        for malformed in [
            "",
            "n",
            "n,",
            "n,,",
            "n,,r=abc",
            "n,,n=user",
            "n,,n=user,",
            "n,,r=abc,n=user",
            "n,,m=ext,n=user,r=abc",
            "p=tls-unique,,n=user,r=abc",
            "x,,n=user,r=abc",
            "N,,n=user,r=abc",
            "n,user,n=user,r=abc",
            "n,a=,n=user,r=abc",
            "n,,n=,r=abc",
            "n,,n=user,r=",
            "n,,n=user,r=ab c",
            "n,,n=user,r=ab\u{e9}",
        ] {
            assert_eq!(
                failure(malformed, &mut lookup),
                Some(Failure::MalformedRequest),
                "{malformed:?}"
            );
        }
        assert_eq!(
            failure("n,a=other@example.org,n=user,r=abc", &mut lookup),
            Some(Failure::InvalidAuthzid)
        );
        assert_eq!(
            failure("n,,n=us@er,r=abc", &mut lookup),
            Some(Failure::NotAuthorized)
        );
        assert_eq!(
            server_first_with_nonce(
                ScramHash::Sha1,
                NO_BINDING,
                b"n,,n=\xff,r=a",
                DOMAIN,
                &mut lookup,
                "s"
            )
            .err(),
            Some(Failure::MalformedRequest)
        );
    }

    const EXPORTER: &[u8] = &[7; 32];

    /// The connection offers -PLUS (exporter data known); `plus`: the client chose one.
    fn offered(plus: bool) -> Binding<'static> {
        Binding {
            plus,
            exporter: Some(EXPORTER),
        }
    }

    /// RFC 9266 + RFC 5802 §7: with `p=tls-exporter` on a -PLUS mechanism, `c=` must be
    /// base64(gs2-header + exporter bytes).
    #[test]
    fn plus_with_tls_exporter_expects_header_and_exporter_data() {
        let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
        let (_, awaiting) = first_bound(
            ScramHash::Sha1,
            offered(true),
            "p=tls-exporter,,n=user,r=abc",
            &mut lookup,
        )
        .unwrap();
        let mut expected = b"p=tls-exporter,,".to_vec();
        expected.extend_from_slice(EXPORTER);
        assert_eq!(awaiting.cbind_input, expected);
    }

    /// RFC 5802 §6: a `c=` that is not this channel's binding fails the attempt.
    #[test]
    fn plus_with_wrong_binding_data_is_not_authorized() {
        let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
        let (_, awaiting) = first_bound(
            ScramHash::Sha1,
            offered(true),
            "p=tls-exporter,,n=user,r=abc",
            &mut lookup,
        )
        .unwrap();
        let mut wrong = b"p=tls-exporter,,".to_vec();
        wrong.extend_from_slice(&[8; 32]);
        let message = format!("c={},r=abcSERVERNONCE,p=AAAA", base64::encode(&wrong));
        assert_eq!(
            awaiting.finish(message.as_bytes()),
            Step::Failure(Failure::NotAuthorized)
        );
        // The header alone, as a non-binding client would send it.
        let (_, awaiting) = first_bound(
            ScramHash::Sha1,
            offered(true),
            "p=tls-exporter,,n=user,r=abc",
            &mut lookup,
        )
        .unwrap();
        let message = format!(
            "c={},r=abcSERVERNONCE,p=AAAA",
            base64::encode(b"p=tls-exporter,,")
        );
        assert_eq!(
            awaiting.finish(message.as_bytes()),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    /// RFC 5802 §6 / RFC 9266: only `tls-exporter` is offered; any other type fails.
    #[test]
    fn plus_with_another_binding_type_is_not_authorized() {
        let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
        for message in [
            "p=tls-unique,,n=user,r=abc",
            "p=tls-server-end-point,,n=user,r=abc",
        ] {
            assert_eq!(
                first_bound(ScramHash::Sha256, offered(true), message, &mut lookup).err(),
                Some(Failure::NotAuthorized),
                "{message}"
            );
        }
        assert_eq!(
            first_bound(
                ScramHash::Sha256,
                offered(true),
                "p=,,n=user,r=abc",
                &mut lookup
            )
            .err(),
            Some(Failure::MalformedRequest)
        );
    }

    /// A -PLUS mechanism must bind: `n` or `y` with it, or -PLUS on a connection that
    /// cannot bind, fails.
    #[test]
    fn plus_without_binding_is_not_authorized() {
        let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
        for message in ["n,,n=user,r=abc", "y,,n=user,r=abc"] {
            assert_eq!(
                first_bound(ScramHash::Sha1, offered(true), message, &mut lookup).err(),
                Some(Failure::NotAuthorized),
                "{message}"
            );
        }
        let unbindable = Binding {
            plus: true,
            exporter: None,
        };
        assert_eq!(
            first_bound(
                ScramHash::Sha1,
                unbindable,
                "p=tls-exporter,,n=user,r=abc",
                &mut lookup
            )
            .err(),
            Some(Failure::NotAuthorized)
        );
    }

    /// RFC 5802 §6 downgrade protection: `y` while -PLUS was advertised means someone
    /// removed it from the features the client saw.
    #[test]
    fn y_while_plus_is_offered_is_refused() {
        let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
        assert_eq!(
            first_bound(
                ScramHash::Sha256,
                offered(false),
                "y,,n=user,r=abc",
                &mut lookup
            )
            .err(),
            Some(Failure::NotAuthorized)
        );
        // Without -PLUS on offer, "y" is the truth and is accepted (see client_first_variants).
        assert!(first_bound(
            ScramHash::Sha256,
            NO_BINDING,
            "y,,n=user,r=abc",
            &mut lookup
        )
        .is_ok());
    }

    /// `n` with a plain SCRAM mechanism still works where -PLUS is offered, and binds
    /// nothing but the header.
    #[test]
    fn n_with_plain_scram_works_beside_plus() {
        let (_, awaiting) = {
            let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
            server_first_with_nonce(
                ScramHash::Sha1,
                offered(false),
                b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                DOMAIN,
                &mut lookup,
                "3rfcNHYJY1ZVvWVs7j",
            )
            .unwrap()
        };
        assert!(matches!(
            awaiting.finish(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
            ),
            Step::Success { .. }
        ));
    }

    #[test]
    fn saslname_escapes() {
        assert_eq!(unescape_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(unescape_saslname("plain").unwrap(), "plain");
        for bad in [
            "", "a=", "a=2", "a=2c", "a=3d", "a=41", "a==", "a=3Dx=", "a\0b",
        ] {
            assert_eq!(
                unescape_saslname(bad),
                Err(Failure::MalformedRequest),
                "{bad:?}"
            );
        }
        // Escapes reach the account lookup decoded.
        let mut seen = Vec::new();
        let mut lookup = |user: &str| {
            seen.push(user.to_owned());
            None
        };
        assert!(first(ScramHash::Sha1, "n,,n=a=3Db=2Cc,r=abc", &mut lookup).is_ok());
        assert_eq!(
            first(ScramHash::Sha1, "n,,n=a=2x,r=abc", &mut lookup).err(),
            Some(Failure::MalformedRequest)
        );
        assert_eq!(seen, ["a=b,c"]);
    }

    #[test]
    fn unknown_user_gets_a_normal_looking_server_first() {
        let mut lookup = rfc_accounts("QSXCR+Q6sek8bf92");
        let shape = |message: &str| {
            let mut fields = message.split(',');
            let nonce = fields.next().unwrap();
            let salt = fields.next().unwrap().strip_prefix("s=").unwrap();
            let iterations = fields.next().unwrap();
            assert_eq!(fields.next(), None);
            (
                nonce.len(),
                base64::decode(salt).unwrap().len(),
                iterations.to_owned(),
            )
        };
        let real = Credentials::derive("pencil", crate::sasl::DEFAULT_ITERATIONS).unwrap();
        let mut real_lookup = move |user: &str| (user == "user").then(|| real.clone());
        let known = server_first(
            ScramHash::Sha256,
            NO_BINDING,
            b"n,,n=user,r=abc",
            DOMAIN,
            &mut real_lookup,
        )
        .unwrap();
        let unknown = server_first(
            ScramHash::Sha256,
            NO_BINDING,
            b"n,,n=ghost,r=abc",
            DOMAIN,
            &mut lookup,
        )
        .unwrap();
        let known_text = String::from_utf8(known.0).unwrap();
        let unknown_text = String::from_utf8(unknown.0).unwrap();
        assert_eq!(shape(&known_text), shape(&unknown_text));
        assert_eq!(shape(&unknown_text), (2 + 3 + 24, 16, "i=4096".to_owned()));
        assert!(unknown_text.starts_with("r=abc"));
        // The same name gets the same salt, so repeated probes reveal nothing either.
        let again = server_first(
            ScramHash::Sha256,
            NO_BINDING,
            b"n,,n=ghost,r=abc",
            DOMAIN,
            &mut lookup,
        )
        .unwrap();
        let salt = |text: &str| text.split(',').nth(1).map(str::to_owned);
        assert_eq!(
            salt(&unknown_text),
            salt(&String::from_utf8(again.0).unwrap())
        );
        // The server nonce is fresh each time.
        let nonce = |text: &str| text.split(',').next().map(str::to_owned);
        let third = server_first(
            ScramHash::Sha256,
            NO_BINDING,
            b"n,,n=ghost,r=abc",
            DOMAIN,
            &mut lookup,
        )
        .unwrap();
        assert_ne!(
            nonce(&unknown_text),
            nonce(&String::from_utf8(third.0).unwrap())
        );
    }

    #[test]
    fn a_decoy_never_authenticates_even_with_a_matching_proof() {
        let (_, mut awaiting) = rfc5802_first();
        awaiting.account_exists = false;
        assert_eq!(
            awaiting.finish(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
            ),
            Step::Failure(Failure::NotAuthorized)
        );
    }
}
