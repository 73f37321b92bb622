//! Bearer tokens: a missing, unknown or out-of-scope token, revocation, and the rate limit per
//! token.

use reqwest::{Method, StatusCode};

use crate::call;
use crate::common::{TestApi, config, row, start};

shared_checks!(a_missing_or_unknown_token_is_unauthorized_and_a_narrow_one_forbidden);
fresh_checks!(a_revoked_token_stops_working => "revoked");

async fn a_missing_or_unknown_token_is_unauthorized_and_a_narrow_one_forbidden(t: &TestApi) {
    let tk = &t.tokens;
    let (s, _, h) = call(t, Method::GET, "/v1/models", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.contains_key("www-authenticate"));
    let (s, _, _) = call(
        t,
        Method::GET,
        "/v1/models",
        Some("lds_not_a_token_at_all_xxxxxxxx"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v, _) = call(t, Method::GET, "/v1/models", Some(&tk.write), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        v["detail"].as_str().unwrap().contains("predictions:read"),
        "{v}"
    );
    let (s, _, _) = call(t, Method::GET, "/v1/models", Some(&tk.admin), None).await;
    assert_eq!(s, StatusCode::OK, "admin has every scope");
}

/// A revoked token stops working (cache period 0 here).
async fn a_revoked_token_stops_working(t: &TestApi) {
    let tk = &t.tokens;
    let score = || {
        call(
            t,
            Method::POST,
            "/v1/predictions",
            Some(&tk.write),
            Some(row(1.0, 1.0, 1.0, "North")),
        )
    };
    assert_eq!(
        score().await.0,
        StatusCode::OK,
        "the token works until revoked"
    );
    assert!(t.store.revoke_token(tk.write_id).await.unwrap());
    let (s, _, _) = score().await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_is_told_when_to_come_back() {
    let limited = lodestar_api::ApiConfig {
        rate_per_second: 1.0,
        rate_burst: 3.0,
        ..config()
    };
    let t = start(None, limited).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (s, _, h) = call(&t, Method::GET, "/v1/models", Some(&t.tokens.read), None).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert!(h.contains_key("retry-after"));
        }
        statuses.push(s);
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3], "the burst passes");
    assert!(
        statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Another token has its own bucket.
    let (s, _, _) = call(&t, Method::GET, "/v1/models", Some(&t.tokens.admin), None).await;
    assert_eq!(s, StatusCode::OK);
    t.stop().await;
}
