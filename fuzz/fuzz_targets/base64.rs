//! Base64 as SASL payloads use it: decoding never panics, and whatever
//! decodes re-encodes to the same canonical text.
#![no_main]

use hearth::sasl::base64;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(bytes) = base64::decode(text) {
            let encoded = base64::encode(&bytes);
            assert_eq!(base64::decode(&encoded).as_deref(), Some(bytes.as_slice()));
        }
    }
    let encoded = base64::encode(data);
    assert_eq!(base64::decode(&encoded).as_deref(), Some(data));
});
