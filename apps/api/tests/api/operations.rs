//! Operations: health and readiness, unknown routes and methods, metrics, the served OpenAPI
//! document, and the database going away and coming back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::call;
use crate::common::{self, TestApi, config, row, start};

shared_checks!(
    health_and_readiness_answer_without_a_token,
    unknown_routes_and_methods_are_problems,
    metrics_count_requests_by_route_and_status,
);

async fn health_and_readiness_answer_without_a_token(t: &TestApi) {
    let (s, v, _) = call(t, Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v), (StatusCode::OK, Value::String("ok".into())));
    let (s, v, _) = call(t, Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["status"].as_str(), v["version"].as_i64()),
        (Some("ready"), Some(1))
    );
}

async fn unknown_routes_and_methods_are_problems(t: &TestApi) {
    let tk = &t.tokens;
    let (s, _, _) = call(t, Method::GET, "/v1/nothing-here", Some(&tk.read), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, h) = call(t, Method::DELETE, "/v1/models", Some(&tk.admin), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.contains_key("allow"));
}

/// Metrics see every request, by route and status. They are the process's: the requests they
/// must show are made here, whatever else runs beside.
async fn metrics_count_requests_by_route_and_status(t: &TestApi) {
    let tk = &t.tokens;
    let (s, _, _) = call(
        t,
        Method::POST,
        "/v1/predictions",
        Some(&tk.write),
        Some(json!({"rows": []})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = call(
        t,
        Method::POST,
        "/v1/predictions",
        Some(&tk.write),
        Some(row(3.0, 12.0, 150.0, "South")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v, _) = call(t, Method::GET, "/metrics", None, None).await;
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
