//! Discussion history of persistent rooms across restarts: the stored form of a room's
//! history, the set of rooms whose history changed since it was last written, and the task
//! that writes them. It never makes a groupchat message wait for the disk and never commits
//! once per message: a message only marks its room, and every marked room's whole history
//! goes to the store's group-commit writer together, at most every [`FLUSH_EVERY`] and at a
//! graceful stop. A crash (`kill -9`, power loss) therefore loses at most the history of the
//! last [`FLUSH_EVERY`]. Temporary rooms are never written.

use super::room::Room;
use super::Muc;
use crate::server::Server;
use crate::store::StoreError;
use log::warn;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

/// How long history may stay unwritten after a message. Short, because a crash loses it;
/// long enough that a busy room costs one write (of at most `MAX_HISTORY_BYTES`) per interval.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// The stored form's first byte: a future format can tell old records apart.
const FORMAT: u8 = 1;

/// A groupchat message kept for occupants who join later.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Past {
    pub(super) nick: Box<str>,
    /// When the room got it (Unix seconds): the delay stamp it is replayed with.
    pub(super) at: u64,
    pub(super) id: Option<Box<str>>,
    /// The message's children as broadcast, stanza-id included.
    pub(super) inner: Box<str>,
}

/// The stored form: [`FORMAT`], then per message, oldest first, the time as 8 bytes
/// little-endian and the nick, the id (absent: no bytes and a length of `u32::MAX`) and the
/// children, each as a 4-byte little-endian length and its UTF-8 bytes.
pub(super) fn encode(history: &VecDeque<Past>) -> Vec<u8> {
    let mut out = vec![FORMAT];
    for past in history {
        out.extend_from_slice(&past.at.to_le_bytes());
        put_text(&mut out, Some(&past.nick));
        put_text(&mut out, past.id.as_deref());
        put_text(&mut out, Some(&past.inner));
    }
    out
}

fn put_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            // A stanza is far below 4 GiB (the stream's stanza limit).
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// Reads back [`encode`]; `None` for a damaged record or an unknown format.
pub(super) fn decode(bytes: &[u8]) -> Option<VecDeque<Past>> {
    let (&format, mut rest) = bytes.split_first()?;
    if format != FORMAT {
        return None;
    }
    let mut history = VecDeque::new();
    while !rest.is_empty() {
        let at = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
        let nick = take_text(&mut rest)??;
        let id = take_text(&mut rest)?;
        let inner = take_text(&mut rest)??;
        history.push_back(Past {
            nick,
            at,
            id,
            inner,
        });
    }
    Some(history)
}

fn take<'b>(rest: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

/// `None` when damaged, `Some(None)` for an absent text.
fn take_text(rest: &mut &[u8]) -> Option<Option<Box<str>>> {
    let len = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
    if len == u32::MAX {
        return Some(None);
    }
    let bytes = take(rest, usize::try_from(len).ok()?)?;
    Some(Some(std::str::from_utf8(bytes).ok()?.into()))
}

/// At start: the stored histories go back into their rooms.
pub(super) fn load(store: &crate::store::Store, rooms: &mut HashMap<Box<str>, Room>) {
    let stored = match store.muc_history_all() {
        Ok(stored) => stored,
        Err(e) => {
            warn!("cannot read chat room history: {e}");
            return;
        }
    };
    for (name, record) in stored {
        // A room whose record was unreadable is not loaded: its history has nowhere to go.
        if let Some(room) = rooms.get_mut(name.as_str()) {
            if !room.restore_history(&record) {
                warn!("chat room {name}: unreadable history, skipped");
            }
        }
    }
}

/// The history of the persistent room `name` changed: it is written with the next batch.
pub(super) fn changed(muc: &Muc, name: &str) {
    let mut dirty = muc.dirty.borrow_mut();
    if dirty.is_empty() {
        // Full means a kick is already waiting.
        let _ = muc.kick.0.try_send(());
    }
    if !dirty.contains(name) {
        dirty.insert(name.into());
    }
}

/// Hands the history of every changed room to the writer as one op and returns its
/// completion; `None` when nothing changed. A room that is gone or no longer persistent
/// (its history already removed with its record) or whose history is empty has its stored
/// history removed. The server calls it at a graceful stop, before the store closes.
pub fn flush(server: &Server) -> Option<impl Future<Output = Result<(), StoreError>>> {
    let dirty = std::mem::take(&mut *server.state::<super::Muc>().dirty.borrow_mut());
    if dirty.is_empty() {
        return None;
    }
    let muc = server.state::<super::Muc>();
    let rooms = muc.rooms.borrow();
    let batch = dirty
        .into_iter()
        .map(|name| {
            let record = rooms
                .get(&name)
                .filter(|room| room.config.persistent && !room.destroyed)
                .and_then(Room::history_record);
            (name, record)
        })
        .collect();
    Some(server.store.muc_history_save(batch))
}

/// The event-loop task: after a room's history changes, waits [`FLUSH_EVERY`] (more changes
/// join the same batch meanwhile), writes the batch and logs a failure. Idle rooms cost no
/// wake-ups.
pub async fn background(server: std::rc::Rc<Server>) {
    while server.state::<super::Muc>().kick.1.recv().await.is_ok() {
        smol::Timer::after(FLUSH_EVERY).await;
        if let Some(write) = flush(&server) {
            if let Err(e) = write.await {
                warn!("chat room history write failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn past(nick: &str, at: u64, id: Option<&str>, inner: &str) -> Past {
        Past {
            nick: nick.into(),
            at,
            id: id.map(Into::into),
            inner: inner.into(),
        }
    }

    #[test]
    fn histories_round_trip() {
        let history: VecDeque<Past> = [
            past(
                "al ice",
                1_795_650_000,
                Some("m1"),
                "<body>hi &amp; bye</body>",
            ),
            past("bø", u64::MAX, None, "<body>ünïcode</body><stanza-id/>"),
            past("", 0, Some(""), ""),
        ]
        .into();
        assert_eq!(decode(&encode(&history)), Some(history));
        assert_eq!(decode(&encode(&VecDeque::new())), Some(VecDeque::new()));
    }

    #[test]
    fn damaged_records_are_refused() {
        let history: VecDeque<Past> = [past("n", 7, Some("id"), "<body>x</body>")].into();
        let record = encode(&history);
        // One byte alone is a valid, empty history.
        for cut in [0].into_iter().chain(2..record.len()) {
            assert_eq!(decode(&record[..cut]), None, "cut at {cut}");
        }
        let mut other_format = record.clone();
        other_format[0] = FORMAT + 1;
        assert_eq!(decode(&other_format), None);
        let mut bad_utf8 = record;
        let last = bad_utf8.len() - 1;
        bad_utf8[last] = 0xff;
        assert_eq!(decode(&bad_utf8), None);
        // A length far beyond the record.
        let mut huge = vec![FORMAT];
        huge.extend_from_slice(&1u64.to_le_bytes());
        huge.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert_eq!(decode(&huge), None);
    }
}
