//! The stream framer on chunked input: the first byte picks the chunk size,
//! the rest is the stream. Each stanza is then parsed in the header's
//! namespace context, as a connection does. No panic, never more buffered
//! than one stanza plus one chunk, and (with `-timeout`) no slow shapes.
#![no_main]

use hearth::xml::{self, Event, Framer, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits::new(4096, 16);

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let mut framer = Framer::new(LIMITS);
    let mut header = None;
    for piece in stream.chunks(chunk) {
        if framer.push(piece).is_err() {
            return;
        }
        loop {
            match framer.next() {
                Ok(Some(Event::StreamClose)) | Err(_) => return,
                Ok(None) => break,
                Ok(Some(Event::StreamOpen(open))) => header = Some(open),
                Ok(Some(Event::Stanza(text))) => {
                    if let Some(open) = &header {
                        let wrapped = open.wrap(text);
                        if let Ok(doc) = xml::parse_stanza(&wrapped) {
                            let _ = xml::stanza_element(&doc);
                        }
                    }
                }
                Ok(Some(Event::Whitespace)) => {}
            }
        }
        assert!(framer.buffered() <= LIMITS.max_stanza + chunk);
    }
});
