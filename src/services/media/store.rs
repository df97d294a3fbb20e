//! Where media bodies live: the [`MediaStore`] trait and its local
//! filesystem backend ([`LocalStore`]).
//!
//! A body is stored under a key its caller chooses once the body is all
//! there (the media service names bodies by their sha256, so identical
//! uploads are stored once). Writing therefore happens in two steps: a body
//! is streamed into a [`StagedBody`] nobody else sees, then committed under
//! its key; a staged body dropped before its commit (an upload cut off, too
//! large, or failed) leaves nothing behind. Both backends stage a body in a
//! local file under `tmp/`; the S3 one ([`s3::S3Store`]) uploads it on
//! commit.
//!
//! A committed body is on the disk before its commit returns, so before
//! the media row naming it is written and the upload answered: a crash
//! (of the process or of the machine) loses nothing acknowledged: the
//! local backend `fdatasync`s the staged file, renames it into place and
//! syncs the directory (and any directory made for it). Each of those
//! syncs waits for the disk; together they are a large part of an upload's
//! time (docs/benchmarks-history.md, run 40). A download still checks a
//! body's length against the recorded size and answers 404 rather than
//! serve a file something else cut short.

pub mod s3;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

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
    fn write(&mut self, chunk: Bytes) -> StoreFuture<'_, ()>;
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
        open_staging(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Where the body under `key` lives.
    fn path_of(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(&key[..2]).join(&key[2..4]).join(key))
    }
}

/// Makes `root/tmp`, where bodies are staged, emptied of what a crash left.
fn open_staging(root: &Path) -> io::Result<PathBuf> {
    let tmp = root.join("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    Ok(tmp)
}

/// Keys are letters and digits only (at least 5: they are spread over
/// `ab/cd/` directories), so no key names a place outside the store.
fn check_key(key: &str) -> io::Result<()> {
    if key.len() < 5 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a media store key: {key:?}"),
        ));
    }
    Ok(())
}

/// Bytes gathered before they are handed to a blocking thread to write.
const WRITE_BATCH: usize = 1024 * 1024;

/// A file in the staging directory being written; removed when dropped
/// unless [`SpoolFile::keep`] took it. Chunks are written as they came
/// (no copy), a batch at a time on a blocking thread, while the next
/// batch gathers.
struct SpoolFile {
    /// The file, while no write runs.
    file: Option<std::fs::File>,
    /// The write running: the file back, and how it went.
    writing: Option<tokio::task::JoinHandle<(std::fs::File, io::Result<()>)>>,
    /// Chunks not handed to a write yet, and their length.
    pending: Vec<Bytes>,
    pending_len: usize,
    /// The file; `None` once taken.
    path: Option<PathBuf>,
}

impl SpoolFile {
    /// A new, empty file in `tmp`.
    async fn create(tmp: &Path) -> io::Result<Self> {
        use rand::distr::{Alphanumeric, SampleString};
        let name = Alphanumeric.sample_string(&mut rand::rng(), 24);
        let path = tmp.join(format!("{name}.part"));
        let file = tokio::fs::File::create(&path).await?.into_std().await;
        Ok(Self {
            file: Some(file),
            writing: None,
            pending: Vec::new(),
            pending_len: 0,
            path: Some(path),
        })
    }

    fn write(&mut self, chunk: Bytes) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.pending_len += chunk.len();
            self.pending.push(chunk);
            if self.pending_len >= WRITE_BATCH {
                self.write_pending().await?;
            }
            Ok(())
        })
    }

    /// Hands the pending chunks to a blocking thread, once the write before
    /// them is done.
    async fn write_pending(&mut self) -> io::Result<()> {
        let file = self.written().await?;
        let chunks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let written = write_chunks(&file, &chunks);
            (file, written)
        }));
        Ok(())
    }

    /// The file once the running write (if any) is done.
    async fn written(&mut self) -> io::Result<std::fs::File> {
        if let Some(writing) = self.writing.take() {
            let (file, written) = writing.await.map_err(io::Error::other)?;
            written?;
            return Ok(file);
        }
        self.file
            .take()
            .ok_or_else(|| io::Error::other("a staged media write failed before"))
    }

    /// Writes out what is pending; the file's path.
    async fn finish(&mut self) -> io::Result<&Path> {
        if !self.pending.is_empty() {
            self.write_pending().await?;
        }
        self.file = Some(self.written().await?);
        self.path
            .as_deref()
            .ok_or_else(|| io::Error::other("staged body committed twice"))
    }

    /// The file's path; it is no longer removed on drop.
    fn keep(&mut self) -> Option<PathBuf> {
        self.path.take()
    }
}

/// Writes `chunks` in order, as few system calls as the kernel allows.
fn write_chunks(mut file: &std::fs::File, chunks: &[Bytes]) -> io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Syncs a directory, so that the names created in it (a committed body's
/// rename, a new directory) survive a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a staged media file");
        }
    }
}

impl MediaStore for LocalStore {
    fn stage(&self) -> StoreFuture<'_, Box<dyn StagedBody>> {
        Box::pin(async move {
            let staged: Box<dyn StagedBody> = Box::new(LocalStaged {
                spool: SpoolFile::create(&self.root.join("tmp")).await?,
                root: self.root.clone(),
            });
            Ok(staged)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredBody>> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            let opened = tokio::task::spawn_blocking(move || -> io::Result<_> {
                let file = std::fs::File::open(path)?;
                let len = file.metadata()?.len();
                Ok((file, len))
            })
            .await
            .map_err(io::Error::other)?;
            let (file, len) = match opened {
                Ok(opened) => opened,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let chunks = FileChunks {
                file: std::sync::Arc::new(file),
                offset: 0,
                reading: None,
            };
            Ok(Some(StoredBody {
                len,
                body: ExactBody::boxed(chunks, len),
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
    spool: SpoolFile,
    root: PathBuf,
}

impl StagedBody for LocalStaged {
    fn write(&mut self, chunk: Bytes) -> StoreFuture<'_, ()> {
        self.spool.write(chunk)
    }

    fn commit(mut self: Box<Self>, key: String) -> StoreFuture<'static, ()> {
        Box::pin(async move {
            self.spool.finish().await?;
            let store = LocalStore {
                root: self.root.clone(),
            };
            let target = store.path_of(&key)?;
            let Some(file) = self.spool.file.take() else {
                return Err(io::Error::other("staged body committed twice"));
            };
            let Some(staged) = self.spool.keep() else {
                return Err(io::Error::other("staged body committed twice"));
            };
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || {
                let placed = match target.try_exists() {
                    // The same bytes are there already (and on the disk:
                    // they were committed); the staged file goes.
                    Ok(true) => Err(None),
                    Ok(false) => place(&file, &staged, &target, &root).map_err(Some),
                    Err(e) => Err(Some(e)),
                };
                match placed {
                    Ok(()) => Ok(()),
                    Err(failed) => {
                        let _ = std::fs::remove_file(&staged);
                        failed.map_or(Ok(()), Err)
                    }
                }
            })
            .await
            .map_err(io::Error::other)?
        })
    }
}

/// Puts a staged body (`file`, at `staged`) in place at `target` under the
/// store's `root` durably: its data synced, then renamed, then its
/// directory (and any directory made for it, at once) synced.
fn place(file: &std::fs::File, staged: &Path, target: &Path, root: &Path) -> io::Result<()> {
    file.sync_data()?;
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("a media path without a directory"))?;
    let new_dir = !dir.is_dir();
    if new_dir {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::rename(staged, target)?;
    let up = dir.parent().filter(|_| new_dir);
    if !new_dir {
        return sync_dir(dir);
    }
    // `ab/cd` may both be new: their names live in `ab` and the root. The
    // three syncs run at once, so that one journal commit can serve them all
    // rather than each waiting for its own.
    std::thread::scope(|scope| {
        let others: Vec<_> = up
            .into_iter()
            .chain([root])
            .map(|d| scope.spawn(move || sync_dir(d)))
            .collect();
        let mut synced = sync_dir(dir);
        for other in others {
            let other = other
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a directory sync panicked")));
            synced = synced.and(other);
        }
        synced
    })
}

/// Where an [`ExactBody`] reads its chunks from.
trait ChunkSource: Send + Unpin + 'static {
    /// The next chunk, of at most `max` bytes (a source may give more; the
    /// body then fails); `None` at the end.
    fn poll_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Option<Bytes>>>;
}

/// A stored body streamed as an HTTP body, known to be `remaining` bytes
/// long: that is its size hint (so the response carries a
/// `Content-Length`), and a source shorter or longer fails the body.
struct ExactBody<S> {
    source: S,
    remaining: u64,
}

impl<S: ChunkSource> ExactBody<S> {
    fn boxed(source: S, len: u64) -> ByteBody {
        Self {
            source,
            remaining: len,
        }
        .boxed_unsync()
    }
}

impl<S: ChunkSource> HttpBody for ExactBody<S> {
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
        let max = usize::try_from(this.remaining).unwrap_or(usize::MAX);
        match this.source.poll_chunk(cx, max) {
            Poll::Ready(Ok(Some(chunk))) => {
                let n = chunk.len() as u64;
                if n > this.remaining {
                    return Poll::Ready(Some(Err(io::Error::other(
                        "media body longer than its recorded length",
                    ))));
                }
                this.remaining -= n;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "media body shorter than its recorded length",
            )))),
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

/// The size of a download's reads: each is a chunk of the response. Below
/// the allocator's mapping threshold (128 KiB, `main.rs`), so a chunk's
/// buffer comes from (and goes back to) the heap instead of a fresh mapping
/// whose pages fault in one by one, and still in the cache when the socket
/// copies it; larger than the 64 KiB reads before it, so fewer of them.
const READ_CHUNK: usize = 120 * 1024;

/// A file read in chunks of up to [`READ_CHUNK`] bytes, each read into a
/// buffer of its own that then is the chunk (no copy). A read the page
/// cache can answer runs on the spot (Linux: `preadv2` with `RWF_NOWAIT`);
/// one that would wait for the disk goes to a blocking thread.
struct FileChunks {
    file: std::sync::Arc<std::fs::File>,
    /// Where the next read starts.
    offset: u64,
    /// The read running on a blocking thread, if any.
    reading: Option<tokio::task::JoinHandle<io::Result<Bytes>>>,
}

impl ChunkSource for FileChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Option<Bytes>>> {
        let want = max.min(READ_CHUNK);
        if self.reading.is_none() {
            match read_cached(&self.file, self.offset, want) {
                Ok(Some(chunk)) => return Poll::Ready(Ok(self.advance(chunk))),
                Ok(None) => {
                    let (file, offset) = (self.file.clone(), self.offset);
                    self.reading = Some(tokio::task::spawn_blocking(move || {
                        read_at(&file, offset, want)
                    }));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let Some(reading) = self.reading.as_mut() else {
            return Poll::Ready(Err(io::Error::other("no media read running")));
        };
        match Pin::new(reading).poll(cx) {
            Poll::Ready(done) => {
                self.reading = None;
                Poll::Ready(
                    done.map_err(io::Error::other)
                        .and_then(|read| read.map(|chunk| self.advance(chunk))),
                )
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl FileChunks {
    /// Moves past `chunk`; `None` (the end) when it is empty.
    fn advance(&mut self, chunk: Bytes) -> Option<Bytes> {
        self.offset += chunk.len() as u64;
        (!chunk.is_empty()).then_some(chunk)
    }
}

/// Up to `len` bytes of `file` at `offset` if the page cache holds them
/// (at least the first of them): `None` when reading would wait for the
/// disk. Linux's `preadv2(RWF_NOWAIT)`; elsewhere always `None`.
#[cfg(target_os = "linux")]
fn read_cached(file: &std::fs::File, offset: u64, len: usize) -> io::Result<Option<Bytes>> {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    let mut buf = bytes::BytesMut::zeroed(len);
    loop {
        let read = preadv2(
            file,
            &mut [io::IoSliceMut::new(&mut buf)],
            offset,
            ReadWriteFlags::NOWAIT,
        );
        return match read {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf.freeze()))
            }
            Err(Errno::AGAIN) => Ok(None),
            // A kernel or file system without `RWF_NOWAIT`: the blocking read.
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => Ok(None),
            Err(Errno::INTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &std::fs::File, _offset: u64, _len: usize) -> io::Result<Option<Bytes>> {
    Ok(None)
}

/// Up to `len` bytes of `file` at `offset`, waiting for the disk if need be
/// (a blocking thread's read).
fn read_at(file: &std::fs::File, offset: u64, len: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut buf = bytes::BytesMut::zeroed(len);
    loop {
        match file.read_at(&mut buf, offset) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf.freeze());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
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
        body.write(Bytes::from_static(b"hello ")).await.unwrap();
        body.write(Bytes::from_static(b"world")).await.unwrap();
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
        again
            .write(Bytes::from_static(b"hello world"))
            .await
            .unwrap();
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
        body.write(Bytes::from_static(b"half")).await.unwrap();
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
