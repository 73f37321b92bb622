//! The store shared by every Lodestar service: the model registry (immutable numbered versions,
//! movable aliases with their full history, gated promotion, rollback) and checksummed model
//! artifacts, each presentation's term (running or finished, as of which day), over SQLite
//! (default) or PostgreSQL through one API (runtime-checked sqlx queries, migrations per
//! backend under `migrations/`).
//!
//! Besides the registry (`registry`, `artifacts`, `card`) and the terms (`terms`), one module
//! per resource the other capabilities share: pipeline runs and steps (`runs`), the pipeline
//! lease (`lease`), reading predictions (`predictions`), storing tonight's scores (`scores`),
//! `feedback`, `users` and sign-in, `caseloads` and the caseload view, outreach `notes`, the
//! `audit` trail and API `tokens`.

mod artifacts;
mod audit;
mod card;
mod caseloads;
mod error;
mod explanation;
mod feedback;
mod lease;
mod notes;
mod predictions;
mod registry;
mod runs;
mod scores;
mod terms;
mod tokens;
mod users;

pub use artifacts::{ArtifactRef, ArtifactStore};
pub use card::model_card;
pub use caseloads::CaseloadEntry;
pub use error::StoreError;
pub use lease::{Lease, LeaseHolder, LeaseRecord};
pub use notes::{Note, OutreachSummary, StudentKey};
pub use predictions::{CohortPage, NewPrediction, Prediction, latest_of_each_week};
pub use registry::{AliasMove, CHAMPION, GateEvidence, ModelVersion, NewVersion, Promotion};
pub use runs::{NewRun, PipelineRun, StepRun};
pub use scores::{BatchKey, Published, STAGE_CHUNK, ScoreBatch, Scored, StagedRow};
pub use tokens::{ApiToken, TokenInfo};
pub use users::{Session, SignInState, User};

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
    /// Feature names and ids of stored explanations, loaded on first use and when a row names
    /// an id not yet seen.
    features: std::sync::Arc<std::sync::RwLock<explanation::Dictionary>>,
    /// Per open score batch, what this process staged into it: publishing reads it instead of
    /// reading the batch's rows back (see `scores::Staged`).
    staged: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<i64, scores::Staged>>>,
    /// PostgreSQL only: a pool of the driver's own connections, for `COPY` (which sqlx's `Any`
    /// driver cannot speak); connected when first used.
    copy_pool: Option<sqlx::PgPool>,
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
        let mut pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            // Write-ahead logging: readers (the dashboard, the API, the lease check) go on
            // reading the last committed state while a writer commits, and a commit appends to
            // the log instead of copying pages to a rollback journal and syncing three times.
            // `synchronous = NORMAL` is SQLite's documented setting for WAL: a crash or kill
            // never corrupts the database nor loses a commit; only a power cut may lose the
            // last commits before the next checkpoint. The mode is kept in the file; the
            // statement is a no-op once it is set (and an in-memory database stays `memory`).
            pool = pool.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        let copy_pool = if backend == Backend::Postgres {
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .map_err(StoreError::Connect)?
                .disable_statement_logging();
            Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_lazy_with(options),
            )
        } else {
            None
        };
        let store = Store {
            pool,
            backend,
            features: Default::default(),
            staged: Default::default(),
            copy_pool,
        };
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

    /// PostgreSQL's own pool, for `COPY` (None on SQLite).
    pub(crate) fn copy_pool(&self) -> Option<&sqlx::PgPool> {
        self.copy_pool.as_ref()
    }

    /// The feature dictionary as it is now.
    pub(crate) fn features(&self) -> std::sync::RwLockReadGuard<'_, explanation::Dictionary> {
        self.features
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads every feature name and id again.
    pub(crate) async fn reload_features(&self) -> Result<(), StoreError> {
        use sqlx::Row;
        let rows = sqlx::query("SELECT id, name FROM feature_names")
            .fetch_all(&self.pool)
            .await?;
        let mut d = explanation::Dictionary::default();
        for r in &rows {
            let (id, name): (i64, String) = (r.try_get("id")?, r.try_get("name")?);
            d.ids.insert(name.clone(), id);
            d.names.insert(id, name);
        }
        *self
            .features
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = d;
        Ok(())
    }

    /// Gives every feature `rows` mention an id.
    pub(crate) async fn intern_features(&self, rows: &[NewPrediction]) -> Result<(), StoreError> {
        let missing: Vec<String> = {
            let d = self.features();
            let mut out = Vec::new();
            for p in rows {
                d.missing(&p.explanation, &p.context, &mut out);
            }
            out.into_iter().map(str::to_owned).collect()
        };
        self.intern_feature_names(&missing).await
    }

    /// Runs `read` with the feature dictionary; when it meets a feature id this process has
    /// not seen yet (written by another process), reloads the dictionary and runs it once more.
    pub(crate) async fn with_features<T>(
        &self,
        read: impl Fn(&explanation::Dictionary) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let first = read(&self.features());
        match first {
            Err(StoreError::UnknownFeature(_)) => {
                self.reload_features().await?;
                read(&self.features())
            }
            other => other,
        }
    }

    /// Stored predictions as shown (explanations' sentences rendered): a row naming a feature
    /// id this process has not seen yet reloads the dictionary once.
    pub(crate) async fn predictions_from(
        &self,
        rows: &[sqlx::any::AnyRow],
    ) -> Result<Vec<predictions::Prediction>, StoreError> {
        self.with_features(|d| {
            rows.iter()
                .map(|r| predictions::prediction_from(r, d))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
    }
}

/// Now, as stored: RFC 3339 UTC with milliseconds (sorts as text on both backends).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A JSON column's value (`None` when null); stored text that is not JSON is an error.
pub(crate) fn json_column(
    r: &sqlx::any::AnyRow,
    column: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    use sqlx::Row;
    let text: Option<String> = r.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Invalid(format!("stored {column} is not JSON: {e}")))
    })
    .transpose()
}
