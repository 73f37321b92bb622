//! The nightly pipeline through the real binary, on SQLite and (when
//! `LODESTAR_TEST_POSTGRES_URL` is set, as CI does) PostgreSQL: a full run with its webhook, the
//! step cache, retries, a step that panics, and the process SIGKILLed in the middle of steps,
//! after which the next run finishes with no duplicate version, no duplicate prediction and the
//! champion moved only by a gate that passed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use serde_json::Value;

mod common;
use common::*;

/// Students of `presentation` in the export's studentRegistration still registered at the end
/// of the week complete on `day` (not unregistered on or before its cutoff day).
fn registered_at(export: &Path, presentation: &str, day: i32) -> u64 {
    let cutoff = lodestar_domain::AsOfWeek::completed_by(day)
        .expect("a complete week")
        .cutoff_day();
    let (module, code) = presentation.split_once('-').unwrap();
    let text = std::fs::read_to_string(export.join("studentRegistration.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|f| f.trim().trim_matches('"'))
                .collect::<Vec<_>>()
        })
        .filter(|f| f[0] == module && f[1] == code)
        .filter(|f| f[4].is_empty() || f[4].parse::<i32>().unwrap() > cutoff)
        .count() as u64
}

fn statuses(run: &Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn last_status(run: &Value, step: &str) -> String {
    statuses(run)
        .into_iter()
        .rev()
        .find(|(s, _)| s == step)
        .map(|(_, st)| st)
        .unwrap_or_default()
}

/// Serves one webhook call and hands its body over.
fn webhook() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/lodestar", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        tx.send(String::from_utf8(body).unwrap()).unwrap();
    });
    (url, rx)
}

#[test]
fn a_full_run_then_a_rerun_from_the_cache_with_the_summary_sent_to_the_webhook() {
    for e in envs("full") {
        let (url, body) = webhook();
        let toml = e.dir.path().join("lodestar.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(
            &toml,
            text.replace("[pipeline]\n", &format!("[pipeline]\nwebhook = {url:?}\n")),
        )
        .unwrap();
        let (out, doc) = e.run_json(&[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc = doc.unwrap();
        let run = doc["run"].as_i64().unwrap();
        let summary = &doc["summary"];
        assert_eq!(summary["gate"]["promoted"], true);
        // Tonight's students: every student of the running presentation still registered at
        // its current week, and nobody of the finished ones.
        let stored = summary["score"]["stored"].as_u64().unwrap();
        let registered = registered_at(&e.dir.path().join("export"), RUNNING, RUNNING_AS_OF_DAY);
        assert_eq!(stored, registered, "{summary}");
        assert_eq!(
            summary["score"]["presentations"],
            serde_json::json!([{"presentation": RUNNING, "state": "running", "week": RUNNING_WEEK,
                "weeks": 38, "as_of_day": RUNNING_AS_OF_DAY, "as_of_date": null, "students": registered}]),
            "{summary}"
        );
        assert_eq!(
            summary["score"]["weeks"],
            serde_json::json!({RUNNING: RUNNING_WEEK})
        );
        let terms = summary["terms"].as_array().unwrap();
        assert_eq!(terms.len(), 3, "{summary}");
        for t in terms {
            let running = t["presentation"] == RUNNING;
            assert_eq!(
                t["state"],
                if running { "running" } else { "finished" },
                "{t}"
            );
        }
        // Trained on the finished 2013B, tested on the finished BBB-2013J only.
        let models = e.json(&["models", "show", "at-risk", "--json"]);
        let report = &models[0]["report"];
        assert_eq!(
            report["test_presentations"],
            serde_json::json!(["BBB-2013J"]),
            "{models}"
        );
        assert_eq!(
            report["train_presentations"],
            serde_json::json!(["BBB-2013B"])
        );
        // Tonight's snapshot is the champion's own: nothing to compare.
        assert!(
            summary["drift"]["note"]
                .as_str()
                .unwrap()
                .contains("nothing to compare"),
            "{summary}"
        );
        let sent: Value = serde_json::from_str(&body.recv().unwrap()).unwrap();
        assert_eq!(sent["run"], run);
        assert_eq!(sent["registered"]["version"], 1);
        let shown = e.show(run);
        assert!(statuses(&shown).iter().all(|(_, s)| s == "succeeded"));
        for s in shown["steps"].as_array().unwrap() {
            assert_eq!(s["input_hash"].as_str().unwrap().len(), 64);
            assert_eq!(s["output_hash"].as_str().unwrap().len(), 64);
        }

        // The rerun replays every cacheable step and stores nothing twice.
        let toml_text = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(
            &toml,
            toml_text.replace(&format!("webhook = {url:?}\n"), ""),
        )
        .unwrap();
        let (out, doc) = e.run_json(&[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let second = e.show(doc.unwrap()["run"].as_i64().unwrap());
        for step in [
            "features", "train", "evaluate", "register", "score", "drift",
        ] {
            assert_eq!(last_status(&second, step), "cached", "{step}");
        }
        assert_eq!(
            last_status(&second, "gate"),
            "succeeded",
            "the gate always looks"
        );
        assert_eq!(e.registry(), (1, Some(1)));

        // --no-cache recomputes, and the same artifact is still one version.
        let out = e.lodestar(&["pipeline", "run", "--no-cache", "--json"], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let third: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            third["summary"]["score"]["stored"], 0,
            "scored once per version and week"
        );
        let third = e.show(third["run"].as_i64().unwrap());
        assert_eq!(last_status(&third, "train"), "succeeded");
        assert_eq!(
            e.registry(),
            (1, Some(1)),
            "deterministic training, one version"
        );
        let history = e.json(&["pipeline", "history", "--json"]);
        assert_eq!(history.as_array().unwrap().len(), 3);

        // A different population (a synthetic export) drifts from the champion's training data.
        let synthetic = e.dir.path().join("synthetic");
        e.ok(&[
            "generate",
            "--students",
            "800",
            "--out",
            synthetic.to_str().unwrap(),
        ]);
        let out = e.lodestar(
            &[
                "pipeline",
                "run",
                "--json",
                "--export",
                synthetic.to_str().unwrap(),
            ],
            &[],
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let drift = &doc["summary"]["drift"];
        assert_eq!(drift["reference_version"], 1, "{drift}");
        assert!(drift["max_psi"].as_f64().unwrap() > 0.25, "{drift}");
        assert_eq!(drift["flagged"], true, "{drift}");
        assert_eq!(doc["flagged"], true);
    }
}

#[test]
fn the_gate_scores_candidate_and_champion_on_the_same_rows() {
    let e = env("gate_rows", false).unwrap();
    let (out, doc) = e.run_json(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(doc.unwrap()["summary"]["gate"]["promoted"], true);
    // Version 1 was tested on BBB-2013J alone (GGG-2013J was running).
    let stored_n = |week: u64| {
        let models = e.json(&["models", "show", "at-risk", "--json"]);
        models[0]["report"]["weeks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["week"] == week)
            .unwrap()["n"]
            .as_u64()
            .unwrap()
    };
    // The term has ended: the same sample with every outcome in, so tonight's test set is all of
    // 2013J (BBB and GGG). A new seed makes a new candidate, which the gate must compare with the
    // champion scored tonight on those rows, not with the champion's stored report.
    let toml = e.dir.path().join("lodestar.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("[pipeline]\n", "[pipeline]\nseed = 7\n"),
    )
    .unwrap();
    let sample = sample_export();
    let out = e.lodestar(
        &[
            "pipeline",
            "run",
            "--json",
            "--export",
            sample.to_str().unwrap(),
        ],
        &[],
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gate = &doc["summary"]["gate"];
    assert_eq!(gate["candidate"], 2, "{gate}");
    let compared = gate["compared"].as_array().unwrap();
    assert_eq!(compared.len(), 2, "weeks 5 and 10: {gate}");
    for w in compared {
        let week = w["week"].as_u64().unwrap();
        assert_eq!(w["candidate_n"], w["champion_n"], "same rows: {w}");
        assert!(
            w["champion_n"].as_u64().unwrap() > stored_n(week),
            "tonight's rows include GGG-2013J, the stored report's did not: {w}"
        );
        assert!(w["champion"].as_f64().unwrap() > 0.5, "{w}");
    }
    // Nothing is running in this export: nothing scored, and the summary says why.
    let score = &doc["summary"]["score"];
    assert_eq!(score["stored"], 0, "{score}");
    assert!(
        score["notes"][0]
            .as_str()
            .unwrap()
            .contains("no presentation of this export is running"),
        "{score}"
    );
}

#[test]
fn a_panicking_step_is_retried_then_fails_the_run_and_the_next_run_resumes() {
    for e in envs("panic") {
        let (out, doc) = e.run_json(&[("LODESTAR_FAILPOINTS", "evaluate=panic")]);
        assert!(!out.status.success());
        let doc = doc.expect("a failed run still prints its outcome");
        assert_eq!(doc["status"], "failed");
        let error = doc["error"].as_str().unwrap();
        assert!(
            error.contains("step evaluate failed") && error.contains("injected panic"),
            "{error}"
        );
        let run = e.show(doc["run"].as_i64().unwrap());
        let attempts: Vec<_> = statuses(&run)
            .into_iter()
            .filter(|(s, _)| s == "evaluate")
            .collect();
        assert_eq!(attempts.len(), 2, "retried once (attempts = 2)");
        for step in ["register", "gate", "score", "drift"] {
            assert_eq!(last_status(&run, step), "skipped", "{step}");
        }
        assert_eq!(
            last_status(&run, "notify"),
            "succeeded",
            "notify always runs"
        );
        // Nothing half-done is visible: no version, no champion.
        assert_eq!(e.registry(), (0, None));

        // An error on the first attempt only: the retry succeeds.
        let (out, doc) = e.run_json(&[("LODESTAR_FAILPOINTS", "score=error-once")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = e.show(doc.unwrap()["run"].as_i64().unwrap());
        // The failed run's finished steps are reused: it resumes where it failed.
        assert_eq!(last_status(&run, "train"), "cached");
        assert_eq!(last_status(&run, "evaluate"), "succeeded");
        let score: Vec<_> = statuses(&run)
            .into_iter()
            .filter(|(s, _)| s == "score")
            .map(|(_, st)| st)
            .collect();
        assert_eq!(score, ["failed", "succeeded"]);
        assert_eq!(e.registry(), (1, Some(1)));
    }
}

#[test]
fn sigkill_in_the_middle_of_steps_leaves_nothing_duplicated_and_the_next_run_finishes() {
    let mut expected_predictions = None;
    // (kill point, champion right after the kill, predictions the next run stores: all or none)
    for (point, champion_after_kill, next_stores_all) in [
        ("features", None, true),
        ("register:after", None, true),
        ("gate:after", Some(1), true),
        ("score:staged", Some(1), true),
        ("score:before-commit", Some(1), true),
        ("score:after", Some(1), false),
    ] {
        for e in envs(&point.replace([':', '-'], "_")) {
            // Small write transactions, so a kill after the first leaves most rows unwritten.
            let toml = e.dir.path().join("lodestar.toml");
            let text = std::fs::read_to_string(&toml).unwrap();
            std::fs::write(
                &toml,
                text.replace("[pipeline]\n", "[pipeline]\nscore_chunk_rows = 300\n"),
            )
            .unwrap();
            let spec = format!("{point}=kill");
            let (out, _) = e.run_json(&[("LODESTAR_FAILPOINTS", &spec)]);
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{point}: the process must die by SIGKILL: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let (versions, champion) = e.registry();
            assert!(versions <= 1, "{point}: {versions} versions");
            assert_eq!(champion, champion_after_kill, "{point}");

            let (out, doc) = e.run_json(&[]);
            assert!(
                out.status.success(),
                "{point}: the next run must finish: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let doc = doc.unwrap();
            assert_eq!(e.registry(), (1, Some(1)), "{point}");
            let runs = e.json(&["pipeline", "history", "--json"]);
            let killed = &runs.as_array().unwrap()[1];
            assert_eq!(killed["status"], "failed", "{point}");
            assert!(
                killed["error"].as_str().unwrap().contains("interrupted"),
                "{point}: {killed}"
            );
            let stored = doc["summary"]["score"]["stored"].as_u64().unwrap();
            let resumed = doc["summary"]["score"]["timing"]["resumed_after"].as_u64();
            match point {
                // The killed run's staged rows were invisible; the next run took them up.
                "score:staged" => assert_eq!(resumed, Some(300), "{point}"),
                "score:before-commit" => assert_eq!(resumed, Some(stored), "{point}"),
                _ => {}
            }
            // Every prediction the version made is stored once: as many rows as were scored.
            assert_eq!(
                e.count("SELECT COUNT(*) FROM predictions"),
                e.count("SELECT COUNT(*) FROM prediction_rows"),
                "{point}: no staged row left behind"
            );
            if next_stores_all {
                assert!(stored > 0, "{point}");
                let expected = *expected_predictions.get_or_insert(stored);
                assert_eq!(stored, expected, "{point}");
            } else {
                assert_eq!(stored, 0, "{point}: the killed run had committed them");
            }
        }
    }
}

#[test]
fn a_step_past_its_timeout_is_stopped_and_fails_the_run() {
    let Some(e) = env("timeout", false) else {
        return;
    };
    let toml = e.dir.path().join("lodestar.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("[pipeline]\n", "[pipeline]\nstep_timeout_seconds = 1\n"),
    )
    .unwrap();
    let (out, doc) = e.run_json(&[("LODESTAR_FAILPOINTS", "ingest=hang")]);
    assert!(!out.status.success());
    let doc = doc.unwrap();
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("timed out after 1 s"), "{error}");
    let run = e.show(doc["run"].as_i64().unwrap());
    let ingest: Vec<_> = statuses(&run)
        .into_iter()
        .filter(|(s, _)| s == "ingest")
        .map(|(_, st)| st)
        .collect();
    assert_eq!(
        ingest,
        ["failed", "failed"],
        "timed out, retried, timed out"
    );
}

#[test]
fn a_missing_export_fails_at_once_with_its_name() {
    for e in envs("missing") {
        let out = e.lodestar(
            &["pipeline", "run", "--export", "no/such/export", "--json"],
            &[],
        );
        assert!(!out.status.success());
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let error = doc["error"].as_str().unwrap();
        assert!(
            error.contains("no/such/export") && error.contains("does not exist"),
            "{error}"
        );
        let run = e.show(doc["run"].as_i64().unwrap());
        let ingest: Vec<_> = statuses(&run)
            .into_iter()
            .filter(|(s, _)| s == "ingest")
            .collect();
        assert_eq!(ingest.len(), 1, "a missing export is not retried");
    }
}

fn slot_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[test]
fn two_schedulers_started_together_serve_a_missed_slot_once() {
    for e in envs("two_schedulers") {
        let toml = e.dir.path().join("lodestar.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(
            &toml,
            text.replace(
                "[pipeline]\n",
                "[pipeline]\nschedule = \"0 2 * * *\"\ntimezone = \"UTC\"\ninbox_poll_seconds = 1\n",
            ),
        )
        .unwrap();
        e.ok(&["migrate"]);
        // The schedulers last served a slot a week ago: the latest 02:00 is due.
        let now = chrono::Utc::now();
        let today = now.date_naive().and_hms_opt(2, 0, 0).unwrap().and_utc();
        let due = if today <= now {
            today
        } else {
            today - chrono::Duration::days(1)
        };
        let served = due - chrono::Duration::days(7);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&e.database_url).await.unwrap();
            sqlx::query(
                "INSERT INTO pipeline_runs (trigger, status, started_at, finished_at, scheduled_for) \
                 VALUES ('cron', 'succeeded', $1, $1, $2)",
            )
            .bind(slot_text(served))
            .bind(slot_text(served))
            .execute(&pool)
            .await
            .unwrap();
        });
        let start = |n: usize| {
            let log =
                std::fs::File::create(e.dir.path().join(format!("scheduler-{n}.log"))).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
            cmd.current_dir(e.dir.path())
                .args(["scheduler", "--listen", "127.0.0.1:0"]);
            for (key, _) in std::env::vars() {
                if key.starts_with("LODESTAR_") || key == "DATABASE_URL" {
                    cmd.env_remove(key);
                }
            }
            cmd.env("LODESTAR_DATABASE_URL", &e.database_url)
                .env("LODESTAR_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        };
        let mut schedulers = [Service(start(1)), Service(start(2))];
        // Wait for the catch-up run to finish (each poll is a real query, not a fixed sleep).
        let due_text = slot_text(due);
        let mut finished = false;
        for _ in 0..600 {
            let runs = e.json(&["pipeline", "history", "--json"]);
            finished = runs
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["scheduled_for"] == due_text.as_str() && r["status"] != "running");
            if finished {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(finished, "no catch-up run for {due_text}");
        // Stop both gracefully (SIGTERM, as Kubernetes does).
        for s in &mut schedulers {
            assert!(s.stop(), "a scheduler did not stop cleanly");
        }
        let runs = e.json(&["pipeline", "history", "--json"]);
        let for_slot: Vec<_> = runs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["scheduled_for"] == due_text.as_str())
            .collect();
        assert_eq!(for_slot.len(), 1, "{runs}");
        assert_eq!(for_slot[0]["trigger"], "catch-up");
        assert_eq!(for_slot[0]["status"], "succeeded", "{}", for_slot[0]);
        assert_eq!(
            runs.as_array().unwrap().len(),
            2,
            "the seeded run and one catch-up"
        );
    }
}

#[test]
fn the_demo_runs_the_pipeline_and_serves_urls_that_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
    for (key, _) in std::env::vars() {
        if key.starts_with("LODESTAR_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    let mut demo = Service(
        cmd.current_dir(dir.path())
            .env("LODESTAR_LOG", "warn")
            .args(["demo", "--listen", "127.0.0.1:0", "--export"])
            .arg(sample_export())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(demo.0.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let base = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the demo stopped before serving: {printed:#?}"))
            .unwrap();
        if let Some(base) = line.strip_prefix("serving on ") {
            break base.to_owned();
        }
        printed.push(line);
    };
    assert!(
        printed
            .iter()
            .any(|l| l.contains("version 1 promoted to champion")),
        "{printed:#?}"
    );
    assert!(
        printed.iter().any(|l| l.starts_with("scored: ")),
        "{printed:#?}"
    );
    let advisor = printed
        .iter()
        .find_map(|l| l.strip_prefix("demo advisor: advisor / "))
        .unwrap_or_else(|| panic!("no demo advisor credentials: {printed:#?}"));
    let password = advisor.split_whitespace().next().unwrap();
    assert_eq!(password.len(), 16, "{advisor}");
    let urls: Vec<String> = lines
        .by_ref()
        .take(3)
        .map(|l| l.unwrap().split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(urls.len(), 3);
    for url in &urls {
        let path = url.strip_prefix(&base).unwrap();
        let (status, body) = http_get(&base, path);
        assert_eq!(status, 200, "{url}: {body}");
    }
    // The demo token runs the pipeline through the API; the scheduler in the same process
    // takes the queued run at once, and its scores are read back through the API.
    let token = printed
        .iter()
        .find_map(|l| l.strip_prefix("demo API token "))
        .and_then(|l| l.split(": ").nth(1))
        .unwrap_or_else(|| panic!("no demo API token: {printed:#?}"))
        .to_owned();
    let run = run_through_api(&base, &token);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "api");
    // The demo shows a term under way: GGG-2013J as exported on day 76, scored at week 10.
    assert!(
        printed
            .iter()
            .any(|l| l.contains("GGG-2013J shown as the term under way")),
        "{printed:#?}"
    );
    let (_, risk) = riskiest_student(&base, &token, "GGG-2013J");
    assert!(
        risk["current"]["factors_up"][0]["text"].is_string(),
        "{risk}"
    );
    assert_eq!(risk["term"]["state"], "running", "{risk}");
    assert_eq!(risk["term"]["as_of_week"], 10, "{risk}");
    assert_eq!(risk["term"]["as_of_day"], 76, "{risk}");
    let (status, body) = http_get(&base, "/v1/pipeline/runs/999");
    assert_eq!(status, 401, "no token: {body}");
    // The demo advisor signs in to the dashboard and sees the caseload.
    let caseload = dashboard_page(&base, "advisor", password, "/caseload");
    assert!(
        caseload.contains("riskiest first")
            && caseload.contains("href=\"/students/GGG-2013J/")
            && caseload.contains("running, as of day 76, week 10 of 38"),
        "{caseload}"
    );
    // The demo admin sees the latest run as the notify step summarised it.
    let admin = printed
        .iter()
        .find_map(|l| l.strip_prefix("demo admin: admin / "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no demo admin: {printed:#?}"));
    let models = dashboard_page(&base, "admin", admin, "/models");
    assert!(
        models.contains("Latest pipeline run")
            && models.contains("Scored: ")
            && models.contains("GGG-2013J (running, as of day 76): "),
        "{models}"
    );
    assert!(demo.stop());
    assert!(dir.path().join("lodestar-data/lodestar.db").is_file());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn an_export_renamed_into_the_inbox_starts_one_run() {
    let Some(e) = env("inbox", false) else {
        return;
    };
    let toml = e.dir.path().join("lodestar.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("[pipeline]\n", "[pipeline]\ninbox_poll_seconds = 1\n"),
    )
    .unwrap();
    let inbox = e.dir.path().join("lodestar-data/inbox");
    // Being written: a hidden name, which the scheduler leaves alone.
    copy_dir(&sample_export(), &inbox.join(".incoming-2013"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
    for (key, _) in std::env::vars() {
        if key.starts_with("LODESTAR_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    let mut scheduler = Service(
        cmd.current_dir(e.dir.path())
            .env("LODESTAR_DATABASE_URL", &e.database_url)
            .env("LODESTAR_LOG", "warn")
            .args(["scheduler", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Complete: renamed into place.
    std::fs::rename(inbox.join(".incoming-2013"), inbox.join("export-2013")).unwrap();
    let mut run = None;
    for _ in 0..600 {
        let runs = e.json(&["pipeline", "history", "--json"]);
        run = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["trigger"] == "inbox" && r["status"] != "running")
            .cloned();
        if run.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(scheduler.stop());
    let run = run.expect("no inbox run");
    assert_eq!(run["status"], "succeeded", "{run}");
    // The export moved to the landed exports, so it starts no second run.
    let landed = run["export"].as_str().unwrap();
    assert!(
        landed.contains("lodestar-data/exports/") && landed.ends_with("-export-2013"),
        "{landed}"
    );
    assert!(Path::new(landed).join("studentInfo.csv").is_file());
    assert!(std::fs::read_dir(&inbox).unwrap().next().is_none());
    let runs = e.json(&["pipeline", "history", "--json"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
}
