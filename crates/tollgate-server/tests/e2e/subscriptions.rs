//! Subscriptions end to end, moved through time with the sandbox's test clocks: trials,
//! renewals, dunning and grace, plan changes, cancel and resume, pause, the customer portal,
//! events out of order, promotion codes, metered usage and price migrations.

use serde_json::{Value, json};
use stripe_sandbox::Faults;

use crate::support::{Engine, TestApp, spawn};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

fn now() -> i64 {
    tollgate_domain::Timestamp::now().secs()
}

impl TestApp {
    /// A sandbox call with the Stripe key: form POST when `form` is given, else GET.
    async fn stripe(&self, path: &str, form: Option<&[(&str, &str)]>) -> Value {
        let (status, body) = self.sandbox_call(path, form).await;
        assert!((200..300).contains(&status), "{path}: {status}");
        body
    }

    /// A test clock frozen at `at`.
    async fn clock(&self, at: i64) -> String {
        let c = self
            .stripe(
                "/v1/test_helpers/test_clocks",
                Some(&[("frozen_time", &at.to_string())]),
            )
            .await;
        c["id"].as_str().unwrap().to_owned()
    }

    /// Moves a clock to `to`, then waits until what that caused has been delivered and
    /// applied.
    /// Advances a test clock and waits, as Stripe's clients must, until it is `ready`
    /// again, then until what it caused has arrived and been applied.
    async fn advance(&self, clock: &str, to: i64) {
        let answer = self
            .stripe(
                &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
                Some(&[("frozen_time", &to.to_string())]),
            )
            .await;
        assert_eq!(answer["status"], "advancing", "{answer}");
        self.eventually("the test clock to be ready", || async {
            let c = self
                .stripe(&format!("/v1/test_helpers/test_clocks/{clock}"), None)
                .await;
            c["status"] == "ready" && c["frozen_time"] == to
        })
        .await;
        self.settled().await;
    }

    /// Waits until every delivery has arrived and the inbox is drained.
    async fn settled(&self) {
        self.deliveries_settled().await;
        self.drained().await;
    }

    /// A published plan with a monthly price; returns (product id, price id).
    async fn plan(&self, title: &str, amount: i64, lookup_key: &str) -> (String, String) {
        let (status, p) = self
            .post(
                "/v1/products",
                json!({ "kind": "plan", "title": title, "status": "published", "creator_id": "creator_1",
                        "price": { "unit_amount": amount, "recurring_interval": "month", "lookup_key": lookup_key } }),
            )
            .await;
        assert_eq!(status, 200, "{p}");
        (
            p["id"].as_str().unwrap().to_owned(),
            p["prices"][0]["id"].as_str().unwrap().to_owned(),
        )
    }

    /// A customer whose Stripe customer lives on `clock`.
    async fn subscriber(&self, user: &str, clock: Option<&str>) -> String {
        let mut body = json!({ "external_user_id": user, "email": format!("{user}@example.com") });
        if let Some(c) = clock {
            body["test_clock"] = c.into();
        }
        let (status, c) = self.post("/v1/customers", body).await;
        assert_eq!(status, 200, "{c}");
        c["id"].as_str().unwrap().to_owned()
    }

    /// Subscribes through Checkout, paying with `card`; returns the mirrored subscription.
    /// A "Pro" plan at 1500 a month, and `user` subscribed to it with a card that pays:
    /// the plan's product, the customer and the subscription.
    async fn pro_subscriber(&self, user: &str) -> (String, String, Value) {
        let (plan, _) = self.plan("Pro", 1500, "pro_monthly").await;
        let c = self.subscriber(user, None).await;
        let sub = self
            .subscribe(&c, json!({ "price": "pro_monthly" }), "4242424242424242")
            .await;
        (plan, c, sub)
    }

    async fn subscribe(&self, customer: &str, mut body: Value, card: &str) -> Value {
        body["customer"] = customer.into();
        let session = self.checkout(body).await;
        assert_eq!(self.pay(&session, card).await, 303);
        let (status, s) = self
            .get(&format!(
                "/v1/checkout_sessions/{}?sync=true",
                session["stripe_checkout_session_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["order"]["status"], "completed", "{s}");
        assert!(s["subscription"]["id"].is_string(), "{s}");
        self.settled().await;
        s["subscription"].clone()
    }

    /// The subscription as Tollgate has it now.
    async fn sub(&self, id: &str) -> Value {
        let (status, s) = self.get(&format!("/v1/subscriptions/{id}")).await;
        assert_eq!(status, 200, "{s}");
        s
    }

    /// The subscription as Stripe has it now.
    async fn stripe_sub(&self, sub: &Value) -> Value {
        self.stripe(
            &format!(
                "/v1/subscriptions/{}",
                sub["stripe_subscription_id"].as_str().unwrap()
            ),
            None,
        )
        .await
    }

    /// The customer's invoices in Stripe, newest first.
    async fn invoices(&self, sub: &Value) -> Vec<Value> {
        let list = self
            .stripe(
                &format!(
                    "/v1/invoices?customer={}&limit=100",
                    sub["stripe_customer_id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        list["data"].as_array().unwrap().clone()
    }

    async fn subscription_call(&self, sub: &Value, action: &str, body: Value) -> Value {
        let (status, s) = self
            .post(
                &format!("/v1/subscriptions/{}/{action}", sub["id"].as_str().unwrap()),
                body,
            )
            .await;
        assert_eq!(status, 200, "{action}: {s}");
        s
    }
}

/// Trial, then the first paid period, then a renewal, each one as Stripe bills it.
pub async fn a_trial_becomes_active_and_renews(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let start = now();
    let clock = t.clock(start).await;
    let (plan, _) = t.plan("Pro", 1500, "pro_monthly").await;
    let c = t.subscriber("trial_user", Some(&clock)).await;
    let sub = t
        .subscribe(
            &c,
            json!({ "price": "pro_monthly", "trial_period_days": 7 }),
            "4242424242424242",
        )
        .await;
    assert_eq!(sub["status"], "trialing");
    assert_eq!(sub["trial_ends_at"].as_i64().unwrap(), start + 7 * DAY);
    assert!(t.access(&c, &plan).await, "trialing grants access");

    t.advance(&clock, start + 7 * DAY + 2 * HOUR).await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "active", "{s}");
    let first_end = s["current_period_ends_at"].as_i64().unwrap();
    assert!(first_end > start + 30 * DAY, "{s}");
    assert!(t.access(&c, &plan).await);
    let paid: Vec<_> = t
        .invoices(&s)
        .await
        .into_iter()
        .filter(|i| i["status"] == "paid" && i["amount_paid"] == 1500)
        .collect();
    assert_eq!(
        paid.len(),
        1,
        "the first period is billed once the trial ends"
    );

    // Renewal invoices are finalized and charged an hour after the period ends.
    t.advance(&clock, first_end + 2 * HOUR).await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "active");
    assert_eq!(s["current_period_starts_at"].as_i64().unwrap(), first_end);
    let paid = t
        .invoices(&s)
        .await
        .into_iter()
        .filter(|i| i["status"] == "paid" && i["amount_paid"] == 1500)
        .count();
    assert_eq!(paid, 2, "renewed");
    assert_eq!(t.stripe_sub(&s).await["status"], "active");
    assert!(t.access(&c, &plan).await);
}

/// A card that attaches but fails every charge: past_due when the trial's invoice fails,
/// access held through the grace period, and revoked when Stripe gives up and cancels.
pub async fn a_failing_renewal_is_past_due_in_grace_then_canceled_and_revoked(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let start = now();
    let clock = t.clock(start).await;
    let (plan, _) = t.plan("Pro", 1500, "pro_monthly").await;
    let c = t.subscriber("failing_user", Some(&clock)).await;
    let sub = t
        .subscribe(
            &c,
            json!({ "price": "pro_monthly", "trial_period_days": 3 }),
            "4000000000000341",
        )
        .await;
    assert_eq!(sub["status"], "trialing");

    t.advance(&clock, start + 3 * DAY + 2 * HOUR).await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "past_due", "{s}");
    let since = s["payment_failed_at"].as_i64().unwrap();
    assert!(since >= start + 3 * DAY, "{s}");
    assert!(
        t.access(&c, &plan).await,
        "past_due keeps access for the grace period"
    );
    assert_eq!(s["has_access"], true);
    assert_eq!(
        s["access_expires_at"].as_i64().unwrap(),
        since + 3 * DAY,
        "the tenant's default grace is three days from the failed payment"
    );

    // Stripe retries 3, 8 and 15 days after the first failure, then cancels.
    t.advance(&clock, since + 16 * DAY).await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "canceled", "{s}");
    assert_eq!(t.stripe_sub(&s).await["status"], "canceled");
    assert!(!t.access(&c, &plan).await, "canceled revokes");
}

/// Grace is measured from the failed payment: a past_due subscription whose payment failed
/// longer ago than the tenant's grace period grants nothing; a longer grace grants again.
pub async fn past_due_beyond_the_grace_period_is_revoked(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    // The clock runs thirty days behind, so the failure is weeks old in real time.
    let start = now() - 30 * DAY;
    let clock = t.clock(start).await;
    let (plan, _) = t.plan("Pro", 1500, "pro_monthly").await;
    let c = t.subscriber("lapsed_user", Some(&clock)).await;
    let sub = t
        .subscribe(
            &c,
            json!({ "price": "pro_monthly", "trial_period_days": 1 }),
            "4000000000000341",
        )
        .await;
    t.advance(&clock, start + DAY + 2 * HOUR).await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "past_due", "{s}");
    assert!(!t.access(&c, &plan).await, "the grace period is over");

    let (status, body) = t
        .post("/v1/tenant", json!({ "grace_period_days": 45 }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        t.access(&c, &plan).await,
        "a 45-day grace still covers a 29-day-old failure"
    );
}

/// Upgrading charges the difference now; downgrading keeps the better plan until the
/// period ends and bills the cheaper one from the renewal on.
pub async fn upgrades_prorate_now_and_downgrades_wait_for_the_period_end(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let start = now();
    let clock = t.clock(start).await;
    let (basic, _) = t.plan("Basic", 1000, "basic_monthly").await;
    let (pro, pro_price) = t.plan("Pro", 3000, "pro_monthly").await;
    let c = t.subscriber("changer", Some(&clock)).await;
    let sub = t
        .subscribe(&c, json!({ "price": "basic_monthly" }), "4242424242424242")
        .await;
    assert_eq!(sub["status"], "active");
    let period_end = sub["current_period_ends_at"].as_i64().unwrap();
    assert!(t.access(&c, &basic).await && !t.access(&c, &pro).await);

    t.advance(&clock, start + 10 * DAY).await;
    let up = t
        .subscription_call(&sub, "change_price", json!({ "price": pro_price }))
        .await;
    assert_eq!(up["change"], "upgrade");
    assert_eq!(up["price_id"], pro_price.as_str());
    t.settled().await;
    assert!(
        t.access(&c, &pro).await,
        "an upgrade grants the new plan now"
    );
    assert!(!t.access(&c, &basic).await);
    let proration = t
        .invoices(&up)
        .await
        .into_iter()
        .find(|i| i["billing_reason"] == "subscription_update")
        .expect("a proration invoice");
    let charged = proration["amount_paid"].as_i64().unwrap();
    assert!(
        charged > 0 && charged < 2000,
        "two thirds of a month's difference of 2000, got {charged}"
    );
    assert_eq!(proration["status"], "paid");

    let down = t
        .subscription_call(&up, "change_price", json!({ "price": "basic_monthly" }))
        .await;
    assert_eq!(down["change"], "downgrade");
    assert_eq!(down["effective_at"].as_i64().unwrap(), period_end);
    t.settled().await;
    assert!(
        t.access(&c, &pro).await,
        "the plan paid for lasts until the period ends"
    );
    let invoices_before = t.invoices(&down).await.len();
    assert_eq!(
        invoices_before,
        t.invoices(&up).await.len(),
        "a downgrade bills nothing now"
    );

    t.advance(&clock, period_end + 2 * HOUR).await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["current_period_starts_at"].as_i64().unwrap(), period_end);
    assert!(
        !t.access(&c, &pro).await,
        "the better plan ended with its period"
    );
    assert!(t.access(&c, &basic).await);
    let renewal = t
        .invoices(&s)
        .await
        .into_iter()
        .find(|i| i["billing_reason"] == "subscription_cycle")
        .expect("a renewal invoice");
    assert_eq!(renewal["amount_paid"], 1000, "renewed at the cheaper price");
}

/// Cancel at period end keeps access until then; resume undoes it; at the end Stripe
/// cancels and access goes.
pub async fn cancel_at_period_end_keeps_access_until_then_and_resume_undoes_it(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let start = now();
    let clock = t.clock(start).await;
    let (plan, _) = t.plan("Pro", 1500, "pro_monthly").await;
    let c = t.subscriber("canceler", Some(&clock)).await;
    let sub = t
        .subscribe(&c, json!({ "price": "pro_monthly" }), "4242424242424242")
        .await;
    let period_end = sub["current_period_ends_at"].as_i64().unwrap();

    let canceled = t.subscription_call(&sub, "cancel", json!({})).await;
    assert_eq!(canceled["cancel_at_period_end"], true);
    assert_eq!(canceled["status"], "active");
    assert_eq!(canceled["access_expires_at"].as_i64().unwrap(), period_end);
    assert!(t.access(&c, &plan).await, "paid for until the period ends");
    assert_eq!(t.stripe_sub(&sub).await["cancel_at_period_end"], true);

    let resumed = t.subscription_call(&sub, "resume", json!({})).await;
    assert_eq!(resumed["cancel_at_period_end"], false);
    assert!(resumed["access_expires_at"].is_null());
    assert_eq!(t.stripe_sub(&sub).await["cancel_at_period_end"], false);

    t.subscription_call(&sub, "cancel", json!({})).await;
    t.settled().await;
    t.advance(&clock, period_end + 2 * HOUR).await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "canceled", "{s}");
    assert!(!t.access(&c, &plan).await);
    let (status, err) = t
        .post(
            &format!("/v1/subscriptions/{}/resume", sub["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "subscription_ended");
}

/// Pausing collection revokes access; unpausing restores it.
pub async fn pause_revokes_and_unpause_restores(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (plan, c, sub) = t.pro_subscriber("pauser").await;
    assert!(t.access(&c, &plan).await);

    let paused = t.subscription_call(&sub, "pause", json!({})).await;
    assert_eq!(paused["pause_behavior"], "void");
    assert!(!t.access(&c, &plan).await, "paused grants nothing");
    assert_eq!(
        t.stripe_sub(&sub).await["pause_collection"]["behavior"],
        "void"
    );

    let unpaused = t.subscription_call(&sub, "unpause", json!({})).await;
    assert!(unpaused["pause_behavior"].is_null());
    assert!(t.access(&c, &plan).await);
    assert!(t.stripe_sub(&sub).await["pause_collection"].is_null());
    t.settled().await;
    assert!(t.access(&c, &plan).await, "the events that follow agree");
}

/// A change made through the API holds as soon as it is answered, while the worker reads
/// Stripe for the events of earlier changes at Stripe's latency: a read that began before
/// the change, and so shows the state before it, never undoes it.
pub async fn a_change_is_not_undone_by_a_read_that_began_before_it(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (plan, c, sub) = t.pro_subscriber("changer").await;
    // Each request waits 10 to 120 ms before Stripe acts on it: a worker's read of the
    // last change's event often starts after the next change starts and acts before it.
    t.set_faults(Faults {
        latency_ms: 10,
        latency_max_ms: 120,
        ..Faults::default()
    });
    for round in 0..8 {
        t.subscription_call(&sub, "pause", json!({})).await;
        assert!(!t.access(&c, &plan).await, "round {round}: paused");
        t.subscription_call(&sub, "unpause", json!({})).await;
        assert!(t.access(&c, &plan).await, "round {round}: unpaused");
    }
    t.set_faults(Faults::default());
    t.settled().await;
    assert!(t.access(&c, &plan).await, "the events that follow agree");
}

/// A change whose answer was lost, retried after the subscription changed at Stripe in
/// another way: Stripe replays the first answer for the same key, and the mirror still
/// ends on Stripe's state, not on the replayed one.
pub async fn a_replayed_answer_does_not_undo_a_later_change(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (plan, c, sub) = t.pro_subscriber("replayed").await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let stripe_id = sub["stripe_subscription_id"].as_str().unwrap().to_owned();
    // The pause is made at Stripe, but its answer is lost and its event never sent.
    t.set_faults(Faults {
        lost_answer_rate: 1.0,
        drop_rate: 1.0,
        ..Faults::default()
    });
    let (status, _) = t
        .post(&format!("/v1/subscriptions/{id}/pause"), json!({}))
        .await;
    assert_ne!(status, 200);
    t.settled().await;
    // Unpaused at Stripe directly, slowly, while the tenant retries the pause with the
    // same key: Stripe replays "paused".
    t.set_faults(Faults {
        latency_ms: 600,
        ..Faults::default()
    });
    let (s, _) = t
        .sandbox_call(
            &format!("/v1/subscriptions/{stripe_id}"),
            Some(&[("pause_collection", "")]),
        )
        .await;
    assert_eq!(s, 200);
    let _ = t
        .post(&format!("/v1/subscriptions/{id}/pause"), json!({}))
        .await;
    t.set_faults(Faults::default());
    t.settled().await;
    assert!(t.stripe_sub(&sub).await["pause_collection"].is_null());
    t.eventually("the mirror on Stripe's state", || t.access(&c, &plan))
        .await;
}

/// What the customer does in the portal reaches Tollgate through Stripe's events.
pub async fn portal_actions_flow_back_through_webhooks(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (basic, _) = t.plan("Basic", 1000, "basic_monthly").await;
    let (pro, pro_price) = t.plan("Pro", 3000, "pro_monthly").await;
    let (status, _) = t
        .post(
            "/v1/tenant",
            json!({ "portal_return_url_template": "https://shop.test/account/{CUSTOMER_ID}",
                    "portal": { "cancel": true, "switch_plan": true, "update_payment_method": true, "headline": "Acme memberships" } }),
        )
        .await;
    assert_eq!(status, 200);
    let c = t.subscriber("portal_user", None).await;
    let sub = t
        .subscribe(&c, json!({ "price": "basic_monthly" }), "4242424242424242")
        .await;
    let (status, portal) = t
        .post(&format!("/v1/customers/{c}/portal_sessions"), json!({}))
        .await;
    assert_eq!(status, 200, "{portal}");
    let url = portal["url"].as_str().unwrap().to_owned();
    let page = t.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Acme memberships"), "the tenant's headline");
    assert!(
        page.contains(&format!("https://shop.test/account/{c}")),
        "the tenant's return URL"
    );

    let stripe_sub = sub["stripe_subscription_id"].as_str().unwrap();
    let res = t
        .http
        .post(format!("{url}/cancel"))
        .form(&[("subscription", stripe_sub)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    t.settled().await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["cancel_at_period_end"], true, "{s}");

    let (_, price) = t.get(&format!("/v1/prices/{pro_price}")).await;
    let stripe_pro = price["stripe_price_id"].as_str().unwrap().to_owned();
    let res = t
        .http
        .post(format!("{url}/switch"))
        .form(&[("subscription", stripe_sub), ("price", &stripe_pro)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .contains("done="),
        "{:?}",
        res.headers()["location"]
    );
    t.settled().await;
    let s = t.sub(sub["id"].as_str().unwrap()).await;
    assert_eq!(s["price_id"], pro_price.as_str(), "{s}");
    assert!(t.access(&c, &pro).await && !t.access(&c, &basic).await);
}

/// Every subscription event delivered twice and out of order, then all of them again:
/// the mirror ends where Stripe is.
pub async fn subscription_events_duplicated_and_reordered_converge(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let start = now();
    let clock = t.clock(start).await;
    let (plan, _) = t.plan("Pro", 1500, "pro_monthly").await;
    let c = t.subscriber("chaos_user", Some(&clock)).await;
    t.set_faults(Faults {
        duplicate_rate: 1.0,
        reorder_rate: 1.0,
        ..Faults::default()
    });
    let sub = t
        .subscribe(
            &c,
            json!({ "price": "pro_monthly", "trial_period_days": 5 }),
            "4242424242424242",
        )
        .await;
    t.subscription_call(&sub, "cancel", json!({})).await;
    t.subscription_call(&sub, "resume", json!({})).await;
    t.advance(&clock, start + 5 * DAY + 2 * HOUR).await;
    t.set_faults(Faults::default());
    // The oldest states again, last.
    t.resend_all("customer.subscription.created").await;
    t.resend_all("customer.subscription.updated").await;
    t.settled().await;

    let mine = t.sub(sub["id"].as_str().unwrap()).await;
    let theirs = t.stripe_sub(&sub).await;
    assert_eq!(mine["status"], "active");
    assert_eq!(mine["status"], theirs["status"]);
    assert_eq!(mine["cancel_at_period_end"], theirs["cancel_at_period_end"]);
    assert_eq!(
        mine["current_period_ends_at"],
        theirs["items"]["data"][0]["current_period_end"]
    );
    assert!(t.access(&c, &plan).await);
    let (_, list) = t.get(&format!("/v1/subscriptions?customer={c}")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "one mirror row");
    let (_, events) = t
        .get("/v1/events?type=customer.subscription.updated&limit=100")
        .await;
    let events = events["data"].as_array().unwrap();
    assert!(!events.is_empty());
    let mut ids: Vec<_> = events
        .iter()
        .map(|e| e["stripe_event_id"].clone())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["status"] == "processed" || e["status"] == "ignored"),
        "{events:?}"
    );
    ids.sort_by_key(|v| v.to_string());
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "each event stored once");
}

/// Many subscriptions changed at once, at a Stripe-like latency, with every event
/// duplicated and reordered and the oldest states delivered again last: events are
/// applied concurrently (one subscription at a time) and every mirror ends on Stripe's
/// state, each event stored once and none left failed.
pub async fn concurrent_events_at_stripe_latency_converge_for_every_subscription(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (plan, _) = t.plan("Team", 2500, "team_monthly").await;
    let mut subs = Vec::new();
    for n in 0..8 {
        let c = t.subscriber(&format!("busy_{n}"), None).await;
        let sub = t
            .subscribe(&c, json!({ "price": "team_monthly" }), "4242424242424242")
            .await;
        subs.push((c, sub));
    }
    t.set_faults(Faults {
        duplicate_rate: 1.0,
        reorder_rate: 1.0,
        latency_ms: 20,
        latency_max_ms: 80,
        ..Faults::default()
    });
    for (n, (_, sub)) in subs.iter().enumerate() {
        t.subscription_call(sub, "cancel", json!({})).await;
        if n % 2 == 0 {
            t.subscription_call(sub, "resume", json!({})).await;
        }
    }
    t.set_faults(Faults {
        latency_ms: 20,
        latency_max_ms: 80,
        ..Faults::default()
    });
    t.resend_all("customer.subscription.created").await;
    t.settled().await;
    t.set_faults(Faults::default());

    for (n, (c, sub)) in subs.iter().enumerate() {
        let mine = t.sub(sub["id"].as_str().unwrap()).await;
        let theirs = t.stripe_sub(sub).await;
        assert_eq!(mine["status"], theirs["status"], "subscription {n}");
        assert_eq!(
            mine["cancel_at_period_end"], theirs["cancel_at_period_end"],
            "subscription {n}"
        );
        assert_eq!(mine["cancel_at_period_end"], n % 2 == 1, "subscription {n}");
        assert_eq!(
            mine["current_period_ends_at"],
            theirs["items"]["data"][0]["current_period_end"]
        );
        assert!(
            t.access(c, &plan).await,
            "canceled at period end keeps access"
        );
    }
    let (_, events) = t.get("/v1/events?limit=100").await;
    let events = events["data"].as_array().unwrap();
    assert!(events.len() > 16, "{} events", events.len());
    assert!(
        events
            .iter()
            .all(|e| e["status"] == "processed" || e["status"] == "ignored"),
        "{events:?}"
    );
    let mut ids: Vec<_> = events
        .iter()
        .map(|e| e["stripe_event_id"].to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "each event stored once");
}

/// A promotion code made through Tollgate is a Stripe promotion code, and applying it at
/// checkout discounts the subscription's invoices.
pub async fn a_promotion_code_discounts_the_subscription(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    t.plan("Pro", 2000, "pro_monthly").await;
    let (status, coupon) = t
        .post(
            "/v1/coupons",
            json!({ "name": "Launch", "percent_off_bps": 2500, "duration": "forever" }),
        )
        .await;
    assert_eq!(status, 200, "{coupon}");
    let (status, code) = t
        .post(
            "/v1/promotion_codes",
            json!({ "coupon": coupon["id"], "code": "LAUNCH25" }),
        )
        .await;
    assert_eq!(status, 200, "{code}");
    let (status, again) = t
        .post(
            "/v1/promotion_codes",
            json!({ "coupon": coupon["id"], "code": "launch25" }),
        )
        .await;
    assert_eq!(status, 409, "codes are unique regardless of case: {again}");

    let c = t.subscriber("bargain_hunter", None).await;
    let sub = t
        .subscribe(
            &c,
            json!({ "price": "pro_monthly", "promotion_code": "launch25" }),
            "4242424242424242",
        )
        .await;
    let invoices = t.invoices(&sub).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0]["amount_paid"], 1500, "25% off 2000");
    assert_eq!(
        t.stripe_sub(&sub).await["discounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (status, err) = t
        .post(
            "/v1/checkout_sessions",
            json!({ "customer": t.subscriber("other", None).await, "price": "pro_monthly", "promotion_code": "NOPE" }),
        )
        .await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["param"], "promotion_code");
}

/// Usage counted once per idempotency key and sent to Stripe once, even when Stripe's
/// answers are lost and the reporter sends again.
pub async fn usage_is_reported_once_despite_retries(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (status, p) = t
        .post(
            "/v1/products",
            json!({ "kind": "plan", "title": "API", "status": "published", "creator_id": "creator_1",
                    "price": { "unit_amount": 2, "recurring_interval": "month", "usage_type": "metered", "meter_event_name": "api_calls", "lookup_key": "api_metered" } }),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let c = t.subscriber("metered_user", None).await;
    let sub = t
        .subscribe(&c, json!({ "price": "api_metered" }), "4242424242424242")
        .await;
    assert_eq!(sub["status"], "active");

    let report = |key: &'static str, value: i64| {
        let t = &t;
        let c = c.clone();
        async move {
            let res = t
                .http
                .post(format!("{}/v1/usage", t.base))
                .bearer_auth(&t.key)
                .header("Idempotency-Key", key)
                .json(&json!({ "customer": c, "event_name": "api_calls", "value": value }))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    // Stripe carries out each meter event but its answer is lost: the reporter must retry.
    t.set_faults(Faults {
        lost_answer_rate: 1.0,
        ..Faults::default()
    });
    let (status, first) = report("usage-1", 5).await;
    assert_eq!(status, 200, "{first}");
    let (status, repeat) = report("usage-1", 5).await;
    assert_eq!(status, 200, "{repeat}");
    assert_eq!(first["id"], repeat["id"], "one record per key");
    let (status, conflict) = report("usage-1", 6).await;
    assert_eq!(status, 409, "{conflict}");
    let (status, _) = report("usage-2", 7).await;
    assert_eq!(status, 200);

    t.eventually("the first sends to fail", || async {
        let (_, list) = t.get(&format!("/v1/usage?customer={c}")).await;
        let rows = list["data"].as_array().unwrap().clone();
        rows.len() == 2
            && rows
                .iter()
                .all(|u| u["attempts"].as_i64().unwrap() >= 1 && u["status"] == "pending")
    })
    .await;
    t.set_faults(Faults::default());
    t.eventually("usage reported", || async {
        let (_, list) = t.get(&format!("/v1/usage?customer={c}")).await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["status"] == "reported")
    })
    .await;

    let meters = t.stripe("/v1/billing/meters", None).await;
    let meter = meters["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["event_name"].as_str().unwrap().ends_with("api_calls"))
        .expect("the meter")
        .clone();
    let summary = t
        .stripe(
            &format!(
                "/v1/billing/meters/{}/event_summaries?customer={}&start_time={}&end_time={}",
                meter["id"].as_str().unwrap(),
                sub["stripe_customer_id"].as_str().unwrap(),
                now() - DAY,
                now() + DAY
            ),
            None,
        )
        .await;
    assert_eq!(
        summary["data"][0]["aggregated_value"], 12.0,
        "5 + 7, each counted once"
    );
}

/// A new price takes the old one's place for new sign-ups; existing subscriptions keep
/// theirs until the scheduled move.
pub async fn a_price_migration_moves_new_signups_then_existing_subscriptions(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (plan, old_price) = t.plan("Pro", 1500, "pro_monthly").await;
    let early = t.subscriber("early_bird", None).await;
    let old_sub = t
        .subscribe(
            &early,
            json!({ "price": "pro_monthly" }),
            "4242424242424242",
        )
        .await;
    assert_eq!(old_sub["price_id"], old_price.as_str());

    let (status, price) = t
        .post(
            &format!("/v1/products/{plan}/prices"),
            json!({ "unit_amount": 1900, "recurring_interval": "month" }),
        )
        .await;
    assert_eq!(status, 200, "{price}");
    let new_price = price["id"].as_str().unwrap().to_owned();
    let move_at = now() + 7 * DAY;
    let (status, migration) = t
        .post(
            &format!("/v1/prices/{old_price}/migrate"),
            json!({ "to_price": new_price, "move_existing_at": move_at }),
        )
        .await;
    assert_eq!(status, 200, "{migration}");
    assert_eq!(migration["status"], "scheduled");

    let late = t.subscriber("late_comer", None).await;
    let new_sub = t
        .subscribe(&late, json!({ "price": "pro_monthly" }), "4242424242424242")
        .await;
    assert_eq!(
        new_sub["price_id"],
        new_price.as_str(),
        "the lookup key follows the new price"
    );
    assert_eq!(t.invoices(&new_sub).await[0]["amount_paid"], 1900);

    // Not due yet: the sweep leaves existing subscriptions alone.
    tollgate::maintenance::sweep(t.state()).await.unwrap();
    let s = t.sub(old_sub["id"].as_str().unwrap()).await;
    assert_eq!(s["price_id"], old_price.as_str());

    // A week passes: the migration's time is now.
    sqlx::query("UPDATE price_migrations SET move_existing_at = $1 WHERE id = $2")
        .bind(now())
        .bind(migration["id"].as_str().unwrap())
        .execute(t.state().store.pool())
        .await
        .unwrap();
    tollgate::maintenance::sweep(t.state()).await.unwrap();
    let path = format!("/v1/price_migrations/{}", migration["id"].as_str().unwrap());
    let (_, done) = t.get(&path).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["moved"], 1, "{done}");
    assert_eq!(done["failed"], 0);
    let s = t.sub(old_sub["id"].as_str().unwrap()).await;
    assert_eq!(s["price_id"], new_price.as_str());
    let stripe = t.stripe_sub(&s).await;
    assert_eq!(
        stripe["items"]["data"][0]["price"]["id"],
        t.get(&format!("/v1/prices/{new_price}")).await.1["stripe_price_id"]
    );
    assert!(t.access(&early, &plan).await);
}

/// Another tenant's key finds none of this tenant's subscriptions, portals or usage.
pub async fn subscriptions_are_invisible_to_other_tenants(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    t.plan("Pro", 1500, "pro_monthly").await;
    let c = t.subscriber("owner", None).await;
    let sub = t
        .subscribe(&c, json!({ "price": "pro_monthly" }), "4242424242424242")
        .await;
    let id = sub["id"].as_str().unwrap();
    let (_, other) = t.new_tenant("Other", (0, 0)).await;
    use reqwest::Method;
    for (method, path, body) in [
        (Method::GET, format!("/v1/subscriptions/{id}"), None),
        (
            Method::POST,
            format!("/v1/subscriptions/{id}/cancel"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/subscriptions/{id}/pause"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/subscriptions/{id}/change_price"),
            Some(json!({ "price": "pro_monthly" })),
        ),
        (
            Method::POST,
            format!("/v1/customers/{c}/portal_sessions"),
            Some(json!({ "return_url": "https://other.test/" })),
        ),
    ] {
        let (status, body) = t.call_as(&other, method, &path, body).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, list) = t
        .call_as(&other, Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(status, 200);
    assert!(list["data"].as_array().unwrap().is_empty());
    let s = t.sub(id).await;
    assert_eq!(s["cancel_at_period_end"], false, "untouched");
}

/// Two payable checkouts of one plan would make two subscriptions: a new checkout expires
/// the customer's older one, and one paid meanwhile makes the new checkout a conflict.
pub async fn a_new_subscription_checkout_expires_the_older_one(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (plan, _) = t.plan("Pro", 1500, "pro_monthly").await;
    let c = t.subscriber("double_clicker", None).await;
    let body = json!({ "customer": c, "price": "pro_monthly" });
    let first = t.checkout(body.clone()).await;
    let second = t.checkout(body.clone()).await;
    let stripe_first = t
        .stripe(
            &format!(
                "/v1/checkout/sessions/{}",
                first["stripe_checkout_session_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(
        stripe_first["status"], "expired",
        "the older one can no longer be paid"
    );
    assert_ne!(t.pay(&first, "4242424242424242").await, 303);
    let (_, order) = t
        .get(&format!(
            "/v1/orders/{}",
            first["order_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(order["status"], "expired", "{order}");

    // The newer one is paid; a third checkout finds the subscription whether or not its
    // webhook was applied yet, because it settles open checkouts from Stripe first.
    assert_eq!(t.pay(&second, "4242424242424242").await, 303);
    let (status, err) = t.post("/v1/checkout_sessions", body).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "already_subscribed");
    t.settled().await;
    let (_, list) = t.get(&format!("/v1/subscriptions?customer={c}")).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "one subscription"
    );
    assert!(t.access(&c, &plan).await);
}

/// Stripe refuses Checkout for a known customer with automatic tax unless the session may
/// save the address it collects onto the customer (and tax ID collection unless it may
/// save the name): Tollgate asks for both, so tax checkouts work for one-time purchases and
/// subscriptions alike, and the subscription's renewals are taxed too.
pub async fn tax_checkouts_for_a_known_customer_pass_stripes_rules(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (plan, _) = t.plan("Taxed", 1200, "taxed_monthly").await;
    let course = t.product("course", 3000, None).await;
    let c = t.subscriber("taxpayer", None).await;
    let one_time = t
        .checkout(json!({ "customer": c, "product": course, "automatic_tax": true, "tax_id_collection": true }))
        .await;
    assert_eq!(t.pay(&one_time, "4242424242424242").await, 303);
    t.eventually("the taxed purchase", || t.access(&c, &course))
        .await;
    let sub = t
        .subscribe(
            &c,
            json!({ "price": "taxed_monthly", "automatic_tax": true, "tax_id_collection": true }),
            "4242424242424242",
        )
        .await;
    assert!(t.access(&c, &plan).await);
    let stripe = t.stripe_sub(&sub).await;
    assert_eq!(stripe["automatic_tax"]["enabled"], true, "{stripe}");
}
