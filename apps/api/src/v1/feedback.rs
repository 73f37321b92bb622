//! Feedback on a stored prediction: whether it was acknowledged, not useful, or incorrectly
//! flagged, recorded with the token that said so.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, PREDICTIONS_WRITE};
use crate::problem::{ApiError, FieldError, Problem};

/// Feedback on a prediction.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// `acknowledged`, `not_useful` or `incorrectly_flagged`.
    pub kind: String,
    /// Free text.
    pub comment: Option<String>,
}

/// Recorded feedback.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedbackRecorded {
    /// Feedback id.
    pub id: i64,
    /// The prediction.
    pub prediction_id: i64,
    /// Kind.
    pub kind: String,
    /// Who (the token).
    pub actor: String,
}

/// Records whether a stored prediction was useful.
#[utoipa::path(
    post, path = "/v1/predictions/{id}/feedback", tag = "predictions",
    params(("id" = i64, Path, description = "Prediction id")),
    request_body = FeedbackRequest,
    security(("bearer" = ["predictions:write"])),
    responses(
        (status = 201, description = "Recorded", body = FeedbackRecorded),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks predictions:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prediction", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind or field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<FeedbackRecorded>), ApiError> {
    caller.require(PREDICTIONS_WRITE)?;
    let Path(id) = id?;
    let Json(body) = body?;
    if !["acknowledged", "not_useful", "incorrectly_flagged"].contains(&body.kind.as_str()) {
        return Err(ApiError::unprocessable(
            format!(
                "kind {:?}: use acknowledged, not_useful or incorrectly_flagged",
                body.kind
            ),
            vec![FieldError {
                row: None,
                detail: "field `kind` is not one of the three kinds".into(),
            }],
        ));
    }
    let exists = state
        .store
        .prediction(id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!("no prediction {id}")));
    }
    let actor = format!("token:{}:{}", caller.token.id, caller.token.name);
    let fid = state
        .store
        .add_feedback(id, &body.kind, &actor, body.comment.as_deref())
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok((
        StatusCode::CREATED,
        Json(FeedbackRecorded {
            id: fid,
            prediction_id: id,
            kind: body.kind,
            actor,
        }),
    ))
}
