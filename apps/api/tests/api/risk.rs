//! Stored risk: a student's latest score with its history by week, a cohort paged, filtered and
//! riskiest first, what each refuses, and the running or finished term both carry.

use lodestar_domain::{AsOfSource, PresentationTerm, TermState};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::call;
use crate::common::{self, TestApi, config, start};

shared_checks!(
    a_students_risk_is_the_latest_score_with_its_history_by_week,
    a_students_risk_refuses_unknown_students_weeks_and_bad_queries,
    a_cohort_is_riskiest_first_paged_and_filtered_by_tier,
    a_cohort_refuses_bad_filters_and_unscored_presentations,
);

async fn a_students_risk_is_the_latest_score_with_its_history_by_week(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
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
}

async fn a_students_risk_refuses_unknown_students_weeks_and_bad_queries(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
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
}

async fn a_cohort_is_riskiest_first_paged_and_filtered_by_tier(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
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
}

async fn a_cohort_refuses_bad_filters_and_unscored_presentations(t: &TestApi) {
    use Method as M;
    let tk = &t.tokens;
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
