//! vCards (XEP-0054): per user, the serialised `<vCard/>` and the SHA-1 of its photo
//! (XEP-0153). It stores what it is given and never parses a vCard.

use std::future::Future;

use redb::{TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// user → serialised vCard element.
const VCARDS: TableDefinition<&str, &[u8]> = TableDefinition::new("vcard");
/// user → hex SHA-1 of the photo, apart so presence never reads a whole vCard.
const PHOTO_HASHES: TableDefinition<&str, &str> = TableDefinition::new("vcard_photo");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(VCARDS)?;
    txn.open_table(PHOTO_HASHES)?;
    Ok(())
}

pub(super) fn clear_user(txn: &WriteTransaction, user: &str) -> Result<(), StoreError> {
    txn.open_table(VCARDS)?.remove(user)?;
    txn.open_table(PHOTO_HASHES)?.remove(user)?;
    Ok(())
}

impl Store {
    pub fn vcard(&self, user: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(VCARDS)?;
        let vcard = table.get(user)?.map(|stored| stored.value().to_vec());
        Ok(vcard)
    }

    pub fn vcard_photo_hash(&self, user: &str) -> Result<Option<String>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(PHOTO_HASHES)?;
        let hash = table.get(user)?.map(|stored| stored.value().to_owned());
        Ok(hash)
    }

    /// Replaces `user`'s vCard and photo hash together. Resolves once durable.
    pub fn set_vcard(
        &self,
        user: &str,
        vcard: Vec<u8>,
        photo_hash: Option<String>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let user = user.to_owned();
        self.write(move |txn| {
            txn.open_table(VCARDS)?
                .insert(user.as_str(), vcard.as_slice())?;
            let mut hashes = txn.open_table(PHOTO_HASHES)?;
            match &photo_hash {
                Some(hash) => hashes.insert(user.as_str(), hash.as_str()).map(drop)?,
                None => hashes.remove(user.as_str()).map(drop)?,
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, TempDir};

    #[test]
    fn set_replace_and_delete_with_account() {
        let dir = TempDir::new("vcard");
        let store = open(&dir);
        assert_eq!(store.vcard("a"), Ok(None));
        smol::block_on(store.set_vcard("a", b"<vCard/>".to_vec(), Some("ab".into()))).unwrap();
        assert_eq!(store.vcard_photo_hash("a"), Ok(Some("ab".into())));
        smol::block_on(store.set_vcard("a", b"<vCard><FN/></vCard>".to_vec(), None)).unwrap();
        assert_eq!(store.vcard("a"), Ok(Some(b"<vCard><FN/></vCard>".to_vec())));
        assert_eq!(store.vcard_photo_hash("a"), Ok(None));
        store.create_user("a", b"c").unwrap();
        smol::block_on(store.delete_user("a")).unwrap();
        assert_eq!(store.vcard("a"), Ok(None));
    }
}
