//! The registry, read-only: models with their aliases, a version with its aliases and lineage,
//! and unknown models and versions.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::call;
use crate::common::TestApi;

shared_checks!(
    the_registry_lists_models_with_their_aliases,
    a_version_shows_its_aliases_and_lineage,
    an_unknown_model_or_version_is_not_found,
);

async fn the_registry_lists_models_with_their_aliases(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let (s, v, _) = call(t, M::GET, "/v1/models", Some(&tk.read), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["models"][0]["name"], "at-risk");
    assert_eq!(v["models"][0]["aliases"]["champion"], 1);
}

async fn a_version_shows_its_aliases_and_lineage(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let (s, v, _) = call(
        t,
        M::GET,
        "/v1/models/at-risk/versions/1",
        Some(&tk.read),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["aliases"], json!(["champion"]));
    assert_eq!(v["snapshot_hash"], "snapshot-1");
}

async fn an_unknown_model_or_version_is_not_found(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    for missing in [
        "/v1/models/at-risk/versions/9",
        "/v1/models/nope/versions/1",
        "/v1/models/at-risk/versions/x",
    ] {
        let (s, _, _) = call(t, M::GET, missing, Some(&tk.read), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{missing}");
    }
}
