//! The SCRAM key schedule (RFC 5802 §3) over `ring`, for SHA-1 and SHA-256.
//!
//! Owns only pure functions of their inputs; it never sees usernames, never stores
//! anything and never compares secrets except through [`constant_time_eq`].

use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

/// The hash function a SCRAM mechanism is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => hmac::HMAC_SHA256,
        }
    }

    fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => &digest::SHA256,
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }

    /// Output length in bytes (20 or 32).
    pub fn len(self) -> usize {
        self.digest_algorithm().output_len()
    }

    /// `SaltedPassword := Hi(Normalize(password), salt, i)`; `password` must already be prepared.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        let mut out = vec![0; self.len()];
        pbkdf2::derive(
            self.pbkdf2_algorithm(),
            iterations,
            salt,
            password.as_bytes(),
            &mut out,
        );
        out
    }

    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_algorithm(), key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_algorithm(), data)
            .as_ref()
            .to_vec()
    }

    /// `ClientKey := HMAC(SaltedPassword, "Client Key")`
    pub fn client_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hmac(salted_password, b"Client Key")
    }

    /// `ServerKey := HMAC(SaltedPassword, "Server Key")`
    pub fn server_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hmac(salted_password, b"Server Key")
    }
}

/// Byte-wise XOR of two equal-length strings (`ClientProof := ClientKey XOR ClientSignature`).
pub fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Compares secrets without an early exit, so timing does not reveal the matching prefix.
/// (ring's own helper is deprecated.) Lengths are public: they are fixed by the hash.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc5802_sha1_key_schedule() {
        // Intermediate values of the RFC 5802 §5 example (user "user", password "pencil").
        let salt = crate::sasl::base64::decode("QSXCR+Q6sek8bf92").unwrap();
        let iterations = NonZeroU32::new(4096).unwrap();
        let salted = ScramHash::Sha1.salted_password("pencil", &salt, iterations);
        assert_eq!(hex(&salted), "1d96ee3a529b5a5f9e47c01f229a2cb8a6e15f7d");
        let client_key = ScramHash::Sha1.client_key(&salted);
        assert_eq!(hex(&client_key), "e234c47bf6c36696dd6d852b99aaa2ba26555728");
        let stored_key = ScramHash::Sha1.digest(&client_key);
        assert_eq!(hex(&stored_key), "e9d94660c39d65c38fbad91c358f14da0eef2bd6");
        let server_key = ScramHash::Sha1.server_key(&salted);
        assert_eq!(hex(&server_key), "0fe09258b3ac852ba502cc62ba903eaacdbf7d31");
        assert_eq!(ScramHash::Sha1.len(), 20);
        assert_eq!(ScramHash::Sha256.len(), 32);
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(xor(&[0xf0, 0x0f], &[0xff, 0xff]), vec![0x0f, 0xf0]);
    }
}
