//! Who blocks whom (XEP-0191), as far as the event loop needs to know: each user's block
//! list, kept in memory while they have a session ([`UserCache`]) and read from the store for
//! offline users. The commands that change it are [`crate::blocking`]'s.

use super::rules::matches;
use crate::jid::Jid;
use crate::server::Server;
use crate::store::{Store, StoreError};
use crate::usercache::UserCache;
use log::warn;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

/// Who blocks whom, as far as the event loop needs to know.
pub struct Blocklists {
    /// Users whose list may be non-empty; `None` when it could not be read at startup (then
    /// every check reads the store: slower, never wrong).
    nonempty: RefCell<Option<HashSet<Box<str>>>>,
    pub(crate) lists: UserCache<Rc<[Jid]>>,
}

impl Blocklists {
    /// One scan of the block table's keys at startup.
    pub fn load(store: &Store) -> Blocklists {
        let nonempty = match store.blocking_users() {
            Ok(users) => Some(users.into_iter().map(String::into_boxed_str).collect()),
            Err(e) => {
                warn!("cannot list block lists ({e}); reading them for every stanza");
                None
            }
        };
        Blocklists {
            nonempty: RefCell::new(nonempty),
            lists: UserCache::default(),
        }
    }

    /// `user`'s list, from memory when they are online.
    pub(crate) fn list(&self, server: &Server, user: &str) -> Result<Rc<[Jid]>, StoreError> {
        let may_have_one = self
            .nonempty
            .borrow()
            .as_ref()
            .is_none_or(|users| users.contains(user));
        if !may_have_one {
            return Ok(Rc::from([]));
        }
        self.lists.get_or_load(server, user, || {
            let list: Rc<[Jid]> = server
                .store
                .blocklist(user)?
                .iter()
                .filter_map(|jid| Jid::parse(jid).ok())
                .collect();
            if list.is_empty() {
                // E.g. the account was deleted: no need to read it again.
                if let Some(users) = self.nonempty.borrow_mut().as_mut() {
                    users.remove(user);
                }
            }
            Ok(list)
        })
    }

    /// Whether local `user` blocks `jid`. A list that cannot be read blocks everything:
    /// failing open would deliver what the user asked never to see.
    pub(super) fn blocks(&self, server: &Server, user: &str, jid: &Jid) -> bool {
        match self.list(server, user) {
            Ok(list) => list.iter().any(|item| matches(item, jid)),
            Err(e) => {
                warn!("{user}: cannot read the block list ({e}); refusing {jid}");
                true
            }
        }
    }

    /// `user`'s list was just written: the next check reads it again.
    pub(crate) fn changed(&self, user: &str) {
        self.lists.forget(user);
        if let Some(users) = self.nonempty.borrow_mut().as_mut() {
            users.insert(user.into());
        }
    }
}

impl crate::feature::State for Blocklists {
    fn new(_config: &crate::config::Config, store: &crate::store::Store) -> Self {
        Blocklists::load(store)
    }
}
