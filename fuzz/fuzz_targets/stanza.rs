//! One stanza as a connection handles it: wrapped in the stream's
//! namespaces, parsed by `xml::parse_stanza`, typed by `Stanza::parse`.
#![no_main]

use hearth::stanza::Stanza;
use hearth::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let wrapped = format!(
        "<w xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>{text}</w>"
    );
    let Ok(doc) = xml::parse_stanza(&wrapped) else {
        return;
    };
    let Ok(node) = xml::stanza_element(&doc) else {
        return;
    };
    if let Ok(stanza) = Stanza::parse(node) {
        let _ = stanza.payload();
    }
});
