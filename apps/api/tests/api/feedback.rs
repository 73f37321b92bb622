//! Feedback on a stored prediction: recorded with the token that gave it, refused when its kind
//! or fields are unknown or the prediction is not there.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::call;
use crate::common::TestApi;

shared_checks!(
    feedback_is_recorded_with_the_token_that_gave_it,
    feedback_of_an_unknown_kind_field_or_prediction_is_refused,
);

/// The current prediction of student 11, to give feedback on.
async fn prediction_id(t: &TestApi) -> i64 {
    use Method as M;
    let tk = &t.tokens;
    let risk = call(t, M::GET, "/v1/students/11/risk", Some(&tk.read), None)
        .await
        .1;
    risk["current"]["prediction_id"].as_i64().unwrap()
}

async fn feedback_is_recorded_with_the_token_that_gave_it(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let id = prediction_id(t).await;
    let (s, v, _) = call(
        t,
        M::POST,
        &format!("/v1/predictions/{id}/feedback"),
        Some(&tk.write),
        Some(json!({"kind": "acknowledged", "comment": "called"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["actor"].as_str().unwrap(),
        format!("token:{}:write", tk.write_id)
    );
}

async fn feedback_of_an_unknown_kind_field_or_prediction_is_refused(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let id = prediction_id(t).await;
    let (s, _, _) = call(
        t,
        M::POST,
        &format!("/v1/predictions/{id}/feedback"),
        Some(&tk.write),
        Some(json!({"kind": "meh"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = call(
        t,
        M::POST,
        &format!("/v1/predictions/{id}/feedback"),
        Some(&tk.write),
        Some(json!({"kind": "acknowledged", "extra": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = call(
        t,
        M::POST,
        "/v1/predictions/999999/feedback",
        Some(&tk.write),
        Some(json!({"kind": "not_useful"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
