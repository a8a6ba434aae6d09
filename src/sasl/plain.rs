//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one message.
//!
//! Owns only the parsing and the check; the password is borrowed from the peer's
//! message and must never be copied anywhere that outlives this call. Only offer
//! PLAIN on an encrypted stream (RFC 6120 §13.8): that is the caller's job.

use super::credentials::Credentials;
use super::{identify, Failure, Step};

pub(super) fn authenticate(
    message: &[u8],
    domain: &str,
    lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
) -> Step {
    match verify(message, domain, lookup) {
        Ok(username) => Step::Success {
            username,
            additional_data: Vec::new(),
        },
        Err(failure) => Step::Failure(failure),
    }
}

fn verify(
    message: &[u8],
    domain: &str,
    lookup: &mut dyn FnMut(&str) -> Option<Credentials>,
) -> Result<String, Failure> {
    let text = std::str::from_utf8(message).map_err(|_| Failure::MalformedRequest)?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Failure::MalformedRequest);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    let authzid = Some(authzid).filter(|authzid| !authzid.is_empty());
    let (username, credentials, account_exists) = identify(authcid, authzid, domain, lookup)?;
    if credentials.verify_plain(password) & account_exists {
        Ok(username)
    } else {
        Err(Failure::NotAuthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "example.org";

    #[test]
    fn plain_messages() {
        let credentials = Credentials::derive("r0meo", 64).unwrap();
        let mut lookup = move |user: &str| (user == "juliet").then(|| credentials.clone());
        let mut plain = |message: &[u8]| authenticate(message, DOMAIN, &mut lookup);
        let success = Step::Success {
            username: "juliet".into(),
            additional_data: Vec::new(),
        };
        assert_eq!(plain(b"\0juliet\0r0meo"), success);
        assert_eq!(plain(b"\0JULIET\0r0meo"), success);
        assert_eq!(plain(b"juliet@example.org\0juliet\0r0meo"), success);
        assert_eq!(plain(b"Juliet@Example.ORG\0juliet\0r0meo"), success);
        assert_eq!(
            plain(b"\0juliet\0wrong"),
            Step::Failure(Failure::NotAuthorized)
        );
        assert_eq!(
            plain(b"\0nobody\0r0meo"),
            Step::Failure(Failure::NotAuthorized)
        );
        assert_eq!(
            plain(b"\0jul/iet\0r0meo"),
            Step::Failure(Failure::NotAuthorized)
        );
        assert_eq!(
            plain(b"romeo@example.org\0juliet\0r0meo"),
            Step::Failure(Failure::InvalidAuthzid)
        );
        assert_eq!(
            plain(b"juliet@example.net\0juliet\0r0meo"),
            Step::Failure(Failure::InvalidAuthzid)
        );
        assert_eq!(
            plain(b"juliet\0juliet\0r0meo"),
            Step::Failure(Failure::InvalidAuthzid)
        );
        for malformed in [
            &b""[..],
            b"\0juliet",
            b"juliet\0r0meo",
            b"\0\0r0meo",
            b"\0juliet\0",
            b"\0juliet\0r0meo\0",
            b"\0juliet\0r0\xffmeo",
        ] {
            assert_eq!(
                plain(malformed),
                Step::Failure(Failure::MalformedRequest),
                "{malformed:?}"
            );
        }
    }
}
