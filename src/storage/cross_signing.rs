//! Cross-signing: `e2e_cross_signing_keys` (each user's master,
//! self-signing and user-signing key) and `e2e_cross_signing_signatures`
//! (signatures uploaded after the keys they sign).

use super::Storage;

/// A stored cross-signing key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CrossSigningKeyRow {
    pub user_id: String,
    /// `master`, `self_signing` or `user_signing`.
    pub key_type: String,
    /// The public key (unpadded base64), without `ed25519:`.
    pub key_id: String,
    pub key_json: String,
}

/// A signature stored apart from the key it signs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignatureRow {
    pub target_user_id: String,
    /// A device id or a cross-signing public key.
    pub target_key_id: String,
    pub signer_user_id: String,
    /// `ed25519:...` as in a `signatures` object.
    pub signer_key_id: String,
    pub signature: String,
}

impl Storage {
    /// The cross-signing keys of `users`.
    pub async fn cross_signing_keys_of(
        &self,
        users: &[&str],
    ) -> sqlx::Result<Vec<CrossSigningKeyRow>> {
        self.rows_of_users(
            "SELECT user_id, key_type, key_id, key_json FROM e2e_cross_signing_keys
             WHERE user_id IN",
            users,
        )
        .await
    }

    /// The signatures of keys of `users` (as targets).
    pub async fn cross_signing_signatures_of(
        &self,
        users: &[&str],
    ) -> sqlx::Result<Vec<SignatureRow>> {
        self.rows_of_users(
            "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
             FROM e2e_cross_signing_signatures WHERE target_user_id IN",
            users,
        )
        .await
    }

    /// `select` (ending in `IN`) for `users`, an `IN` list per chunk.
    pub(super) async fn rows_of_users<T>(
        &self,
        select: &str,
        users: &[&str],
    ) -> sqlx::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let mut out = Vec::new();
        for (chunk, size) in super::padded_chunks(users, super::PADDED_MAX) {
            let list = super::placeholders(1, size);
            let mut q = self.list_query(format!("{select} ({list})"));
            for id in super::padded_ids(chunk, size) {
                q = q.bind(id);
            }
            let rows = q
                .try_map(|r: sqlx::any::AnyRow| T::from_row(&r))
                .fetch_all(self.pool())
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Stores a user's new cross-signing keys (replacing those of the same
    /// types) and the device-list change, in one transaction.
    pub async fn store_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[CrossSigningKeyRow],
        change: &ListChange<'_>,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for k in keys {
            sqlx::query(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_id, key_json)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, key_type) DO UPDATE SET
                   key_id = excluded.key_id, key_json = excluded.key_json",
            )
            .bind(user_id)
            .bind(&k.key_type)
            .bind(&k.key_id)
            .bind(&k.key_json)
            .execute(&mut *tx)
            .await?;
        }
        insert_change(&mut tx, change).await?;
        tx.commit().await
    }

    /// Stores signatures (a signature by the same signing key replaces the
    /// old one) and the device-list changes, in one transaction.
    pub async fn store_cross_signing_signatures(
        &self,
        signatures: &[SignatureRow],
        changes: &[ListChange<'_>],
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        for s in signatures {
            sqlx::query(
                "INSERT INTO e2e_cross_signing_signatures
                   (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                 DO UPDATE SET signature = excluded.signature",
            )
            .bind(&s.target_user_id)
            .bind(&s.target_key_id)
            .bind(&s.signer_user_id)
            .bind(&s.signer_key_id)
            .bind(&s.signature)
            .execute(&mut *tx)
            .await?;
        }
        for change in changes {
            insert_change(&mut tx, change).await?;
        }
        tx.commit().await
    }
}

/// A device-list change of `user_id` at `at`, seen by those sharing a room
/// with them, or by `only_for` alone.
pub struct ListChange<'a> {
    pub user_id: &'a str,
    pub at: i64,
    pub only_for: Option<&'a str>,
}

async fn insert_change(tx: &mut super::Tx, c: &ListChange<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO device_list_changes (stream_ordering, user_id, only_for) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(c.at)
    .bind(c.user_id)
    .bind(c.only_for)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What deleting device `$2` of user `$1` removes: the signatures of its
/// keys (by the user's self-signing key) and those it made (of the user's
/// master key), so that a new device under the same id gets none of them.
pub(crate) const DEVICE_CLEANUP: [&str; 2] = [
    "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = $1 AND target_key_id = $2",
    "DELETE FROM e2e_cross_signing_signatures WHERE signer_user_id = $1
     AND substr(signer_key_id, 1, 8) = 'ed25519:' AND substr(signer_key_id, 9) = $2",
];

/// [`DEVICE_CLEANUP`] for every device of user `$1` but `$2`: it reads
/// `devices`, so it runs before they are deleted.
pub(crate) const OTHER_DEVICES_CLEANUP: [&str; 2] = [
    "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = $1 AND target_key_id IN
     (SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2)",
    "DELETE FROM e2e_cross_signing_signatures WHERE signer_user_id = $1
     AND substr(signer_key_id, 1, 8) = 'ed25519:' AND substr(signer_key_id, 9) IN
     (SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2)",
];

/// What deactivating user `$1` removes: their cross-signing keys, the
/// signatures of their keys and those they made.
pub(crate) const USER_CLEANUP: [&str; 2] = [
    "DELETE FROM e2e_cross_signing_keys WHERE user_id = $1",
    "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = $1 OR signer_user_id = $1",
];
