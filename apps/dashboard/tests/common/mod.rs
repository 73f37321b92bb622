//! A fresh store with users, caseloads and scored students, and the dashboard serving it on
//! port 0; a small cookie-keeping client that signs in through the real form.

#![allow(dead_code, unreachable_pub)]

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use lodestar_dashboard::{Dashboard, DashboardConfig};
use lodestar_domain::{AsOfSource, PresentationTerm, TermState};
use lodestar_store::{NewPrediction, Store};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery";

pub struct TestDashboard {
    pub base: String,
    pub store: Store,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestDashboard {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn hash(password: &str) -> String {
    let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn prediction(student: i64, week: i64, p: f64) -> NewPrediction {
    scored("2013J", student, week, p)
}

/// A score of `student` in BBB-`code` at `week`, with an explanation and context.
pub fn scored(code: &str, student: i64, week: i64, p: f64) -> NewPrediction {
    let tier = lodestar_domain::TierThresholds::default()
        .tier(p)
        .as_str()
        .to_owned();
    NewPrediction {
        model: "at-risk".into(),
        version: 1,
        code_module: "BBB".into(),
        code_presentation: code.into(),
        id_student: student,
        as_of_week: week,
        probability: p,
        tier,
        explanation: json!({
            "up": [{"feature": "days_since_last_activity", "value": 12.0, "typical": 2.0, "contribution": 1.2, "text": "no activity for 12 days (typical: 2)"}],
            "down": [{"feature": "score_mean", "value": 71.0, "typical": 68.0, "contribution": -0.3, "text": "mean score 71 (typical: 68)"}],
            "flagged": p >= 0.5,
        }),
        run_id: None,
        context: json!({"clicks_this_week": 3.0 * week as f64, "active_days_this_week": 2.0, "days_since_last_activity": 12.0, "assessments_due": 2.0, "assessments_submitted": 1.0, "assessments_missing": 1.0, "assessments_late": 0.0, "score_mean": 71.0}),
    }
}

/// BBB-`code` as the export left it: running as of `as_of_day` (its current week the last one
/// complete then), or finished; 269 days long.
pub fn term(code: &str, state: TermState, as_of_day: i32) -> PresentationTerm {
    match state {
        TermState::Running => PresentationTerm::running(
            format!("BBB-{code}"),
            269,
            as_of_day,
            AsOfSource::LatestActivity,
            4,
            0,
        ),
        TermState::Finished => PresentationTerm {
            as_of_day,
            ..PresentationTerm::finished(format!("BBB-{code}"), 269, 4)
        },
    }
}

/// Users `ada` and `bob` (advisors) and `root` (admin), all with [`PASSWORD`]; BBB-2013J
/// running as of day 27 (week 3 current); students 11 and 13 in ada's caseload, 12 in bob's;
/// each scored at weeks 1 to 3; and 14, ada's too, scored at weeks 1 and 2 only (withdrawn).
pub async fn start(config: DashboardConfig) -> TestDashboard {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("lodestar.db").display()
    );
    let store = Store::connect(&url).await.unwrap();
    let h = hash(PASSWORD);
    let ada = store.create_user("ada", "advisor", &h).await.unwrap();
    let bob = store.create_user("bob", "advisor", &h).await.unwrap();
    store.create_user("root", "admin", &h).await.unwrap();
    let mut rows = Vec::new();
    for (student, probs) in [
        (11, [0.2, 0.35, 0.82]),
        (12, [0.5, 0.6, 0.7]),
        (13, [0.1, 0.1, 0.12]),
    ] {
        for (w, p) in probs.iter().enumerate() {
            rows.push(prediction(student, w as i64 + 1, *p));
        }
    }
    // Student 14 withdrew after week 2: no longer anyone's call this week.
    rows.push(prediction(14, 1, 0.8));
    rows.push(prediction(14, 2, 0.9));
    store.insert_predictions(&rows).await.unwrap();
    store.assign(ada, "BBB", "2013J", 14).await.unwrap();
    store.assign(ada, "BBB", "2013J", 11).await.unwrap();
    store.assign(ada, "BBB", "2013J", 13).await.unwrap();
    store.assign(bob, "BBB", "2013J", 12).await.unwrap();
    store
        .record_terms(&[term("2013J", TermState::Running, 27)], "fixture")
        .await
        .unwrap();
    let dashboard = Dashboard::new(store.clone(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dashboard.serve(listener, async move {
        let _ = stopped.await;
    }));
    TestDashboard {
        base,
        store,
        dir,
        stop: Some(stop),
    }
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

/// A response, read.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&mut self, r: reqwest::Response) -> Page {
        for v in r.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap();
            let (kv, _) = text.split_once(';').unwrap_or((text, ""));
            let (k, val) = kv.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !val.is_empty() && !text.contains("Max-Age=0") {
                self.cookies.push((k.to_owned(), val.to_owned()));
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.read(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.read(r).await
    }

    /// The CSRF token in a page's forms.
    pub fn csrf(page: &Page) -> String {
        let at = page
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token")
            + 19;
        page.body[at..at + 64].to_owned()
    }

    /// Signs in through the form; returns the sign-in response.
    pub async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let form = self.get("/signin").await;
        let csrf = Client::csrf(&form);
        self.post(
            "/signin",
            &[("username", user), ("password", password), ("csrf", &csrf)],
        )
        .await
    }
}

pub fn value(v: &str) -> Value {
    serde_json::from_str(v).unwrap()
}
