//! The dashboard in a real headless browser (Debian's chromium through chromedriver, driven over
//! WebDriver): sign in, open the caseload, open a student, add an outreach note, press a
//! feedback button. Screenshots go to `target/dashboard-screenshots/`. Without chromedriver the
//! test says it is skipped, unless `LODESTAR_REQUIRE_BROWSER` is set (CI sets it) and it fails.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use lodestar_dashboard::DashboardConfig;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisor_signs_in_opens_a_student_writes_a_note_and_gives_feedback() {
    let Some(driver) = chromedriver() else {
        assert!(
            std::env::var_os("LODESTAR_REQUIRE_BROWSER").is_none(),
            "LODESTAR_REQUIRE_BROWSER is set but chromedriver is not installed (Debian: chromium-driver)"
        );
        eprintln!(
            "browser test skipped: chromedriver not found (Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Driver(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = common::start(DashboardConfig::default()).await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"]}),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromium session");
    let shots = screenshots();
    let result = async {
        c.goto(&format!("{}/caseload", d.base)).await?;
        assert!(
            c.current_url().await?.path().ends_with("/signin"),
            "sign-in first"
        );
        c.find(Locator::Css("#username"))
            .await?
            .send_keys("ada")
            .await?;
        c.find(Locator::Css("#password"))
            .await?
            .send_keys(common::PASSWORD)
            .await?;
        c.find(Locator::Css("main button[type=submit]"))
            .await?
            .click()
            .await?;
        // The click returns when the form is sent; the caseload arrives with the redirect.
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("table"))
            .await?;
        let url = c.current_url().await?;
        assert!(url.path().ends_with("/caseload"), "{url}");
        let table = c.find(Locator::Css("table")).await?.text().await?;
        assert!(table.contains("no activity for 12 days"), "{table}");
        std::fs::write(shots.join("caseload.png"), c.screenshot().await?).unwrap();

        c.find(Locator::Css("a[href='/students/BBB-2013J/11']"))
            .await?
            .click()
            .await?;
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#notes"))
            .await?;
        assert!(
            c.current_url()
                .await?
                .path()
                .ends_with("/students/BBB-2013J/11")
        );
        assert!(
            c.find(Locator::Css("figure svg")).await.is_ok(),
            "the risk chart"
        );
        std::fs::write(shots.join("student.png"), c.screenshot().await?).unwrap();

        c.find(Locator::Css("#note"))
            .await?
            .send_keys("Phoned; agreed a study plan for the TMA.")
            .await?;
        c.find(Locator::Css("#outcome option[value='reached']"))
            .await?
            .click()
            .await?;
        c.find(Locator::XPath("//button[normalize-space()='Add note']"))
            .await?
            .click()
            .await?;
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("article.note"))
            .await?;
        let notes = c.find(Locator::Css("#notes")).await?.text().await?;
        assert!(notes.contains("outcome: reached"), "{notes}");

        c.find(Locator::XPath("//button[normalize-space()='Acknowledged']"))
            .await?
            .click()
            .await?;
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#feedback li"))
            .await?;
        let feedback = c.find(Locator::Css("#feedback")).await?.text().await?;
        assert!(feedback.contains("acknowledged by ada"), "{feedback}");
        std::fs::write(
            shots.join("student-after-note-and-feedback.png"),
            c.screenshot().await?,
        )
        .unwrap();
        Ok::<(), fantoccini::error::CmdError>(())
    }
    .await;
    c.close().await.ok();
    result.expect("the browser steps");
    let notes = d.store.notes("BBB", "2013J", 11).await.unwrap();
    assert_eq!(notes[0].note, "Phoned; agreed a study plan for the TMA.");
    assert!(shots.join("caseload.png").metadata().unwrap().len() > 1000);
}
