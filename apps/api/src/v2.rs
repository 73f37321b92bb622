//! The KServe v2 Open Inference Protocol (REST) for the champion: serving platforms that speak
//! it call Lodestar as they call any model server. One input tensor per feature (shape `[n]` or
//! `[n, 1]`; numbers as FP32/FP64/INT*/UINT*, categories as BYTES); outputs `probability`
//! (FP64), `tier` (BYTES) and `flagged` (BOOL), one element per row.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use lodestar_domain::FeatureKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, PREDICTIONS_WRITE};
use crate::champion::Loaded;
use crate::problem::{ApiError, Problem};
use crate::v1::{champion, score};

/// A tensor's description.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TensorMetadata {
    /// Name (a feature, or an output).
    pub name: String,
    /// `FP64`, `BYTES`, `BOOL`.
    pub datatype: String,
    /// `[-1]`: one element per row.
    pub shape: Vec<i64>,
}

/// The model's metadata.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// The champion version, as text.
    pub versions: Vec<String>,
    /// `lodestar`.
    pub platform: String,
    /// One per feature of the champion's schema.
    pub inputs: Vec<TensorMetadata>,
    /// `probability`, `tier`, `flagged`.
    pub outputs: Vec<TensorMetadata>,
}

/// A tensor in a request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RequestInput {
    /// Feature name.
    pub name: String,
    /// Shape: `[n]` or `[n, 1]`.
    pub shape: Vec<i64>,
    /// Element type.
    pub datatype: String,
    /// Elements, row-major (`null` for a missing value).
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
}

/// An inference request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InferenceRequest {
    /// Echoed in the response.
    pub id: Option<String>,
    /// One tensor per feature.
    pub inputs: Vec<RequestInput>,
}

/// A tensor in a response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResponseOutput {
    /// Name.
    pub name: String,
    /// Shape `[n]`.
    pub shape: Vec<i64>,
    /// Element type.
    pub datatype: String,
    /// Elements.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
}

/// An inference response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InferenceResponse {
    /// Model.
    pub model_name: String,
    /// Champion version that scored.
    pub model_version: String,
    /// The request's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `probability`, `tier`, `flagged`.
    pub outputs: Vec<ResponseOutput>,
}

fn model_named(state: &AppState, name: &str) -> Result<Arc<Loaded>, ApiError> {
    if name != state.config.model {
        return Err(ApiError::not_found(format!(
            "no model {name:?}: this server serves {:?}",
            state.config.model
        )));
    }
    champion(state)
}

/// Liveness.
#[utoipa::path(get, path = "/v2/health/live", tag = "kserve-v2",
    responses((status = 200, description = "Alive")))]
pub async fn live() -> Json<Value> {
    Json(serde_json::json!({"live": true}))
}

/// Readiness: a champion is loaded.
#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve-v2",
    responses((status = 200, description = "Ready"), (status = 503, description = "No model loaded", body = Problem, content_type = "application/problem+json")))]
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    champion(&state)?;
    Ok(Json(serde_json::json!({"ready": true})))
}

/// The model's readiness.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "kserve-v2",
    params(("name" = String, Path, description = "Model")),
    responses((status = 200, description = "Ready"), (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"), (status = 503, description = "Not loaded", body = Problem, content_type = "application/problem+json")))]
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let m = model_named(&state, &name)?;
    Ok(Json(
        serde_json::json!({"name": m.model, "version": m.version.to_string(), "ready": true}),
    ))
}

/// The model's inputs and outputs.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "kserve-v2",
    params(("name" = String, Path, description = "Model")),
    responses((status = 200, description = "Metadata", body = ModelMetadata), (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"), (status = 503, description = "Not loaded", body = Problem, content_type = "application/problem+json")))]
pub async fn metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let m = model_named(&state, &name)?;
    let tensor = |name: &str, datatype: &str| TensorMetadata {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape: vec![-1],
    };
    Ok(Json(ModelMetadata {
        name: m.model.clone(),
        versions: vec![m.version.to_string()],
        platform: "lodestar".into(),
        inputs: m
            .artifact
            .encoder
            .columns
            .iter()
            .map(|c| {
                tensor(
                    &c.name,
                    if c.kind == FeatureKind::Categorical {
                        "BYTES"
                    } else {
                        "FP64"
                    },
                )
            })
            .collect(),
        outputs: vec![
            tensor("probability", "FP64"),
            tensor("tier", "BYTES"),
            tensor("flagged", "BOOL"),
        ],
    }))
}

const NUMERIC: [&str; 10] = [
    "FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
];

/// Scores rows sent as one tensor per feature.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "kserve-v2",
    params(("name" = String, Path, description = "Model")),
    request_body = InferenceRequest,
    security(("bearer" = ["predictions:write"])),
    responses(
        (status = 200, description = "Scores", body = InferenceResponse),
        (status = 400, description = "Malformed JSON or tensors", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Inputs violate the feature schema", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn infer(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<InferenceRequest>, JsonRejection>,
) -> Result<Json<InferenceResponse>, ApiError> {
    caller.require(PREDICTIONS_WRITE)?;
    let m = model_named(&state, &name)?;
    let Json(request) = body?;
    let Some(first) = request.inputs.first() else {
        return Err(ApiError::bad_request("no inputs"));
    };
    let n = first.data.len();
    let mut rows = vec![serde_json::Map::new(); n];
    for input in &request.inputs {
        let elements: i64 = input.shape.iter().product();
        let shape_ok = matches!(input.shape.as_slice(), [a] | [a, 1] if *a >= 0);
        if !shape_ok || elements != input.data.len() as i64 || input.data.len() != n {
            return Err(ApiError::bad_request(format!(
                "input {:?}: shape {:?} with {} elements; every input must have shape [{n}] or [{n}, 1]",
                input.name,
                input.shape,
                input.data.len()
            )));
        }
        let numeric = NUMERIC.contains(&input.datatype.as_str());
        if !numeric && input.datatype != "BYTES" {
            return Err(ApiError::bad_request(format!(
                "input {:?}: datatype {} is not supported (use FP64 for numbers, BYTES for categories)",
                input.name, input.datatype
            )));
        }
        for (row, v) in rows.iter_mut().zip(&input.data) {
            row.insert(input.name.clone(), v.clone());
        }
    }
    let scored = score(
        &state,
        &m,
        rows.into_iter().map(Value::Object).collect(),
        false,
    )?;
    let output = |name: &str, datatype: &str, data: Vec<Value>| ResponseOutput {
        name: name.to_owned(),
        shape: vec![data.len() as i64],
        datatype: datatype.to_owned(),
        data,
    };
    Ok(Json(InferenceResponse {
        model_name: m.model.clone(),
        model_version: m.version.to_string(),
        id: request.id,
        outputs: vec![
            output(
                "probability",
                "FP64",
                scored.iter().map(|s| Value::from(s.probability)).collect(),
            ),
            output(
                "tier",
                "BYTES",
                scored.iter().map(|s| Value::from(s.tier.clone())).collect(),
            ),
            output(
                "flagged",
                "BOOL",
                scored.iter().map(|s| Value::from(s.flagged)).collect(),
            ),
        ],
    }))
}
