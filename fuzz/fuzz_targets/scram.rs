//! The server side of a SASL exchange fed two peer messages: the first byte
//! picks the mechanism and where the first message ends. The account
//! "alice" exists (with one PBKDF2 iteration, to keep runs fast).
#![no_main]

use hearth::sasl::{Credentials, Exchange, Mechanism, Step};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn alice() -> Credentials {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = BYTES.get_or_init(|| {
        Credentials::derive("pencil", 1)
            .expect("credentials")
            .to_bytes()
    });
    Credentials::from_bytes(bytes).expect("stored credentials")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mechanism = match selector % 3 {
        0 => Mechanism::ScramSha256,
        1 => Mechanism::ScramSha1,
        _ => Mechanism::Plain,
    };
    let split = (usize::from(selector) * 7).min(rest.len());
    let (first, second) = rest.split_at(split);
    let mut lookup = |user: &str| (user == "alice").then(alice);
    let initial = (selector & 0x80 == 0).then_some(first);
    let (step, next) = Exchange::start(mechanism, initial, "localhost", &mut lookup);
    if let (Step::Challenge(_), Some(exchange)) = (step, next) {
        let _ = exchange.step(second, &mut lookup);
    }
});
