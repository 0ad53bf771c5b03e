//! The hosted Checkout page in a real browser: headless Chromium, driven by
//! `tests/browser/checkout.mjs` (Playwright), types a test card, presses Pay, and either lands
//! on the shop's success URL with the session id or sees the decline on the same page.
//!
//! Needs `/usr/bin/chromium`, `node`, and `npm ci` run in `tests/browser`
//! (`scripts/install-browser-deps.sh` does all three). Without them the tests print
//! `skipped: ...` and pass, unless `TOLLGATE_REQUIRE_BROWSER=1`, when they fail instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use stripe_sandbox::{Config, Sandbox};

const KEY: &str = "sk_test_browser_suite";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole script: start Chromium, load, type, pay, land.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether the browser tests can run here. When something is missing the test is skipped
/// with a note on stderr, or fails if `TOLLGATE_REQUIRE_BROWSER=1`.
fn browser_available() -> bool {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("Chromium at {CHROMIUM}"));
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node on the PATH".to_owned());
    }
    let modules = browser_dir().join("node_modules");
    if !modules.join("playwright-core").is_dir() {
        missing.push(format!("playwright-core in {}", modules.display()));
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    if std::env::var("TOLLGATE_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!(
            "TOLLGATE_REQUIRE_BROWSER=1 but missing: {what} (scripts/install-browser-deps.sh installs them)"
        );
    }
    eprintln!("skipped: {what} (set TOLLGATE_REQUIRE_BROWSER=1 to require it)");
    false
}

/// The shop the browser is sent back to: answers 200 "ok" on `/success` and `/cart`, and
/// remembers every path and query it was asked for.
struct Shop {
    url: String,
    visits: Arc<Mutex<Vec<String>>>,
}

impl Shop {
    async fn start() -> Self {
        let visits = Arc::new(Mutex::new(Vec::new()));
        let record = |visits: Arc<Mutex<Vec<String>>>| {
            move |uri: axum::http::Uri| {
                let visits = visits.clone();
                async move {
                    visits.lock().unwrap().push(uri.to_string());
                    "ok"
                }
            }
        };
        let app = axum::Router::new()
            .route("/success", axum::routing::get(record(visits.clone())))
            .route("/cart", axum::routing::get(record(visits.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, visits }
    }

    fn visits(&self) -> Vec<String> {
        self.visits.lock().unwrap().clone()
    }
}

/// The sandbox, the shop, and one open $25.00 Checkout Session for "Course".
struct Fixture {
    sandbox: Sandbox,
    shop: Shop,
    http: reqwest::Client,
    session_id: String,
    session_url: String,
}

impl Fixture {
    async fn start() -> Self {
        let sandbox = Sandbox::start(Config::for_tests(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let shop = Shop::start().await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut fixture = Self {
            sandbox,
            shop,
            http,
            session_id: String::new(),
            session_url: String::new(),
        };

        let price = fixture
            .post(
                "/v1/prices",
                "currency=usd&unit_amount=2500&product_data[name]=Course".to_owned(),
            )
            .await;
        let price_id = price["id"].as_str().unwrap();
        let success = format!(
            "{}/success?session_id={{CHECKOUT_SESSION_ID}}",
            fixture.shop.url
        );
        let cancel = format!("{}/cart", fixture.shop.url);
        let session = fixture
            .post(
                "/v1/checkout/sessions",
                format!(
                    "mode=payment&customer_email=buyer%40example.com\
                     &line_items[0][price]={price_id}&line_items[0][quantity]=1\
                     &success_url={}&cancel_url={}",
                    encode(&success),
                    encode(&cancel)
                ),
            )
            .await;
        fixture.session_id = session["id"].as_str().unwrap().to_owned();
        fixture.session_url = session["url"].as_str().unwrap().to_owned();
        fixture
    }

    async fn post(&self, path: &str, form: String) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.sandbox.url()))
            .bearer_auth(KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// The session as the API tells it now.
    async fn session(&self) -> Value {
        let res = self
            .http
            .get(format!(
                "{}/v1/checkout/sessions/{}",
                self.sandbox.url(),
                self.session_id
            ))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        res.json().await.unwrap()
    }

    /// Runs `checkout.mjs` on this session's page with `card`; returns the JSON it printed.
    async fn pay_in_chromium(&self, card: &str, expect: &str) -> Value {
        let screenshot =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-checkout-{expect}.png"));
        let spec = json!({
            "url": self.session_url,
            "card": card,
            "expect": expect,
            "success_prefix": format!("{}/success", self.shop.url),
            "screenshot": screenshot,
        });
        run_script(&spec).await
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Runs `node checkout.mjs '<spec>'` with a time limit and parses its last stdout line.
///
/// std's process API with polling, because the workspace's tokio has no `process` feature.
async fn run_script(spec: &Value) -> Value {
    let script = browser_dir().join("checkout.mjs");
    let mut child = std::process::Command::new("node")
        .arg(&script)
        .arg(spec.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let waited = tokio::time::timeout(SCRIPT_TIMEOUT, async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let Ok(status) = waited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} did not finish within {SCRIPT_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
            script.display(),
            collect(stdout).await,
            collect(stderr).await
        );
    };
    let (stdout, stderr) = (collect(stdout).await, collect(stderr).await);
    assert!(
        status.success(),
        "{} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display()
    );
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let Some(Ok(answer)) = line.map(serde_json::from_str::<Value>) else {
        panic!("no JSON line from the script\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    answer
}

/// Reads a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// What a pipe gave, waiting up to 5 s for its end: a stray grandchild holding the pipe
/// open must not hang the test.
async fn collect(reader: std::thread::JoinHandle<String>) -> String {
    for _ in 0..100 {
        if reader.is_finished() {
            return reader.join().unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    "(the pipe did not close)".to_owned()
}

#[tokio::test]
async fn a_person_pays_with_4242_in_chromium_and_lands_on_the_success_url_with_the_session_id() {
    if !browser_available() {
        return;
    }
    let f = Fixture::start().await;

    let answer = f.pay_in_chromium("4242424242424242", "success").await;

    let expected = format!("{}/success?session_id={}", f.shop.url, f.session_id);
    assert_eq!(answer["final_url"], expected.as_str(), "{answer}");
    assert_eq!(
        f.shop.visits(),
        vec![format!("/success?session_id={}", f.session_id)],
        "the shop saw the browser arrive once, with the id"
    );
    let session = f.session().await;
    assert_eq!(session["status"], "complete", "{session}");
    assert_eq!(session["payment_status"], "paid", "{session}");
}

#[tokio::test]
async fn a_person_paying_with_0002_in_chromium_sees_the_decline_and_stays_on_the_page() {
    if !browser_available() {
        return;
    }
    let f = Fixture::start().await;

    let answer = f.pay_in_chromium("4000000000000002", "declined").await;

    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("Your card was declined."), "{answer}");
    assert_eq!(
        answer["final_url"],
        f.session_url.as_str(),
        "the browser stays on the hosted page"
    );
    assert!(f.shop.visits().is_empty(), "{:?}", f.shop.visits());
    let session = f.session().await;
    assert_eq!(session["status"], "open", "{session}");
    assert_eq!(session["payment_status"], "unpaid", "{session}");
}
