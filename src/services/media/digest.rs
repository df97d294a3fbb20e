//! An upload's sha256, computed beside its receipt: chunks are gathered
//! into batches and each batch is hashed on a blocking thread while the
//! next one arrives, so the hash (about as costly as receiving and writing
//! the body together) adds only its last batch to an upload's time.

use std::io;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// Bytes gathered before they are handed to a blocking thread to hash: the
/// last batch is hashed after the body's end, so smaller is a shorter tail,
/// larger fewer hand-overs.
const HASH_BATCH: usize = 512 * 1024;

/// The running sha256 of a body that comes in chunks.
pub(super) struct BodyDigest {
    /// The hash state, while no batch is being hashed.
    hasher: Option<Sha256>,
    /// The batch being hashed; gives the state back.
    hashing: Option<JoinHandle<Sha256>>,
    /// Chunks not handed over yet, and their length.
    pending: Vec<Bytes>,
    pending_len: usize,
}

impl BodyDigest {
    pub(super) fn new() -> Self {
        Self {
            hasher: Some(Sha256::new()),
            hashing: None,
            pending: Vec::new(),
            pending_len: 0,
        }
    }

    /// Adds `chunk` (shared, not copied); waits only when a full batch is
    /// ready while the one before is still being hashed.
    pub(super) async fn update(&mut self, chunk: Bytes) -> io::Result<()> {
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= HASH_BATCH {
            self.hand_over().await?;
        }
        Ok(())
    }

    /// The lowercase hex sha256 of everything added.
    pub(super) async fn finish(mut self) -> io::Result<String> {
        if !self.pending.is_empty() {
            self.hand_over().await?;
        }
        let hasher = self.state().await?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Starts hashing the pending chunks, once the batch before is done.
    async fn hand_over(&mut self) -> io::Result<()> {
        let mut hasher = self.state().await?;
        let chunks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        self.hashing = Some(tokio::task::spawn_blocking(move || {
            for chunk in &chunks {
                hasher.update(chunk);
            }
            hasher
        }));
        Ok(())
    }

    /// The hash state once the running batch (if any) is done.
    async fn state(&mut self) -> io::Result<Sha256> {
        if let Some(hashing) = self.hashing.take() {
            return hashing.await.map_err(io::Error::other);
        }
        self.hasher
            .take()
            .ok_or_else(|| io::Error::other("a media hash batch failed before"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_hash_as_one_body_whatever_the_chunks() {
        let body: Vec<u8> = (0..3 * HASH_BATCH + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let whole = hex::encode(Sha256::digest(&body));
        for chunk_len in [1000, HASH_BATCH - 1, HASH_BATCH, HASH_BATCH + 1, body.len()] {
            let mut digest = BodyDigest::new();
            for chunk in body.chunks(chunk_len) {
                digest.update(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            assert_eq!(
                digest.finish().await.unwrap(),
                whole,
                "chunks of {chunk_len}"
            );
        }
        let empty = BodyDigest::new().finish().await.unwrap();
        assert_eq!(empty, hex::encode(Sha256::digest(b"")));
    }
}
