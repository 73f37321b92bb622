//! Pipeline runs on demand: queued with an id at once and followed at the `Location` returned;
//! an unknown option or run refused.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::call;
use crate::common::TestApi;

shared_checks!(an_unknown_run_option_or_run_is_refused);
// The queued runs are counted: this check has an API of its own.
fresh_checks!(a_run_is_queued_at_once_and_followed_at_its_location => "runs");

/// Pipeline runs: queued with an id at once.
async fn a_run_is_queued_at_once_and_followed_at_its_location(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let (s, _, _) = call(t, M::POST, "/v1/pipeline/runs", Some(&tk.read), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v, h) = call(
        t,
        M::POST,
        "/v1/pipeline/runs",
        Some(&tk.run),
        Some(json!({"no_cache": true})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "queued");
    let location = h["location"].to_str().unwrap().to_owned();
    let (s, v, _) = call(t, M::GET, &location, Some(&tk.run), None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("queued")));
    assert!(v["requested_by"].as_str().unwrap().ends_with(":run"), "{v}");
    let queued = t.store.queued_runs().await.unwrap();
    assert_eq!((queued.len(), queued[0].no_cache), (1, true));
}

async fn an_unknown_run_option_or_run_is_refused(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let (s, _, _) = call(
        t,
        M::POST,
        "/v1/pipeline/runs",
        Some(&tk.run),
        Some(json!({"nocache": true})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = call(t, M::GET, "/v1/pipeline/runs/424242", Some(&tk.run), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
