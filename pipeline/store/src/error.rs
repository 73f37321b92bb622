//! Why a store operation failed, in words an operator can act on.

use std::path::PathBuf;

use lodestar_domain::GateDecision;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("database URL must start with sqlite:, postgres:// or postgresql://")]
    UnsupportedUrl,
    /// Connecting failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    /// No such registered model.
    #[error("no registered model {0:?}")]
    UnknownModel(String),
    /// No such version.
    #[error("model {model:?} has no version {version}")]
    UnknownVersion {
        /// The model.
        model: String,
        /// The missing version.
        version: i64,
    },
    /// The version already holds the alias.
    #[error("version {version} of {model:?} already holds {alias:?}")]
    AlreadyHolds {
        /// The model.
        model: String,
        /// The alias.
        alias: String,
        /// The version.
        version: i64,
    },
    /// The promotion gate refused the candidate; nothing changed.
    #[error("promotion refused: {}", .0.reasons.join("; "))]
    GateRefused(GateDecision),
    /// A forced move needs a reason.
    #[error("a forced promotion needs a reason (--force REASON)")]
    ForceWithoutReason,
    /// Nothing to roll back to.
    #[error("{model:?} has no earlier {alias} to roll back to")]
    NothingToRollBack {
        /// The model.
        model: String,
        /// The alias.
        alias: String,
    },
    /// A stored explanation names a feature id the dictionary does not hold.
    #[error("a stored explanation names feature id {0}, which is not in feature_names")]
    UnknownFeature(i64),
    /// Invalid input from the caller.
    #[error("{0}")]
    Invalid(String),
    /// An artifact file is gone.
    #[error("artifact {uri} is missing")]
    ArtifactMissing {
        /// Where it should be.
        uri: String,
    },
    /// An artifact's bytes do not match the checksum recorded at registration.
    #[error(
        "artifact {uri} is corrupted: sha256 {found}, registered {expected}; it will not be served"
    )]
    ArtifactCorrupted {
        /// The artifact.
        uri: String,
        /// The registered checksum.
        expected: String,
        /// The checksum found.
        found: String,
    },
    /// Reading or writing an artifact failed.
    #[error("artifact storage {path}: {source}")]
    ArtifactIo {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}

impl StoreError {
    /// Whether the database could not be reached (down, restarting, network, pool exhausted),
    /// as opposed to a bad query or bad data: a service answers 503 and retries later.
    pub fn is_unreachable(&self) -> bool {
        let e = match self {
            StoreError::Connect(_) => return true,
            StoreError::Db(e) => e,
            _ => return false,
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            // PostgreSQL's connection exceptions (08) and operator intervention (57: shut down,
            // restarting).
            sqlx::Error::Database(d) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
            _ => false,
        }
    }
}
