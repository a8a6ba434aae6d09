//! Private XML storage (XEP-0049): per (user, namespace), the serialised elements a client
//! stored. It never parses them.

use std::future::Future;

use redb::{TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// (user, namespace) → serialised elements of that namespace.
const PRIVATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("private");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PRIVATE)?;
    Ok(())
}

pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(PRIVATE)?;
    for entry in table.extract_from_if((user, "")..(user, "\u{10FFFF}"), |_, _| true)? {
        entry?;
    }
    Ok(())
}

impl Store {
    pub fn private_get(&self, user: &str, ns: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(PRIVATE)?;
        let xml = table.get((user, ns))?.map(|stored| stored.value().to_vec());
        Ok(xml)
    }

    /// Replaces the data of each (namespace, xml) pair at once. Resolves once durable.
    pub fn private_set(
        &self,
        user: &str,
        items: Vec<(String, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(PRIVATE)?;
            for (ns, xml) in &items {
                table.insert((user.as_str(), ns.as_str()), xml.as_slice())?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};

    #[test]
    fn per_namespace_and_cleared_with_account() {
        let dir = TempDir::new("private");
        let store = open(&dir);
        let items = vec![("a:ns".to_string(), b"<x/>".to_vec())];
        smol::block_on(store.private_set("u", items)).unwrap();
        assert_eq!(store.private_get("u", "a:ns"), Ok(Some(b"<x/>".to_vec())));
        assert_eq!(store.private_get("u", "b:ns"), Ok(None));
        assert_eq!(store.private_get("v", "a:ns"), Ok(None));
        store.create_user("u", b"c").unwrap();
        smol::block_on(store.delete_user("u")).unwrap();
        assert_eq!(store.private_get("u", "a:ns"), Ok(None));
    }
}
