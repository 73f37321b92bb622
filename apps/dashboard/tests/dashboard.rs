//! The dashboard over HTTP as a browser uses it: sign-in through the form, sessions, CSRF,
//! lockout, roles and caseload boundaries, the pages and their forms, the audit trail, headers,
//! and the running terms first with finished ones as history.

mod common;

use common::{Client, PASSWORD, scored, start, term};
use lodestar_dashboard::DashboardConfig;
use lodestar_domain::TermState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_go_to_sign_in() {
    let d = start(DashboardConfig::default()).await;
    let mut c = Client::new(&d.base);
    for path in [
        "/",
        "/caseload",
        "/students/BBB-2013J/11",
        "/cohorts",
        "/models",
        "/audit",
        "/caseload.csv",
    ] {
        let p = c.get(path).await;
        assert_eq!(
            (p.status, p.location.as_deref()),
            (303, Some("/signin")),
            "{path}"
        );
    }
    let p = c
        .post("/students/BBB-2013J/11/notes", &[("note", "x")])
        .await;
    assert_eq!(p.location.as_deref(), Some("/signin"));
    let p = c.get("/signin").await;
    assert_eq!(p.status, 200);
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(p.headers["x-content-type-options"], "nosniff");
    assert!(
        p.body.contains("<label for=\"password\">"),
        "every control labelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisor_sees_only_their_caseload_and_forms_need_their_token() {
    let d = start(DashboardConfig::default()).await;
    let mut ada = Client::new(&d.base);
    let p = ada.sign_in("ada", PASSWORD).await;
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/caseload")));
    let cookie = p
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("lodestar_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // The caseload: ada's two students, riskiest first, with the reason and the change.
    let page = ada.get("/caseload").await;
    assert_eq!(page.status, 200);
    let (i11, i13) = (
        page.body.find(">11</a>").unwrap(),
        page.body.find(">13</a>").unwrap(),
    );
    assert!(i11 < i13, "riskiest first");
    assert!(
        !page.body.contains(">12</a>"),
        "bob's student is not in ada's caseload"
    );
    assert!(page.body.contains("no activity for 12 days (typical: 2)"));
    assert!(page.body.contains("+47 pts"), "0.35 → 0.82");
    assert!(
        page.body.contains("tier-high\">high</span>"),
        "tier as text too"
    );
    let filtered = ada.get("/caseload?tier=low").await;
    assert!(filtered.body.contains(">13</a>") && !filtered.body.contains(">11</a>"));
    assert_eq!(ada.get("/caseload?tier=severe").await.status, 400);
    let new = ada.get("/caseload?show=new").await;
    assert!(
        new.body.contains(">11</a>") && !new.body.contains(">13</a>"),
        "11 went from low (0.35) to high (0.82): new this week"
    );

    // Another advisor's student, and nonsense, are not found.
    assert_eq!(ada.get("/students/BBB-2013J/12").await.status, 404);
    assert_eq!(ada.get("/students/BBB-2013J/999").await.status, 404);
    assert_eq!(ada.get("/students/nonsense/abc").await.status, 404);
    assert_eq!(
        ada.get("/models").await.status,
        404,
        "advisors have no model page"
    );
    assert_eq!(ada.get("/audit").await.status, 404);

    // The student page, written to the audit log.
    let student = ada.get("/students/BBB-2013J/11").await;
    assert_eq!(student.status, 200);
    assert!(student.body.contains("<svg"), "risk chart");
    assert!(
        student.body.contains("Raising the risk")
            && student.body.contains("no activity for 12 days")
    );
    assert!(student.body.contains("1 of 2"), "the weekly timeline");
    let events = d.store.audit_events(10).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.0 == "ada" && e.1 == "student.view" && e.2 == "BBB-2013J/11")
    );

    // Forms without the token are refused; with it they work.
    let csrf = Client::csrf(&student);
    let p = ada
        .post(
            "/students/BBB-2013J/11/notes",
            &[("note", "called, no answer")],
        )
        .await;
    assert_eq!(p.status, 403);
    let p = ada
        .post(
            "/students/BBB-2013J/11/notes",
            &[
                ("note", "called, no answer"),
                ("csrf", "0".repeat(64).as_str()),
            ],
        )
        .await;
    assert_eq!(p.status, 403);
    let p = ada
        .post(
            "/students/BBB-2013J/11/notes",
            &[
                ("note", "called, no answer"),
                ("outcome", "no answer"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        ada.post(
            "/students/BBB-2013J/12/notes",
            &[("note", "x"), ("csrf", &csrf)]
        )
        .await
        .status,
        404
    );
    let notes = d.store.notes("BBB", "2013J", 11).await.unwrap();
    assert_eq!(
        (notes.len(), notes[0].outcome.as_deref()),
        (1, Some("no answer"))
    );
    let p = ada
        .post(
            &format!("/notes/{}", notes[0].id),
            &[
                ("note", "called back: reached"),
                ("outcome", "reached"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(
        d.store.notes("BBB", "2013J", 11).await.unwrap()[0].note,
        "called back: reached"
    );
    let caseload = ada.get("/caseload?show=no_outreach").await;
    assert!(!caseload.body.contains(">11</a>") && caseload.body.contains(">13</a>"));

    // Feedback.
    let view = d
        .store
        .caseload_view(None, TermState::Running)
        .await
        .unwrap();
    let pid = view
        .iter()
        .find(|e| e.id_student == 11)
        .unwrap()
        .prediction_id;
    let p = ada
        .post(
            &format!("/predictions/{pid}/feedback"),
            &[("kind", "incorrectly_flagged"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(
        d.store.feedback_on(pid).await.unwrap()[0].0,
        "incorrectly_flagged"
    );
    let bob_pid = view
        .iter()
        .find(|e| e.id_student == 12)
        .unwrap()
        .prediction_id;
    assert_eq!(
        ada.post(
            &format!("/predictions/{bob_pid}/feedback"),
            &[("kind", "not_useful"), ("csrf", &csrf)]
        )
        .await
        .status,
        404
    );

    // The CSV of the current view; the search posts the id.
    let csv = ada.get("/caseload.csv?tier=high").await;
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(csv.body.lines().count(), 2, "{}", csv.body);
    assert!(
        csv.body
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("BBB-2013J,11,82%,high,+47 pts")
    );
    let found = ada
        .post("/caseload", &[("student", "13"), ("csrf", &csrf)])
        .await;
    assert!(found.body.contains(">13</a>") && !found.body.contains(">11</a>"));
    assert_eq!(
        ada.post("/caseload", &[("student", "13")]).await.status,
        403
    );

    // Sign out ends the session server-side.
    let p = ada.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(p.location.as_deref(), Some("/signin"));
    assert_eq!(
        ada.get("/caseload").await.location.as_deref(),
        Some("/signin")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_account_and_the_sign_in_form_needs_its_token() {
    let d = start(DashboardConfig {
        lockout_failures: 3,
        ..DashboardConfig::default()
    })
    .await;
    let mut c = Client::new(&d.base);
    let p = c
        .post("/signin", &[("username", "bob"), ("password", PASSWORD)])
        .await;
    assert_eq!(p.status, 403, "no form token");
    for _ in 0..2 {
        let p = c.sign_in("bob", "wrong").await;
        assert_eq!(p.status, 401);
        assert!(p.body.contains("Wrong name or password."));
    }
    let p = c.sign_in("bob", "wrong").await;
    assert_eq!(p.status, 429, "the third failure locks");
    let p = c.sign_in("bob", PASSWORD).await;
    assert_eq!(p.status, 429, "locked even with the right password");
    assert!(p.body.contains("locked until"));
    assert_eq!(
        c.sign_in("nobody", PASSWORD).await.status,
        401,
        "unknown names read as wrong"
    );
    // An admin sees everyone, the model page and the audit log.
    let mut root = Client::new(&d.base);
    assert_eq!(root.sign_in("root", PASSWORD).await.status, 303);
    let page = root.get("/caseload").await;
    assert!(
        page.body.contains(">11</a>")
            && page.body.contains(">12</a>")
            && page.body.contains(">13</a>")
    );
    assert_eq!(root.get("/students/BBB-2013J/12").await.status, 200);
    let models = root.get("/models").await;
    assert_eq!(models.status, 200);
    assert!(models.body.contains("No version registered yet."));
    assert!(models.body.contains("No pipeline run yet."));
    // A run's summary, shaped as the notify step writes it, shows on the model page.
    let run = d
        .store
        .start_run(&lodestar_store::NewRun {
            trigger: "cron",
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    let summary = serde_json::json!({
        "run": run,
        "steps": {"ingest": {"status": "succeeded", "seconds": 0.1}, "gate": {"status": "succeeded", "seconds": 0.0},
                  "score": {"status": "failed", "error": "disk full"}},
        "gate": {"model": "at-risk", "candidate": 2, "champion": 1, "promoted": false, "reasons": ["ROC AUC lower"]},
        "score": null,
    });
    d.store
        .finish_run(
            run,
            "failed",
            Some("step score failed: disk full"),
            false,
            &summary,
        )
        .await
        .unwrap();
    let models = root.get("/models").await;
    assert!(
        models.body.contains(&format!("Run {run} (cron")),
        "{}",
        models.body
    );
    assert!(
        models
            .body
            .contains("Gate: version 2 kept out; champion stays version 1")
    );
    assert!(models.body.contains("failed: disk full"));
    let ingest = models.body.find(">ingest<").unwrap();
    assert!(
        ingest < models.body.find(">score<").unwrap(),
        "steps in pipeline order"
    );
    let audit = root.get("/audit").await;
    assert!(audit.body.contains("student.view") && audit.body.contains("BBB-2013J/12"));
    let cohorts = root.get("/cohorts").await;
    assert!(cohorts.body.contains("BBB-2013J") && cohorts.body.contains("<svg"));
    let csrf = Client::csrf(&models);
    let p = root
        .post("/models/rollback", &[("reason", "test"), ("csrf", &csrf)])
        .await;
    assert_eq!(p.status, 303);
    let after = root.get(p.location.as_deref().unwrap()).await;
    assert!(
        after.body.contains("Not rolled back"),
        "nothing to roll back: said, nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caseload_opens_on_running_terms_and_keeps_finished_ones_as_history() {
    let d = start(DashboardConfig::default()).await;
    // BBB-2013B has ended: ada's students 21 and 22 were scored there up to week 38.
    d.store
        .insert_predictions(&[
            scored("2013B", 21, 37, 0.4),
            scored("2013B", 21, 38, 0.75),
            scored("2013B", 22, 38, 0.1),
        ])
        .await
        .unwrap();
    let ada_id = d.store.user("ada").await.unwrap().unwrap().id;
    for id in [21, 22] {
        d.store.assign(ada_id, "BBB", "2013B", id).await.unwrap();
    }
    d.store
        .record_terms(&[term("2013B", TermState::Finished, 268)], "snap")
        .await
        .unwrap();
    let mut ada = Client::new(&d.base);
    ada.sign_in("ada", PASSWORD).await;

    // The caseload: the running term's students at its current week, under its as-of.
    let page = ada.get("/caseload").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<h2>BBB-2013J — running, as of day 27, week 3 of 39</h2>"),
        "{}",
        page.body
    );
    assert!(page.body.contains(">11</a>") && page.body.contains(">13</a>"));
    assert!(
        !page.body.contains(">21</a>") && !page.body.contains(">22</a>"),
        "a finished term's students are not on the caseload"
    );
    assert!(!page.body.contains(">14</a>"), "withdrawn before week 3");
    assert!(page.body.contains("href=\"/caseload?term=finished\""));

    // History: the finished term, said as such.
    let history = ada.get("/caseload?term=finished").await;
    assert_eq!(history.status, 200);
    assert!(history.body.contains("History (finished terms)"));
    assert!(
        history
            .body
            .contains("<h2>BBB-2013B — finished (39 weeks)</h2>"),
        "{}",
        history.body
    );
    let (i21, i22) = (
        history.body.find(">21</a>").unwrap(),
        history.body.find(">22</a>").unwrap(),
    );
    assert!(i21 < i22, "riskiest first");
    assert!(!history.body.contains(">11</a>"));
    let csv = ada.get("/caseload.csv?term=finished").await;
    assert_eq!(csv.body.lines().count(), 3, "{}", csv.body);
    assert!(csv.body.contains("BBB-2013B,21,75%,high"), "{}", csv.body);
    let found = ada
        .post(
            "/caseload",
            &[
                ("student", "22"),
                ("term", "finished"),
                ("csrf", &Client::csrf(&history)),
            ],
        )
        .await;
    assert!(found.body.contains(">22</a>") && !found.body.contains(">21</a>"));
    assert_eq!(ada.get("/caseload?term=ongoing").await.status, 400);

    // The student pages say which term and whether it has ended; the boundary still holds.
    let s11 = ada.get("/students/BBB-2013J/11").await;
    assert!(
        s11.body
            .contains("Term: running, as of day 27, week 3 of 39"),
        "{}",
        s11.body
    );
    let s21 = ada.get("/students/BBB-2013B/21").await;
    assert_eq!(s21.status, 200);
    assert!(s21.body.contains("Term: finished (39 weeks)"));
    assert!(
        s21.body
            .contains("href=\"/caseload?term=finished\">← Caseload")
    );
    let mut bob = Client::new(&d.base);
    bob.sign_in("bob", PASSWORD).await;
    assert_eq!(bob.get("/students/BBB-2013B/21").await.status, 404);
    assert!(
        !bob.get("/caseload?term=finished")
            .await
            .body
            .contains(">21</a>")
    );

    // The cohort page counts the caseload's population: ada's running term, 11 flagged.
    let cohorts = ada.get("/cohorts").await;
    assert!(
        cohorts
            .body
            .contains("<h2>BBB-2013J — running, as of day 27, week 3 of 39</h2>")
    );
    assert!(
        cohorts.body.contains("Flagged now (medium or high): 1;"),
        "{}",
        cohorts.body
    );
    assert!(!cohorts.body.contains("BBB-2013B"));
    let old = ada.get("/cohorts?term=finished").await;
    assert!(
        old.body
            .contains("<h2>BBB-2013B — finished (39 weeks)</h2>")
    );
    assert!(old.body.contains("Flagged now (medium or high): 1;"));

    // With a calendar, the as-of is a date.
    let mut dated = term("2013J", TermState::Running, 27);
    dated.start_date = Some("2013-10-05".into());
    d.store.record_terms(&[dated], "snap-2").await.unwrap();
    let page = ada.get("/caseload").await;
    assert!(
        page.body
            .contains("BBB-2013J — running, as of 1 Nov 2013, week 3 of 39"),
        "{}",
        page.body
    );

    // The term ends: nothing is running, and the caseload says so in words.
    d.store
        .record_terms(&[term("2013J", TermState::Finished, 268)], "snap-3")
        .await
        .unwrap();
    let page = ada.get("/caseload").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("No term is running in the latest export; finished terms are under History"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<table"), "no empty table");
    let cohorts = ada.get("/cohorts").await;
    assert!(
        cohorts
            .body
            .contains("No term is running in the latest export")
    );
    let history = ada.get("/caseload?term=finished").await;
    assert!(history.body.contains(">11</a>") && history.body.contains(">21</a>"));
    assert!(
        history
            .body
            .contains("<h2>BBB-2013J — finished (39 weeks)</h2>")
    );
}
