//! What the binary's black-box tests share: a data folder and database per test (SQLite, and
//! PostgreSQL when `LODESTAR_TEST_POSTGRES_URL` is set), the `lodestar` command in it, service
//! processes stopped as Kubernetes stops them, and raw HTTP/1.1 exchanges (the dashboard's
//! sign-in form included).
#![allow(dead_code, reason = "each test file uses a part of these helpers")]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub(crate) fn sample_export() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-samples/oulad")
}

/// The running term of the fixtures: the genuine sample's GGG-2013J, exported on day 76 (its
/// week 10 complete).
pub(crate) const RUNNING: &str = "GGG-2013J";
/// The day the running fixture is exported on.
pub(crate) const RUNNING_AS_OF_DAY: i32 = 76;
/// Its current week: the last week complete on day 76 (cutoff 7k+6 = 76).
pub(crate) const RUNNING_WEEK: u16 = 10;

/// The mixed fixture: the genuine sample with [`RUNNING`] cut as a term under way on
/// [`RUNNING_AS_OF_DAY`] (outcomes removed, later clicks, submissions and unregistrations
/// dropped), BBB-2013B and BBB-2013J finished. Written to `dir/export`; the removed outcomes to
/// `dir/outcomes.csv`.
pub(crate) fn running_export(dir: &Path) -> PathBuf {
    let out = dir.join("export");
    if !out.is_dir() {
        lodestar_samples::cut::cut_running(
            &sample_export(),
            &out,
            &[RUNNING.to_owned()],
            RUNNING_AS_OF_DAY,
            Some(&dir.join("outcomes.csv")),
        )
        .expect("cutting the running fixture");
    }
    out
}

/// A data folder and database for one test.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) database_url: String,
    /// PostgreSQL: (admin URL, schema) to drop at the end.
    schema: Option<(String, String)>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((admin, schema)) = &self.schema {
            let _ = Command::new("psql")
                .args([
                    admin.as_str(),
                    "-q",
                    "-c",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .output();
        }
    }
}

pub(crate) const CONFIG: &str = r#"
[pipeline]
family = "logistic"
weeks = [5, 10]
backoff_ms = 1
attempts = 2

[pipeline.gate]
metric = "roc_auc"
margin = 0.0
weeks = [5, 10]
max_ece = 0.3
max_fairness_gap = 1.0
"#;

pub(crate) fn env(name: &str, postgres: bool) -> Option<Env> {
    let dir = tempfile::tempdir().unwrap();
    let (database_url, schema) = if postgres {
        let Ok(admin) = std::env::var("LODESTAR_TEST_POSTGRES_URL") else {
            // CI sets LODESTAR_REQUIRE_POSTGRES: there a missing database fails, never skips.
            assert!(
                std::env::var_os("LODESTAR_REQUIRE_POSTGRES").is_none(),
                "LODESTAR_REQUIRE_POSTGRES is set (CI sets it) but LODESTAR_TEST_POSTGRES_URL is not"
            );
            return None;
        };
        let schema = format!("pipeline_{name}_{}", std::process::id());
        let made = Command::new("psql")
            .args([
                admin.as_str(),
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
            ])
            .output()
            .expect("psql");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let sep = if admin.contains('?') { '&' } else { '?' };
        (
            format!("{admin}{sep}options=-c%20search_path%3D{schema}"),
            Some((admin, schema)),
        )
    } else {
        (
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("lodestar.db").display()
            ),
            None,
        )
    };
    let config = CONFIG.replace(
        "[pipeline]\n",
        &format!(
            "[pipeline]\nexport = {:?}\n",
            running_export(dir.path()).display().to_string()
        ),
    );
    std::fs::write(dir.path().join("lodestar.toml"), config).unwrap();
    Some(Env {
        dir,
        database_url,
        schema,
    })
}

/// Both backends this run can reach.
pub(crate) fn envs(name: &str) -> Vec<Env> {
    [false, true]
        .into_iter()
        .filter_map(|pg| env(name, pg))
        .collect()
}

impl Env {
    pub(crate) fn lodestar(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
        cmd.current_dir(self.dir.path()).args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("LODESTAR_") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        cmd.env("LODESTAR_DATABASE_URL", &self.database_url)
            .env("LODESTAR_LOG", "warn")
            .envs(extra.iter().copied());
        cmd.output().expect("run lodestar")
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.lodestar(args, &[]);
        assert!(
            out.status.success(),
            "lodestar {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON")
    }

    pub(crate) fn run_json(&self, extra: &[(&str, &str)]) -> (Output, Option<Value>) {
        let out = self.lodestar(&["pipeline", "run", "--json"], extra);
        let doc = serde_json::from_slice(&out.stdout).ok();
        (out, doc)
    }

    /// Versions of `at-risk` and its champion.
    pub(crate) fn registry(&self) -> (u64, Option<i64>) {
        let list = self.json(&["models", "list", "--json"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "at-risk")
            .map_or((0, None), |m| {
                (m["versions"].as_u64().unwrap(), m["champion"].as_i64())
            })
    }

    /// Creates the dashboard user `advisor` with `presentation` as caseload; returns its password.
    pub(crate) fn advisor(&self, presentation: &str) -> String {
        let made = self.ok(&["users", "create", "--name", "advisor", "--role", "advisor"]);
        let password = made.split("shown once: ").nth(1).unwrap().trim().to_owned();
        self.ok(&[
            "users",
            "assign",
            "--name",
            "advisor",
            "--presentation",
            presentation,
        ]);
        password
    }

    /// The one number a query gives, asked of the environment's database.
    #[allow(dead_code)]
    pub(crate) fn count(&self, sql: &'static str) -> i64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&self.database_url).await.unwrap();
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        })
    }

    pub(crate) fn show(&self, run: i64) -> Value {
        self.json(&["pipeline", "show", &run.to_string(), "--json"])
    }
}

/// A service process, killed if the test ends before it stops.
pub(crate) struct Service(pub(crate) std::process::Child);

impl Service {
    /// SIGTERM, as Kubernetes sends, and whether it then exited cleanly.
    pub(crate) fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        self.0.wait().unwrap().success()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn http_get(base: &str, path: &str) -> (u16, String) {
    http(base, "GET", path, None, None)
}

/// One raw HTTP/1.1 exchange: the whole response.
pub(crate) fn exchange(base: &str, request: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

pub(crate) fn set_cookie<'a>(response: &'a str, name: &str) -> &'a str {
    response
        .lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {response}"))
}

/// Signs in through the dashboard's form as a browser would and returns the page at `path`.
pub(crate) fn dashboard_page(base: &str, user: &str, password: &str, path: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let form = exchange(
        base,
        &format!("GET /signin HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    let token = set_cookie(&form, "lodestar_signin").to_owned();
    let body = format!("username={user}&password={password}&csrf={token}");
    let signed = exchange(
        base,
        &format!(
            "POST /signin HTTP/1.1\r\nHost: {addr}\r\nCookie: lodestar_signin={token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(signed.starts_with("HTTP/1.1 303"), "{signed}");
    let session = set_cookie(&signed, "lodestar_session").to_owned();
    exchange(
        base,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: lodestar_session={session}\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// One HTTP/1.1 request, with a bearer token and a JSON body when given.
pub(crate) fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Queues a pipeline run through the API and waits for it to end; returns the run.
pub(crate) fn run_through_api(base: &str, token: &str) -> Value {
    let (status, body) = http(base, "POST", "/v1/pipeline/runs", Some(token), None);
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let (status, body) = http(
            base,
            "GET",
            &format!("/v1/pipeline/runs/{id}"),
            Some(token),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let run: Value = serde_json::from_str(&body).unwrap();
        if run["status"] != "queued" && run["status"] != "running" {
            return run;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(600),
            "run {id} still {} after 10 minutes",
            run["status"]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The riskiest student of `presentation` by the API's cohort route, and their stored risk.
pub(crate) fn riskiest_student(base: &str, token: &str, presentation: &str) -> (i64, Value) {
    let (status, body) = http(
        base,
        "GET",
        &format!("/v1/cohorts/{presentation}/risk?per_page=1"),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let student = serde_json::from_str::<Value>(&body).unwrap()["students"][0]["id_student"]
        .as_i64()
        .unwrap();
    let (status, body) = http(
        base,
        "GET",
        &format!("/v1/students/{student}/risk"),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    (student, serde_json::from_str(&body).unwrap())
}

/// Starts `lodestar <service> --listen 127.0.0.1:0` with its own data folder and returns it with
/// the address it printed.
pub(crate) fn start(
    env: &Env,
    service: &str,
    config: &Path,
    extra: &[(&str, &str)],
) -> (Service, String) {
    let data = env.dir.path().join(service);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodestar"));
    for (key, _) in std::env::vars() {
        if key.starts_with("LODESTAR_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .current_dir(env.dir.path())
        .env("LODESTAR_CONFIG", config)
        .env("LODESTAR_DATA_DIR", &data)
        .env("LODESTAR_ARTIFACT_STORE", env.dir.path().join("artifacts"))
        .env("LODESTAR_LOG", "warn")
        .envs(extra.iter().copied())
        .args([service, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let service_process = Service(child);
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("lodestar {service} stopped before serving"))
            .unwrap();
        if let Some(rest) = line.strip_prefix("serving ") {
            break rest.rsplit(' ').next().unwrap().to_owned();
        }
    };
    // Keep reading so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (service_process, base)
}

/// `lodestar healthcheck` against a service: (exit status, what it printed).
pub(crate) fn healthcheck(base: &str, path: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lodestar"))
        .env_remove("LODESTAR_CONFIG")
        .args([
            "healthcheck",
            "--listen",
            base.trim_start_matches("http://"),
            "--path",
            path,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
