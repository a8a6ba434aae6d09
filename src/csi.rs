//! Client State Indication (XEP-0352): while a client says it is inactive
//! (a phone in a pocket), presence updates and chat-state-only messages
//! wait in a small per-connection buffer, each superseded by the next one
//! from the same sender; anything else goes out at once, after what was
//! held. This module owns that buffer and the classification of what may
//! wait; it never drops a message with a body, an iq or a subscription
//! request, and never holds more than [`MAX_HELD`] items or
//! [`MAX_HELD_BYTES`].

use crate::feature::{Feature, StreamStage};
use crate::router::Hold;
use crate::xml::build::Element;
use std::rc::Rc;

pub const NS: &str = "urn:xmpp:csi:0";

/// Past this many held items, or this many held bytes, everything is
/// flushed: an inactive client's buffer stays small whatever its contacts do.
const MAX_HELD: usize = 32;
const MAX_HELD_BYTES: usize = 16 * 1024;

/// The state itself is the stream's (it decides what the connection writes when); this
/// offers it.
pub const FEATURE: Feature = Feature {
    name: "csi",
    stream_features: Some(|_, stage, out| {
        if stage == StreamStage::Authenticated {
            Element::new("csi").ns(NS).empty(out);
        }
    }),
    ..Feature::NONE
};

/// One connection's indicated state and what waits for it. Active and
/// empty, it holds no heap memory.
#[derive(Debug, Default)]
pub struct Buffer {
    inactive: bool,
    held: Vec<(Hold, Rc<str>)>,
}

impl Buffer {
    /// `<active/>` or `<inactive/>` from the client; becoming active
    /// writes everything held.
    pub fn set_active(&mut self, active: bool, out: &mut String) {
        self.inactive = !active;
        if active {
            self.flush(out);
        }
    }

    /// A stanza taken from the mailbox: written to `out`, or held.
    pub fn deliver(&mut self, xml: Rc<str>, hold: Hold, out: &mut String) {
        if !self.inactive || hold == Hold::Urgent {
            self.flush(out);
            out.push_str(&xml);
            return;
        }
        self.held.retain(|(held, _)| *held != hold);
        let bytes: usize = self.held.iter().map(|(_, held)| held.len()).sum();
        if self.held.len() >= MAX_HELD || bytes + xml.len() > MAX_HELD_BYTES {
            self.flush(out);
        }
        self.held.push((hold, xml));
    }

    fn flush(&mut self, out: &mut String) {
        for (_, xml) in std::mem::take(&mut self.held) {
            out.push_str(&xml);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(buffer: &mut Buffer, xml: &str, hold: Hold) -> String {
        let mut out = String::new();
        buffer.deliver(xml.into(), hold, &mut out);
        out
    }

    #[test]
    fn active_writes_everything_at_once() {
        let mut buffer = Buffer::default();
        assert_eq!(deliver(&mut buffer, "<p1/>", Hold::Presence(1)), "<p1/>");
        assert_eq!(deliver(&mut buffer, "<c1/>", Hold::ChatState(1)), "<c1/>");
    }

    #[test]
    fn inactive_keeps_the_latest_per_sender_and_kind_in_order() {
        let mut buffer = Buffer::default();
        let mut out = String::new();
        buffer.set_active(false, &mut out);
        assert_eq!(deliver(&mut buffer, "<p1a/>", Hold::Presence(1)), "");
        assert_eq!(deliver(&mut buffer, "<c1a/>", Hold::ChatState(1)), "");
        assert_eq!(deliver(&mut buffer, "<p2/>", Hold::Presence(2)), "");
        assert_eq!(deliver(&mut buffer, "<p1b/>", Hold::Presence(1)), "");
        assert_eq!(deliver(&mut buffer, "<c1b/>", Hold::ChatState(1)), "");
        buffer.set_active(true, &mut out);
        assert_eq!(out, "<p2/><p1b/><c1b/>");
        assert!(buffer.held.capacity() == 0, "no memory kept once flushed");
    }

    #[test]
    fn urgent_flushes_what_is_held_first() {
        let mut buffer = Buffer::default();
        buffer.set_active(false, &mut String::new());
        deliver(&mut buffer, "<p1/>", Hold::Presence(1));
        assert_eq!(deliver(&mut buffer, "<m/>", Hold::Urgent), "<p1/><m/>");
        assert_eq!(deliver(&mut buffer, "<p1/>", Hold::Presence(1)), "");
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut buffer = Buffer::default();
        buffer.set_active(false, &mut String::new());
        let mut written = String::new();
        for id in 0..=MAX_HELD as u64 {
            written.push_str(&deliver(&mut buffer, "<p/>", Hold::Presence(id)));
        }
        assert_eq!(written, "<p/>".repeat(MAX_HELD));
        assert_eq!(buffer.held.len(), 1);
        let big = "x".repeat(MAX_HELD_BYTES / 2);
        assert_eq!(deliver(&mut buffer, &big, Hold::Presence(100)), "");
        assert_eq!(
            deliver(&mut buffer, &big, Hold::Presence(101)),
            format!("<p/>{big}")
        );
    }
}
