//! The registry, read-only: registered models with their versions and aliases, and one version
//! with its lineage and evaluation report.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use lodestar_store::ModelVersion;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, PREDICTIONS_READ};
use crate::problem::{ApiError, Problem};

/// A registered model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelSummary {
    /// Name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<i64>,
    /// Aliases and the versions they name.
    #[schema(value_type = Object)]
    pub aliases: serde_json::Map<String, Value>,
}

/// The registry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// Every registered model.
    pub models: Vec<ModelSummary>,
}

async fn aliases_of(state: &AppState, model: &str) -> Result<Vec<(String, i64)>, ApiError> {
    state
        .store
        .aliases(model)
        .await
        .map_err(|e| ApiError::store(&e))
}

/// Every registered model with its versions and aliases.
#[utoipa::path(
    get, path = "/v1/models", tag = "registry",
    security(("bearer" = ["predictions:read"])),
    responses(
        (status = 200, description = "The registry", body = ModelList),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn models(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<ModelList>, ApiError> {
    caller.require(PREDICTIONS_READ)?;
    let names = state
        .store
        .models()
        .await
        .map_err(|e| ApiError::store(&e))?;
    let mut models = Vec::new();
    for name in names {
        let versions = state
            .store
            .versions(&name)
            .await
            .map_err(|e| ApiError::store(&e))?;
        let aliases = aliases_of(&state, &name).await?;
        models.push(ModelSummary {
            versions: versions.iter().map(|v| v.version).collect(),
            aliases: aliases
                .into_iter()
                .map(|(a, v)| (a, Value::from(v)))
                .collect(),
            name,
        });
    }
    Ok(Json(ModelList { models }))
}

/// One model version with its lineage and evaluation report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionView {
    /// Model.
    pub model: String,
    /// Version.
    pub version: i64,
    /// Aliases naming this version.
    pub aliases: Vec<String>,
    /// Artifact SHA-256.
    pub artifact_sha256: String,
    /// Artifact size in bytes.
    pub artifact_bytes: i64,
    /// Training snapshot's content hash.
    pub snapshot_hash: String,
    /// Code version that trained it.
    pub code_version: String,
    /// Training configuration.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Seed.
    pub seed: i64,
    /// The evaluation report (metrics by week, calibration, subgroups).
    #[schema(value_type = Object)]
    pub report: Value,
    /// The pipeline run that registered it.
    pub run_id: Option<i64>,
    /// Who registered it.
    pub created_by: String,
    /// When.
    pub created_at: String,
}

fn version_view(v: ModelVersion, aliases: Vec<String>) -> VersionView {
    VersionView {
        model: v.model,
        version: v.version,
        aliases,
        artifact_sha256: v.artifact.sha256,
        artifact_bytes: v.artifact.bytes,
        snapshot_hash: v.snapshot_hash,
        code_version: v.code_version,
        config: v.config,
        seed: v.seed,
        report: serde_json::to_value(&v.report).unwrap_or(Value::Null),
        run_id: v.run_id,
        created_by: v.created_by,
        created_at: v.created_at,
    }
}

/// One version of a registered model.
#[utoipa::path(
    get, path = "/v1/models/{name}/versions/{version}", tag = "registry",
    params(("name" = String, Path, description = "Model"), ("version" = i64, Path, description = "Version")),
    security(("bearer" = ["predictions:read"])),
    responses(
        (status = 200, description = "The version", body = VersionView),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model or version", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn model_version(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<(String, i64)>, PathRejection>,
) -> Result<Json<VersionView>, ApiError> {
    caller.require(PREDICTIONS_READ)?;
    let Path((name, version)) = path?;
    let v = match state.store.version(&name, version).await {
        Ok(v) => v,
        Err(
            e @ (lodestar_store::StoreError::UnknownModel(_)
            | lodestar_store::StoreError::UnknownVersion { .. }),
        ) => return Err(ApiError::not_found(e.to_string())),
        Err(e) => return Err(ApiError::store(&e)),
    };
    let aliases = aliases_of(&state, &name)
        .await?
        .into_iter()
        .filter(|(_, v)| *v == version)
        .map(|(a, _)| a)
        .collect();
    Ok(Json(version_view(v, aliases)))
}
