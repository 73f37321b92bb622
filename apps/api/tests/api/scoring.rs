//! Live scoring: posted rows scored by the champion and explained when asked, what is refused
//! (scope, schema violations with every problem named, bodies that are not rows, malformed
//! JSON, other media types, oversize batches and bodies), no 5xx for mutated bodies, and the
//! champion swapped under concurrent requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::call;
use crate::common::{self, TestApi, config, expected, row, start};

shared_checks!(
    live_scoring_matches_the_champion_and_explains_when_asked,
    live_scoring_needs_predictions_write,
    a_schema_violation_names_every_problem_of_every_row,
    a_body_that_is_not_feature_rows_is_unprocessable,
    malformed_json_and_other_media_types_are_refused,
    an_oversize_batch_or_body_is_too_large,
);

async fn live_scoring_matches_the_champion_and_explains_when_asked(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
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
}

async fn live_scoring_needs_predictions_write(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
    let (s, _, _) = call(
        t,
        M::POST,
        "/v1/predictions",
        Some(&tk.read),
        Some(row(1.0, 0.0, 5.0, "North")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// 422 names every problem of every row.
async fn a_schema_violation_names_every_problem_of_every_row(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
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
}

async fn a_body_that_is_not_feature_rows_is_unprocessable(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
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
}

async fn malformed_json_and_other_media_types_are_refused(t: &TestApi) {
    let tk = &t.tokens;
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
}

async fn an_oversize_batch_or_body_is_too_large(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
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
