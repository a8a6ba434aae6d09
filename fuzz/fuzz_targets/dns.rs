//! The federation resolver's DNS answer parser: any bytes a nameserver (or a forger) sends
//! are refused with an error or give at most 32 SRV records whose targets are host names
//! or "." (no panic, no endless compression chain).
#![no_main]

use hearth::s2s::resolve::parse_srv_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes are the query id the answer must match.
    let Some((id, message)) = data.split_first_chunk::<2>() else {
        return;
    };
    let name = "_xmpp-server._tcp.example.net";
    if let Ok(records) = parse_srv_answer(u16::from_be_bytes(*id), name, message) {
        assert!(records.len() <= 32);
        for record in records {
            let host = record.target.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
            assert!(record.target == "." || host, "{record:?}");
        }
    }
});
