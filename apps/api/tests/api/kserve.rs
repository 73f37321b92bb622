//! KServe v2 (the Open Inference Protocol): health and model metadata without a token,
//! inference scoring each row as the champion does, and what inference refuses.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::call;
use crate::common::{TestApi, expected};

shared_checks!(
    kserve_v2_health_and_metadata_answer_without_a_token,
    kserve_v2_inference_scores_each_row_with_the_champion,
    kserve_v2_inference_refuses_unknown_models_bad_tensors_and_narrow_tokens,
);

/// An inference request of two rows, the first the row live scoring checks too.
fn infer_request() -> Value {
    json!({"id": "r1", "inputs": [
        {"name": "as_of_week", "shape": [2], "datatype": "INT64", "data": [3, 1]},
        {"name": "days_since_last_activity", "shape": [2, 1], "datatype": "FP64", "data": [12.0, 0.0]},
        {"name": "clicks_total", "shape": [2], "datatype": "INT64", "data": [150, 5]},
        {"name": "region", "shape": [2], "datatype": "BYTES", "data": ["South", "South"]},
    ]})
}

async fn kserve_v2_health_and_metadata_answer_without_a_token(t: &TestApi) {
    use Method as M;
    let (s, _, _) = call(t, M::GET, "/v2/health/live", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(t, M::GET, "/v2/health/ready", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(t, M::GET, "/v2/models/at-risk/ready", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v, _) = call(t, M::GET, "/v2/models/at-risk", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["inputs"][3],
        json!({"name": "region", "datatype": "BYTES", "shape": [-1]})
    );
}

async fn kserve_v2_inference_scores_each_row_with_the_champion(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let infer = infer_request();
    let (s, v, _) = call(
        t,
        M::POST,
        "/v2/models/at-risk/infer",
        Some(&tk.write),
        Some(infer.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["model_version"].as_str()),
        (Some("r1"), Some("1"))
    );
    let p0 = v["outputs"][0]["data"][0].as_f64().unwrap();
    assert!((p0 - expected(1, 3.0, 12.0, 150.0, Some(1))).abs() < 1e-12);
    assert_eq!(v["outputs"][1]["name"], "tier");
    assert_eq!(v["outputs"][2]["data"], json!([true, false]));
}

async fn kserve_v2_inference_refuses_unknown_models_bad_tensors_and_narrow_tokens(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let infer = infer_request();
    let (s, _, _) = call(
        t,
        M::POST,
        "/v2/models/other/infer",
        Some(&tk.write),
        Some(infer.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let mut bad_shape = infer.clone();
    bad_shape["inputs"][0]["shape"] = json!([3]);
    let (s, v, _) = call(
        t,
        M::POST,
        "/v2/models/at-risk/infer",
        Some(&tk.write),
        Some(bad_shape),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("as_of_week"),
        "the protocol's error member: {v}"
    );
    let mut missing = infer.clone();
    missing["inputs"].as_array_mut().unwrap().pop();
    let (s, _, _) = call(
        t,
        M::POST,
        "/v2/models/at-risk/infer",
        Some(&tk.write),
        Some(missing),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = call(
        t,
        M::POST,
        "/v2/models/at-risk/infer",
        Some(&tk.read),
        Some(infer),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
