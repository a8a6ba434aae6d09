//! Account credentials at rest: salt, iteration count and the SCRAM StoredKey/ServerKey
//! pairs for SHA-1 and SHA-256 (RFC 5802 §3, RFC 7677).
//!
//! Owns password preparation and the on-disk record format. It must never keep or
//! persist the password itself, nor anything from which it is cheaper to recover than
//! by brute force through PBKDF2.
//!
//! Password preparation is a *minimal stand-in* for SASLprep (RFC 4013): non-ASCII space
//! characters (RFC 3454 table C.1.2) become U+0020 and control characters are refused.
//! Full SASLprep (NFKC normalisation, mapping-to-nothing, prohibited and bidi tables) is
//! NOT done, so a non-ASCII password typed in a different Unicode normalisation form by
//! a client that does full SASLprep may not match. ASCII passwords are unaffected.

use super::hash::{constant_time_eq, ScramHash};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

/// PBKDF2 iterations for new accounts (RFC 7677 §4 minimum recommendation).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Length of the random salt generated for new accounts.
pub const SALT_LEN: usize = 16;
/// First byte of every record written by [`Credentials::to_bytes`].
const FORMAT_VERSION: u8 = 1;
const SHA1_LEN: usize = 20;
const SHA256_LEN: usize = 32;

/// One hash's SCRAM verifier pair. `N` is the hash length (20 for SHA-1, 32 for SHA-256).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys<const N: usize> {
    /// `H(HMAC(SaltedPassword, "Client Key"))`: checks the client's proof.
    pub stored_key: [u8; N],
    /// `HMAC(SaltedPassword, "Server Key")`: proves the server to the client.
    pub server_key: [u8; N],
}

impl<const N: usize> ScramKeys<N> {
    fn derive(hash: ScramHash, password: &str, salt: &[u8], iterations: NonZeroU32) -> Self {
        let salted = hash.salted_password(password, salt, iterations);
        let mut keys = ScramKeys {
            stored_key: [0; N],
            server_key: [0; N],
        };
        keys.stored_key
            .copy_from_slice(&hash.digest(&hash.client_key(&salted)));
        keys.server_key.copy_from_slice(&hash.server_key(&salted));
        keys
    }

    fn read(input: &mut &[u8]) -> Option<Self> {
        Some(ScramKeys {
            stored_key: take_array(input)?,
            server_key: take_array(input)?,
        })
    }
}

/// One hash's verifier pair; the variant is the hash, so the keys always have its length.
#[derive(Clone)]
pub(crate) enum HashKeys {
    Sha1(ScramKeys<SHA1_LEN>),
    Sha256(ScramKeys<SHA256_LEN>),
}

impl HashKeys {
    pub(crate) fn hash(&self) -> ScramHash {
        match self {
            HashKeys::Sha1(_) => ScramHash::Sha1,
            HashKeys::Sha256(_) => ScramHash::Sha256,
        }
    }

    /// `StoredKey`, exactly `hash().len()` bytes.
    pub(crate) fn stored_key(&self) -> &[u8] {
        match self {
            HashKeys::Sha1(keys) => &keys.stored_key,
            HashKeys::Sha256(keys) => &keys.stored_key,
        }
    }

    /// `ServerKey`, exactly `hash().len()` bytes.
    pub(crate) fn server_key(&self) -> &[u8] {
        match self {
            HashKeys::Sha1(keys) => &keys.server_key,
            HashKeys::Sha256(keys) => &keys.server_key,
        }
    }
}

/// What an account stores instead of its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub sha1: ScramKeys<SHA1_LEN>,
    pub sha256: ScramKeys<SHA256_LEN>,
}

/// Keeps key material out of logs.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// Why credentials could not be derived from a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsError {
    EmptyPassword,
    /// The password contains a control character (refused by SASLprep, RFC 4013 §2.3).
    ControlCharacter,
    ZeroIterations,
    /// The system random number generator failed.
    RandomUnavailable,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialsError::EmptyPassword => "the password is empty",
            CredentialsError::ControlCharacter => "the password contains a control character",
            CredentialsError::ZeroIterations => "the iteration count must be at least 1",
            CredentialsError::RandomUnavailable => "the system random generator failed",
        })
    }
}

impl std::error::Error for CredentialsError {}

/// The SASLprep stand-in described in the module docs.
pub fn prepare_password(password: &str) -> Result<String, CredentialsError> {
    if password.is_empty() {
        return Err(CredentialsError::EmptyPassword);
    }
    password
        .chars()
        .map(|c| match c {
            c if c.is_control() => Err(CredentialsError::ControlCharacter),
            '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200B}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}' => Ok(' '),
            c => Ok(c),
        })
        .collect()
}

/// The HMAC key decoy salts are derived from: the server secret, or (when none was set,
/// as in unit tests) a random key for this process.
static DECOY_KEY: OnceLock<hmac::Key> = OnceLock::new();

/// Derives decoy salts from the persistent server secret from now on; call once at start,
/// before any login.
pub fn set_decoy_secret(secret: &[u8]) {
    let _ = DECOY_KEY.set(hmac::Key::new(hmac::HMAC_SHA256, secret));
}

impl Credentials {
    /// Derives credentials for a new password with a fresh random salt.
    ///
    /// Fallible (unlike a bare constructor) because a password SASLprep would refuse
    /// could never be used to log in, so it must be rejected when it is set.
    pub fn derive(password: &str, iterations: u32) -> Result<Credentials, CredentialsError> {
        let prepared = prepare_password(password)?;
        let iterations = NonZeroU32::new(iterations).ok_or(CredentialsError::ZeroIterations)?;
        let mut salt = vec![0; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| CredentialsError::RandomUnavailable)?;
        Ok(Credentials::with_salt(&prepared, salt, iterations))
    }

    /// Derivation with a given salt; `prepared_password` went through [`prepare_password`].
    pub(crate) fn with_salt(
        prepared_password: &str,
        salt: Vec<u8>,
        iterations: NonZeroU32,
    ) -> Credentials {
        Credentials {
            iterations: iterations.get(),
            sha1: ScramKeys::derive(ScramHash::Sha1, prepared_password, &salt, iterations),
            sha256: ScramKeys::derive(ScramHash::Sha256, prepared_password, &salt, iterations),
            salt,
        }
    }

    /// Stand-in credentials for a username with no account, so that a SCRAM exchange
    /// for it is indistinguishable from a real one until the proof fails. The salt is
    /// stable per username, across restarts once [`set_decoy_secret`] was given the
    /// server secret, because a changing salt for the same name would itself reveal that
    /// the account does not exist (real salts never change). `None` if the system random
    /// generator fails.
    pub(crate) fn decoy(username: &str) -> Option<Credentials> {
        let key = match DECOY_KEY.get() {
            Some(key) => key,
            None => {
                let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).ok()?;
                DECOY_KEY.get_or_init(|| key)
            }
        };
        let tag = hmac::sign(key, username.as_bytes());
        let salt = tag.as_ref().get(..SALT_LEN)?.to_vec();
        Some(Credentials {
            iterations: DEFAULT_ITERATIONS,
            salt,
            sha1: ScramKeys {
                stored_key: [0; SHA1_LEN],
                server_key: [0; SHA1_LEN],
            },
            sha256: ScramKeys {
                stored_key: [0; SHA256_LEN],
                server_key: [0; SHA256_LEN],
            },
        })
    }

    /// A copy of the verifier pair for one SCRAM hash, to keep across an exchange.
    pub(crate) fn keys(&self, hash: ScramHash) -> HashKeys {
        match hash {
            ScramHash::Sha1 => HashKeys::Sha1(self.sha1.clone()),
            ScramHash::Sha256 => HashKeys::Sha256(self.sha256.clone()),
        }
    }

    /// Checks a PLAIN password by recomputing the SHA-256 StoredKey.
    pub fn verify_plain(&self, password: &str) -> bool {
        let (Ok(prepared), Some(iterations)) =
            (prepare_password(password), NonZeroU32::new(self.iterations))
        else {
            return false;
        };
        let hash = ScramHash::Sha256;
        let salted = hash.salted_password(&prepared, &self.salt, iterations);
        let stored_key = hash.digest(&hash.client_key(&salted));
        constant_time_eq(&stored_key, &self.sha256.stored_key)
    }

    /// Record layout (version 1):
    /// `[1] [iterations: u32 BE] [salt_len: u8] [salt] [sha1 stored 20] [sha1 server 20]
    /// [sha256 stored 32] [sha256 server 32]`.
    /// A salt over 255 bytes (never produced by [`Credentials::derive`]) yields a record
    /// that [`Credentials::from_bytes`] refuses rather than a silently wrong one.
    pub fn to_bytes(&self) -> Vec<u8> {
        let salt_len = u8::try_from(self.salt.len()).unwrap_or(u8::MAX);
        let mut out = Vec::with_capacity(6 + self.salt.len() + 2 * (SHA1_LEN + SHA256_LEN));
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.iterations.to_be_bytes());
        out.push(salt_len);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.sha1.stored_key);
        out.extend_from_slice(&self.sha1.server_key);
        out.extend_from_slice(&self.sha256.stored_key);
        out.extend_from_slice(&self.sha256.server_key);
        out
    }

    /// Parses a [`Credentials::to_bytes`] record; `None` for an unknown version, zero
    /// iterations, an empty salt, truncation or trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Credentials> {
        let mut input = bytes;
        let [version] = take_array(&mut input)?;
        if version != FORMAT_VERSION {
            return None;
        }
        let iterations = u32::from_be_bytes(take_array(&mut input)?);
        let [salt_len] = take_array(&mut input)?;
        if iterations == 0 || salt_len == 0 {
            return None;
        }
        let (salt, rest) = input.split_at_checked(usize::from(salt_len))?;
        input = rest;
        let credentials = Credentials {
            iterations,
            salt: salt.to_vec(),
            sha1: ScramKeys::read(&mut input)?,
            sha256: ScramKeys::read(&mut input)?,
        };
        input.is_empty().then_some(credentials)
    }
}

/// Takes the next `N` bytes off the front of `input`.
fn take_array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    Some(*head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::base64;

    fn iterations(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn with_salt_matches_rfc5802_keys() {
        let salt = base64::decode("QSXCR+Q6sek8bf92").unwrap();
        let credentials = Credentials::with_salt("pencil", salt, iterations(4096));
        assert_eq!(
            hex(&credentials.sha1.stored_key),
            "e9d94660c39d65c38fbad91c358f14da0eef2bd6"
        );
        assert_eq!(
            hex(&credentials.sha1.server_key),
            "0fe09258b3ac852ba502cc62ba903eaacdbf7d31"
        );
        assert!(credentials.verify_plain("pencil"));
        assert!(!credentials.verify_plain("pencil "));
    }

    #[test]
    fn derive_uses_fresh_salt_and_verifies_plain() {
        let a = Credentials::derive("correct horse", 64).unwrap();
        let b = Credentials::derive("correct horse", 64).unwrap();
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_eq!(a.iterations, 64);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.sha256.stored_key, b.sha256.stored_key);
        assert!(a.verify_plain("correct horse"));
        // Non-ASCII space maps to U+0020, so it is the same password.
        assert!(a.verify_plain("correct\u{00A0}horse"));
        assert!(!a.verify_plain("correct horsE"));
        assert!(!a.verify_plain(""));
        assert!(!a.verify_plain("correct\nhorse"));
        assert_eq!(
            Credentials::derive("x", DEFAULT_ITERATIONS)
                .unwrap()
                .iterations,
            4096
        );
    }

    #[test]
    fn derive_refuses_bad_passwords_and_zero_iterations() {
        assert_eq!(
            Credentials::derive("", 64).unwrap_err(),
            CredentialsError::EmptyPassword
        );
        assert_eq!(
            Credentials::derive("tab\there", 64).unwrap_err(),
            CredentialsError::ControlCharacter
        );
        assert_eq!(
            Credentials::derive("del\u{7f}", 64).unwrap_err(),
            CredentialsError::ControlCharacter
        );
        assert_eq!(
            Credentials::derive("c1\u{85}", 64).unwrap_err(),
            CredentialsError::ControlCharacter
        );
        assert_eq!(
            Credentials::derive("ok", 0).unwrap_err(),
            CredentialsError::ZeroIterations
        );
    }

    #[test]
    fn prepare_password_maps_spaces_only() {
        assert_eq!(prepare_password("a\u{3000}b\u{2003}c").unwrap(), "a b c");
        assert_eq!(prepare_password("pässwörd").unwrap(), "pässwörd");
        assert_eq!(
            prepare_password("x\0y"),
            Err(CredentialsError::ControlCharacter)
        );
    }

    #[test]
    fn bytes_round_trip() {
        let credentials = Credentials::derive("pencil", 16).unwrap();
        let bytes = credentials.to_bytes();
        assert_eq!(bytes.len(), 1 + 4 + 1 + SALT_LEN + 104);
        assert_eq!(bytes[0], FORMAT_VERSION);
        let parsed = Credentials::from_bytes(&bytes).unwrap();
        assert_eq!(parsed, credentials);
        assert!(parsed.verify_plain("pencil"));
    }

    #[test]
    fn from_bytes_rejects_damaged_records() {
        let bytes = Credentials::derive("pencil", 16).unwrap().to_bytes();
        for len in 0..bytes.len() {
            assert_eq!(
                Credentials::from_bytes(&bytes[..len]),
                None,
                "truncated to {len}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(Credentials::from_bytes(&trailing), None);
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(Credentials::from_bytes(&version), None);
        let mut zero_iterations = bytes.clone();
        zero_iterations[1..5].copy_from_slice(&[0; 4]);
        assert_eq!(Credentials::from_bytes(&zero_iterations), None);
        let mut oversized_salt = Credentials::derive("pencil", 16).unwrap();
        oversized_salt.salt = vec![7; 300];
        assert_eq!(Credentials::from_bytes(&oversized_salt.to_bytes()), None);
    }

    #[test]
    fn decoy_salt_is_stable_per_username() {
        let a = Credentials::decoy("ghost").unwrap();
        let again = Credentials::decoy("ghost").unwrap();
        let other = Credentials::decoy("phantom").unwrap();
        assert_eq!(a.salt, again.salt);
        assert_ne!(a.salt, other.salt);
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        assert!(!a.verify_plain("anything"));
        assert!(format!("{a:?}").contains("salt_len"));
    }
}
