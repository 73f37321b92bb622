//! How long the caseload page takes for an advisor with 5,000 students (10 scored weeks each,
//! 50,000 predictions, outreach on a tenth), over HTTP on loopback against SQLite: paged (50
//! rows, the default) and with every student on one page. Run with
//! `cargo bench -p lodestar-dashboard --bench caseload`; prints the figures.

use std::time::Instant;

use lodestar_dashboard::{Dashboard, DashboardConfig};
use lodestar_domain::{AsOfSource, AsOfWeek, PresentationTerm, TermState};
use lodestar_store::{NewPrediction, Store};
use serde_json::json;

const STUDENTS: i64 = 5000;
const WEEKS: i64 = 10;

async fn seed(store: &Store) -> String {
    let user = store.create_user("ada", "advisor", "unused").await.unwrap();
    let tiers = lodestar_domain::TierThresholds::default();
    let mut rows = Vec::new();
    for s in 0..STUDENTS {
        for w in 1..=WEEKS {
            // A spread of risks that moves week to week.
            let p = ((s * 37 + w * 11) % 100) as f64 / 100.0;
            rows.push(NewPrediction {
                model: "at-risk".into(),
                version: 1,
                code_module: if s % 2 == 0 { "BBB" } else { "DDD" }.into(),
                code_presentation: "2013J".into(),
                id_student: 100_000 + s,
                as_of_week: w,
                probability: p,
                tier: tiers.tier(p).as_str().into(),
                explanation: json!({
                    "up": [{"feature": "days_since_last_activity", "value": 9.0, "typical": 2.0, "contribution": 0.9, "text": "no activity for 9 days (typical: 2)"}],
                    "down": [{"feature": "score_mean", "value": 70.0, "typical": 66.0, "contribution": -0.2, "text": "mean score 70 (typical: 66)"}],
                    "flagged": p >= 0.5,
                }),
                run_id: None,
                context: json!({"clicks_this_week": 12.0, "days_since_last_activity": 9.0, "assessments_due": 2.0, "assessments_submitted": 1.0}),
            });
        }
    }
    store.insert_predictions(&rows).await.unwrap();
    // Both presentations are running, as of day 76: week 10 is their current week.
    let terms: Vec<PresentationTerm> = ["BBB-2013J", "DDD-2013J"]
        .map(|presentation| PresentationTerm {
            presentation: presentation.into(),
            state: TermState::Running,
            length_days: 269,
            start_date: None,
            as_of_day: 76,
            as_of_source: AsOfSource::LatestActivity,
            current_week: AsOfWeek::completed_by(76),
            students: (STUDENTS / 2) as u64,
            outcomes_known: 0,
        })
        .to_vec();
    store.record_terms(&terms, "bench").await.unwrap();
    let caseload: Vec<(String, String, i64)> = (0..STUDENTS)
        .map(|s| {
            let m = if s % 2 == 0 { "BBB" } else { "DDD" };
            (m.to_owned(), "2013J".to_owned(), 100_000 + s)
        })
        .collect();
    store.assign_many(user, &caseload).await.unwrap();
    for (m, c, s) in caseload.iter().step_by(10) {
        store
            .add_note(user, m, c, *s, "called", Some("reached"))
            .await
            .unwrap();
    }
    let id = "bench-session-id";
    store
        .create_session(
            &lodestar_dashboard::session::id_hash(id),
            user,
            "csrf",
            "2999-01-01T00:00:00.000Z",
        )
        .await
        .unwrap();
    id.to_owned()
}

async fn measure(store: &Store, page_size: usize, session: &str) -> (f64, f64, f64, usize) {
    let dashboard = Dashboard::new(
        store.clone(),
        DashboardConfig {
            page_size,
            ..DashboardConfig::default()
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dashboard.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    let mut bytes = 0;
    for i in 0..23 {
        let t = Instant::now();
        let r = client
            .get(format!("{base}/caseload"))
            .header("cookie", format!("lodestar_session={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        bytes = r.text().await.unwrap().len();
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = stop.send(());
    times.sort_by(f64::total_cmp);
    (
        times[times.len() / 2],
        times[times.len() * 95 / 100],
        times[times.len() - 1],
        bytes,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
        let store = Store::connect(&url).await.unwrap();
        let t = Instant::now();
        let session = seed(&store).await;
        println!(
            "seeded {STUDENTS} students x {WEEKS} weeks ({} predictions) in {:.1} s",
            STUDENTS * WEEKS,
            t.elapsed().as_secs_f64()
        );
        let user = store.user("ada").await.unwrap().unwrap().id;
        let t = Instant::now();
        let view = store.caseload_view(Some(user), TermState::Running).await.unwrap();
        let query = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let outreach = store.outreach_summary(Some(user)).await.unwrap();
        println!(
            "of which the caseload query {query:.1} ms ({} students), outreach {:.1} ms ({} students)",
            view.len(),
            t.elapsed().as_secs_f64() * 1e3,
            outreach.len()
        );
        for page_size in [50, STUDENTS as usize] {
            let (median, p95, max, bytes) = measure(&store, page_size, &session).await;
            println!(
                "GET /caseload, {STUDENTS} students, {page_size} rows a page: median {median:.1} ms, p95 {p95:.1} ms, max {max:.1} ms ({} KB of HTML)",
                bytes / 1024
            );
        }
    });
}
