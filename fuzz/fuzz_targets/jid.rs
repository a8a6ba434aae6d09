//! JID parsing (RFC 7622): no panic, and what parses prints back to a
//! string that parses to the same JID.
#![no_main]

use hearth::jid::Jid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jid) = Jid::parse(text) {
        let again = Jid::parse(jid.as_str()).expect("a parsed JID reparses");
        assert_eq!(again.as_str(), jid.as_str());
        let _ = jid.bare();
    }
});
