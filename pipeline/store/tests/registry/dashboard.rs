//! Users, caseloads and what the dashboard reads: notes, API tokens, sessions and sign-in
//! lockout, the caseload view over running and finished terms.

use lodestar_domain::TermState;

use crate::{TestDb, prediction, term};

pub(crate) async fn users_caseloads_and_notes(db: TestDb) {
    let s = &db.store;
    let ada = s
        .create_user("ada", "advisor", "$argon2id$v=19$...")
        .await
        .unwrap();
    let bob = s
        .create_user("bob", "admin", "$argon2id$v=19$...")
        .await
        .unwrap();
    assert!(
        s.create_user("ada", "advisor", "x").await.is_err(),
        "usernames are unique"
    );
    assert!(s.create_user("eve", "root", "x").await.is_err());
    assert_eq!(s.user("ada").await.unwrap().unwrap().role, "advisor");
    s.assign(ada, "BBB", "2013J", 11).await.unwrap();
    s.assign(ada, "BBB", "2013J", 11).await.unwrap();
    s.assign(ada, "BBB", "2013J", 12).await.unwrap();
    assert_eq!(s.caseload(ada).await.unwrap().len(), 2);
    assert!(s.caseload(bob).await.unwrap().is_empty());
    let more = [
        ("BBB", "2013J", 12),
        ("BBB", "2013J", 13),
        ("DDD", "2013J", 14),
    ]
    .map(|(m, c, st)| (m.to_owned(), c.to_owned(), st));
    s.assign_many(bob, &more).await.unwrap();
    s.assign_many(bob, &more).await.unwrap();
    assert_eq!(s.caseload(bob).await.unwrap().len(), 3);
    s.set_password_hash(bob, "$argon2id$v=19$new")
        .await
        .unwrap();
    assert_eq!(
        s.user("bob").await.unwrap().unwrap().password_hash,
        "$argon2id$v=19$new"
    );
    let note = s
        .add_note(ada, "BBB", "2013J", 11, "called, left a message", None)
        .await
        .unwrap();
    assert!(
        s.edit_note(note, ada, "called, spoke to the student", Some("reached"))
            .await
            .unwrap()
    );
    assert!(
        !s.edit_note(note, bob, "not mine", None).await.unwrap(),
        "only the author edits a note"
    );
    s.audit(
        "ada",
        "note.edit",
        "BBB-2013J/11",
        &serde_json::json!({"note": note}),
    )
    .await
    .unwrap();
    let events = s.audit_events(10).await.unwrap();
    assert_eq!(events[0].1, "note.edit");
}

pub(crate) async fn tokens_are_stored_hashed_and_can_be_revoked(db: TestDb) {
    let s = &db.store;
    let token = "lsk_0123456789abcdefghijklmnop";
    let id = s
        .create_token("sis", token, &["predictions:read", "pipeline:run"])
        .await
        .unwrap();
    assert!(s.create_token("short", "abc", &[]).await.is_err());
    let found = s.verify_token(token).await.unwrap().unwrap();
    assert_eq!(
        found.scopes,
        vec!["predictions:read".to_owned(), "pipeline:run".to_owned()]
    );
    assert!(
        s.verify_token("lsk_wrong_wrong_wrong_wrong_wrong")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.revoke_token(id).await.unwrap());
    assert!(!s.revoke_token(id).await.unwrap());
    assert!(
        s.verify_token(token).await.unwrap().is_none(),
        "a revoked token no longer works"
    );
    // Only a hash of the token is in the database.
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let rows = sqlx::query("SELECT name, token_hash FROM api_tokens")
        .fetch_all(&raw)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: String = sqlx::Row::get(&rows[0], "token_hash");
    assert_ne!(stored, token);
    assert_eq!(stored.len(), 64, "a SHA-256 in hex");
}

pub(crate) async fn sessions_lockout_and_the_caseload_view(db: TestDb) {
    let s = &db.store;
    let ada = s
        .create_user("ada", "advisor", "$argon2id$x")
        .await
        .unwrap();
    // Lockout after three failures; a success clears the count.
    assert_eq!(
        s.sign_in_failed(ada, 3, "2999-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        1
    );
    s.sign_in_succeeded(ada).await.unwrap();
    for _ in 0..3 {
        s.sign_in_failed(ada, 3, "2999-01-01T00:00:00.000Z")
            .await
            .unwrap();
    }
    let state = s.sign_in_state("ada").await.unwrap().unwrap();
    assert_eq!(
        state.locked_until.as_deref(),
        Some("2999-01-01T00:00:00.000Z")
    );
    assert!(s.sign_in_state("nobody").await.unwrap().is_none());
    // Sessions: found by hash until they expire or are deleted.
    s.create_session("h1", ada, "csrf1", "2999-01-01T00:00:00.000Z")
        .await
        .unwrap();
    s.create_session("h0", ada, "csrf0", "2000-01-01T00:00:00.000Z")
        .await
        .unwrap();
    let session = s.session("h1").await.unwrap().unwrap();
    assert_eq!(
        (session.user.username.as_str(), session.csrf.as_str()),
        ("ada", "csrf1")
    );
    assert!(s.session("h0").await.unwrap().is_none(), "expired");
    s.delete_session("h1").await.unwrap();
    assert!(s.session("h1").await.unwrap().is_none());
    // The caseload view: latest week beside the one before, only the advisor's students.
    let mut rows = vec![
        prediction(11, 1, 0.2),
        prediction(11, 2, 0.3),
        prediction(11, 2, 0.6),
        prediction(12, 2, 0.9),
        prediction(13, 2, 0.1),
    ];
    rows[0].context = serde_json::json!({"clicks_this_week": 4.0});
    s.insert_predictions(&rows).await.unwrap();
    s.assign(ada, "BBB", "2013J", 11).await.unwrap();
    s.assign(ada, "BBB", "2013J", 12).await.unwrap();
    let view = s
        .caseload_view(Some(ada), TermState::Finished)
        .await
        .unwrap();
    assert_eq!(view.len(), 2);
    assert_eq!(
        (view[0].id_student, view[0].week, view[0].probability),
        (11, 2, 0.6),
        "week 2's later score"
    );
    assert_eq!(
        view[0].previous.as_ref().map(|p| (p.0, p.1)),
        Some((1, 0.2))
    );
    assert_eq!(view[1].previous, None);
    assert_eq!(
        s.caseload_view(None, TermState::Finished)
            .await
            .unwrap()
            .len(),
        3,
        "everyone for an admin"
    );
    assert!(s.in_caseload(ada, "BBB", "2013J", 12).await.unwrap());
    assert!(!s.in_caseload(ada, "BBB", "2013J", 13).await.unwrap());
    let history = s.prediction_history("BBB", "2013J", 11).await.unwrap();
    assert_eq!(history[0].prediction.context["clicks_this_week"], 4.0);
    // Outreach and notes.
    s.add_note(ada, "BBB", "2013J", 11, "called", Some("no answer"))
        .await
        .unwrap();
    s.add_note(ada, "BBB", "2013J", 11, "called again", Some("reached"))
        .await
        .unwrap();
    let outreach = s.outreach_summary(Some(ada)).await.unwrap();
    let o = &outreach[&("BBB".to_owned(), "2013J".to_owned(), 11)];
    assert_eq!((o.notes, o.last_outcome.as_deref()), (2, Some("reached")));
    let notes = s.notes("BBB", "2013J", 11).await.unwrap();
    assert_eq!((notes.len(), notes[1].author.as_str()), (2, "ada"));
    let id = view[0].prediction_id;
    s.add_feedback(id, "acknowledged", "ada", None)
        .await
        .unwrap();
    assert_eq!(s.feedback_on(id).await.unwrap()[0].0, "acknowledged");
}

fn scored(
    module: &str,
    code: &str,
    student: i64,
    week: i64,
    p: f64,
) -> lodestar_store::NewPrediction {
    lodestar_store::NewPrediction {
        code_module: module.into(),
        code_presentation: code.into(),
        ..prediction(student, week, p)
    }
}

pub(crate) async fn the_caseload_reads_running_terms_at_their_current_week(db: TestDb) {
    let s = &db.store;
    let ada = s
        .create_user("ada", "advisor", "$argon2id$x")
        .await
        .unwrap();
    s.insert_predictions(&[
        // BBB-2014J runs, current week 10: students 1 and 2 scored there; 3 withdrew after week 4.
        scored("BBB", "2014J", 1, 9, 0.3),
        scored("BBB", "2014J", 1, 10, 0.8),
        scored("BBB", "2014J", 2, 10, 0.2),
        scored("BBB", "2014J", 3, 4, 0.9),
        // BBB-2013J has ended.
        scored("BBB", "2013J", 7, 38, 0.6),
        // CCC-2013B was scored before terms were recorded: history.
        scored("CCC", "2013B", 8, 20, 0.5),
    ])
    .await
    .unwrap();
    for (m, c, id) in [
        ("BBB", "2014J", 1),
        ("BBB", "2014J", 3),
        ("BBB", "2013J", 7),
    ] {
        s.assign(ada, m, c, id).await.unwrap();
    }
    // No term recorded yet: nothing is running, everything is history.
    assert!(
        s.caseload_view(None, TermState::Running)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.caseload_view(None, TermState::Finished)
            .await
            .unwrap()
            .len(),
        5
    );
    s.record_terms(
        &[
            term("BBB-2014J", TermState::Running, 76),
            term("BBB-2013J", TermState::Finished, 268),
        ],
        "snap",
    )
    .await
    .unwrap();
    let running = s.caseload_view(None, TermState::Running).await.unwrap();
    assert_eq!(
        running
            .iter()
            .map(|e| (e.id_student, e.week, e.probability))
            .collect::<Vec<_>>(),
        [(1, 10, 0.8), (2, 10, 0.2)],
        "tonight's students at week 10; the one who withdrew is not listed"
    );
    assert_eq!(running[0].previous.as_ref().map(|p| p.0), Some(9));
    let mine = s
        .caseload_view(Some(ada), TermState::Running)
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|e| e.id_student).collect::<Vec<_>>(), [1]);
    let history = s.caseload_view(None, TermState::Finished).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|e| (
                e.code_module.as_str(),
                e.code_presentation.as_str(),
                e.id_student
            ))
            .collect::<Vec<_>>(),
        [("BBB", "2013J", 7), ("CCC", "2013B", 8)]
    );
    // The cohort counts read the same presentations: running ones up to their current week.
    let counts = s.tier_counts(None, TermState::Running).await.unwrap();
    assert!(
        counts
            .iter()
            .all(|(m, c, w, _, _)| (m.as_str(), c.as_str()) == ("BBB", "2014J") && *w <= 10),
        "{counts:?}"
    );
    let at_10: i64 = counts.iter().filter(|r| r.2 == 10).map(|r| r.4).sum();
    assert_eq!(at_10, 2);
    let mine = s.tier_counts(Some(ada), TermState::Finished).await.unwrap();
    assert_eq!(mine, [("BBB".into(), "2013J".into(), 38, "low".into(), 1)]);
}
