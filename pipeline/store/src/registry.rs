//! The model registry with MLflow's semantics: registered models, immutable numbered versions
//! (artifact, checksum, training snapshot, code version, config, seed, evaluation report), and
//! movable aliases whose every move is kept (who, when, from which version to which, why).
//! `champion` moves only through the promotion gate (or `force` with a reason); rollback returns
//! it to the holder before the current one.

use lodestar_domain::{EvaluationReport, GateDecision, PromotionGate};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{ArtifactRef, Store, StoreError, now};

/// The alias serving reads.
pub const CHAMPION: &str = "champion";

/// What registering a version records.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Registered model name (created on first use).
    pub model: String,
    /// The stored artifact.
    pub artifact: ArtifactRef,
    /// Content hash of the training snapshot.
    pub snapshot_hash: String,
    /// Code version that trained it.
    pub code_version: String,
    /// Training configuration (JSON).
    pub config: serde_json::Value,
    /// Random seed.
    pub seed: i64,
    /// Evaluation report.
    pub report: EvaluationReport,
    /// Pipeline run that made it, if any.
    pub run_id: Option<i64>,
    /// Who registered it.
    pub actor: String,
}

/// A registered version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    /// Model name.
    pub model: String,
    /// Version number, from 1.
    pub version: i64,
    /// The artifact.
    pub artifact: ArtifactRef,
    /// Training snapshot hash.
    pub snapshot_hash: String,
    /// Code version.
    pub code_version: String,
    /// Training configuration.
    pub config: serde_json::Value,
    /// Seed.
    pub seed: i64,
    /// Evaluation report.
    pub report: EvaluationReport,
    /// Pipeline run.
    pub run_id: Option<i64>,
    /// Who registered it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasMove {
    /// Model.
    pub model: String,
    /// Alias.
    pub alias: String,
    /// `promote`, `rollback` or `set`.
    pub kind: String,
    /// Previous holder.
    pub from_version: Option<i64>,
    /// New holder.
    pub to_version: Option<i64>,
    /// Who moved it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Whether the gate was overridden.
    pub forced: bool,
    /// The gate's verdict at the time (JSON), for promotions.
    pub gate: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// A request to make a version champion.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// Model.
    pub model: String,
    /// Candidate version.
    pub version: i64,
    /// The gate to pass.
    pub gate: PromotionGate,
    /// Who asks.
    pub actor: String,
    /// Why (recorded).
    pub reason: String,
    /// Skip the gate; the reason is then required.
    pub force: bool,
    /// Candidate and champion evaluated tonight on one test set, so the gate compares like with
    /// like; `None`: the versions' stored reports (as the command line promotes).
    pub evidence: Option<GateEvidence>,
}

/// The candidate and the current champion evaluated on the same rows (tonight's test set),
/// for the gate to compare instead of reports made on different data. The versions' stored
/// reports never change.
#[derive(Debug, Clone)]
pub struct GateEvidence {
    /// The candidate's report on tonight's test set.
    pub candidate: EvaluationReport,
    /// The current champion's version and its report on the same test set (`None` when there
    /// is no champion).
    pub champion: Option<(i64, EvaluationReport)>,
}

/// What the alias move records of a gate decision: the verdict, and where the compared
/// reports came from.
#[derive(serde::Serialize)]
struct GateRecord<'a> {
    passed: bool,
    reasons: &'a [String],
    /// `tonight`: both evaluated on one test set ([`GateEvidence`]); `stored`: the versions'
    /// own reports.
    compared_on: &'static str,
    /// The presentations the comparison was made on.
    test_presentations: &'a [String],
    /// The champion compared against.
    champion_version: Option<i64>,
}

/// The gate over evidence from one test set: the candidate against the champion evaluated on
/// the same rows. Evidence about another champion than the current one, or lacking the
/// champion while there is one, refuses; so does a gate week either side lacks.
fn gate_on_evidence(
    gate: &PromotionGate,
    evidence: &GateEvidence,
    current: Option<i64>,
) -> GateDecision {
    let champion = match (current, &evidence.champion) {
        (None, None) => None,
        (None, Some((v, _))) => {
            return refused(format!(
                "tonight's evaluation compared against version {v}, but there is no champion now; evaluate again"
            ));
        }
        (Some(c), None) => {
            return refused(format!(
                "version {c} is champion but tonight's evaluation has no report of it on the same rows; the gate never passes by default"
            ));
        }
        (Some(c), Some((v, _))) if *v != c => {
            return refused(format!(
                "the champion moved to version {c} after tonight's evaluation compared against version {v}; evaluate again"
            ));
        }
        (Some(_), Some((_, report))) => Some(report),
    };
    // The gate refuses a week missing on either side (PromotionGate::evaluate).
    gate.evaluate(&evidence.candidate, champion)
}

fn refused(reason: String) -> GateDecision {
    GateDecision {
        passed: false,
        reasons: vec![reason],
    }
}

/// The columns of `model_versions`, as a literal so queries stay static strings.
macro_rules! version_columns {
    () => {
        "model, version, artifact_uri, artifact_sha256, artifact_bytes, snapshot_hash, \
         code_version, config_json, seed, report_json, run_id, created_by, created_at"
    };
}

fn json_err(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Invalid(format!("stored {what} is not valid JSON: {e}"))
}

fn version_from(row: &AnyRow) -> Result<ModelVersion, StoreError> {
    let config: String = row.try_get("config_json")?;
    let report: String = row.try_get("report_json")?;
    Ok(ModelVersion {
        model: row.try_get("model")?,
        version: row.try_get("version")?,
        artifact: ArtifactRef {
            uri: row.try_get("artifact_uri")?,
            sha256: row.try_get("artifact_sha256")?,
            bytes: row.try_get("artifact_bytes")?,
        },
        snapshot_hash: row.try_get("snapshot_hash")?,
        code_version: row.try_get("code_version")?,
        config: serde_json::from_str(&config).map_err(|e| json_err("config", e))?,
        seed: row.try_get("seed")?,
        report: serde_json::from_str(&report).map_err(|e| json_err("report", e))?,
        run_id: row.try_get("run_id")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

fn move_from(row: &AnyRow) -> Result<AliasMove, StoreError> {
    Ok(AliasMove {
        model: row.try_get("model")?,
        alias: row.try_get("alias")?,
        kind: row.try_get("kind")?,
        from_version: row.try_get("from_version")?,
        to_version: row.try_get("to_version")?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
        forced: row.try_get::<i64, _>("forced")? != 0,
        gate: row.try_get("gate_json")?,
        at: row.try_get("at")?,
    })
}

/// The holder an alias returns to on rollback: replaying its history as a stack (a promotion or
/// set pushes the previous holder, a rollback pops it).
fn rollback_target(history: &[AliasMove]) -> Option<i64> {
    let mut stack: Vec<Option<i64>> = Vec::new();
    for m in history {
        if m.kind == "rollback" {
            stack.pop();
        } else {
            stack.push(m.from_version);
        }
    }
    stack.last().copied().flatten()
}

impl Store {
    /// Registers a new, immutable version of `new.model` (creating the model if needed); the
    /// version number is the next free one, decided inside the transaction.
    pub async fn register_version(&self, new: NewVersion) -> Result<ModelVersion, StoreError> {
        if new.model.trim().is_empty() {
            return Err(StoreError::Invalid("a model needs a name".into()));
        }
        let at = now();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO registered_models (name, description, created_at, updated_at) VALUES ($1, '', $2, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&new.model)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        // Lock the model row so concurrent registrations number their versions one after another.
        sqlx::query("UPDATE registered_models SET updated_at = $1 WHERE name = $2")
            .bind(&at)
            .bind(&new.model)
            .execute(&mut *tx)
            .await?;
        let next: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 AS next FROM model_versions WHERE model = $1",
        )
        .bind(&new.model)
        .fetch_one(&mut *tx)
        .await?
        .try_get("next")?;
        let config = serde_json::to_string(&new.config).map_err(|e| json_err("config", e))?;
        let report = serde_json::to_string(&new.report).map_err(|e| json_err("report", e))?;
        sqlx::query(concat!(
            "INSERT INTO model_versions (",
            version_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&new.model)
        .bind(next)
        .bind(&new.artifact.uri)
        .bind(&new.artifact.sha256)
        .bind(new.artifact.bytes)
        .bind(&new.snapshot_hash)
        .bind(&new.code_version)
        .bind(&config)
        .bind(new.seed)
        .bind(&report)
        .bind(new.run_id)
        .bind(&new.actor)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.version(&new.model, next).await
    }

    /// One version.
    pub async fn version(&self, model: &str, version: i64) -> Result<ModelVersion, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM model_versions WHERE model = $1 AND version = $2"
        ))
        .bind(model)
        .bind(version)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::UnknownVersion {
            model: model.to_owned(),
            version,
        })?;
        version_from(&row)
    }

    /// The version of `model` whose artifact has this SHA-256, if one is registered (so a
    /// retried registration finds the version its first attempt made instead of adding another).
    pub async fn version_with_artifact(
        &self,
        model: &str,
        sha256: &str,
    ) -> Result<Option<ModelVersion>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM model_versions WHERE model = $1 AND artifact_sha256 = $2 ORDER BY version LIMIT 1"
        ))
        .bind(model)
        .bind(sha256)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(version_from).transpose()
    }

    /// Every version of a model, oldest first.
    pub async fn versions(&self, model: &str) -> Result<Vec<ModelVersion>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM model_versions WHERE model = $1 ORDER BY version"
        ))
        .bind(model)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(version_from).collect()
    }

    /// Registered model names, alphabetically.
    pub async fn models(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM registered_models ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get("name").map_err(StoreError::from))
            .collect()
    }

    /// The version an alias points at.
    pub async fn alias(&self, model: &str, alias: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT version FROM aliases WHERE model = $1 AND alias = $2")
            .bind(model)
            .bind(alias)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| r.try_get("version"))
            .transpose()
            .map_err(StoreError::from)
    }

    /// A model's aliases and the versions they point at, by alias name.
    pub async fn aliases(&self, model: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT alias, version FROM aliases WHERE model = $1 ORDER BY alias")
                .bind(model)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("alias")?, r.try_get("version")?)))
            .collect()
    }

    /// Every move of every alias of a model, oldest first.
    pub async fn alias_history(&self, model: &str) -> Result<Vec<AliasMove>, StoreError> {
        let rows = sqlx::query(
            "SELECT model, alias, kind, from_version, to_version, actor, reason, forced, gate_json, at \
             FROM alias_history WHERE model = $1 ORDER BY id",
        )
        .bind(model)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(move_from).collect()
    }

    /// Points `alias` (not `champion`, which moves only through [`Store::promote`]) at a version.
    pub async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version: i64,
        actor: &str,
        reason: &str,
    ) -> Result<AliasMove, StoreError> {
        if alias == CHAMPION {
            return Err(StoreError::Invalid(
                "champion moves only through promotion (lodestar models promote) or rollback"
                    .into(),
            ));
        }
        if alias.trim().is_empty() {
            return Err(StoreError::Invalid("an alias needs a name".into()));
        }
        let mut tx = self.pool().begin().await?;
        lock_model(&mut tx, model).await?;
        ensure_version(&mut tx, model, version).await?;
        let m = move_alias(
            &mut tx, model, alias, "set", version, actor, reason, false, None,
        )
        .await?;
        tx.commit().await?;
        Ok(m)
    }

    /// Makes a version champion if it passes the gate against the current champion (or with
    /// `force` and a reason). A refusal changes nothing and says why.
    pub async fn promote(&self, p: &Promotion) -> Result<AliasMove, StoreError> {
        if p.force && p.reason.trim().is_empty() {
            return Err(StoreError::ForceWithoutReason);
        }
        let mut tx = self.pool().begin().await?;
        lock_model(&mut tx, &p.model).await?;
        let stored = report_of(&mut tx, &p.model, p.version).await?;
        let current = current_alias(&mut tx, &p.model, CHAMPION).await?;
        if current == Some(p.version) {
            return Err(StoreError::AlreadyHolds {
                model: p.model.clone(),
                alias: CHAMPION.into(),
                version: p.version,
            });
        }
        let (decision, compared_on, test_presentations): (GateDecision, _, _) = match &p.evidence {
            Some(evidence) => (
                gate_on_evidence(&p.gate, evidence, current),
                "tonight",
                evidence.candidate.test_presentations.clone(),
            ),
            None => {
                let champion = match current {
                    Some(v) => Some(report_of(&mut tx, &p.model, v).await?),
                    None => None,
                };
                (
                    p.gate.evaluate(&stored, champion.as_ref()),
                    "stored",
                    stored.test_presentations.clone(),
                )
            }
        };
        if !decision.passed && !p.force {
            tx.rollback().await?;
            return Err(StoreError::GateRefused(decision));
        }
        let gate = serde_json::to_string(&GateRecord {
            passed: decision.passed,
            reasons: &decision.reasons,
            compared_on,
            test_presentations: &test_presentations,
            champion_version: current,
        })
        .map_err(|e| json_err("gate", e))?;
        let m = move_alias(
            &mut tx,
            &p.model,
            CHAMPION,
            "promote",
            p.version,
            &p.actor,
            &p.reason,
            p.force,
            Some(gate),
        )
        .await?;
        tx.commit().await?;
        Ok(m)
    }

    /// Moves `champion` back to the holder before the current one, in one step.
    pub async fn rollback(
        &self,
        model: &str,
        actor: &str,
        reason: &str,
    ) -> Result<AliasMove, StoreError> {
        let mut tx = self.pool().begin().await?;
        lock_model(&mut tx, model).await?;
        let rows = sqlx::query(
            "SELECT model, alias, kind, from_version, to_version, actor, reason, forced, gate_json, at \
             FROM alias_history WHERE model = $1 AND alias = $2 ORDER BY id",
        )
        .bind(model)
        .bind(CHAMPION)
        .fetch_all(&mut *tx)
        .await?;
        let history = rows.iter().map(move_from).collect::<Result<Vec<_>, _>>()?;
        let Some(target) = rollback_target(&history) else {
            return Err(StoreError::NothingToRollBack {
                model: model.to_owned(),
                alias: CHAMPION.into(),
            });
        };
        let m = move_alias(
            &mut tx, model, CHAMPION, "rollback", target, actor, reason, false, None,
        )
        .await?;
        tx.commit().await?;
        Ok(m)
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// Takes the model's row lock (PostgreSQL) or the write lock (SQLite) before reading anything,
/// so concurrent promoters run one after another and the second sees the first's result.
async fn lock_model(tx: &mut Tx<'_>, model: &str) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE registered_models SET updated_at = $1 WHERE name = $2")
        .bind(now())
        .bind(model)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::UnknownModel(model.to_owned()));
    }
    Ok(())
}

async fn ensure_version(tx: &mut Tx<'_>, model: &str, version: i64) -> Result<(), StoreError> {
    let found = sqlx::query("SELECT version FROM model_versions WHERE model = $1 AND version = $2")
        .bind(model)
        .bind(version)
        .fetch_optional(&mut **tx)
        .await?;
    found.map(|_| ()).ok_or_else(|| StoreError::UnknownVersion {
        model: model.to_owned(),
        version,
    })
}

async fn report_of(
    tx: &mut Tx<'_>,
    model: &str,
    version: i64,
) -> Result<EvaluationReport, StoreError> {
    let row =
        sqlx::query("SELECT report_json FROM model_versions WHERE model = $1 AND version = $2")
            .bind(model)
            .bind(version)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::UnknownVersion {
                model: model.to_owned(),
                version,
            })?;
    let text: String = row.try_get("report_json")?;
    serde_json::from_str(&text).map_err(|e| json_err("report", e))
}

async fn current_alias(
    tx: &mut Tx<'_>,
    model: &str,
    alias: &str,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT version FROM aliases WHERE model = $1 AND alias = $2")
        .bind(model)
        .bind(alias)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| r.try_get("version"))
        .transpose()
        .map_err(StoreError::from)
}

#[allow(clippy::too_many_arguments)]
async fn move_alias(
    tx: &mut Tx<'_>,
    model: &str,
    alias: &str,
    kind: &str,
    to: i64,
    actor: &str,
    reason: &str,
    forced: bool,
    gate: Option<String>,
) -> Result<AliasMove, StoreError> {
    let from = current_alias(tx, model, alias).await?;
    let at = now();
    if from.is_some() {
        sqlx::query(
            "UPDATE aliases SET version = $1, updated_at = $2 WHERE model = $3 AND alias = $4",
        )
        .bind(to)
        .bind(&at)
        .bind(model)
        .bind(alias)
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO aliases (model, alias, version, updated_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(model)
        .bind(alias)
        .bind(to)
        .bind(&at)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO alias_history (model, alias, kind, from_version, to_version, actor, reason, forced, gate_json, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(model)
    .bind(alias)
    .bind(kind)
    .bind(from)
    .bind(Some(to))
    .bind(actor)
    .bind(reason)
    .bind(i64::from(forced))
    .bind(gate.clone())
    .bind(&at)
    .execute(&mut **tx)
    .await?;
    Ok(AliasMove {
        model: model.to_owned(),
        alias: alias.to_owned(),
        kind: kind.to_owned(),
        from_version: from,
        to_version: Some(to),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        forced,
        gate,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(kind: &str, from: Option<i64>, to: i64) -> AliasMove {
        AliasMove {
            model: "m".into(),
            alias: CHAMPION.into(),
            kind: kind.into(),
            from_version: from,
            to_version: Some(to),
            actor: "a".into(),
            reason: "r".into(),
            forced: false,
            gate: None,
            at: String::new(),
        }
    }

    #[test]
    fn rollback_walks_back_through_promotions() {
        let mut h = vec![
            mv("promote", None, 1),
            mv("promote", Some(1), 2),
            mv("promote", Some(2), 3),
        ];
        assert_eq!(rollback_target(&h), Some(2));
        h.push(mv("rollback", Some(3), 2));
        assert_eq!(rollback_target(&h), Some(1));
        h.push(mv("rollback", Some(2), 1));
        assert_eq!(
            rollback_target(&h),
            None,
            "the first champion has nothing before it"
        );
        assert_eq!(rollback_target(&[]), None);
    }
}
