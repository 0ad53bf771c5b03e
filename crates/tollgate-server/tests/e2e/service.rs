//! The service as an operator runs it: the real binary started and stopped with signals,
//! its key check against a sandbox that accepts one key only, its settings' mistakes, its
//! logs and request ids, readiness, `tollgate stripe setup`, and the built-in sandbox
//! across a restart.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use stripe_sandbox::{Config, Faults, Sandbox};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tollgate::usecases::events::HANDLED;
use tollgate::{Application, Settings};

use crate::support::{ADMIN_KEY, Engine, database, spawn};

const DEADLINE: Duration = Duration::from_secs(20);

/// `tollgate` with none of the settings this machine's environment may hold.
fn tollgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for name in tollgate::config::setting_names() {
        cmd.env_remove(name);
    }
    cmd.env_remove("TOLLGATE_CONFIG").env_remove("RUST_LOG");
    cmd.stdin(Stdio::null());
    cmd
}

/// A free port on loopback (bound and let go: the process binds it next).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn sandbox_with_key(key: &str) -> Sandbox {
    Sandbox::start(
        Config {
            api_key: Some(key.into()),
            ..Config::for_tests()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// A running `tollgate` whose stderr is collected line by line.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => sink.lock().unwrap().push(l),
                    Err(_) => return,
                }
            }
        });
        Self { child, lines }
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a line of stderr contains `text`.
    async fn wait_for_line(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(text)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line with '{text}' in:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to end, and for its stderr to be read to the end.
    async fn exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at EOF; give it the deadline too.
                let read_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while Arc::strong_count(&self.lines) > 1
                    && tokio::time::Instant::now() < read_deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the process did not exit within {DEADLINE:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn terminate(&self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET url` answers 200.
async fn until_ready(http: &reqwest::Client, url: &str, p: &Proc) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered 200:\n{}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A `serve` command on a fresh SQLite database against `sandbox` with `key`.
async fn serve_with_key(sandbox: &Sandbox, key: &str, listen: SocketAddr) -> Command {
    let db = database(Engine::Sqlite).await.unwrap();
    let mut cmd = tollgate();
    cmd.arg("serve")
        .env("TOLLGATE_LISTEN", listen.to_string())
        .env("TOLLGATE_DATABASE_URL", db)
        .env("STRIPE_SECRET_KEY", key)
        .env("STRIPE_API_BASE", sandbox.url())
        .env("STRIPE_WEBHOOK_SECRET", "whsec_e2e_service")
        .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY);
    cmd
}

pub async fn a_wrong_key_stops_start_up_with_stripes_refusal_and_request_id() {
    let sandbox = sandbox_with_key("sk_test_the_right_key").await;
    let mut p = Proc::start(serve_with_key(&sandbox, "sk_test_a_wrong_key", free_addr()).await);
    let status = p.exit().await;
    let err = p.stderr();
    assert!(!status.success(), "{err}");
    assert!(err.contains("refused STRIPE_SECRET_KEY"), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains("stripe_request_id=req_"),
        "Stripe's request id is logged: {err}"
    );
    assert!(!err.contains("tollgate ready"), "{err}");
}

pub async fn keys_and_secrets_of_the_wrong_kind_stop_start_up_with_what_to_do() {
    let sandbox = sandbox_with_key("sk_test_the_right_key").await;
    for (key, secret, expected) in [
        ("pk_test_publishable", "whsec_ok", "publishable key"),
        ("sk_test_has a space", "whsec_ok", "malformed"),
        ("tok_visa", "whsec_ok", "must start with sk_live_, sk_test_"),
        ("sk_test_the_right_key", "sk_test_not_a_secret", "whsec_"),
    ] {
        let mut cmd = serve_with_key(&sandbox, key, free_addr()).await;
        cmd.env("STRIPE_WEBHOOK_SECRET", secret);
        let mut p = Proc::start(cmd);
        let status = p.exit().await;
        let err = p.stderr();
        assert!(!status.success(), "{key}: {err}");
        assert!(err.contains(expected), "{key}: {err}");
        assert!(
            !err.contains("not_a_secret") && !err.contains("pk_test_publishable"),
            "secrets are not repeated: {err}"
        );
    }
}

pub async fn a_restricted_key_is_accepted() {
    let key = "rk_test_tollgate_restricted";
    let sandbox = sandbox_with_key(key).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let settings = Settings {
        listen: listener.local_addr().unwrap(),
        database_url: database(Engine::Sqlite).await.unwrap(),
        stripe_secret_key: Some(key.into()),
        stripe_api_base: Some(sandbox.url()),
        stripe_webhook_secrets: vec!["whsec_e2e_service".into()],
        admin_key: Some(ADMIN_KEY.into()),
        ..Settings::default()
    };
    let app = Application::build_on(listener, settings).await.unwrap();
    assert!(app.summary().restricted_key);
    assert_eq!(
        app.summary().stripe_mode,
        tollgate::config::StripeMode::Test
    );
    let http = http();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let key = new_tenant(&http, &base).await;
    let res = http
        .post(format!("{base}/v1/customers"))
        .bearer_auth(&key)
        .json(&json!({ "external_user_id": "rk-user", "email": "rk@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["stripe_customer_id"]
            .as_str()
            .unwrap()
            .starts_with("cus_")
    );
    app.stop().await.unwrap();
}

/// Waits until the built-in sandbox has delivered everything and the inbox is empty.
async fn settle(app: &Application) {
    let sandbox = app.sandbox().unwrap();
    let store = app.state().store.clone();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !(sandbox.deliveries().iter().all(|d| d.status != "pending")
        && store.inbox_pending().await.unwrap() == 0)
    {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn new_tenant(http: &reqwest::Client, base: &str) -> String {
    let res = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "name": "Service", "success_url_template": "https://shop.test/thanks?session_id={CHECKOUT_SESSION_ID}", "cancel_url_template": "https://shop.test/cart" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["api_key"].as_str().unwrap().to_owned()
}

pub async fn a_live_key_says_live_mode_and_sigterm_exits_0() {
    let key = "sk_live_tollgate_e2e";
    let sandbox = sandbox_with_key(key).await;
    let listen = free_addr();
    let mut p = Proc::start(serve_with_key(&sandbox, key, listen).await);
    p.wait_for_line("tollgate ready").await;
    let err = p.stderr();
    assert!(err.contains("LIVE MODE"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes off a terminal: {err}"
    );
    assert!(err.contains("stripe_mode=\"live\""), "{err}");
    p.terminate();
    let status = p.exit().await;
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
}

/// A proxy in front of the sandbox that holds the next `POST /v1/customers` until told.
#[derive(Clone, Default)]
struct Gate {
    armed: Arc<AtomicBool>,
    arrived: Arc<Notify>,
    release: Arc<Notify>,
}

async fn start_gate(target: String, gate: Gate) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    let client = reqwest::Client::new();
    let app = axum::Router::new()
        .fallback(
            |State((gate, client, target)): State<(Gate, reqwest::Client, String)>,
             method: Method,
             uri: Uri,
             headers: HeaderMap,
             body: Bytes| async move {
                if method == Method::POST
                    && uri.path() == "/v1/customers"
                    && gate.armed.swap(false, Ordering::SeqCst)
                {
                    gate.arrived.notify_one();
                    gate.release.notified().await;
                }
                let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let mut req = client.request(method, format!("{target}{path}")).body(body);
                for name in [
                    "authorization",
                    "content-type",
                    "stripe-version",
                    "idempotency-key",
                ] {
                    if let Some(v) = headers.get(name) {
                        req = req.header(name, v.clone());
                    }
                }
                let res = req.send().await.unwrap();
                let status = res.status();
                let bytes = res.bytes().await.unwrap();
                (status, [("content-type", "application/json")], bytes)
            },
        )
        .with_state((gate, client, target));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

pub async fn sigterm_lets_a_request_in_flight_finish_and_exits_0() {
    let sandbox = Sandbox::start(Config::for_tests(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gate = Gate::default();
    let gated = start_gate(sandbox.url(), gate.clone()).await;
    let listen = free_addr();
    let base = format!("http://{listen}");
    let db = database(Engine::Sqlite).await.unwrap();
    let mut cmd = tollgate();
    cmd.arg("serve")
        .env("TOLLGATE_LISTEN", listen.to_string())
        .env("TOLLGATE_DATABASE_URL", db)
        .env("STRIPE_SECRET_KEY", "sk_test_tollgate_e2e")
        .env("STRIPE_API_BASE", &gated)
        .env("STRIPE_WEBHOOK_SECRET", "whsec_e2e_service")
        .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY);
    let mut p = Proc::start(cmd);
    let http = http();
    until_ready(&http, &format!("{base}/readyz"), &p).await;
    let key = new_tenant(&http, &base).await;

    gate.armed.store(true, Ordering::SeqCst);
    let in_flight = tokio::spawn({
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move {
            http.post(format!("{base}/v1/customers"))
                .bearer_auth(&key)
                .json(&json!({ "external_user_id": "in-flight", "email": "f@example.com" }))
                .send()
                .await
        }
    });
    // The request is inside Tollgate, waiting on Stripe, when SIGTERM arrives.
    tokio::time::timeout(DEADLINE, gate.arrived.notified())
        .await
        .expect("the request reached Stripe");
    p.terminate();
    // New connections are refused from now on, while the request is still held.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(listen).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after SIGTERM:\n{}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    gate.release.notify_one();
    let res = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["stripe_customer_id"]
            .as_str()
            .unwrap()
            .starts_with("cus_")
    );
    let status = p.exit().await;
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
    assert!(p.stderr().contains("stopping"), "{}", p.stderr());
}

pub async fn requests_carry_an_id_into_json_logs_without_colour() {
    let listen = free_addr();
    let base = format!("http://{listen}");
    let db = database(Engine::Sqlite).await.unwrap();
    let mut cmd = tollgate();
    cmd.arg("serve")
        .env("TOLLGATE_LISTEN", listen.to_string())
        .env("TOLLGATE_DATABASE_URL", &db)
        // The default filter (RUST_LOG unset), as deployed.
        .env("TOLLGATE_LOG_FORMAT", "json");
    let mut p = Proc::start(cmd);
    let http = http();
    until_ready(&http, &format!("{base}/healthz"), &p).await;
    let res = http
        .get(format!("{base}/healthz"))
        .header("x-request-id", "e2e-given-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["request-id"], "e2e-given-id-1");
    // /readyz calls Stripe (the built-in sandbox) inside the request's span.
    let res = http
        .get(format!("{base}/readyz"))
        .header("x-request-id", "e2e-ready-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .get(format!("{base}/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let made = res.headers()["request-id"].to_str().unwrap().to_owned();
    assert!(made.starts_with("req_") && made.len() > 10, "{made}");
    p.terminate();
    assert_eq!(p.exit().await.code(), Some(0), "{}", p.stderr());

    let lines = p.lines.lock().unwrap().clone();
    assert!(!lines.is_empty());
    let logs: Vec<Value> = lines
        .iter()
        .map(|l| {
            assert!(!l.contains('\u{1b}'), "no colour codes: {l}");
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .collect();
    let access = |id: &str| {
        logs.iter()
            .find(|l| l["span"]["request_id"] == id && l["status"].is_number())
            .unwrap_or_else(|| panic!("no access line for {id}: {lines:#?}"))
            .clone()
    };
    let given = access("e2e-given-id-1");
    assert_eq!(given["status"], 200);
    assert_eq!(given["span"]["http_path"], "/healthz");
    assert_eq!(given["span"]["http_method"], "GET");
    assert_eq!(access(&made)["status"], 404);
    let ready = access("e2e-ready-1");
    assert_eq!(ready["span"]["http_path"], "/readyz", "{ready}");
    let summary = logs
        .iter()
        .find(|l| l["message"] == "tollgate ready")
        .expect("one start-up summary");
    assert_eq!(summary["stripe_mode"], "built-in sandbox");
    assert_eq!(summary["listen"], listen.to_string());
    assert_eq!(summary["workers"], 64);
    assert!(
        summary["database"]
            .as_str()
            .unwrap()
            .starts_with("sqlite://")
    );
    assert_eq!(
        logs.iter()
            .filter(|l| l["message"] == "tollgate ready")
            .count(),
        1
    );
}

pub async fn mistaken_settings_say_what_to_do() {
    // A host name where an address belongs.
    let mut cmd = tollgate();
    cmd.arg("serve").env("TOLLGATE_LISTEN", "localhost:8080");
    let mut p = Proc::start(cmd);
    assert!(!p.exit().await.success());
    assert!(p.stderr().contains("127.0.0.1:8080"), "{}", p.stderr());

    // PostgreSQL that is not there: its address and what to do, not "pool timed out".
    let down = free_addr();
    let mut cmd = tollgate();
    cmd.arg("migrate").env(
        "TOLLGATE_DATABASE_URL",
        format!("postgres://tollgate:hunter2@{down}/tollgate"),
    );
    let mut p = Proc::start(cmd);
    assert!(!p.exit().await.success());
    let err = p.stderr();
    assert!(
        err.contains(&down.to_string()) && err.contains("start it"),
        "{err}"
    );
    assert!(
        !err.contains("timed out") && !err.contains("hunter2"),
        "{err}"
    );

    // Unknown names, in the environment and in the settings file, with the nearest one.
    let db = database(Engine::Sqlite).await.unwrap();
    let file = std::env::temp_dir().join(format!("tollgate-e2e-{}.env", std::process::id()));
    std::fs::write(
        &file,
        format!("TOLLGATE_DATABASE_URL={db}\nTOLLGATE_WORKRES=4\n"),
    )
    .unwrap();
    let mut cmd = tollgate();
    cmd.args(["--config", file.to_str().unwrap(), "migrate"])
        .env("TOLLGATE_LISTN", "127.0.0.1:9999")
        // Set but blank: as if unset.
        .env("TOLLGATE_WORKERS", "")
        .env("STRIPE_API_BASE", " ");
    let mut p = Proc::start(cmd);
    assert!(p.exit().await.success(), "{}", p.stderr());
    let err = p.stderr();
    assert!(
        err.contains("TOLLGATE_LISTN in the environment")
            && err.contains("did you mean TOLLGATE_LISTEN"),
        "{err}"
    );
    assert!(
        err.contains("TOLLGATE_WORKRES in the settings file")
            && err.contains("did you mean TOLLGATE_WORKERS"),
        "{err}"
    );
    assert!(
        err.contains("migrations applied"),
        "the file's database was used: {err}"
    );
    let _ = std::fs::remove_file(&file);

    // serve --help lists every setting with its default.
    let out = tollgate().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for name in tollgate::config::setting_names() {
        assert!(help.contains(&name), "{name} missing from serve --help");
    }
    for default in [
        "[default: 127.0.0.1:8080]",
        "[default: sqlite://tollgate.db]",
        "[default: 64]",
        "[default: text]",
    ] {
        assert!(help.contains(default), "{default}: {help}");
    }
}

pub async fn readyz_asks_stripe_at_most_every_few_seconds_and_answers_in_the_error_format() {
    let Some(t) = spawn(Engine::Sqlite).await else {
        return;
    };
    let ready = || async {
        let res = t
            .http
            .get(format!("{}/readyz", t.base))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stripe"], "ok");
    t.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    // Within the cache's few seconds, the last answer stands: no call to Stripe.
    let (status, _) = ready().await;
    assert_eq!(status, 200, "a fresh answer was reused");
    t.eventually("readyz to see Stripe failing", || async {
        let (status, body) = ready().await;
        status == 503 && body["error"]["code"] == "stripe_unavailable"
    })
    .await;
    t.set_faults(Faults::default());
    t.eventually("readyz to see Stripe back", || async {
        ready().await.0 == 200
    })
    .await;
}

pub async fn stripe_setup_creates_corrects_and_then_leaves_the_webhook_endpoint() {
    let key = "sk_test_tollgate_setup";
    let sandbox = sandbox_with_key(key).await;
    let public = "https://billing.example.test";
    let run = |extra: &[&str]| {
        let mut cmd = tollgate();
        cmd.args(["stripe", "setup"])
            .args(extra)
            .env("STRIPE_SECRET_KEY", key)
            .env("STRIPE_API_BASE", sandbox.url())
            .env("TOLLGATE_PUBLIC_URL", public);
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let report: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} / {stderr}"));
        (out.status.code(), report, stderr)
    };
    let http = http();
    let endpoints = || async {
        let list: Value = http
            .get(format!("{}/v1/webhook_endpoints?limit=100", sandbox.url()))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["data"].as_array().unwrap().clone()
    };
    let mut handled: Vec<String> = HANDLED.iter().map(|s| (*s).to_owned()).collect();
    handled.sort();
    let events_of = |e: &Value| {
        let mut v: Vec<String> = e["enabled_events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };

    let (code, report, stderr) = run(&["--check"]);
    assert_eq!(code, Some(1), "nothing yet: {report} {stderr}");
    assert_eq!(report["endpoints"][0]["action"], "would_create");
    assert!(endpoints().await.is_empty(), "--check changes nothing");

    let (code, report, stderr) = run(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["endpoints"][0]["action"], "created");
    let secret = report["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert!(
        stderr.contains(&format!("STRIPE_WEBHOOK_SECRET={secret}")),
        "{stderr}"
    );
    let made = endpoints().await;
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["url"], format!("{public}/webhooks/stripe"));
    assert_eq!(events_of(&made[0]), handled);

    // Someone widened it to every event type: setup puts it back, same endpoint.
    let id = made[0]["id"].as_str().unwrap().to_owned();
    let res = http
        .post(format!("{}/v1/webhook_endpoints/{id}", sandbox.url()))
        .bearer_auth(key)
        .form(&[("enabled_events[]", "*")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (code, report, _) = run(&["--check"]);
    assert_eq!(code, Some(1));
    assert_eq!(report["endpoints"][0]["action"], "would_update");
    assert_eq!(report["endpoints"][0]["removed"], json!(["*"]));
    let (code, report, stderr) = run(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["endpoints"][0]["action"], "updated");
    assert_eq!(report["endpoints"][0]["id"], id.as_str());
    assert!(
        report["secret"].is_null(),
        "no new secret for an existing endpoint"
    );
    let now = endpoints().await;
    assert_eq!(now.len(), 1);
    assert_eq!(events_of(&now[0]), handled);

    let (code, report, stderr) = run(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(report["endpoints"][0]["action"], "unchanged");
    assert!(stderr.contains("signing secret"), "{stderr}");
    let (code, _, _) = run(&["--check"]);
    assert_eq!(code, Some(0), "as Tollgate needs it");
}

pub async fn the_built_in_sandbox_keeps_its_objects_across_a_restart() {
    let db = database(Engine::Sqlite).await.unwrap();
    let settings = |listen: SocketAddr| Settings {
        listen,
        database_url: db.clone(),
        admin_key: Some(ADMIN_KEY.into()),
        ..Settings::default()
    };
    let http = http();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Application::build_on(listener, settings(addr))
        .await
        .unwrap();
    let state_file = app.summary().sandbox_state.clone().unwrap();
    let db_file = db.strip_prefix("sqlite://").unwrap();
    assert_eq!(
        state_file,
        std::path::PathBuf::from(format!("{db_file}.sandbox.json")),
        "the state sits beside the database"
    );
    let base = format!("http://{}", app.addr());
    let key = new_tenant(&http, &base).await;
    let api = |method: reqwest::Method, base: &str, path: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let stripe = |sandbox: String, path: String, form: Vec<(&'static str, String)>| {
        let req = if form.is_empty() {
            http.get(format!("{sandbox}{path}"))
        } else {
            http.post(format!("{sandbox}{path}")).form(&form)
        };
        async move {
            let res = req.bearer_auth("sk_test_e2e_person").send().await.unwrap();
            assert!(res.status().is_success(), "{path}: {}", res.status());
            res.json::<Value>().await.unwrap()
        }
    };

    let sandbox_url = app.sandbox().unwrap().url();
    let start = tollgate_domain::Timestamp::now().secs();
    let clock = stripe(
        sandbox_url.clone(),
        "/v1/test_helpers/test_clocks".into(),
        vec![("frozen_time", start.to_string())],
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, plan) = api(
        reqwest::Method::POST,
        &base,
        "/v1/products",
        Some(json!({ "kind": "plan", "title": "Lasting", "status": "published", "creator_id": "c1",
                     "price": { "unit_amount": 900, "recurring_interval": "month", "lookup_key": "lasting_monthly" } })),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    let (status, customer) = api(
        reqwest::Method::POST,
        &base,
        "/v1/customers",
        Some(json!({ "external_user_id": "lasting", "email": "lasting@example.com", "test_clock": clock })),
    )
    .await;
    assert_eq!(status, 200, "{customer}");
    let customer_id = customer["id"].as_str().unwrap().to_owned();
    let (status, session) = api(
        reqwest::Method::POST,
        &base,
        "/v1/checkout_sessions",
        Some(json!({ "customer": customer_id, "price": "lasting_monthly" })),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let paid = http
        .post(session["url"].as_str().unwrap())
        .form(&[("card_number", "4242424242424242")])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    let (status, synced) = api(
        reqwest::Method::GET,
        &base,
        &format!(
            "/v1/checkout_sessions/{}?sync=true",
            session["stripe_checkout_session_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{synced}");
    let sub_id = synced["subscription"]["id"].as_str().unwrap().to_owned();
    settle(&app).await;
    let (_, sub) = api(
        reqwest::Method::GET,
        &base,
        &format!("/v1/subscriptions/{sub_id}"),
        None,
    )
    .await;
    assert_eq!(sub["status"], "active", "{sub}");
    let first_end = sub["current_period_ends_at"].as_i64().unwrap();
    app.stop().await.unwrap();
    assert!(state_file.exists());

    // Started again: same database, same state file, new ports for both.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Application::build_on(listener, settings(addr))
        .await
        .unwrap();
    let base = format!("http://{addr}");
    let sandbox_url = app.sandbox().unwrap().url();
    let endpoints = stripe(
        sandbox_url.clone(),
        "/v1/webhook_endpoints?limit=100".into(),
        vec![],
    )
    .await;
    let endpoints = endpoints["data"].as_array().unwrap();
    assert_eq!(
        endpoints.len(),
        1,
        "the earlier run's endpoint is gone: {endpoints:?}"
    );
    assert_eq!(endpoints[0]["url"], format!("{base}/webhooks/stripe"));
    assert_eq!(endpoints[0]["metadata"]["tollgate"], "builtin");

    let advanced = stripe(
        sandbox_url.clone(),
        format!("/v1/test_helpers/test_clocks/{clock}/advance"),
        vec![("frozen_time", (first_end + 2 * 3600).to_string())],
    )
    .await;
    assert_eq!(advanced["status"], "advancing");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let c = stripe(
            sandbox_url.clone(),
            format!("/v1/test_helpers/test_clocks/{clock}"),
            vec![],
        )
        .await;
        if c["status"] == "ready" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock never got ready: {c}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, sub) = api(
            reqwest::Method::GET,
            &base,
            &format!("/v1/subscriptions/{sub_id}"),
            None,
        )
        .await;
        if sub["current_period_starts_at"].as_i64() == Some(first_end) {
            assert_eq!(sub["status"], "active", "{sub}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewal never reached Tollgate: {sub}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, c) = api(
        reqwest::Method::GET,
        &base,
        &format!("/v1/customers/{customer_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{c}");
    let (status, p) = api(
        reqwest::Method::GET,
        &base,
        &format!("/v1/products/{}", plan["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{p}");
    // Stripe still knows the customer and the product: a new Checkout works.
    let (status, course) = api(
        reqwest::Method::POST,
        &base,
        "/v1/products",
        Some(json!({ "kind": "course", "title": "After restart", "status": "published", "creator_id": "c1", "price": { "unit_amount": 500 } })),
    )
    .await;
    assert_eq!(status, 200, "{course}");
    let (status, s) = api(
        reqwest::Method::POST,
        &base,
        "/v1/checkout_sessions",
        Some(json!({ "customer": customer_id, "product": course["id"] })),
    )
    .await;
    assert_eq!(status, 200, "no 502 after the restart: {s}");
    app.stop().await.unwrap();
}
