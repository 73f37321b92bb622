//! Single flight for the pipeline: at most one run at a time across every scheduler replica.
//! On PostgreSQL the guard is a session advisory lock held on a dedicated connection (it goes
//! when the holder's connection does, so a killed replica never blocks the next); on SQLite
//! (one host) it is the `pipeline_lease` row, taken when free, when its heartbeat is stale, or
//! when its holder's process on this host is gone. The row also says who holds it, on both.

use sqlx::AnyConnection;
use sqlx::{Connection, Row};

use crate::{Backend, Store, StoreError, now};

const LOCK_KEY: &str =
    "SELECT pg_try_advisory_lock(hashtext('lodestar-pipeline:' || current_schema())) AS ok";
const UNLOCK_KEY: &str =
    "SELECT pg_advisory_unlock(hashtext('lodestar-pipeline:' || current_schema())) AS ok";

/// Who asks for the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// `host:pid`, unique per scheduler process.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i64,
}

/// The current holder as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Holder id, `None` when free.
    pub holder: Option<String>,
    /// Since when (RFC 3339).
    pub acquired_at: Option<String>,
    /// Last heartbeat (RFC 3339).
    pub heartbeat_at: Option<String>,
}

/// The pipeline lease, held until [`Lease::release`] (or the process ends).
#[derive(Debug)]
pub struct Lease {
    store: Store,
    holder: String,
    /// PostgreSQL: the connection holding the advisory lock (closed, not pooled, on drop).
    connection: Option<AnyConnection>,
}

impl Store {
    /// Takes the pipeline lease if no other scheduler holds it. On SQLite a lease whose
    /// heartbeat is older than `stale_before` (RFC 3339), or whose holder on this host is no
    /// longer `alive`, is taken over.
    pub async fn try_lease(
        &self,
        me: &LeaseHolder,
        stale_before: &str,
        alive: &dyn Fn(i64) -> bool,
    ) -> Result<Option<Lease>, StoreError> {
        let mut connection = None;
        if self.backend() == Backend::Postgres {
            let mut c = self.pool().acquire().await?.detach();
            let ok: bool = sqlx::query(LOCK_KEY)
                .fetch_one(&mut c)
                .await?
                .try_get("ok")?;
            if !ok {
                c.close().await.ok();
                return Ok(None);
            }
            connection = Some(c);
        } else {
            let row =
                sqlx::query("SELECT holder, host, pid FROM pipeline_lease WHERE name = 'pipeline'")
                    .fetch_one(self.pool())
                    .await?;
            let holder: Option<String> = row.try_get("holder")?;
            let host: Option<String> = row.try_get("host")?;
            let pid: Option<i64> = row.try_get("pid")?;
            let dead_here = matches!((&holder, host, pid), (Some(_), Some(h), Some(p)) if h == me.host && p != me.pid && !alive(p));
            let taken = sqlx::query(
                "UPDATE pipeline_lease SET holder = $1, host = $2, pid = $3, acquired_at = $4, heartbeat_at = $4 \
                 WHERE name = 'pipeline' AND (holder IS NULL OR holder = $1 OR heartbeat_at < $5 OR ($6 = 1 AND holder = $7))",
            )
            .bind(&me.id)
            .bind(&me.host)
            .bind(me.pid)
            .bind(now())
            .bind(stale_before)
            .bind(i64::from(dead_here))
            .bind(holder.as_deref().unwrap_or(""))
            .execute(self.pool())
            .await?;
            if taken.rows_affected() != 1 {
                return Ok(None);
            }
        }
        if connection.is_some() {
            sqlx::query(
                "UPDATE pipeline_lease SET holder = $1, host = $2, pid = $3, acquired_at = $4, heartbeat_at = $4 WHERE name = 'pipeline'",
            )
            .bind(&me.id)
            .bind(&me.host)
            .bind(me.pid)
            .bind(now())
            .execute(self.pool())
            .await?;
        }
        Ok(Some(Lease {
            store: self.clone(),
            holder: me.id.clone(),
            connection,
        }))
    }

    /// Who holds the lease now, as recorded.
    pub async fn lease_record(&self) -> Result<LeaseRecord, StoreError> {
        let row = sqlx::query(
            "SELECT holder, acquired_at, heartbeat_at FROM pipeline_lease WHERE name = 'pipeline'",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(LeaseRecord {
            holder: row.try_get("holder")?,
            acquired_at: row.try_get("acquired_at")?,
            heartbeat_at: row.try_get("heartbeat_at")?,
        })
    }
}

impl Lease {
    /// Who holds it.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Records that the holder is alive.
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pipeline_lease SET heartbeat_at = $1 WHERE name = 'pipeline' AND holder = $2",
        )
        .bind(now())
        .bind(&self.holder)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Gives the lease back.
    pub async fn release(mut self) -> Result<(), StoreError> {
        sqlx::query("UPDATE pipeline_lease SET holder = NULL, host = NULL, pid = NULL WHERE name = 'pipeline' AND holder = $1")
            .bind(&self.holder)
            .execute(self.store.pool())
            .await?;
        if let Some(mut c) = self.connection.take() {
            sqlx::query(UNLOCK_KEY).fetch_one(&mut c).await?;
            c.close().await.ok();
        }
        Ok(())
    }
}
