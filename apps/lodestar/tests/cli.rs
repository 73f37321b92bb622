//! The `lodestar` binary as a user runs it: configuration precedence and redaction, clear errors
//! for bad configuration, and `generate` end to end.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the binary in `dir` with a clean `LODESTAR_*` environment plus `env`.
fn lodestar(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
    cmd.current_dir(dir).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("LODESTAR_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run lodestar")
}

fn config_json(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["config", "--json"];
    all.extend_from_slice(args);
    let out = lodestar(dir, &all, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("config --json prints JSON")
}

fn setting<'a>(config: &'a Value, name: &str) -> (&'a str, &'a str) {
    let s = &config[name];
    (
        s["value"].as_str().unwrap(),
        s["source"]["kind"].as_str().unwrap(),
    )
}

#[test]
fn flags_beat_environment_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(
        setting(&config_json(d, &[], &[]), "data_dir"),
        ("lodestar-data", "default")
    );

    fs::write(
        d.join("lodestar.toml"),
        "data_dir = \"from-file\"\nlog = \"warn\"\n",
    )
    .unwrap();
    let c = config_json(d, &[], &[]);
    assert_eq!(setting(&c, "data_dir"), ("from-file", "file"));
    assert_eq!(setting(&c, "log"), ("warn", "file"));
    assert_eq!(
        setting(&c, "snapshot_dir"),
        ("from-file/snapshots", "data_dir")
    );

    let env = [("LODESTAR_DATA_DIR", "from-env")];
    let c = config_json(d, &[], &env);
    assert_eq!(setting(&c, "data_dir"), ("from-env", "env"));
    assert_eq!(
        setting(&c, "log"),
        ("warn", "file"),
        "a setting not in the environment still comes from the file"
    );

    let c = config_json(d, &["--data-dir", "from-flag"], &env);
    assert_eq!(setting(&c, "data_dir"), ("from-flag", "flag"));
    // The database lives in the data directory unless configured.
    assert_eq!(
        setting(&c, "database_url"),
        ("sqlite://from-flag/lodestar.db?mode=rwc", "data_dir")
    );
}

#[test]
fn an_explicit_config_file_resolves_relative_paths_against_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    fs::create_dir(&etc).unwrap();
    fs::write(
        etc.join("site.toml"),
        "data_dir = \"data\"\nlog_format = \"json\"\n",
    )
    .unwrap();
    let c = config_json(dir.path(), &[], &[("LODESTAR_CONFIG", "etc/site.toml")]);
    assert_eq!(setting(&c, "data_dir"), ("etc/data", "file"));
    assert_eq!(setting(&c, "log_format"), ("json", "file"));
}

#[test]
fn database_url_is_read_too_but_lodestar_database_url_wins() {
    let dir = tempfile::tempdir().unwrap();
    let generic = [("DATABASE_URL", "postgres://u@db/generic")];
    let c = config_json(dir.path(), &[], &generic);
    assert_eq!(
        setting(&c, "database_url"),
        ("postgres://u@db/generic", "env")
    );
    assert_eq!(c["database_url"]["source"]["name"], "DATABASE_URL");
    let both = [
        ("DATABASE_URL", "postgres://u@db/generic"),
        ("LODESTAR_DATABASE_URL", "postgres://u@db/ours"),
    ];
    let c = config_json(dir.path(), &[], &both);
    assert_eq!(setting(&c, "database_url"), ("postgres://u@db/ours", "env"));
}

#[test]
fn the_database_url_can_come_from_a_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database_url");
    std::fs::write(&file, "postgres://lodestar:hunter2@db:5432/lodestar\n").unwrap();
    let path = file.display().to_string();
    let from_file = [("LODESTAR_DATABASE_URL_FILE", path.as_str())];
    let c = config_json(dir.path(), &[], &from_file);
    assert_eq!(
        setting(&c, "database_url"),
        ("postgres://lodestar:***@db:5432/lodestar", "env")
    );
    assert_eq!(
        c["database_url"]["source"]["name"],
        "LODESTAR_DATABASE_URL_FILE"
    );
    // The URL itself wins over the file, and the file over DATABASE_URL.
    let c = config_json(
        dir.path(),
        &[],
        &[
            ("LODESTAR_DATABASE_URL_FILE", path.as_str()),
            ("LODESTAR_DATABASE_URL", "postgres://u@db/ours"),
        ],
    );
    assert_eq!(setting(&c, "database_url"), ("postgres://u@db/ours", "env"));
    let c = config_json(
        dir.path(),
        &[],
        &[
            ("LODESTAR_DATABASE_URL_FILE", path.as_str()),
            ("DATABASE_URL", "postgres://u@db/generic"),
        ],
    );
    assert_eq!(
        c["database_url"]["source"]["name"],
        "LODESTAR_DATABASE_URL_FILE"
    );
    // A missing or empty file is named; its content never is.
    for (content, expected) in [
        (None, "reading the database URL from"),
        (Some(" \n"), "is empty"),
    ] {
        let file = dir.path().join("other");
        let _ = std::fs::remove_file(&file);
        if let Some(content) = content {
            std::fs::write(&file, content).unwrap();
        }
        let other = file.display().to_string();
        let out = lodestar(
            dir.path(),
            &["config"],
            &[("LODESTAR_DATABASE_URL_FILE", other.as_str())],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(expected) && stderr.contains(&other),
            "{stderr}"
        );
    }
}

#[test]
fn secrets_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://lodestar:hunter2@db.example:5432/lodestar";
    for args in [vec!["config"], vec!["config", "--json"]] {
        let out = lodestar(dir.path(), &args, &[("LODESTAR_DATABASE_URL", url)]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success());
        assert!(!stdout.contains("hunter2"), "{stdout}");
        assert!(
            stdout.contains("postgres://lodestar:***@db.example:5432/lodestar"),
            "{stdout}"
        );
    }
    // Nor does clap's help show the environment's value.
    let out = lodestar(dir.path(), &["--help"], &[("LODESTAR_DATABASE_URL", url)]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}

#[test]
fn bad_configuration_is_named_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("lodestar.toml"),
        "data_dir = \"d\"\nlog_fromat = \"json\"\n",
    )
    .unwrap();
    let out = lodestar(dir.path(), &["config"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("lodestar.toml") && err.contains("line 2") && err.contains("log_fromat"),
        "{err}"
    );

    let out = lodestar(dir.path(), &["--config", "missing.toml", "config"], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    fs::remove_file(dir.path().join("lodestar.toml")).unwrap();
    let out = lodestar(
        dir.path(),
        &["config"],
        &[("LODESTAR_DATABASE_URL", "mysql://x")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("LODESTAR_DATABASE_URL"),
        "{err}"
    );
}

#[test]
fn generate_writes_an_export_and_reports_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let out = lodestar(
        dir.path(),
        &[
            "generate",
            "--students",
            "120",
            "--presentations",
            "2",
            "--seed",
            "9",
            "--json",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The default destination is under the data directory.
    let export = dir.path().join("lodestar-data/exports/synthetic");
    for (table, rows) in report["rows"].as_object().unwrap() {
        let text = fs::read_to_string(export.join(format!("{table}.csv"))).unwrap();
        assert_eq!(
            text.lines().count() as u64 - 1,
            rows.as_u64().unwrap(),
            "{table}"
        );
    }
    assert_eq!(report["rows"]["studentInfo"], 120);

    let out = lodestar(dir.path(), &["generate", "--students", "0"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--students"));
}

#[test]
fn ingest_builds_a_snapshot_from_a_generated_export_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = lodestar(
        d,
        &[
            "generate",
            "--students",
            "60",
            "--presentations",
            "2",
            "--out",
            "export",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = lodestar(d, &["ingest", "--export", "export", "--json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    for t in manifest["tables"].as_array().unwrap() {
        let (read, accepted, quarantined) = (
            t["read"].as_u64(),
            t["accepted"].as_u64(),
            t["quarantined"].as_u64(),
        );
        assert_eq!(read, Some(accepted.unwrap() + quarantined.unwrap()), "{t}");
    }
    assert_eq!(manifest["student_presentations"], 60);
    let id = manifest["snapshot_id"].as_str().unwrap();
    let snapshot = d.join("lodestar-data/snapshots").join(id);
    assert!(
        snapshot.join("features.parquet").is_file() && snapshot.join("quarantine.csv").is_file()
    );

    let out = lodestar(d, &["ingest", "--export", "export"], &[]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && summary.contains("reusing snapshot") && summary.contains(id),
        "{summary}"
    );

    let out = lodestar(d, &["ingest", "--export", "nowhere"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nowhere") && err.contains("courses"),
        "{err}"
    );
}

#[test]
fn the_registry_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let report = |auc: f64| {
        let weeks: Vec<Value> = [5, 10, 20]
            .iter()
            .map(|w| {
                serde_json::json!({"week": w, "n": 100, "positives": 40, "roc_auc": auc, "pr_auc": 0.6,
                    "brier": 0.2, "ece": 0.03, "f1": 0.6, "precision": 0.6, "recall": 0.6})
            })
            .collect();
        serde_json::json!({
            "model": "logistic", "protocol": "temporal", "train_presentations": ["BBB-2013B"],
            "test_presentations": ["BBB-2013J"], "weeks": weeks, "fairness": []
        })
    };
    for (i, auc) in [(1, 0.80), (2, 0.86), (3, 0.861)] {
        fs::write(d.join(format!("r{i}.json")), report(auc).to_string()).unwrap();
        fs::write(d.join(format!("a{i}.bin")), format!("weights {i}")).unwrap();
        let (artifact, report) = (format!("a{i}.bin"), format!("r{i}.json"));
        let out = lodestar(
            d,
            &[
                "models",
                "register",
                "--name",
                "at-risk",
                "--artifact",
                &artifact,
                "--report",
                &report,
                "--snapshot",
                "cfb2319c",
                "--seed",
                "7",
                "--training-config",
                "{\"l2\": 1}",
                "--actor",
                "ci",
            ],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ok = |args: &[&str]| {
        let out = lodestar(d, args, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let moved: Value = serde_json::from_str(&ok(&[
        "models", "promote", "at-risk", "1", "--actor", "ci", "--json",
    ]))
    .unwrap();
    assert_eq!(
        (
            moved["kind"].as_str(),
            moved["to_version"].as_i64(),
            moved["actor"].as_str()
        ),
        (Some("promote"), Some(1), Some("ci"))
    );
    ok(&[
        "models", "promote", "at-risk", "2", "--margin", "0.01", "--actor", "ci",
    ]);
    let refused = lodestar(
        d,
        &["models", "promote", "at-risk", "3", "--margin", "0.01"],
        &[],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("promotion refused")
            && err.contains("does not beat"),
        "{err}"
    );
    let show: Value = serde_json::from_str(&ok(&["models", "show", "at-risk", "--json"])).unwrap();
    assert_eq!(show[1]["aliases"], serde_json::json!(["champion"]));
    assert_eq!(show[0]["artifact"]["status"], "ok");
    ok(&[
        "models",
        "rollback",
        "at-risk",
        "--reason",
        "too many flags",
        "--actor",
        "ci",
    ]);
    let history: Value =
        serde_json::from_str(&ok(&["models", "history", "at-risk", "--json"])).unwrap();
    let kinds: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["promote", "promote", "rollback"]);
    let card = ok(&["models", "card", "at-risk", "1"]);
    assert!(
        card.contains("# Model card: at-risk version 1")
            && card.contains("Currently holds: champion"),
        "{card}"
    );
}

#[test]
fn train_registers_an_evaluated_artifact_and_evaluate_names_bad_presentations() {
    let dir = tempfile::tempdir().unwrap();
    let export = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-samples/oulad");
    let export = export.to_str().unwrap();
    std::fs::write(
        dir.path().join("small.json"),
        r#"{"logistic": {"max_iterations": 50}}"#,
    )
    .unwrap();
    let out = lodestar(
        dir.path(),
        &[
            "train",
            "--export",
            export,
            "--model",
            "logistic",
            "--hyperparameters",
            "small.json",
            "--out",
            "model.json",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("registered at-risk version 1"), "{stdout}");
    let artifact: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("model.json")).unwrap()).unwrap();
    assert_eq!(artifact["family"], "logistic");
    assert_eq!(artifact["lineage"]["fit_presentations"][0], "BBB-2013B");
    let show = lodestar(dir.path(), &["models", "show", "at-risk", "--json"], &[]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("\"week\": 20") && shown.contains("temporal"),
        "{shown}"
    );

    let bad = lodestar(
        dir.path(),
        &[
            "evaluate", "--export", export, "--train", "2014B", "--test", "2013J",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("no presentation \"2014B\"") && err.contains("BBB-2013B"),
        "{err}"
    );
    let bad = lodestar(
        dir.path(),
        &["train", "--hyperparameters", "nope.json"],
        &[],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope.json"));
    let bad = lodestar(dir.path(), &["train", "--device", "wgpu"], &[]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("built without the wgpu backend"), "{err}");
    std::fs::write(dir.path().join("bad.json"), r#"{"forest": {"trees": 0}}"#).unwrap();
    let bad = lodestar(dir.path(), &["train", "--hyperparameters", "bad.json"], &[]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("forest.trees must be 1..=2000"), "{err}");
}

#[test]
fn a_gpu_pipeline_run_on_a_cpu_build_says_how_to_get_one() {
    if cfg!(feature = "wgpu") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = lodestar(
        dir.path(),
        &["pipeline", "run", "--device", "wgpu", "--export", "nowhere"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("pipeline.device") && stderr.contains("--features wgpu"),
        "{stderr}"
    );
}

#[test]
fn ingest_names_a_source_format_that_does_not_match_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let xapi = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-samples/xapi/course.toml");
    let out = lodestar(
        dir.path(),
        &[
            "ingest",
            "--format",
            "moodle",
            "--export",
            &xapi.display().to_string(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("declares format = \"xapi\", not \"moodle\": run with --format xapi"),
        "{stderr}"
    );
}

/// Runs the binary and returns its stdout, failing the test on a non-zero exit.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lodestar(dir, args, &[]);
    assert!(
        out.status.success(),
        "lodestar {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_mid_term_export_ingests_every_running_student_up_to_the_current_week() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-samples/oulad");
    let said = ok(
        d,
        &[
            "cut",
            "--export",
            sample.to_str().unwrap(),
            "--running",
            "GGG-2013J",
            "--as-of-day",
            "76",
            "--out",
            "mid-term",
            "--outcomes",
            "outcomes.csv",
        ],
    );
    assert!(said.contains("GGG-2013J"), "{said}");
    assert_eq!(
        fs::read_to_string(d.join("outcomes.csv"))
            .unwrap()
            .lines()
            .count(),
        1 + 952,
        "every removed outcome kept aside"
    );

    let manifest: Value =
        serde_json::from_str(&ok(d, &["ingest", "--export", "mid-term", "--json"])).unwrap();
    assert_eq!(
        manifest["quarantined_rows"], 0,
        "no running student quarantined"
    );
    let terms = manifest["terms"].as_array().unwrap();
    let ggg = terms
        .iter()
        .find(|t| t["presentation"] == "GGG-2013J")
        .unwrap();
    assert_eq!(ggg["state"], "running", "{ggg}");
    assert_eq!(ggg["current_week"], 10, "{ggg}");
    assert_eq!(ggg["students"], 952);
    assert_eq!(ggg["outcomes_known"], 0);
    // Weeks 0-34 of BBB-2013B, 0-38 of BBB-2013J, and only 0-10 of the running GGG-2013J
    // (a finished GGG-2013J has 38 weeks): no row lies beyond the current week.
    assert_eq!(manifest["feature_rows"], 890 * 35 + 1130 * 39 + 952 * 11);
    let summary = ok(d, &["ingest", "--export", "mid-term"]);
    assert!(
        summary.contains("GGG-2013J: running, as of day 76, week 10 of 38")
            && summary.contains("952 of 952 students without an outcome yet"),
        "{summary}"
    );

    // An as-of day the institution gives refuses what is dated after it, with the reason.
    let summary = ok(d, &["ingest", "--export", "mid-term", "--as-of-day", "60"]);
    assert!(
        summary.contains("GGG-2013J: running, as of day 60, week 7 of 38"),
        "{summary}"
    );
    let manifest: Value = serde_json::from_str(&ok(
        d,
        &[
            "ingest",
            "--export",
            "mid-term",
            "--as-of-day",
            "60",
            "--json",
        ],
    ))
    .unwrap();
    let id = manifest["snapshot_id"].as_str().unwrap();
    let quarantine = fs::read_to_string(
        d.join("lodestar-data/snapshots")
            .join(id)
            .join("quarantine.csv"),
    )
    .unwrap();
    assert!(manifest["quarantined_rows"].as_u64().unwrap() > 0);
    assert!(
        quarantine
            .lines()
            .skip(1)
            .all(|l| l.contains("is after the export's as-of day 60")),
        "{}",
        &quarantine[..quarantine.len().min(2000)]
    );
    // A calendar date is for sources with dates; an OULAD-schema export counts days.
    let out = lodestar(
        d,
        &["ingest", "--export", "mid-term", "--as-of", "2024-11-05"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--as-of-day"),
        "{err}"
    );
}

#[test]
fn generate_writes_a_running_term_that_ingests_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "generate",
            "--students",
            "120",
            "--presentations",
            "2",
            "--running-day",
            "40",
            "--out",
            "export",
        ],
    );
    let manifest: Value =
        serde_json::from_str(&ok(d, &["ingest", "--export", "export", "--json"])).unwrap();
    assert_eq!(manifest["quarantined_rows"], 0);
    let terms = manifest["terms"].as_array().unwrap();
    let running: Vec<&Value> = terms.iter().filter(|t| t["state"] == "running").collect();
    assert_eq!(
        running.len(),
        1,
        "the latest presentation is under way: {terms:?}"
    );
    assert!(running[0]["as_of_day"].as_i64().unwrap() <= 40, "{terms:?}");
    assert_eq!(running[0]["outcomes_known"], 0);
}
