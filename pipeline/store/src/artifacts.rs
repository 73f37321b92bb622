//! Model artifacts in a local folder (the embedded default) or S3-compatible object storage
//! (`s3://bucket/prefix`, credentials and endpoint from the usual `AWS_*` variables), through the
//! `object_store` crate. Objects are named by the SHA-256 of their bytes and written in one put
//! (a temporary file and a rename on local disk), and every read is checked against the checksum
//! recorded in the registry.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::StoreError;

/// Where an artifact lives and what its bytes hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    /// URI of the artifact: `file:///…/model/sha.bin`, `s3://bucket/prefix/model/sha.bin`.
    pub uri: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its size.
    pub bytes: i64,
}

/// A place artifacts are kept.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    objects: Arc<dyn ObjectStore>,
    /// URI prefix every artifact of this store starts with (no trailing slash).
    base: String,
}

/// Hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn storage(uri: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::ArtifactIo {
        path: PathBuf::from(uri),
        source: std::io::Error::other(e.to_string()),
    }
}

impl ArtifactStore {
    /// Artifacts in a local folder (created if missing).
    pub fn local(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| StoreError::ArtifactIo {
            path: root.clone(),
            source,
        })?;
        let root = fs::canonicalize(&root).map_err(|source| StoreError::ArtifactIo {
            path: root.clone(),
            source,
        })?;
        let objects = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| storage(&root.display().to_string(), e))?;
        Ok(Self {
            objects: Arc::new(objects),
            base: format!("file://{}", root.display()),
        })
    }

    /// Artifacts at `url`: `s3://bucket[/prefix]` (S3 or any S3-compatible store, configured by
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, …),
    /// `file:///path` or a plain folder path.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "artifact store {url}: no bucket named"
                )));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| storage(url, e))?;
            let objects: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(
                s3,
                prefix.trim_matches('/'),
            ));
            let base = format!(
                "s3://{bucket}{}",
                if prefix.trim_matches('/').is_empty() {
                    String::new()
                } else {
                    format!("/{}", prefix.trim_matches('/'))
                }
            );
            return Ok(Self { objects, base });
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        Self::local(path)
    }

    /// Artifacts held in memory only (for dry runs and tests of the object-store path).
    pub fn in_memory() -> Self {
        Self {
            objects: Arc::new(InMemory::new()),
            base: "memory://artifacts".into(),
        }
    }

    /// The URI prefix of this store's artifacts.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Stores `bytes` for `model`; an identical artifact is stored once.
    pub async fn put(&self, model: &str, bytes: &[u8]) -> Result<ArtifactRef, StoreError> {
        if model.is_empty()
            || !model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(StoreError::Invalid(format!(
                "model name {model:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        let sha256 = sha256_hex(bytes);
        let key = format!("{model}/{sha256}.bin");
        let uri = format!("{}/{key}", self.base);
        self.objects
            .put(
                &ObjectPath::from(key.as_str()),
                PutPayload::from(bytes.to_vec()),
            )
            .await
            .map_err(|e| storage(&uri, e))?;
        Ok(ArtifactRef {
            uri,
            sha256,
            bytes: bytes.len() as i64,
        })
    }

    /// Reads an artifact and checks it against its registered checksum: a missing or corrupted
    /// artifact is an error, never returned.
    pub async fn load(&self, artifact: &ArtifactRef) -> Result<Vec<u8>, StoreError> {
        let key = artifact
            .uri
            .strip_prefix(&self.base)
            .and_then(|k| k.strip_prefix('/'))
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "artifact {} is not in this store ({})",
                    artifact.uri, self.base
                ))
            })?;
        let bytes = match self.objects.get(&ObjectPath::from(key)).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| storage(&artifact.uri, e))?
                .to_vec(),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::ArtifactMissing {
                    uri: artifact.uri.clone(),
                });
            }
            Err(e) => return Err(storage(&artifact.uri, e)),
        };
        let found = sha256_hex(&bytes);
        if found != artifact.sha256 {
            return Err(StoreError::ArtifactCorrupted {
                uri: artifact.uri.clone(),
                expected: artifact.sha256.clone(),
                found,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_checks_checksums_like_any_other() {
        let store = ArtifactStore::in_memory();
        let a = store.put("m", b"weights").await.unwrap();
        assert!(a.uri.starts_with("memory://artifacts/m/"));
        assert_eq!(store.load(&a).await.unwrap(), b"weights");
        let mut wrong = a.clone();
        wrong.sha256 = sha256_hex(b"other");
        assert!(matches!(
            store.load(&wrong).await,
            Err(StoreError::ArtifactCorrupted { .. })
        ));
        let mut gone = a.clone();
        gone.uri = format!("{}/m/absent.bin", store.base());
        assert!(matches!(
            store.load(&gone).await,
            Err(StoreError::ArtifactMissing { .. })
        ));
        assert!(store.put("bad/name", b"x").await.is_err());
    }

    #[test]
    fn s3_urls_name_bucket_and_prefix() {
        // Building the client needs no network; region and credentials come from the environment.
        let store = ArtifactStore::from_url("s3://lodestar-models/prod/").unwrap();
        assert_eq!(store.base(), "s3://lodestar-models/prod");
        assert_eq!(
            ArtifactStore::from_url("s3://only-bucket").unwrap().base(),
            "s3://only-bucket"
        );
        assert!(ArtifactStore::from_url("s3:///prefix").is_err());
    }
}
