//! The S3-compatible backend: bodies as objects `PREFIX/ab/cd/abcd...` in
//! one bucket (AWS, MinIO, Garage, Ceph...), through `object_store`.
//!
//! A body is staged in a local file (under the media dir's `tmp/`, as the
//! local backend does) and uploaded under its key on commit: in one PUT, or
//! as a multipart upload when large, which S3 shows only once completed. So
//! an upload cut off at any point leaves no object (at most an incomplete
//! multipart upload, which is never listed or served).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWriteExt;

use super::{
    ChunkSource, ExactBody, MediaStore, SpoolFile, StagedBody, StoreFuture, StoredBody, check_key,
    open_staging,
};
use crate::config::S3Config;

/// Bodies up to this size go up in one PUT; larger ones in parts of this
/// size (S3 wants parts of at least 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one body in flight at once (memory: about this many parts).
const PARTS_IN_FLIGHT: usize = 2;

/// Bodies in an S3-compatible bucket.
pub struct S3Store {
    bucket: Arc<dyn ObjectStore>,
    /// `PREFIX/` or empty.
    prefix: String,
    /// The local staging directory.
    tmp: PathBuf,
}

impl S3Store {
    /// The bucket of `config`, staging in `root/tmp` (created; emptied of
    /// what a crash left). Nothing is sent to the bucket yet.
    pub fn open(config: &S3Config, root: &Path) -> io::Result<Self> {
        let tmp = open_staging(root)?;
        // The AWS_* environment first (credentials, session token), then
        // the configured settings over it.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(config.virtual_hosted_style)
            // A download or upload fails within half a minute when the
            // service is down, rather than after the default three.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let bucket = builder
            .build()
            .map_err(|e| io::Error::other(format!("media.s3: {e}")))?;
        Ok(Self {
            bucket: Arc::new(bucket),
            prefix: if config.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", config.prefix)
            },
            tmp,
        })
    }

    /// The object name of `key`.
    fn object_of(&self, key: &str) -> io::Result<object_store::path::Path> {
        object_of(&self.prefix, key)
    }
}

fn object_of(prefix: &str, key: &str) -> io::Result<object_store::path::Path> {
    check_key(key)?;
    let name = format!("{prefix}{}/{}/{key}", &key[..2], &key[2..4]);
    object_store::path::Path::parse(name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Whether `e` says the object is not there.
fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl MediaStore for S3Store {
    fn stage(&self) -> StoreFuture<'_, Box<dyn StagedBody>> {
        Box::pin(async move {
            let staged: Box<dyn StagedBody> = Box::new(S3Staged {
                spool: SpoolFile::create(&self.tmp).await?,
                bucket: self.bucket.clone(),
                prefix: self.prefix.clone(),
            });
            Ok(staged)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<StoredBody>> {
        Box::pin(async move {
            let object = self.object_of(key)?;
            let got = match self.bucket.get(&object).await {
                Ok(got) => got,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let len = got.meta.size;
            Ok(Some(StoredBody {
                len,
                body: ExactBody::boxed(ObjectChunks(got.into_stream()), len),
            }))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match self.bucket.delete(&self.object_of(key)?).await {
                Err(e) if !is_not_found(&e) => Err(e.into()),
                _ => Ok(()),
            }
        })
    }

    fn exists<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            match self.bucket.head(&self.object_of(key)?).await {
                Ok(_) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// A body staged locally, uploaded on commit.
struct S3Staged {
    spool: SpoolFile,
    bucket: Arc<dyn ObjectStore>,
    prefix: String,
}

impl StagedBody for S3Staged {
    fn write(&mut self, chunk: Bytes) -> StoreFuture<'_, ()> {
        self.spool.write(chunk)
    }

    fn commit(mut self: Box<Self>, key: String) -> StoreFuture<'static, ()> {
        Box::pin(async move {
            let object = object_of(&self.prefix, &key)?;
            let staged = self.spool.finish().await?.to_owned();
            match self.bucket.head(&object).await {
                // The same bytes are there already; the staged file goes
                // with `self`.
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let file = tokio::fs::File::open(&staged).await?;
            let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, file);
            let mut writer = BufWriter::with_capacity(self.bucket.clone(), object, PART_SIZE)
                .with_max_concurrency(PARTS_IN_FLIGHT);
            let sent = async {
                tokio::io::copy_buf(&mut reader, &mut writer).await?;
                writer.shutdown().await
            }
            .await;
            if let Err(e) = sent {
                // A multipart upload begun is abandoned (never visible).
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "could not abort a media multipart upload");
                }
                return Err(e);
            }
            Ok(())
        })
    }
}

/// An object's bytes, as the bucket sends them.
struct ObjectChunks(BoxStream<'static, object_store::Result<Bytes>>);

impl ChunkSource for ObjectChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>, _max: usize) -> Poll<io::Result<Option<Bytes>>> {
        self.0
            .poll_next_unpin(cx)
            .map(|chunk| chunk.transpose().map_err(io::Error::from))
    }
}

#[cfg(test)]
mod tests {
    use super::object_of;

    #[test]
    fn object_names_spread_keys_under_the_prefix() {
        assert_eq!(
            object_of("", "abcdef0123").unwrap().as_ref(),
            "ab/cd/abcdef0123"
        );
        assert_eq!(
            object_of("media/one/", "abcdef0123").unwrap().as_ref(),
            "media/one/ab/cd/abcdef0123"
        );
        for key in ["../../etc", "ab/cdefgh", "", "abc"] {
            assert!(object_of("p/", key).is_err(), "{key}");
        }
    }
}
