//! The store shared by every Lodestar service: the model registry (immutable numbered versions,
//! movable aliases with their full history, gated promotion, rollback) and checksummed model
//! artifacts, each presentation's term (running or finished, as of which day), over SQLite
//! (default) or PostgreSQL through one API (runtime-checked sqlx queries, migrations per
//! backend under `migrations/`).

mod artifacts;
mod card;
mod dashboard;
mod error;
mod lease;
mod ops;
mod registry;
mod terms;

pub use artifacts::{ArtifactRef, ArtifactStore};
pub use card::model_card;
pub use dashboard::{CaseloadEntry, Note, OutreachSummary, Session, SignInState, StudentKey};
pub use error::StoreError;
pub use lease::{Lease, LeaseHolder, LeaseRecord};
pub use ops::{
    ApiToken, CohortPage, NewPrediction, NewRun, PipelineRun, Prediction, StepRun, TokenInfo, User,
    latest_of_each_week,
};
pub use registry::{AliasMove, CHAMPION, GateEvidence, ModelVersion, NewVersion, Promotion};

use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (`sqlite://…`): one process on a laptop.
    Sqlite,
    /// PostgreSQL (`postgres://…`): every replica of a deployment.
    Postgres,
}

impl Backend {
    /// The backend a database URL asks for.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

static DRIVERS: Once = Once::new();

/// A connection pool to the store's database, migrated to the current schema.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connects to `url` (`sqlite://FILE?mode=rwc` or `postgres://…`) and applies any pending
    /// migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let backend = Backend::of_url(url)?;
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let options = AnyConnectOptions::from_str(url)
            .map_err(StoreError::Connect)?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        let store = Store { pool, backend };
        // PostgreSQL serializes concurrent migrators with a lock; SQLite does not, so when two
        // processes open a new database together the slower one fails on a table the faster
        // one just made. Once the faster one commits, the migrations read as applied.
        let mut tries = 0;
        loop {
            match store.migrate().await {
                Err(_) if backend == Backend::Sqlite && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                result => break result?,
            }
        }
        Ok(store)
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        };
        migrator.run(&self.pool).await.map_err(StoreError::Migrate)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::Db)?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Now, as stored: RFC 3339 UTC with milliseconds (sorts as text on both backends).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
