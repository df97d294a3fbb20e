//! Where media bodies live: the [`MediaStore`] trait and its local
//! filesystem backend ([`LocalStore`]).
//!
//! A body is stored under a key its caller chooses once the body is all
//! there (the media service names bodies by their sha256, so identical
//! uploads are stored once). Writing therefore happens in two steps: a body
//! is streamed into a [`StagedBody`] nobody else sees, then committed under
//! its key; a staged body dropped before its commit (an upload cut off, too
//! large, or failed) leaves nothing behind. An object store fits the same
//! shape (a multipart upload to a temporary name, then a rename).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// What the store's operations return.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// A body read from the store, streamed.
pub type ByteBody = UnsyncBoxBody<Bytes, io::Error>;

/// A stored body: its length and its bytes as a stream.
pub struct StoredBody {
    pub len: u64,
    pub body: ByteBody,
}

/// A place for media bodies.
pub trait MediaStore: Send + Sync {
    /// A new staging area for one body, invisible until committed.
    fn stage(&self) -> StoreFuture<'_, Box<dyn StagedBody>>;
    /// The body under `key`, or `None`.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredBody>>;
    /// Removes the body under `key` (no error when there is none).
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    fn exists<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;
}

/// A body being written. Dropped before [`StagedBody::commit`], it is gone.
pub trait StagedBody: Send {
    /// Appends `chunk`.
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> StoreFuture<'a, ()>;
    /// Makes the body visible under `key`. A body already there under the
    /// same key is kept (same key, same bytes) and this one dropped.
    fn commit(self: Box<Self>, key: String) -> StoreFuture<'static, ()>;
}

/// Bodies as files under one directory: `ab/cd/abcd...` for key
/// `abcd...`, written to `tmp/` first and renamed into place.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// The store at `root`, created if missing; staged files a crash left
    /// in `tmp/` are removed.
    pub fn open(root: &Path) -> io::Result<Self> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Where the body under `key` lives; keys are letters and digits only,
    /// so no key names a path outside the store.
    fn path_of(&self, key: &str) -> io::Result<PathBuf> {
        if key.len() < 5 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a media store key: {key:?}"),
            ));
        }
        Ok(self.root.join(&key[..2]).join(&key[2..4]).join(key))
    }
}

impl MediaStore for LocalStore {
    fn stage(&self) -> StoreFuture<'_, Box<dyn StagedBody>> {
        Box::pin(async move {
            use rand::distr::{Alphanumeric, SampleString};
            let name = Alphanumeric.sample_string(&mut rand::rng(), 24);
            let path = self.root.join("tmp").join(format!("{name}.part"));
            let file = tokio::fs::File::create(&path).await?;
            let staged: Box<dyn StagedBody> = Box::new(LocalStaged {
                file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
                path: Some(path),
                root: self.root.clone(),
            });
            Ok(staged)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredBody>> {
        Box::pin(async move {
            let file = match tokio::fs::File::open(self.path_of(key)?).await {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let len = file.metadata().await?.len();
            let body = FileBody {
                file,
                remaining: len,
                buf: vec![0; 64 * 1024].into_boxed_slice(),
            };
            Ok(Some(StoredBody {
                len,
                body: body.boxed_unsync(),
            }))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path_of(key)?).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move { tokio::fs::try_exists(self.path_of(key)?).await })
    }
}

/// A body being written to `tmp/`.
struct LocalStaged {
    file: tokio::io::BufWriter<tokio::fs::File>,
    /// The staged file; `None` once committed.
    path: Option<PathBuf>,
    root: PathBuf,
}

impl StagedBody for LocalStaged {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(self.file.write_all(chunk))
    }

    fn commit(mut self: Box<Self>, key: String) -> StoreFuture<'static, ()> {
        Box::pin(async move {
            self.file.flush().await?;
            self.file.get_ref().sync_all().await?;
            let store = LocalStore {
                root: self.root.clone(),
            };
            let target = store.path_of(&key)?;
            let Some(staged) = self.path.take() else {
                return Err(io::Error::other("staged body committed twice"));
            };
            if tokio::fs::try_exists(&target).await? {
                // The same bytes are there already.
                tokio::fs::remove_file(&staged).await?;
                return Ok(());
            }
            if let Some(dir) = target.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            if let Err(e) = tokio::fs::rename(&staged, &target).await {
                let _ = tokio::fs::remove_file(&staged).await;
                return Err(e);
            }
            Ok(())
        })
    }
}

impl Drop for LocalStaged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a staged media file");
        }
    }
}

/// A file streamed as an HTTP body, in chunks of up to 64 KiB; its exact
/// length is its size hint (so the response carries a `Content-Length`).
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Box<[u8]>,
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want =
            usize::try_from(this.remaining).map_or(this.buf.len(), |r| r.min(this.buf.len()));
        let mut read = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let filled = read.filled();
                if filled.is_empty() {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "media file shorter than its recorded length",
                    ))));
                }
                this.remaining -= filled.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(filled)))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::{LocalStore, MediaStore};

    const KEY: &str = "abcdef0123456789";

    async fn read(store: &LocalStore, key: &str) -> Option<Vec<u8>> {
        let stored = store.get(key).await.unwrap()?;
        let bytes = stored.body.collect().await.unwrap().to_bytes();
        assert_eq!(stored.len, bytes.len() as u64);
        Some(bytes.to_vec())
    }

    fn staged(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    #[tokio::test]
    async fn a_body_is_visible_once_committed_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut body = store.stage().await.unwrap();
        body.write(b"hello ").await.unwrap();
        body.write(b"world").await.unwrap();
        assert!(!store.exists(KEY).await.unwrap());
        assert_eq!(staged(dir.path()), 1);
        body.commit(KEY.to_owned()).await.unwrap();
        assert_eq!(staged(dir.path()), 0);
        assert_eq!(
            read(&store, KEY).await.as_deref(),
            Some(&b"hello world"[..])
        );
        assert!(dir.path().join("ab").join("cd").join(KEY).is_file());
        // The same key again keeps the body there.
        let mut again = store.stage().await.unwrap();
        again.write(b"hello world").await.unwrap();
        again.commit(KEY.to_owned()).await.unwrap();
        assert_eq!(staged(dir.path()), 0);
        store.delete(KEY).await.unwrap();
        assert!(!store.exists(KEY).await.unwrap());
        assert!(read(&store, KEY).await.is_none());
        store.delete(KEY).await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_body_leaves_nothing_and_a_restart_clears_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut body = store.stage().await.unwrap();
        body.write(b"half").await.unwrap();
        drop(body);
        assert_eq!(staged(dir.path()), 0);
        std::fs::write(dir.path().join("tmp").join("crashed.part"), b"x").unwrap();
        drop(store);
        let _store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(staged(dir.path()), 0);
    }

    #[tokio::test]
    async fn keys_cannot_name_paths_outside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("media")).unwrap();
        for key in ["../../etc/passwd", "ab/cdefgh", "", "abc", "abcd\\efgh"] {
            assert!(store.get(key).await.is_err(), "{key}");
            assert!(store.exists(key).await.is_err(), "{key}");
            let body = store.stage().await.unwrap();
            assert!(body.commit(key.to_owned()).await.is_err(), "{key}");
        }
        assert_eq!(staged(&dir.path().join("media")), 0);
    }
}
