//! The dashboard over HTTP as a browser uses it: sign-in through the form, sessions, CSRF,
//! lockout, roles and caseload boundaries, the pages and their forms, the audit trail, headers.

mod common;

use common::{Client, PASSWORD, start};
use lodestar_dashboard::DashboardConfig;

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
    let view = d.store.caseload_view(None).await.unwrap();
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
