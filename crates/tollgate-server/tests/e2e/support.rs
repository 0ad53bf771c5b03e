//! A real Tollgate on port 0 against a real sandbox over HTTP, on a fresh database of
//! either engine; helpers to act as a tenant's backend and as a paying person.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use stripe_sandbox::{Config, Faults, Sandbox};
use tokio::net::TcpListener;
use tollgate::{Application, Settings};

pub const STRIPE_KEY: &str = "sk_test_tollgate_e2e";
/// The operator's admin key Tollgate is started with.
pub const ADMIN_KEY: &str = "tg_admin_e2e_operator_key_0123456789";
static COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A fresh database URL, or `None` when Postgres is absent and not required.
pub async fn database(engine: Engine) -> Option<String> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    match engine {
        Engine::Sqlite => {
            let dir = std::env::temp_dir().join(format!("tollgate-e2e-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("t.db");
            let _ = std::fs::remove_file(&path);
            Some(format!("sqlite://{}", path.display()))
        }
        Engine::Postgres => {
            let base = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let admin = match tollgate_store::Store::connect(&base).await {
                Ok(s) => s,
                Err(e) => {
                    if std::env::var("TOLLGATE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                        panic!(
                            "PostgreSQL is required (TOLLGATE_REQUIRE_POSTGRES=1) but unreachable: {e}"
                        );
                    }
                    eprintln!(
                        "skipped: PostgreSQL unreachable at {base}; set TOLLGATE_REQUIRE_POSTGRES=1 to require it"
                    );
                    return None;
                }
            };
            let schema = format!("tg_e2e_{}_{n}", std::process::id());
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(admin.pool())
                .await
                .unwrap();
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(admin.pool())
                .await
                .unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
        }
    }
}

/// A proxy between the sandbox and Tollgate's webhook endpoint that can answer 500 to the
/// next deliveries without passing them on.
#[derive(Clone, Default)]
pub struct Flaky {
    pub fail_next: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
}

pub struct TestApp {
    pub app: Option<Application>,
    pub base: String,
    pub http: reqwest::Client,
    pub sandbox: Sandbox,
    pub database_url: String,
    pub webhook_secret: String,
    pub flaky: Flaky,
    pub key: String,
    pub tenant_id: String,
    listen: std::net::SocketAddr,
}

pub struct Options {
    pub workers: usize,
    pub checkout_rate_per_minute: u32,
    pub fees: (u32, u32),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: tollgate::config::DEFAULT_WORKERS,
            checkout_rate_per_minute: 600,
            fees: (1000, 500),
        }
    }
}

/// `TOLLGATE_TEST_STRIPE_LATENCY_MS=100-300` (or `150`) runs the suite with every Stripe
/// answer delayed as a real one is; `faults` that set a latency of their own keep it.
pub fn with_stripe_latency(faults: Faults) -> Faults {
    if faults.latency_ms != 0 || faults.latency_max_ms != 0 {
        return faults;
    }
    let Ok(v) = std::env::var("TOLLGATE_TEST_STRIPE_LATENCY_MS") else {
        return faults;
    };
    let (lo, hi) = v.split_once('-').unwrap_or((&v, &v));
    let ms = |x: &str| {
        x.trim()
            .parse::<u64>()
            .expect("TOLLGATE_TEST_STRIPE_LATENCY_MS: milliseconds, or a range such as 100-300")
    };
    Faults {
        latency_ms: ms(lo),
        latency_max_ms: ms(hi),
        ..faults
    }
}

pub async fn spawn(engine: Engine) -> Option<TestApp> {
    spawn_with(engine, Options::default()).await
}

pub async fn spawn_with(engine: Engine, opts: Options) -> Option<TestApp> {
    let database_url = database(engine).await?;
    let sandbox = Sandbox::start(Config::for_tests(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sandbox.set_faults(with_stripe_latency(Faults::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = listener.local_addr().unwrap();
    let flaky = Flaky::default();
    let proxy = start_proxy(format!("http://{listen}/webhooks/stripe"), flaky.clone()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let endpoint: Value = http
        .post(format!("{}/v1/webhook_endpoints", sandbox.url()))
        .bearer_auth(STRIPE_KEY)
        .form(&[("url", proxy.as_str()), ("enabled_events[]", "*")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let webhook_secret = endpoint["secret"].as_str().unwrap().to_owned();
    let mut t = TestApp {
        app: None,
        base: format!("http://{listen}"),
        http,
        sandbox,
        database_url,
        webhook_secret,
        flaky,
        key: String::new(),
        tenant_id: String::new(),
        listen,
    };
    t.app = Some(
        t.build(listener, opts.workers, opts.checkout_rate_per_minute)
            .await,
    );
    let (tenant, key) = t.new_tenant("Acme", opts.fees).await;
    t.tenant_id = tenant;
    t.key = key;
    Some(t)
}

impl TestApp {
    fn settings(&self, workers: usize, rate: u32) -> Settings {
        Settings {
            listen: self.listen,
            database_url: self.database_url.clone(),
            stripe_secret_key: Some(STRIPE_KEY.into()),
            stripe_api_base: Some(self.sandbox.url()),
            stripe_webhook_secrets: vec![self.webhook_secret.clone()],
            admin_key: Some(ADMIN_KEY.into()),
            public_url: None,
            checkout_rate_per_minute: rate,
            workers,
            ..Settings::default()
        }
    }

    async fn build(&self, listener: TcpListener, workers: usize, rate: u32) -> Application {
        Application::build_on(listener, self.settings(workers, rate))
            .await
            .unwrap()
    }

    pub fn state(&self) -> &tollgate::state::AppState {
        self.app.as_ref().unwrap().state()
    }

    /// Creates a tenant through the operator API; returns (tenant id, api key).
    pub async fn new_tenant(&self, name: &str, fees: (u32, u32)) -> (String, String) {
        let res = self
            .http
            .post(format!("{}/v1/tenants", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "name": name, "platform_fee_bps": fees.0, "organization_fee_bps": fees.1, "success_url_template": "https://shop.test/thanks?session_id={CHECKOUT_SESSION_ID}", "cancel_url_template": "https://shop.test/cart" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        (
            body["tenant_id"].as_str().unwrap().to_owned(),
            body["api_key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call_as(&self.key, reqwest::Method::POST, path, Some(body))
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call_as(&self.key, reqwest::Method::GET, path, None)
            .await
    }

    /// A published product with one price; returns its id.
    pub async fn product(&self, kind: &str, amount: i64, capacity: Option<i64>) -> String {
        let mut body = json!({ "kind": kind, "title": format!("{kind} item"), "status": "published", "creator_id": "creator_1", "price": { "unit_amount": amount } });
        if let Some(c) = capacity {
            body["capacity"] = c.into();
        }
        let (status, p) = self.post("/v1/products", body).await;
        assert_eq!(status, 200, "{p}");
        p["id"].as_str().unwrap().to_owned()
    }

    pub async fn customer(&self, user: &str) -> String {
        let (status, c) = self
            .post(
                "/v1/customers",
                json!({ "external_user_id": user, "email": format!("{user}@example.com") }),
            )
            .await;
        assert_eq!(status, 200, "{c}");
        c["id"].as_str().unwrap().to_owned()
    }

    /// Creates a checkout and pays it on the sandbox's page with `card`.
    pub async fn checkout(&self, body: Value) -> Value {
        let (status, s) = self.post("/v1/checkout_sessions", body).await;
        assert_eq!(status, 200, "{s}");
        s
    }

    pub async fn pay(&self, session: &Value, card: &str) -> u16 {
        let url = session["url"].as_str().unwrap();
        let res = self
            .http
            .post(url)
            .form(&[("card_number", card), ("email", "guest@example.com")])
            .send()
            .await
            .unwrap();
        res.status().as_u16()
    }

    pub async fn access(&self, customer: &str, product: &str) -> bool {
        let (status, a) = self
            .get(&format!("/v1/access?customer={customer}&product={product}"))
            .await;
        assert_eq!(status, 200, "{a}");
        a["has_access"].as_bool().unwrap()
    }

    /// Waits until `check` holds, or fails after a deadline.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the sandbox has finished every delivery it started (each answered,
    /// given up or dropped), so that whatever was sent has reached Tollgate's inbox.
    pub async fn deliveries_settled(&self) {
        self.eventually("the sandbox's deliveries to settle", || async {
            self.sandbox
                .deliveries()
                .iter()
                .all(|d| d.status != "pending")
        })
        .await;
    }

    /// Waits until at least `n` events of `kind` are in the inbox and none of them waits.
    pub async fn applied(&self, kind: &str, n: usize) {
        let store = self.state().store.clone();
        self.eventually(&format!("{n} {kind} events applied"), || {
            let store = store.clone();
            async move {
                let events: Vec<_> = store
                    .inbox_list(&Default::default(), 100, None)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|e| e.event_type == kind)
                    .collect();
                events.len() >= n
                    && events
                        .iter()
                        .all(|e| e.status != tollgate_domain::status::InboxStatus::Pending)
            }
        })
        .await;
    }

    /// Starts `tollgate serve` as its own process on this app's address, database and
    /// sandbox (the in-process app must be stopped first), with `workers` inbox workers.
    pub fn spawn_process(&self, workers: usize) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("serve")
            .env("TOLLGATE_LISTEN", self.listen.to_string())
            .env("TOLLGATE_DATABASE_URL", &self.database_url)
            .env("STRIPE_SECRET_KEY", STRIPE_KEY)
            .env("STRIPE_API_BASE", self.sandbox.url())
            .env("STRIPE_WEBHOOK_SECRET", &self.webhook_secret)
            .env("TOLLGATE_WORKERS", workers.to_string())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Stops the in-process app, leaving its address free.
    pub async fn stop_app(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.unwrap();
        }
    }

    /// Starts the in-process app again on the same database, address and sandbox.
    pub async fn start_app(&mut self, workers: usize) {
        let listener = TcpListener::bind(self.listen).await.unwrap();
        self.app = Some(self.build(listener, workers, 600).await);
    }

    /// Waits until the inbox has nothing pending.
    pub async fn drained(&self) {
        let store = self.state().store.clone();
        self.eventually("the inbox to drain", || {
            let store = store.clone();
            async move { store.inbox_pending().await.unwrap() == 0 }
        })
        .await;
    }

    pub async fn purchases(&self, query: &str) -> Vec<Value> {
        let (status, list) = self.get(&format!("/v1/purchases?{query}")).await;
        assert_eq!(status, 200, "{list}");
        list["data"].as_array().unwrap().clone()
    }

    /// Sets the sandbox's faults; a test that sets no latency keeps the run's
    /// (`TOLLGATE_TEST_STRIPE_LATENCY_MS`).
    pub fn set_faults(&self, f: Faults) {
        self.sandbox.set_faults(with_stripe_latency(f));
    }

    /// Sends every stored sandbox event of this type to its endpoints again.
    pub async fn resend_all(&self, kind: &str) {
        let events: Value = self
            .http
            .get(format!(
                "{}/v1/events?type={kind}&limit=100",
                self.sandbox.url()
            ))
            .bearer_auth(STRIPE_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in events["data"].as_array().unwrap() {
            let res = self
                .http
                .post(format!(
                    "{}/_sandbox/events/{}/resend",
                    self.sandbox.url(),
                    e["id"].as_str().unwrap()
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    }
}

async fn start_proxy(target: String, flaky: Flaky) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    let client = reqwest::Client::new();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State((flaky, client, target)): State<(Flaky, reqwest::Client, String)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    if flaky.fail_next.load(Ordering::SeqCst) > 0 {
                        flaky.fail_next.fetch_sub(1, Ordering::SeqCst);
                        flaky.failed.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let mut req = client.post(&target).body(body);
                    if let Some(sig) = headers.get("stripe-signature") {
                        req = req.header("stripe-signature", sig.clone());
                    }
                    match req.send().await {
                        Ok(r) => StatusCode::from_u16(r.status().as_u16())
                            .unwrap_or(StatusCode::BAD_GATEWAY),
                        Err(_) => StatusCode::BAD_GATEWAY,
                    }
                },
            ),
        )
        .with_state((flaky, client, target));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

impl TestApp {
    /// A call to the sandbox with the Stripe key: a form POST when `form` is given, else a
    /// GET. Answers the status and the JSON body.
    pub async fn sandbox_call(&self, path: &str, form: Option<&[(&str, &str)]>) -> (u16, Value) {
        let url = format!("{}{path}", self.sandbox.url());
        let req = match form {
            Some(f) => self.http.post(url).form(f),
            None => self.http.get(url),
        };
        let res = req.bearer_auth(STRIPE_KEY).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Posts a signed event body to Tollgate's webhook endpoint; answers the status.
    pub async fn post_event(&self, payload: &str) -> u16 {
        let now = tollgate_domain::Timestamp::now().secs();
        self.http
            .post(format!("{}/webhooks/stripe", self.base))
            .header(
                "stripe-signature",
                format!(
                    "t={now},v1={}",
                    crate::flows::sign(&self.webhook_secret, now, payload)
                ),
            )
            .body(payload.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A POST with an `Idempotency-Key`.
    pub async fn post_keyed(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}
