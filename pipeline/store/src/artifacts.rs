//! Model artifacts on disk: written atomically under a name derived from their SHA-256, and
//! checked against the checksum recorded in the registry every time they are read.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::StoreError;

/// Where an artifact lives and what its bytes hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    /// `file://` URI of the artifact.
    pub uri: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its size.
    pub bytes: i64,
}

/// A local folder of artifacts (the embedded default: `<data_dir>/artifacts`).
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::ArtifactIo {
        path: path.to_owned(),
        source,
    }
}

impl ArtifactStore {
    /// Artifacts under `root` (created when first written).
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Stores `bytes` for `model`; an identical artifact is stored once.
    pub fn put(&self, model: &str, bytes: &[u8]) -> Result<ArtifactRef, StoreError> {
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
        let dir = self.root.join(model);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{sha256}.bin"));
        if !path.exists() {
            let tmp = dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
            let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
            file.write_all(bytes).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
            fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        let absolute = fs::canonicalize(&path).map_err(io(&path))?;
        Ok(ArtifactRef {
            uri: format!("file://{}", absolute.display()),
            sha256,
            bytes: bytes.len() as i64,
        })
    }

    /// Reads an artifact and checks it against its registered checksum: a missing or corrupted
    /// artifact is an error, never returned.
    pub fn load(&self, artifact: &ArtifactRef) -> Result<Vec<u8>, StoreError> {
        let path = artifact.uri.strip_prefix("file://").ok_or_else(|| {
            StoreError::Invalid(format!(
                "artifact {} is not in a local folder",
                artifact.uri
            ))
        })?;
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::ArtifactMissing {
                    uri: artifact.uri.clone(),
                });
            }
            Err(e) => return Err(io(Path::new(path))(e)),
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
