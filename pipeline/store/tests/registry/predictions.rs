//! Predictions and score batches: feedback and retention, stored text read back as written,
//! staged scores invisible until published and resumed after a kill.

use lodestar_domain::TermState;
use lodestar_store::Store;

use crate::{TestDb, prediction, term};

pub(crate) async fn predictions_are_kept_with_feedback_until_retention_purges_them(db: TestDb) {
    let s = &db.store;
    assert_eq!(
        s.insert_predictions(&[
            prediction(11, 5, 0.8),
            prediction(11, 6, 0.6),
            prediction(12, 5, 0.1)
        ])
        .await
        .unwrap(),
        3
    );
    let history = s.prediction_history("BBB", "2013J", 11).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|p| p.prediction.as_of_week)
            .collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert_eq!(history[0].prediction, prediction(11, 5, 0.8));
    assert_eq!(
        s.scored_students("at-risk", 1).await.unwrap(),
        [
            ("BBB".to_owned(), "2013J".to_owned(), 11),
            ("BBB".to_owned(), "2013J".to_owned(), 12)
        ]
    );
    assert!(
        s.has_predictions("at-risk", 1, "BBB", "2013J", 5)
            .await
            .unwrap()
    );
    assert!(
        !s.has_predictions("at-risk", 1, "BBB", "2013J", 7)
            .await
            .unwrap()
    );
    assert!(
        !s.has_predictions("at-risk", 2, "BBB", "2013J", 5)
            .await
            .unwrap()
    );
    s.add_feedback(
        history[0].id,
        "incorrectly_flagged",
        "advisor-1",
        Some("already withdrawn"),
    )
    .await
    .unwrap();
    assert!(
        s.add_feedback(history[0].id, "meh", "advisor-1", None)
            .await
            .is_err()
    );
    // Retention: nothing is older than an old cutoff; everything is older than a future one.
    assert_eq!(
        s.purge_predictions_before("2000-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.purge_predictions_before("2999-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        3
    );
    assert!(
        s.prediction_history("BBB", "2013J", 11)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A prediction as the nightly run writes it: factors with their numbers and sentences, and
/// the student's week.
fn explained(student: i64, week: i64, p: f64) -> lodestar_store::NewPrediction {
    let idle = (20 - week) as f64;
    let mut n = prediction(student, week, p);
    n.explanation = serde_json::json!({
        "up": [{"feature": "days_since_last_activity", "value": idle, "typical": 2.0,
                "contribution": 0.4213124184,
                "text": format!("no activity for {idle} days (typical: 2)")}],
        "down": [{"feature": "assessments_missing", "value": 0.0, "typical": 1.0,
                  "contribution": -0.125, "text": "all 3 assessments due so far submitted"}],
        "flagged": p >= 0.5,
    });
    n.context = serde_json::json!({"assessments_due": 3.0, "days_since_last_activity": idle,
                                   "clicks_this_week": 4.5});
    n
}

/// Text PostgreSQL's `COPY` and SQLite's inserts must carry as it is: tabs, newlines, carriage
/// returns, backslashes and quotes, in the explanation, the context and the run's model name.
pub(crate) async fn stored_text_with_separators_reads_back_as_written(db: TestDb) {
    let s = &db.store;
    let odd = "tab\there, line\nthere, cr\r, back\\slash \\N, \"quoted\"";
    let mut plain = prediction(21, 3, 0.8);
    plain.explanation = serde_json::json!({"up": [odd], "down": []});
    plain.context = serde_json::json!({"note": odd});
    let mut other_run = prediction(22, 3, 0.2);
    other_run.model = format!("at-risk\t{odd}");
    other_run.run_id = Some(5);
    let mut same_batch = prediction(23, 3, 0.4);
    same_batch.run_id = Some(6);
    s.insert_predictions(&[plain.clone(), other_run.clone(), same_batch])
        .await
        .unwrap();
    let back = s.prediction_history("BBB", "2013J", 21).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].prediction.explanation, plain.explanation);
    assert_eq!(back[0].prediction.context, plain.context);
    let back = s.prediction_history("BBB", "2013J", 22).await.unwrap();
    assert_eq!(back[0].prediction.model, other_run.model);
    assert_eq!(back[0].prediction.run_id, Some(5));
}

pub(crate) async fn staged_scores_are_invisible_until_published_and_resume_after_a_kill(
    db: TestDb,
) {
    use lodestar_store::BatchKey;
    let s = &db.store;
    // Last night's scores, published.
    s.insert_predictions(&[explained(11, 4, 0.3), explained(12, 4, 0.6)])
        .await
        .unwrap();
    let key = BatchKey {
        model: "at-risk".into(),
        version: 1,
        snapshot: "snap-a".into(),
        rows: 4,
    };
    let tonight = [
        explained(11, 5, 0.8),
        explained(12, 5, 0.2),
        explained(11, 6, 0.9),
        explained(13, 6, 0.1),
    ];
    let batch = s.open_score_batch(&key, None).await.unwrap();
    assert_eq!((batch.rows_done, batch.resumed), (0, false));
    s.stage_predictions(batch.id, &tonight[..2]).await.unwrap();
    // Staged, not published: readers still see last night's set only.
    assert_eq!(
        s.prediction_history("BBB", "2013J", 11)
            .await
            .unwrap()
            .len(),
        1
    );
    let view = s.caseload_view(None, TermState::Finished).await.unwrap();
    assert_eq!(view.len(), 2);
    assert!(view.iter().all(|e| e.week == 4));
    assert!(
        !s.has_predictions("at-risk", 1, "BBB", "2013J", 5)
            .await
            .unwrap()
    );
    // The cohort's latest week is found through the published batches only.
    let cohort = s.cohort("BBB", "2013J", None, None, 50, 0).await.unwrap();
    assert_eq!((cohort.week, cohort.total), (Some(4), 2));
    assert_eq!(
        s.cohort("BBB", "2013J", Some(5), None, 50, 0)
            .await
            .unwrap()
            .total,
        0
    );
    // The process dies here. The next run scoring the same rows takes the batch up after the
    // rows already staged; a batch of other rows would be discarded.
    let other = s
        .open_score_batch(
            &BatchKey {
                snapshot: "snap-b".into(),
                ..key.clone()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(other.discarded, 2, "the abandoned batch's rows are deleted");
    let other_rows = [explained(14, 6, 0.5)];
    s.stage_predictions(other.id, &other_rows).await.unwrap();
    let again = s.open_score_batch(&key, Some(7)).await.unwrap();
    assert_eq!(
        (again.resumed, again.rows_done, again.discarded),
        (false, 0, 1)
    );
    s.stage_predictions(again.id, &tonight[..2]).await.unwrap();
    // Dies again; a new process takes the batch up: it staged only the last rows itself, so
    // publishing reads the batch's rows back.
    let next = Store::connect(&db.url).await.unwrap();
    let resumed = next.open_score_batch(&key, Some(8)).await.unwrap();
    assert_eq!(
        (resumed.id, resumed.resumed, resumed.rows_done),
        (again.id, true, 2)
    );
    next.stage_predictions(resumed.id, &tonight[2..])
        .await
        .unwrap();
    let published = next.publish_score_batch(resumed.id).await.unwrap();
    assert_eq!((published.rows, published.students), (4, 3));
    assert_eq!(
        s.publish_score_batch(resumed.id).await.unwrap().rows,
        0,
        "once"
    );
    let tiers = s.batch_tiers(resumed.id).await.unwrap();
    assert_eq!(tiers, vec![("high".to_owned(), 2), ("low".to_owned(), 2)]);
    // Published at once: current risk moved to each student's latest week and the one before.
    let view = s.caseload_view(None, TermState::Finished).await.unwrap();
    let of = |id: i64| view.iter().find(|e| e.id_student == id).unwrap();
    assert_eq!(
        (of(11).week, of(11).previous.as_ref().map(|p| p.0)),
        (6, Some(5))
    );
    assert_eq!(
        (of(12).week, of(12).previous.as_ref().map(|p| p.0)),
        (5, Some(4))
    );
    assert_eq!(
        (of(13).week, of(13).previous.as_ref().map(|p| p.0)),
        (6, None)
    );
    // The sentences read back as they were written, from the compact stored form.
    assert_eq!(
        of(11).top_reason.as_deref(),
        Some("no activity for 14 days (typical: 2)")
    );
    assert_eq!(of(11).days_since_last_activity, Some(14.0));
    let history = s.prediction_history("BBB", "2013J", 11).await.unwrap();
    assert_eq!(history.len(), 3);
    let latest = &history[2].prediction;
    let (got, want) = (
        &latest.explanation["up"][0],
        &tonight[2].explanation["up"][0],
    );
    for field in ["feature", "value", "typical", "text"] {
        assert_eq!(got[field], want[field], "{field}");
    }
    // Contributions are kept to seven significant digits.
    let c = got["contribution"].as_f64().unwrap();
    assert!((c - 0.4213124184).abs() < 1e-7, "{c}");
    assert_eq!(
        latest.explanation["down"][0]["text"],
        "all 3 assessments due so far submitted"
    );
    assert_eq!(latest.explanation["flagged"], true);
    assert_eq!(latest.context, tonight[2].context);
    assert!(
        s.has_predictions("at-risk", 1, "BBB", "2013J", 5)
            .await
            .unwrap()
    );
    let cohort = s.cohort("BBB", "2013J", None, None, 50, 0).await.unwrap();
    assert_eq!((cohort.week, cohort.total), (Some(6), 2));
    let riskiest: Vec<i64> = cohort
        .rows
        .iter()
        .map(|p| p.prediction.id_student)
        .collect();
    assert_eq!(riskiest, vec![11, 13]);
    let week5 = s
        .cohort("BBB", "2013J", Some(5), Some("high"), 50, 0)
        .await
        .unwrap();
    assert_eq!((week5.total, week5.rows[0].prediction.id_student), (1, 11));
    // What the whole batch shares is stored once, with the batch, and read with each row: the
    // model, the version, the run that finished the batch (tonight's rows name none of their
    // own) and the time it was published.
    assert_eq!((latest.model.as_str(), latest.version), ("at-risk", 1));
    assert_eq!(latest.run_id, Some(8));
    assert!(
        history[2].scored_at.starts_with("20"),
        "{}",
        history[2].scored_at
    );
    assert_eq!(
        db.raw_count(
            "SELECT COUNT(*) FROM prediction_rows WHERE batch_id IS NOT NULL AND model IS NULL \
                      AND version IS NULL AND run_id IS NULL AND scored_at IS NULL"
        )
        .await,
        2,
        "last night's rows, of their batch's model, version and run, leave them to it"
    );
    // Rows of several runs stored at once keep their own run (a batch of several runs has
    // none, so a row without one does not read as another's).
    let of_run = |student: i64, run: Option<i64>| {
        let mut p = explained(student, 7, 0.4);
        p.run_id = run;
        p
    };
    s.insert_predictions(&[of_run(21, Some(3)), of_run(22, None), of_run(23, Some(4))])
        .await
        .unwrap();
    for (student, run) in [(21, Some(3)), (22, None), (23, Some(4))] {
        let h = s.prediction_history("BBB", "2013J", student).await.unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].prediction.run_id, run, "student {student}");
        assert!(h[0].scored_at.starts_with("20"));
    }
    // Feature names are ids in the stored row, not text.
    let stored: String = db.raw_explanation(history[2].id).await;
    assert!(
        !stored.contains("days_since_last_activity") && !stored.contains("no activity"),
        "{stored}"
    );
    // Once the presentation is recorded as a term under way at week 6 (day 48), its caseload is
    // tonight's students at that week, read from the published batch.
    s.record_terms(&[term("BBB-2013J", TermState::Running, 48)], "snap-a")
        .await
        .unwrap();
    let running = s.caseload_view(None, TermState::Running).await.unwrap();
    let mut at_week_6: Vec<i64> = running.iter().map(|e| e.id_student).collect();
    at_week_6.sort_unstable();
    assert_eq!(at_week_6, [11, 13]);
    assert!(running.iter().all(|e| e.top_reason.is_some()));
    // A row stored before batches (an upgraded database) is found the same way.
    db.raw_execute(
        "INSERT INTO prediction_rows (model, version, code_module, code_presentation, id_student, \
         as_of_week, probability, tier, explanation_json, scored_at) VALUES ('at-risk', 1, 'BBB', \
         '2013J', 15, 9, 0.5, 'low', '{\"up\": [], \"down\": []}', '2024-01-01T00:00:00Z')",
    )
    .await;
    let cohort = s.cohort("BBB", "2013J", None, None, 50, 0).await.unwrap();
    assert_eq!((cohort.week, cohort.total), (Some(9), 1));
    assert!(
        s.has_predictions("at-risk", 1, "BBB", "2013J", 9)
            .await
            .unwrap()
    );
}
