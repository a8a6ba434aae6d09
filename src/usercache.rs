//! A per-user value kept in memory only while the user has a bound session: data checked on
//! every stanza (block lists, photo hashes) without a store read, and no memory for users who
//! are away. It never reads the store itself (the owner passes the loader) and never keeps a
//! value once the user's last session has ended ([`UserCache::forget`]).

use crate::server::Server;
use std::cell::RefCell;
use std::collections::HashMap;

pub struct UserCache<T> {
    map: RefCell<HashMap<Box<str>, T>>,
}

impl<T> Default for UserCache<T> {
    fn default() -> Self {
        UserCache {
            map: RefCell::default(),
        }
    }
}

impl<T: Clone> UserCache<T> {
    /// The cached value, or `load`'s, which is kept if the user is online.
    pub fn get_or_load<E>(
        &self,
        server: &Server,
        user: &str,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(value) = self.map.borrow().get(user) {
            return Ok(value.clone());
        }
        let value = load()?;
        if !server.router.borrow().resources(user).is_empty() {
            self.map.borrow_mut().insert(user.into(), value.clone());
        }
        Ok(value)
    }

    /// Drops the user's value: their data changed, or their last session ended.
    pub fn forget(&self, user: &str) {
        let mut map = self.map.borrow_mut();
        map.remove(user);
        crate::memory::shrink_sparse(&mut map);
    }
}
