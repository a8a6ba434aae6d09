//! The stream framer on chunked input: the first byte picks the chunk size,
//! the rest is the stream. No panic, and never more buffered than one
//! stanza plus one chunk.
#![no_main]

use hearth::xml::{Event, Framer, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits::new(4096, 16);

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let mut framer = Framer::new(LIMITS);
    for piece in stream.chunks(chunk) {
        if framer.push(piece).is_err() {
            return;
        }
        loop {
            match framer.next() {
                Ok(Some(Event::StreamClose)) | Err(_) => return,
                Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
        assert!(framer.buffered() <= LIMITS.max_stanza + chunk);
    }
});
