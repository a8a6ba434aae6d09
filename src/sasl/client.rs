//! A minimal SCRAM client (RFC 5802 §5), for the benchmark tool and integration tests
//! that need to log in to this server.
//!
//! Owns only the client's half of the message math; it binds to a channel only when
//! given the `tls-exporter` data (gs2 header `p=tls-exporter,,`, else `n,,` or the
//! `y,,` of [`ScramClient::claim_binding_unoffered`]), never sends an authzid and keeps
//! the password only until the server-first-message arrives.

use super::base64;
use super::credentials::prepare_password;
use super::hash::{constant_time_eq, xor, ScramHash};
use super::{Mechanism, CHANNEL_BINDING_TYPE};
use ring::rand::{SecureRandom, SystemRandom};
use std::num::NonZeroU32;

/// Random bytes in the client nonce (base64-encoded on the wire).
const CLIENT_NONCE_BYTES: usize = 18;

pub struct ScramClient {
    hash: ScramHash,
    /// `gs2-header` (RFC 5802 §7): starts client-first, and starts `c=`.
    gs2_header: String,
    /// Channel-binding data appended to the gs2 header in `c=`; empty when not binding.
    cbind_data: Vec<u8>,
    /// Prepared password; emptied once the proof has been computed.
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// Known after [`ScramClient::handle_server_first`].
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// `None` for PLAIN (not SCRAM), for a password [`prepare_password`] refuses, or if
    /// the system random generator fails.
    pub fn new(mech: Mechanism, username: &str, password: &str) -> Option<ScramClient> {
        let mut random = [0; CLIENT_NONCE_BYTES];
        SystemRandom::new().fill(&mut random).ok()?;
        ScramClient::with_nonce(mech, username, password, base64::encode(&random))
    }

    fn with_nonce(
        mech: Mechanism,
        username: &str,
        password: &str,
        client_nonce: String,
    ) -> Option<ScramClient> {
        let escaped = username.replace('=', "=3D").replace(',', "=2C");
        Some(ScramClient {
            hash: mech.scram_hash()?,
            gs2_header: "n,,".into(),
            cbind_data: Vec::new(),
            password: prepare_password(password).ok()?,
            client_first_bare: format!("n={escaped},r={client_nonce}"),
            client_nonce,
            expected_server_signature: None,
        })
    }

    /// Binds to the channel with `tls-exporter` `data` (RFC 9266), as a -PLUS mechanism does.
    pub fn bind_tls_exporter(mut self, data: &[u8]) -> ScramClient {
        self.gs2_header = format!("p={CHANNEL_BINDING_TYPE},,");
        self.cbind_data = data.to_vec();
        self
    }

    /// Says `y`: "I could bind, but I think the server cannot" (RFC 5802 §6).
    pub fn claim_binding_unoffered(mut self) -> ScramClient {
        self.gs2_header = "y,,".into();
        self.cbind_data.clear();
        self
    }

    /// client-first-message: the initial response of `<auth/>`.
    pub fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Takes server-first-message and returns client-final-message.
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>, &'static str> {
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let mut attributes = text.split(',');
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or("server-first lacks r=")?;
        let salt = attributes
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .and_then(base64::decode)
            .ok_or("server-first lacks a valid s=")?;
        let iterations = attributes
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .and_then(NonZeroU32::new)
            .ok_or("server-first lacks a valid i=")?;
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err("server nonce does not extend the client nonce");
        }
        if self.password.is_empty() {
            return Err("server-first already handled");
        }

        let hash = self.hash;
        let salted = hash.salted_password(&self.password, &salt, iterations);
        self.password.clear();
        let client_key = hash.client_key(&salted);
        let stored_key = hash.digest(&client_key);
        let mut cbind_input = self.gs2_header.as_bytes().to_vec();
        cbind_input.extend_from_slice(&self.cbind_data);
        let without_proof = format!("c={},r={nonce}", base64::encode(&cbind_input));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = hash.hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        let server_key = hash.server_key(&salted);
        self.expected_server_signature = Some(hash.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", base64::encode(&proof)).into_bytes())
    }

    /// Checks server-final-message (the additional data of `<success/>`): true only
    /// if the server proved it knows this account's ServerKey.
    pub fn verify_server_final(&self, server_final: &[u8]) -> bool {
        let received = std::str::from_utf8(server_final)
            .ok()
            .and_then(|text| text.strip_prefix("v="))
            .and_then(base64::decode);
        match (received, &self.expected_server_signature) {
            (Some(received), Some(expected)) => constant_time_eq(&received, expected),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5802_sha1_client_messages() {
        let mut client = ScramClient::with_nonce(
            Mechanism::ScramSha1,
            "user",
            "pencil",
            "fyko+d2lbbFgONRv9qkxdawL".into(),
        )
        .unwrap();
        assert_eq!(client.first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        assert!(!client.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="));
        let client_final = client
            .handle_server_first(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            )
            .unwrap();
        assert_eq!(
            client_final,
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert!(client.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="));
        assert!(!client.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKA="));
        assert!(!client.verify_server_final(b"e=other-error"));
        assert!(!client.verify_server_final(b""));
    }

    #[test]
    fn rfc7677_sha256_client_messages() {
        let mut client = ScramClient::with_nonce(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        )
        .unwrap();
        assert_eq!(client.first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let client_final = client
            .handle_server_first(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            client_final,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
    }

    #[test]
    fn rejects_bad_server_first() {
        let fresh = || {
            ScramClient::with_nonce(Mechanism::ScramSha1, "user", "pencil", "abc".into()).unwrap()
        };
        for bad in [
            &b""[..],
            b"r=abcdef",
            b"r=abcdef,s=QSXCR+Q6sek8bf92",
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=0",
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=-1",
            b"r=abcdef,s=not*base64,i=4096",
            b"r=abc,s=QSXCR+Q6sek8bf92,i=4096",
            b"r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096",
            b"m=ext,r=abcdef,s=QSXCR+Q6sek8bf92,i=4096",
            b"r=abc\xff,s=QSXCR+Q6sek8bf92,i=4096",
        ] {
            assert!(fresh().handle_server_first(bad).is_err(), "{bad:?}");
        }
        let mut client = fresh();
        assert!(client
            .handle_server_first(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=16")
            .is_ok());
        assert!(client
            .handle_server_first(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=16")
            .is_err());
    }

    #[test]
    fn construction_and_escaping() {
        assert!(ScramClient::new(Mechanism::Plain, "user", "pencil").is_none());
        assert!(ScramClient::new(Mechanism::ScramSha256, "user", "").is_none());
        let client = ScramClient::new(Mechanism::ScramSha256, "a,b=c", "pencil").unwrap();
        let first = String::from_utf8(client.first()).unwrap();
        assert!(first.starts_with("n,,n=a=2Cb=3Dc,r="), "{first}");
        assert_eq!(first.len(), "n,,n=a=2Cb=3Dc,r=".len() + 24);
    }
}
