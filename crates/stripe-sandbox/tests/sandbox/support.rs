//! What every sandbox test needs: a sandbox on port 0, a Stripe client pointed at it, a
//! webhook receiver, and a payer that drives the hosted Checkout page over plain HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use stripe_sandbox::{Config, Sandbox};

pub const KEY: &str = "sk_test_sandbox_suite";

pub struct TestSandbox {
    pub sandbox: Sandbox,
    pub client: stripe::Client,
    pub http: reqwest::Client,
}

pub async fn spawn() -> TestSandbox {
    spawn_with(Config::for_tests()).await
}

pub async fn spawn_with(config: Config) -> TestSandbox {
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = stripe::ClientBuilder::new(KEY)
        .url(sandbox.url())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    TestSandbox {
        sandbox,
        client,
        http,
    }
}

impl TestSandbox {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.url())
    }

    /// A raw form POST to the API, for what a typed client cannot send (unknown parameters).
    pub async fn post(&self, path: &str, form: &str) -> (u16, Value) {
        self.post_with(path, form, None).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        form: &str,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .bearer_auth(KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }

    /// Submits the hosted Checkout page with a card, as a browser posts the form.
    /// Returns the status and the `Location` header (on success) or the page body.
    pub async fn pay(&self, session_url: &str, card: &str, email: Option<&str>) -> PageAnswer {
        let mut form = vec![("card_number", card.to_owned())];
        if let Some(e) = email {
            form.push(("email", e.to_owned()));
        }
        let res = self
            .http
            .post(session_url)
            .form(&form)
            .send()
            .await
            .unwrap();
        PageAnswer::read(res).await
    }

    /// Completes (or fails) the 3-D Secure step of a session.
    pub async fn authenticate(&self, session_url: &str, complete: bool) -> PageAnswer {
        let action = if complete { "complete" } else { "fail" };
        let res = self
            .http
            .post(format!("{session_url}/authenticate"))
            .form(&[("action", action)])
            .send()
            .await
            .unwrap();
        PageAnswer::read(res).await
    }

    /// Creates a webhook endpoint for `url` taking every event; returns its secret.
    pub async fn endpoint(&self, url: &str) -> String {
        use stripe_misc::webhook_endpoint::{
            CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents,
        };
        CreateWebhookEndpoint::new(vec![CreateWebhookEndpointEnabledEvents::All], url)
            .send(&self.client)
            .await
            .unwrap()
            .secret
            .unwrap()
    }
}

#[derive(Debug)]
pub struct PageAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl PageAnswer {
    async fn read(res: reqwest::Response) -> Self {
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let body = res.text().await.unwrap();
        Self {
            status,
            location,
            body,
        }
    }
}

/// One webhook request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: String,
    pub payload: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap()
    }
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap().to_owned()
    }
    pub fn event_id(&self) -> String {
        self.json()["id"].as_str().unwrap().to_owned()
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Answer 500 to this many requests before answering 200.
    fail_next: usize,
}

/// A webhook receiver on port 0 that records every request.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub url: String,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { state, url }
    }

    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn types(&self) -> Vec<String> {
        self.received().iter().map(Received::event_type).collect()
    }

    /// Waits until `done` holds for what was received, or fails after a deadline.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; received {:?}",
                got.iter().map(Received::event_type).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for an event of this type and returns it.
    pub async fn wait_for_type(&self, kind: &str) -> Received {
        let got = self
            .wait_for(kind, |r| r.iter().any(|x| x.event_type() == kind))
            .await;
        got.into_iter().find(|x| x.event_type() == kind).unwrap()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = state.lock().unwrap();
    s.received.push(Received {
        signature: headers
            .get("stripe-signature")
            .map(|h| h.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        payload: String::from_utf8(body.to_vec()).unwrap(),
    });
    if s.fail_next > 0 {
        s.fail_next -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// Waits on a condition with a deadline (no bare sleeps).
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A product with one price; `interval` makes it recurring (`month`, `year`).
pub async fn price(
    sb: &TestSandbox,
    name: &str,
    amount: i64,
    interval: Option<&str>,
) -> stripe_shared::Price {
    use stripe::StripeRequest as _;
    let product = stripe_product::product::CreateProduct::new(name)
        .send(&sb.client)
        .await
        .unwrap();
    let mut req = stripe_product::price::CreatePrice::new(stripe_types::Currency::USD)
        .product(product.id.as_str())
        .unit_amount(amount);
    if let Some(i) = interval {
        let interval = match i {
            "month" => stripe_product::price::CreatePriceRecurringInterval::Month,
            "year" => stripe_product::price::CreatePriceRecurringInterval::Year,
            _ => stripe_product::price::CreatePriceRecurringInterval::Day,
        };
        req = req.recurring(stripe_product::price::CreatePriceRecurring::new(interval));
    }
    let _ = req.build();
    req.send(&sb.client).await.unwrap()
}

/// A Checkout Session for one price, through async-stripe.
pub async fn session(
    sb: &TestSandbox,
    price: &str,
    mode: stripe_shared::CheckoutSessionMode,
    configure: impl FnOnce(
        stripe_checkout::checkout_session::CreateCheckoutSession,
    ) -> stripe_checkout::checkout_session::CreateCheckoutSession,
) -> stripe_shared::CheckoutSession {
    use stripe_checkout::checkout_session::{
        CreateCheckoutSession, CreateCheckoutSessionLineItems,
    };
    let mut item = CreateCheckoutSessionLineItems::new();
    item.price = Some(price.to_owned());
    item.quantity = Some(1);
    let req = CreateCheckoutSession::new()
        .mode(mode)
        .line_items(vec![item])
        .success_url("https://shop.test/thanks?session_id={CHECKOUT_SESSION_ID}")
        .cancel_url("https://shop.test/cart");
    configure(req).send(&sb.client).await.unwrap()
}

/// Advances a test clock as a Stripe client must: the answer says `advancing`, and the clock
/// is polled until it is `ready` (with a deadline). Returns the clock once ready.
pub async fn advance_clock(
    sb: &TestSandbox,
    clock: &str,
    to: i64,
) -> stripe_shared::TestHelpersTestClock {
    use stripe_billing::test_helpers_test_clock::AdvanceTestHelpersTestClock;
    use stripe_shared::TestHelpersTestClockStatus as Status;
    let started = AdvanceTestHelpersTestClock::new(clock, to)
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        started.status,
        Status::Advancing,
        "the advance is asynchronous"
    );
    wait_for_clock_ready(sb, clock, to).await
}

/// Polls a test clock until it is `ready` at `to` (with a deadline).
pub async fn wait_for_clock_ready(
    sb: &TestSandbox,
    clock: &str,
    to: i64,
) -> stripe_shared::TestHelpersTestClock {
    use stripe_billing::test_helpers_test_clock::RetrieveTestHelpersTestClock;
    use stripe_shared::TestHelpersTestClockStatus as Status;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = RetrieveTestHelpersTestClock::new(clock)
            .send(&sb.client)
            .await
            .unwrap();
        if now.status == Status::Ready {
            assert_eq!(now.frozen_time, to);
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "test clock {clock} still {:?}",
            now.status
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Saves the account's default portal configuration, as saving the portal settings in the
/// Dashboard does (a new account has none, and portal sessions need one).
pub async fn save_default_portal(sb: &TestSandbox) -> Value {
    let res = sb
        .http
        .post(sb.url("/_sandbox/billing_portal/default_configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}
