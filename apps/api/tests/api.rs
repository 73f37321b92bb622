//! The API as a campus system sees it: started on port 0 against a fresh database (SQLite, and
//! PostgreSQL when `LODESTAR_TEST_POSTGRES_URL` is set), every route, every error status, token
//! scopes, revocation, the rate limit, the champion swapped under concurrent requests, the
//! database going away and coming back, the OpenAPI document, malformed bodies, and the
//! running or finished term that risk and cohort responses carry.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{TestApi, config, expected, row, start};
use lodestar_domain::{AsOfSource, PresentationTerm, TermState};
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(
    t: &TestApi,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut r = t.client.request(method, format!("{}{path}", t.base));
    if let Some(token) = token {
        r = r.bearer_auth(token);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let response = r.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{path}: {status} without a problem body: {value}"
        );
        assert_eq!(value["status"], status.as_u16(), "{value}");
    }
    assert!(headers.contains_key("x-request-id"), "{path}");
    (status, value, headers)
}

async fn every_route_and_status(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    // Operations.
    let (s, v, _) = call(t, M::GET, "/healthz", None, None).await;
    assert_eq!((s, v), (StatusCode::OK, Value::String("ok".into())));
    let (s, v, _) = call(t, M::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["status"].as_str(), v["version"].as_i64()),
        (Some("ready"), Some(1))
    );
    // Authentication and scopes.
    let (s, _, h) = call(t, M::GET, "/v1/models", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.contains_key("www-authenticate"));
    let (s, _, _) = call(
        t,
        M::GET,
        "/v1/models",
        Some("lds_not_a_token_at_all_xxxxxxxx"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v, _) = call(t, M::GET, "/v1/models", Some(&tk.write), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        v["detail"].as_str().unwrap().contains("predictions:read"),
        "{v}"
    );
    let (s, _, _) = call(t, M::GET, "/v1/models", Some(&tk.admin), None).await;
    assert_eq!(s, StatusCode::OK, "admin has every scope");

    // A student's stored risk and its history.
    let (s, v, _) = call(t, M::GET, "/v1/students/11/risk", Some(&tk.read), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["presentation"], "BBB-2013J");
    assert_eq!(v["current"]["as_of_week"], 3);
    assert_eq!(v["current"]["tier"], "high");
    assert_eq!(v["current"]["flagged"], true);
    assert_eq!(v["current"]["model_version"], 1);
    assert_eq!(
        v["current"]["factors_up"][0]["text"],
        "no activity for 12 days (typical: 2)"
    );
    let weeks: Vec<(i64, f64)> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["as_of_week"].as_i64().unwrap(),
                w["probability"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weeks,
        vec![(1, 0.2), (2, 0.45), (3, 0.81)],
        "week 2's later score counts"
    );
    let (s, v, _) = call(
        t,
        M::GET,
        "/v1/students/11/risk?presentation=BBB-2013J&week=2",
        Some(&tk.read),
        None,
    )
    .await;
    assert_eq!(
        (s, v["current"]["probability"].as_f64()),
        (StatusCode::OK, Some(0.45))
    );
    let (s, _, _) = call(
        t,
        M::GET,
        "/v1/students/11/risk?week=9",
        Some(&tk.read),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(t, M::GET, "/v1/students/12345/risk", Some(&tk.read), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(t, M::GET, "/v1/students/abc/risk", Some(&tk.read), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        t,
        M::GET,
        "/v1/students/11/risk?presentation=BBB",
        Some(&tk.read),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = call(
        t,
        M::GET,
        "/v1/students/11/risk?week=soon",
        Some(&tk.read),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // A cohort, paged and filtered.
    let (s, v, _) = call(
        t,
        M::GET,
        "/v1/cohorts/BBB-2013J/risk?per_page=5",
        Some(&tk.read),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["week"].as_i64(), v["total"].as_i64()),
        (Some(3), Some(21))
    );
    let probs: Vec<f64> = v["students"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["probability"].as_f64().unwrap())
        .collect();
    assert_eq!(probs, vec![0.95, 0.9, 0.85, 0.81, 0.8], "riskiest first");
    let (s, v, _) = call(
        t,
        M::GET,
        "/v1/cohorts/BBB-2013J/risk?tier=high&per_page=5&page=2",
        Some(&tk.read),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["total"], 7, "0.70 to 0.95 and student 11: {v}");
    assert_eq!(v["students"].as_array().unwrap().len(), 2);
    assert!(
        v["students"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["tier"] == "high")
    );
    for bad in [
        "tier=severe",
        "per_page=0",
        "per_page=100000",
        "page=0",
        "week=x",
    ] {
        let (s, _, _) = call(
            t,
            M::GET,
            &format!("/v1/cohorts/BBB-2013J/risk?{bad}"),
            Some(&tk.read),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (s, _, _) = call(
        t,
        M::GET,
        "/v1/cohorts/CCC-2014B/risk",
        Some(&tk.read),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Live scoring.
    let (s, v, _) = call(
        t,
        M::POST,
        "/v1/predictions?explain=true",
        Some(&tk.write),
        Some(row(3.0, 12.0, 150.0, "South")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model_version"], 1);
    let p = v["predictions"][0]["probability"].as_f64().unwrap();
    assert!((p - expected(1, 3.0, 12.0, 150.0, Some(1))).abs() < 1e-12);
    assert_eq!(
        v["predictions"][0]["factors_up"][0]["feature"],
        "days_since_last_activity"
    );
    let mut with_id = row(3.0, 1.0, 10.0, "Mars");
    with_id["id_student"] = json!(77);
    with_id["days_since_last_activity"] = Value::Null;
    let (s, v, _) = call(
        t,
        M::POST,
        "/v1/predictions",
        Some(&tk.write),
        Some(json!({"rows": [row(1.0, 0.0, 5.0, "North"), with_id]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["predictions"][1]["id_student"], 77);
    let p = v["predictions"][1]["probability"].as_f64().unwrap();
    assert!(
        (p - expected(1, 3.0, 2.0, 10.0, None)).abs() < 1e-12,
        "null imputed, unseen category all zeros"
    );
    assert_eq!(
        v["predictions"][0]["factors_up"],
        json!([]),
        "explanations are asked for"
    );
    let (s, _, _) = call(
        t,
        M::POST,
        "/v1/predictions",
        Some(&tk.read),
        Some(row(1.0, 0.0, 5.0, "North")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // 422 names every problem of every row.
    let bad = json!({"rows": [
        {"as_of_week": 1, "days_since_last_activity": "a lot", "clicks_total": 5, "region": "North", "shoe_size": 9},
        {"as_of_week": 1, "clicks_total": -3, "region": 4},
    ]});
    let (s, v, _) = call(t, M::POST, "/v1/predictions", Some(&tk.write), Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let errors: Vec<(u64, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (r, needle) in [
        (0, "unknown field `shoe_size`"),
        (0, "`days_since_last_activity` must be a number"),
        (1, "missing field `days_since_last_activity`"),
        (1, "`clicks_total` = -3"),
        (1, "`region` must be text"),
    ] {
        assert!(
            errors
                .iter()
                .any(|(row, d)| *row == r && d.contains(needle)),
            "{needle} in {errors:?}"
        );
    }
    for body in [
        json!([1, 2]),
        json!({"rows": 3}),
        json!({"rows": []}),
        json!({"as_of_week": true, "days_since_last_activity": 1, "clicks_total": 1, "region": "North"}),
    ] {
        let (s, _, _) = call(
            t,
            M::POST,
            "/v1/predictions",
            Some(&tk.write),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut r = t
            .client
            .post(format!("{}/v1/predictions", t.base))
            .bearer_auth(&tk.write)
            .body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let s = raw("{\"as_of_week\": ", Some("application/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.headers()["content-type"], "application/problem+json");
    let s = raw("{}", None).send().await.unwrap();
    assert_eq!(s.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let s = raw("as_of_week=1", Some("application/x-www-form-urlencoded"))
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let many: Vec<Value> = (0..51).map(|_| row(1.0, 1.0, 1.0, "North")).collect();
    let (s, v, _) = call(
        t,
        M::POST,
        "/v1/predictions",
        Some(&tk.write),
        Some(json!({"rows": many})),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["detail"].as_str().unwrap().contains("at most 50"), "{v}");
    let huge = json!({"rows": [row(1.0, 1.0, 1.0, &"N".repeat(70_000))]});
    let (s, _, _) = call(t, M::POST, "/v1/predictions", Some(&tk.write), Some(huge)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // Feedback on a stored prediction.
    let risk = call(t, M::GET, "/v1/students/11/risk", Some(&tk.read), None)
        .await
        .1;
    let id = risk["current"]["prediction_id"].as_i64().unwrap();
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

    // The registry.
    let (s, v, _) = call(t, M::GET, "/v1/models", Some(&tk.read), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["models"][0]["name"], "at-risk");
    assert_eq!(v["models"][0]["aliases"]["champion"], 1);
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
    for missing in [
        "/v1/models/at-risk/versions/9",
        "/v1/models/nope/versions/1",
        "/v1/models/at-risk/versions/x",
    ] {
        let (s, _, _) = call(t, M::GET, missing, Some(&tk.read), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{missing}");
    }

    // Pipeline runs: queued with an id at once.
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

    // KServe v2.
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
    let infer = json!({"id": "r1", "inputs": [
        {"name": "as_of_week", "shape": [2], "datatype": "INT64", "data": [3, 1]},
        {"name": "days_since_last_activity", "shape": [2, 1], "datatype": "FP64", "data": [12.0, 0.0]},
        {"name": "clicks_total", "shape": [2], "datatype": "INT64", "data": [150, 5]},
        {"name": "region", "shape": [2], "datatype": "BYTES", "data": ["South", "South"]},
    ]});
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

    // Unknown routes and methods.
    let (s, _, _) = call(t, M::GET, "/v1/nothing-here", Some(&tk.read), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, h) = call(t, M::DELETE, "/v1/models", Some(&tk.admin), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.contains_key("allow"));

    // Metrics saw all of it, by route and status.
    let (s, v, _) = call(t, M::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(
        text.contains(
            "lodestar_http_requests_total{route=\"/v1/predictions\",method=\"POST\",status=\"422\"}"
        ),
        "{text}"
    );
    assert!(text.contains("lodestar_http_request_duration_seconds_bucket"));
    assert!(text.contains("lodestar_predictions_total{tier="));
    assert!(text.contains("lodestar_model_version{model=\"at-risk\"}"));

    // A revoked token stops working (cache period 0 here).
    assert!(t.store.revoke_token(tk.write_id).await.unwrap());
    let (s, _, _) = call(
        t,
        M::POST,
        "/v1/predictions",
        Some(&tk.write),
        Some(row(1.0, 1.0, 1.0, "North")),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_error_status_on_sqlite() {
    let t = start(None, config()).await.unwrap();
    every_route_and_status(&t).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_error_status_on_postgres() {
    let Some(t) = start(Some("routes"), config()).await else {
        return;
    };
    every_route_and_status(&t).await;
    t.stop().await;
}

fn scored(code: &str, student: i64, week: i64, prob: f64) -> lodestar_store::NewPrediction {
    let tier = lodestar_domain::TierThresholds::default().tier(prob);
    lodestar_store::NewPrediction {
        model: common::MODEL.into(),
        version: 1,
        code_module: "BBB".into(),
        code_presentation: code.into(),
        id_student: student,
        as_of_week: week,
        probability: prob,
        tier: tier.as_str().to_owned(),
        explanation: json!({"up": [], "down": [], "flagged": prob >= 0.5}),
        run_id: None,
        context: Value::Null,
    }
}

fn term(presentation: &str, state: TermState, as_of_day: i32) -> PresentationTerm {
    match state {
        TermState::Running => PresentationTerm::running(
            presentation.into(),
            269,
            as_of_day,
            AsOfSource::LatestActivity,
            4,
            0,
        ),
        TermState::Finished => PresentationTerm {
            as_of_day,
            ..PresentationTerm::finished(presentation.into(), 269, 4)
        },
    }
}

/// Risk and cohort responses say which term they show: null before any term is recorded,
/// then running (at its current week, with the as-of day and date) or finished.
async fn terms_in_risk_and_cohorts(t: &TestApi) {
    let read = Some(t.tokens.read.as_str());
    let get = |path: &'static str| call(t, Method::GET, path, read, None);
    // Predictions stored before terms were: the term is null, nothing else changes.
    let (s, v, _) = get("/v1/students/11/risk").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["term"], Value::Null);
    let (_, v, _) = get("/v1/cohorts/BBB-2013J/risk").await;
    assert_eq!(
        (v["term"].clone(), v["week"].as_i64()),
        (Value::Null, Some(3))
    );

    // BBB-2014J runs, as of day 76 (week 10): 11, 200 and 201 scored at week 10, 202 withdrew
    // after week 4. Then a later score of 11 in the finished BBB-2013J.
    t.store
        .insert_predictions(&[
            scored("2014J", 11, 9, 0.4),
            scored("2014J", 11, 10, 0.7),
            scored("2014J", 200, 10, 0.2),
            scored("2014J", 201, 10, 0.9),
            scored("2014J", 202, 4, 0.95),
        ])
        .await
        .unwrap();
    t.store
        .insert_predictions(&[scored("2013J", 11, 3, 0.81)])
        .await
        .unwrap();
    let mut running = term("BBB-2014J", TermState::Running, 76);
    running.start_date = Some("2014-10-04".into());
    t.store
        .record_terms(
            &[
                running,
                term("BBB-2013J", TermState::Finished, 268),
                term("BBB-2015B", TermState::Running, 3),
            ],
            "snapshot-test",
        )
        .await
        .unwrap();

    // A student's default presentation is the running one, though scored less recently.
    let (s, v, _) = get("/v1/students/11/risk").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["presentation"], "BBB-2014J");
    assert_eq!(v["current"]["as_of_week"], 10);
    assert_eq!(
        v["term"],
        json!({
            "state": "running", "as_of_week": 10, "as_of_day": 76, "as_of_date": "2014-12-19",
            "weeks": 39, "description": "running, as of 19 Dec 2014, week 10 of 39"
        })
    );
    // A finished term: as of the week of the score shown; no calendar date known.
    let (_, v, _) = get("/v1/students/11/risk?presentation=BBB-2013J&week=2").await;
    assert_eq!(v["current"]["as_of_week"], 2);
    assert_eq!(v["term"]["state"], "finished");
    assert_eq!(v["term"]["as_of_week"], 2);
    assert_eq!(v["term"]["as_of_date"], Value::Null);
    assert_eq!(v["term"]["description"], "finished (39 weeks)");

    // A cohort of the running term: its current week by default, tonight's students only.
    let (s, v, _) = get("/v1/cohorts/BBB-2014J/risk").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["week"].as_i64(), v["total"].as_i64()),
        (Some(10), Some(3))
    );
    let ids: Vec<i64> = v["students"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id_student"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [201, 11, 200], "riskiest first");
    assert_eq!(v["term"]["state"], "running");
    assert_eq!(v["term"]["as_of_week"], 10);
    // An earlier week on request; the term still says which week is current.
    let (_, v, _) = get("/v1/cohorts/BBB-2014J/risk?week=4").await;
    assert_eq!(
        (v["week"].as_i64(), v["total"].as_i64()),
        (Some(4), Some(1))
    );
    assert_eq!(v["term"]["as_of_week"], 10);
    // The finished term's cohort: its latest scored week, and the term says it ended.
    let (_, v, _) = get("/v1/cohorts/BBB-2013J/risk").await;
    assert_eq!(v["week"], 3);
    assert_eq!(v["term"]["state"], "finished");
    assert_eq!(v["term"]["as_of_week"], 3);
    // A running term before its week 0 ends: not found, said in words.
    let (s, v, _) = get("/v1/cohorts/BBB-2015B/risk").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("running, as of day 3"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_in_risk_and_cohorts_on_sqlite() {
    let t = start(None, config()).await.unwrap();
    terms_in_risk_and_cohorts(&t).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_in_risk_and_cohorts_on_postgres() {
    let Some(t) = start(Some("terms"), config()).await else {
        return;
    };
    terms_in_risk_and_cohorts(&t).await;
    t.stop().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_champion_swaps_under_concurrent_requests_without_a_failure() {
    let t = Arc::new(start(None, config()).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (t, stop, done) = (t.clone(), stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) || i < 20 {
                let days = f64::from((i + w) % 30);
                let (s, v, _) = call(
                    &t,
                    Method::POST,
                    "/v1/predictions",
                    Some(&t.tokens.write),
                    Some(row(4.0, days, 80.0, "North")),
                )
                .await;
                assert_eq!(s, StatusCode::OK, "{v}");
                let version = v["model_version"].as_i64().unwrap();
                let p = v["predictions"][0]["probability"].as_f64().unwrap();
                assert!(
                    (p - expected(version, 4.0, days, 80.0, Some(0))).abs() < 1e-12,
                    "a response is wholly one version's"
                );
                seen.push(version);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            seen
        }));
    }
    // Let requests flow on version 1, then promote version 2 and wait for the watcher.
    while done.load(Ordering::Relaxed) < 20 {
        tokio::task::yield_now().await;
    }
    common::register_and_promote(&t.store, &t.artifacts, 2).await;
    loop {
        let (_, v, _) = call(&t, Method::GET, "/readyz", None, None).await;
        if v["version"] == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut versions = Vec::new();
    for w in workers {
        versions.extend(w.await.unwrap());
    }
    assert!(
        versions.contains(&1) && versions.contains(&2),
        "served by both versions, every request answered"
    );
    Arc::try_unwrap(t).ok().unwrap().stop().await;
}

/// A TCP proxy in front of PostgreSQL that the test can cut and restore.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

async fn proxy(target: String) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let cut = Arc::new(tokio::sync::Notify::new());
    let (up2, cut2) = (up.clone(), cut.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            if !up2.load(Ordering::SeqCst) {
                continue; // dropped: connection refused in effect
            }
            let target = target.clone();
            let cut = cut2.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    () = cut.notified() => {}
                }
            });
        }
    });
    Proxy { addr, up, cut }
}

impl Proxy {
    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }
    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_away_the_loaded_model_serves_and_readiness_recovers() {
    let Ok(base) = std::env::var("LODESTAR_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("LODESTAR_REQUIRE_POSTGRES").is_none(),
            "LODESTAR_REQUIRE_POSTGRES is set (CI sets it) but LODESTAR_TEST_POSTGRES_URL is not"
        );
        eprintln!("PostgreSQL run skipped: LODESTAR_TEST_POSTGRES_URL is not set");
        return;
    };
    // postgres://user@HOST:PORT/db → the proxy's address.
    let after_at = base.split_once('@').map(|(_, r)| r).unwrap_or(&base);
    let target = after_at.split('/').next().unwrap().to_owned();
    let p = proxy(target.clone()).await;
    let cached = lodestar_api::ApiConfig {
        token_cache_seconds: 3600,
        ..config()
    };
    let addr = p.addr.to_string();
    let t = common::start_at(Some("away"), cached, |url| url.replacen(&target, &addr, 1))
        .await
        .unwrap();
    let score = || {
        call(
            &t,
            Method::POST,
            "/v1/predictions",
            Some(&t.tokens.write),
            Some(row(2.0, 5.0, 40.0, "South")),
        )
    };
    assert_eq!(score().await.0, StatusCode::OK, "token now cached");
    p.down();
    let (s, v, _) = call(&t, Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (s, v["status"].as_str(), v["database"].as_str()),
        (StatusCode::OK, Some("degraded"), Some("unreachable")),
        "{v}"
    );
    let (s, v, _) = score().await;
    assert_eq!(s, StatusCode::OK, "the loaded model still scores: {v}");
    let (s, _, _) = call(
        &t,
        Method::GET,
        "/v1/students/11/risk",
        Some(&t.tokens.read),
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "stored risk needs the store: 503, not 500"
    );
    p.restore();
    let mut recovered = false;
    for _ in 0..200 {
        let (_, v, _) = call(&t, Method::GET, "/readyz", None, None).await;
        if v["status"] == "ready" {
            recovered = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(recovered, "readiness recovers when the database returns");
    let (s, _, _) = call(
        &t,
        Method::GET,
        "/v1/students/11/risk",
        Some(&t.tokens.read),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_validates_and_lists_every_route() {
    let t = start(None, config()).await.unwrap();
    let text = t
        .client
        .get(format!("{}/openapi.json", t.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let routes = [
        ("get", "/v1/students/{id}/risk"),
        ("get", "/v1/cohorts/{presentation}/risk"),
        ("post", "/v1/predictions"),
        ("post", "/v1/predictions/{id}/feedback"),
        ("get", "/v1/models"),
        ("get", "/v1/models/{name}/versions/{version}"),
        ("post", "/v1/pipeline/runs"),
        ("get", "/v1/pipeline/runs/{id}"),
        ("get", "/v2/health/live"),
        ("get", "/v2/health/ready"),
        ("get", "/v2/models/{name}"),
        ("get", "/v2/models/{name}/ready"),
        ("post", "/v2/models/{name}/infer"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let listed: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(listed, routes.len(), "no route undocumented, none extra");
    // Every reference resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap().to_owned());
                    } else {
                        refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_never_get_a_server_error() {
    let t = start(None, config()).await.unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let valid = serde_json::to_string(
        &json!({"rows": [row(3.0, 12.0, 150.0, "South"), row(1.0, 0.0, 2.0, "North")]}),
    )
    .unwrap();
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "null",
        "true",
        "-1e999",
        "1e400",
        "\"rows\"",
        "\\u0000",
        "\u{1F600}",
        "0.5",
        "\"as_of_week\"",
        "NaN",
        "  ",
        "\\",
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for case in 0..400 {
        let mut body: Vec<u8> = valid.clone().into_bytes();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..=body.len());
            match rng.random_range(0..4) {
                0 => {
                    body.truncate(at);
                }
                1 => {
                    let p = pieces[rng.random_range(0..pieces.len())];
                    body.splice(at..at, p.bytes());
                }
                2 if at < body.len() => {
                    body[at] = rng.random();
                }
                _ => {
                    let end = (at + rng.random_range(0..20)).min(body.len());
                    body.drain(at..end);
                }
            }
        }
        let r = t
            .client
            .post(format!("{}/v1/predictions", t.base))
            .bearer_auth(&t.tokens.write)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let s = r.status();
        assert!(
            !s.is_server_error(),
            "case {case}: {s} for {}",
            String::from_utf8_lossy(&body)
        );
        if !s.is_success() {
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        *statuses.entry(s.as_u16()).or_insert(0) += 1;
    }
    assert!(
        statuses.contains_key(&400) && statuses.contains_key(&422),
        "mutations reach both parse and schema errors: {statuses:?}"
    );
    t.stop().await;
}
