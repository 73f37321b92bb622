//! The microservices as the containers run them: `lodestar api`, `lodestar dashboard` and
//! `lodestar scheduler` as three processes on their own ports and data folders, sharing only
//! PostgreSQL (`LODESTAR_TEST_POSTGRES_URL`, which CI sets) and an artifact folder (the shared
//! volume or bucket). A pipeline run is triggered through the API, run by the scheduler, and a
//! student's risk is read through the API and seen on the dashboard. Each process is probed
//! with `lodestar healthcheck`, as the images' HEALTHCHECK does.

use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

/// Polls `f` until it returns `Some`, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn api_dashboard_and_scheduler_as_separate_processes_on_postgresql() {
    let Some(env) = env("services", true) else {
        eprintln!("skipped: LODESTAR_TEST_POSTGRES_URL is not set");
        return;
    };
    // The services' shared configuration: the scheduler has no cron of its own here (as in the
    // cluster, where a CronJob starts the nightly run) and looks for queued runs every second;
    // the API looks for a new champion five times a second.
    let shared = std::fs::read_to_string(env.dir.path().join("lodestar.toml")).unwrap();
    let config = env.dir.path().join("services.toml");
    std::fs::write(
        &config,
        shared.replace(
            "[pipeline]\n",
            "[pipeline]\nschedule = \"off\"\ninbox_poll_seconds = 1\n",
        ) + "\n[api]\nwatch_interval_ms = 200\n",
    )
    .unwrap();
    // The dashboard reads the database URL from a secret file, as compose and Kubernetes mount it.
    let secret = env.dir.path().join("database_url");
    std::fs::write(&secret, format!("{}\n", env.database_url)).unwrap();
    let url = [("LODESTAR_DATABASE_URL", env.database_url.as_str())];
    let (mut scheduler, scheduler_base) = start(&env, "scheduler", &config, &url);
    let (mut api, api_base) = start(&env, "api", &config, &url);
    let secret_text = secret.display().to_string();
    let (mut dashboard, dashboard_base) = start(
        &env,
        "dashboard",
        &config,
        &[("LODESTAR_DATABASE_URL_FILE", secret_text.as_str())],
    );
    assert_ne!(api_base, dashboard_base);
    assert_ne!(api_base, scheduler_base);

    // Alive and ready, except the API, which has no champion to serve yet.
    for base in [&scheduler_base, &dashboard_base, &api_base] {
        let (ok, text) = healthcheck(base, "/healthz");
        assert!(ok, "{base}/healthz: {text}");
    }
    for base in [&scheduler_base, &dashboard_base] {
        let (ok, text) = healthcheck(base, "/readyz");
        assert!(ok, "{base}/readyz: {text}");
    }
    let (ok, text) = healthcheck(&api_base, "/readyz");
    assert!(!ok && text.contains("answered 503"), "{text}");

    let created = env.ok(&[
        "tokens",
        "create",
        "--name",
        "campus-sis",
        "--scope",
        "pipeline:run,predictions:read",
    ]);
    let token = created.lines().nth(1).unwrap().trim().to_owned();

    // The API queues the run; the scheduler, another process, takes it.
    let run = run_through_api(&api_base, &token);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "api");
    // The scheduler's own status route lists the same run.
    let id = run["id"].as_i64().unwrap();
    let (status, body) = http_get(&scheduler_base, &format!("/v1/pipeline/runs/{id}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "succeeded"
    );

    // The API picks up the new champion from the registry and the artifact store by itself.
    wait_for(
        "the API to load the champion",
        Duration::from_secs(30),
        || healthcheck(&api_base, "/readyz").0.then_some(()),
    );
    // The running term: its students scored at the current week, which the API says.
    let (student, risk) = riskiest_student(&api_base, &token, RUNNING);
    assert_eq!(risk["term"]["state"], "running", "{risk}");
    assert_eq!(risk["term"]["as_of_week"], RUNNING_WEEK, "{risk}");
    let current = &risk["current"];
    let (tier, week, version) = (
        current["tier"].as_str().unwrap(),
        current["as_of_week"].as_i64().unwrap(),
        current["model_version"].as_i64().unwrap(),
    );

    // An advisor with that presentation sees the same risk on the dashboard.
    let password = env.advisor(RUNNING);
    let page = dashboard_page(
        &dashboard_base,
        "advisor",
        &password,
        &format!("/students/{RUNNING}/{student}"),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains(&format!("<span class=\"tier tier-{tier}\">{tier}</span>"))
            && page.contains(&format!("as of week {week} (model version {version})")),
        "the dashboard shows {tier} at week {week} by version {version}:\n{page}"
    );

    // SIGTERM, as Kubernetes stops pods: each exits cleanly.
    assert!(api.stop());
    assert!(dashboard.stop());
    assert!(scheduler.stop());
}
