//! Subscriptions over time, beyond the basics in `billing`: the renewal draft finalized an
//! hour later, metered usage, discounts by coupon duration, collection pauses, trials
//! without a card that pause and resume, customer deletion, and dunning to `unpaid`.

use stripe_billing::invoice::{ListInvoice, PayInvoice, RetrieveInvoice};
use stripe_billing::subscription::{
    ResumeSubscription, RetrieveSubscription, UpdateSubscription,
    UpdateSubscriptionPauseCollection, UpdateSubscriptionPauseCollectionBehavior,
};
use stripe_billing::test_helpers_test_clock::CreateTestHelpersTestClock;
use stripe_checkout::checkout_session::{
    CreateCheckoutSessionDiscounts, CreateCheckoutSessionPaymentMethodCollection,
    CreateCheckoutSessionSubscriptionData, CreateCheckoutSessionSubscriptionDataTrialSettings,
    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehavior,
    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehaviorMissingPaymentMethod as Missing,
    RetrieveCheckoutSession,
};
use stripe_core::customer::{CreateCustomer, DeleteCustomer};
use stripe_product::coupon::CreateCoupon;
use stripe_product::promotion_code::{
    CreatePromotionCode, CreatePromotionCodePromotion, CreatePromotionCodePromotionType,
};
use stripe_sandbox::Config;
use stripe_shared::CheckoutSessionMode::Subscription;
use stripe_shared::{CouponDuration, InvoiceStatus, SubscriptionStatus};

use crate::support::{Receiver, TestSandbox, price, session, spawn, spawn_with};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;
/// 2026-02-01T00:00:00Z: a month after T0.
const FEB: i64 = T0 + 31 * DAY;
/// 2026-03-01T00:00:00Z.
const MAR: i64 = FEB + 28 * DAY;

struct Clocked {
    clock: String,
    customer: String,
}

async fn clocked(sb: &TestSandbox) -> Clocked {
    let clock = CreateTestHelpersTestClock::new(T0)
        .send(&sb.client)
        .await
        .unwrap();
    let customer = CreateCustomer::new()
        .email("member@example.com")
        .test_clock(clock.id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    Clocked {
        clock: clock.id.to_string(),
        customer: customer.id.to_string(),
    }
}

async fn advance(sb: &TestSandbox, c: &Clocked, to: i64) {
    crate::support::advance_clock(sb, &c.clock, to).await;
}

async fn checkout(
    sb: &TestSandbox,
    c: &Clocked,
    price: &str,
    card: &str,
    configure: impl FnOnce(
        stripe_checkout::checkout_session::CreateCheckoutSession,
    ) -> stripe_checkout::checkout_session::CreateCheckoutSession,
) -> String {
    let s = session(sb, price, Subscription, |r| {
        configure(r.customer(c.customer.as_str()))
    })
    .await;
    let answer = sb.pay(s.url.as_deref().unwrap(), card, None).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap()
        .subscription
        .unwrap()
        .id()
        .to_string()
}

async fn sub(sb: &TestSandbox, id: &str) -> stripe_shared::Subscription {
    RetrieveSubscription::new(id)
        .send(&sb.client)
        .await
        .unwrap()
}

/// The subscription's invoices, oldest first, through async-stripe.
async fn invoices(sb: &TestSandbox, sub: &str) -> Vec<stripe_shared::Invoice> {
    let mut list = ListInvoice::new()
        .subscription(sub)
        .limit(100)
        .send(&sb.client)
        .await
        .unwrap()
        .data;
    list.reverse();
    list
}

#[tokio::test]
async fn a_renewal_invoice_is_a_draft_at_period_end_and_is_charged_an_hour_later() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = checkout(&sb, &c, p.id.as_str(), "4242424242424242", |r| r).await;
    hook.wait_for_type("checkout.session.completed").await;
    let before = hook.received().len();

    advance(&sb, &c, FEB).await;
    let s = sub(&sb, &id).await;
    assert_eq!(
        s.items.data[0].current_period_start, FEB,
        "the period moved"
    );
    let renewal = invoices(&sb, &id).await.pop().unwrap();
    assert_eq!(renewal.status, Some(InvoiceStatus::Draft));
    assert_eq!(renewal.automatically_finalizes_at, Some(FEB + HOUR));
    assert_eq!(renewal.amount_paid, 0);

    advance(&sb, &c, FEB + HOUR).await;
    let renewal = RetrieveInvoice::new(renewal.id.clone().unwrap())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(renewal.status, Some(InvoiceStatus::Paid));
    assert_eq!(renewal.status_transitions.finalized_at, Some(FEB + HOUR));

    let got = hook
        .wait_for("the renewal's payment", |r| {
            r.len() > before
                && r[before..]
                    .iter()
                    .any(|x| x.event_type() == "invoice.payment_succeeded")
        })
        .await;
    let renewal_events: Vec<(String, i64)> = got[before..]
        .iter()
        .map(|r| (r.event_type(), r.json()["created"].as_i64().unwrap()))
        .filter(|(t, _)| !t.starts_with("test_helpers."))
        .collect();
    assert_eq!(
        renewal_events,
        [
            ("customer.subscription.updated".to_owned(), FEB),
            ("invoice.created".to_owned(), FEB),
            ("invoice.finalized".to_owned(), FEB + HOUR),
            ("payment_intent.created".to_owned(), FEB + HOUR),
            ("charge.succeeded".to_owned(), FEB + HOUR),
            ("payment_intent.succeeded".to_owned(), FEB + HOUR),
            ("invoice.paid".to_owned(), FEB + HOUR),
            ("invoice.payment_succeeded".to_owned(), FEB + HOUR),
        ]
    );
    // What the clock did on its own is automatic: no request caused it.
    for r in &got[before..] {
        let event = r.json();
        if !event["type"].as_str().unwrap().starts_with("test_helpers.") {
            assert!(event["request"]["id"].is_null(), "{}", event["type"]);
        }
    }
    let update = got[before..]
        .iter()
        .find(|r| r.event_type() == "customer.subscription.updated")
        .unwrap()
        .json();
    let prev_item = &update["data"]["previous_attributes"]["items"]["data"][0];
    assert_eq!(
        (
            prev_item["current_period_start"].as_i64(),
            prev_item["current_period_end"].as_i64()
        ),
        (Some(T0), Some(FEB)),
        "previous_attributes shows the period that ended"
    );
}

#[tokio::test]
async fn metered_usage_of_the_period_that_ended_is_billed_at_renewal() {
    let sb = spawn().await;
    let c = clocked(&sb).await;
    let (status, meter) = sb
        .post(
            "/v1/billing/meters",
            "display_name=API+calls&event_name=api_calls&default_aggregation[formula]=sum",
        )
        .await;
    assert_eq!(status, 200, "{meter}");
    let (status, body) = sb
        .post(
            "/v1/prices",
            "currency=usd&unit_amount=10&product_data[name]=Calls&recurring[interval]=month&recurring[usage_type]=metered",
        )
        .await;
    assert_eq!(status, 400, "a metered price names its meter: {body}");
    let (status, metered) = sb
        .post(
            "/v1/prices",
            &format!(
                "currency=usd&unit_amount=10&product_data[name]=Calls&recurring[interval]=month&recurring[usage_type]=metered&recurring[meter]={}",
                meter["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(status, 200, "{metered}");
    let price_id = metered["id"].as_str().unwrap();
    let base = format!(
        "mode=subscription&success_url=https%3A%2F%2Fshop.test%2Fok&customer={}&line_items[0][price]={price_id}",
        c.customer
    );
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &format!("{base}&line_items[0][quantity]=1"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("line_items[0][quantity]")),
        "Checkout takes no quantity for a metered price: {body}"
    );
    let (status, s) = sb.post("/v1/checkout/sessions", &base).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["amount_total"], 0, "usage is billed in arrears");
    let answer = sb
        .pay(s["url"].as_str().unwrap(), "4242424242424242", None)
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let (_, done) = sb
        .get(&format!(
            "/v1/checkout/sessions/{}",
            s["id"].as_str().unwrap()
        ))
        .await;
    let id = done["subscription"].as_str().unwrap().to_owned();

    advance(&sb, &c, T0 + 2 * DAY).await;
    let report = |identifier: &str, value: i64, timestamp: i64| {
        format!(
            "event_name=api_calls&payload[stripe_customer_id]={}&payload[value]={value}&identifier={identifier}&timestamp={timestamp}",
            c.customer
        )
    };
    let (status, body) = sb
        .post("/v1/billing/meter_events", &report("u1", 4, T0 + DAY))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sb
        .post("/v1/billing/meter_events", &report("u1", 4, T0 + DAY))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("duplicate_meter_event")),
        "an identifier is unique for 24 hours"
    );
    let (status, body) = sb
        .post(
            "/v1/billing/meter_events",
            &report("u2", 1, T0 + 2 * DAY + 10 * 60),
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("timestamp")),
        "at most 5 minutes ahead"
    );
    advance(&sb, &c, T0 + 20 * DAY).await;
    let (status, _) = sb
        .post("/v1/billing/meter_events", &report("u1", 3, T0 + 19 * DAY))
        .await;
    assert_eq!(status, 200, "the identifier is free again after 24 hours");
    let (status, _) = sb
        .post(
            "/v1/billing/meter_events",
            &report("old", 1, T0 + 20 * DAY - 36 * DAY),
        )
        .await;
    assert_eq!(status, 400, "at most 35 days back");

    advance(&sb, &c, FEB + 2 * HOUR).await;
    let renewal = invoices(&sb, &id).await.pop().unwrap();
    assert_eq!(
        renewal.billing_reason,
        Some(stripe_shared::InvoiceBillingReason::SubscriptionCycle)
    );
    assert_eq!(renewal.status, Some(InvoiceStatus::Paid));
    assert_eq!(renewal.amount_paid, 70, "7 calls at 10 cents");
    let line = &renewal.lines.data[0];
    assert_eq!((line.period.start, line.period.end), (T0, FEB));
    assert_eq!(line.quantity, Some(7));
}

async fn coupon(sb: &TestSandbox, duration: CouponDuration, months: Option<i64>) -> String {
    let mut req = CreateCoupon::new().percent_off(25.0).duration(duration);
    if let Some(m) = months {
        req = req.duration_in_months(m);
    }
    req.send(&sb.client).await.unwrap().id.to_string()
}

#[tokio::test]
async fn a_repeating_promotion_code_discounts_renewals_until_its_months_are_up() {
    let sb = spawn().await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let coupon = coupon(&sb, CouponDuration::Repeating, Some(2)).await;
    let mut promotion = CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
    promotion.coupon = Some(coupon.clone());
    let promo = CreatePromotionCode::new(promotion)
        .code("TWOMONTHS")
        .send(&sb.client)
        .await
        .unwrap();
    let id = checkout(&sb, &c, p.id.as_str(), "4242424242424242", |r| {
        r.discounts(vec![CreateCheckoutSessionDiscounts {
            coupon: None,
            promotion_code: Some(promo.id.to_string()),
        }])
    })
    .await;
    let s = sub(&sb, &id).await;
    assert_eq!(
        s.discounts.len(),
        1,
        "the discount stays on the subscription"
    );
    let (_, discount) = sb
        .get(&format!("/v1/subscriptions/{id}?expand[]=discounts"))
        .await;
    assert_eq!(
        discount["discounts"][0]["source"]["coupon"],
        coupon.as_str()
    );
    assert_eq!(
        discount["discounts"][0]["promotion_code"],
        promo.id.as_str()
    );
    assert_eq!(discount["discounts"][0]["end"], MAR);

    advance(&sb, &c, FEB + 2 * HOUR).await;
    advance(&sb, &c, MAR + 2 * HOUR).await;
    let paid: Vec<i64> = invoices(&sb, &id)
        .await
        .iter()
        .map(|i| i.amount_paid)
        .collect();
    assert_eq!(
        paid,
        [675, 675, 900],
        "two discounted months, then the full price"
    );
    assert!(sub(&sb, &id).await.discounts.is_empty());
}

#[tokio::test]
async fn a_once_coupon_discounts_only_the_first_invoice_and_forever_every_one() {
    let sb = spawn().await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    for (duration, expected) in [
        (CouponDuration::Once, [675, 900]),
        (CouponDuration::Forever, [675, 675]),
    ] {
        let c = clocked(&sb).await;
        let coupon = coupon(&sb, duration.clone(), None).await;
        let id = checkout(&sb, &c, p.id.as_str(), "4242424242424242", |r| {
            r.discounts(vec![CreateCheckoutSessionDiscounts {
                coupon: Some(coupon.clone()),
                promotion_code: None,
            }])
        })
        .await;
        advance(&sb, &c, FEB + 2 * HOUR).await;
        let paid: Vec<i64> = invoices(&sb, &id)
            .await
            .iter()
            .map(|i| i.amount_paid)
            .collect();
        assert_eq!(paid, expected, "{duration:?}");
        assert_eq!(
            sub(&sb, &id).await.discounts.len(),
            usize::from(duration == CouponDuration::Forever)
        );
    }
}

#[tokio::test]
async fn keep_as_draft_leaves_renewals_as_drafts_and_never_unfinalizes_an_invoice() {
    let sb = spawn().await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = checkout(&sb, &c, p.id.as_str(), "4242424242424242", |r| r).await;
    let s = UpdateSubscription::new(id.as_str())
        .pause_collection(UpdateSubscriptionPauseCollection {
            behavior: UpdateSubscriptionPauseCollectionBehavior::KeepAsDraft,
            resumes_at: None,
        })
        .send(&sb.client)
        .await
        .unwrap();
    assert!(s.pause_collection.is_some());
    advance(&sb, &c, FEB + 2 * HOUR).await;
    let inv = invoices(&sb, &id).await;
    assert_eq!(
        inv[0].status,
        Some(InvoiceStatus::Paid),
        "the paid invoice stays paid"
    );
    assert_eq!(inv[1].status, Some(InvoiceStatus::Draft));
    assert_eq!(inv[1].auto_advance, Some(false));
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::Active);

    // Paying the kept draft later finalizes and charges it.
    let paid = PayInvoice::new(inv[1].id.clone().unwrap())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(paid.status, Some(InvoiceStatus::Paid));
}

fn trial_without_card(
    behavior: Missing,
) -> impl FnOnce(
    stripe_checkout::checkout_session::CreateCheckoutSession,
) -> stripe_checkout::checkout_session::CreateCheckoutSession {
    move |r| {
        r.payment_method_collection(CreateCheckoutSessionPaymentMethodCollection::IfRequired)
            .subscription_data(CreateCheckoutSessionSubscriptionData {
                trial_period_days: Some(7),
                trial_settings: Some(CreateCheckoutSessionSubscriptionDataTrialSettings {
                    end_behavior: CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehavior {
                        missing_payment_method: behavior,
                    },
                }),
                ..Default::default()
            })
    }
}

#[tokio::test]
async fn a_trial_without_a_card_pauses_at_its_end_and_resumes_once_a_card_is_added() {
    let sb = spawn().await;
    crate::support::save_default_portal(&sb).await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = checkout(
        &sb,
        &c,
        p.id.as_str(),
        "",
        trial_without_card(Missing::Pause),
    )
    .await;
    let s = sub(&sb, &id).await;
    assert_eq!(s.status, SubscriptionStatus::Trialing);
    assert!(s.default_payment_method.is_none());
    let err = ResumeSubscription::new(id.as_str())
        .send(&sb.client)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not paused"), "{err}");

    advance(&sb, &c, T0 + 8 * DAY).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::Paused);
    hook.wait_for_type("customer.subscription.paused").await;
    assert_eq!(
        invoices(&sb, &id).await.len(),
        1,
        "a paused subscription bills nothing"
    );
    advance(&sb, &c, T0 + 60 * DAY).await;
    assert_eq!(invoices(&sb, &id).await.len(), 1);

    // Resuming without a card: the resumption invoice is finalized and fails, and the
    // subscription stays paused until that invoice is paid.
    let still = ResumeSubscription::new(id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(still.status, SubscriptionStatus::Paused);
    let resumption = invoices(&sb, &id).await.pop().unwrap();
    assert_eq!(resumption.status, Some(InvoiceStatus::Open));
    assert_eq!(resumption.amount_due, 900);

    let portal = stripe_billing::billing_portal_session::CreateBillingPortalSession::new()
        .customer(c.customer.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    sb.http
        .post(format!("{}/card", portal.url))
        .form(&[("card_number", "4242424242424242")])
        .send()
        .await
        .unwrap();
    let paid = PayInvoice::new(resumption.id.clone().unwrap())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(paid.status, Some(InvoiceStatus::Paid));
    let resumed = sub(&sb, &id).await;
    assert_eq!(resumed.status, SubscriptionStatus::Active);
    assert_eq!(resumed.items.data[0].current_period_start, T0 + 60 * DAY);
    hook.wait_for_type("customer.subscription.resumed").await;
}

#[tokio::test]
async fn resuming_with_a_card_on_file_charges_the_new_period_at_once() {
    let sb = spawn().await;
    crate::support::save_default_portal(&sb).await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = checkout(
        &sb,
        &c,
        p.id.as_str(),
        "",
        trial_without_card(Missing::Pause),
    )
    .await;
    advance(&sb, &c, T0 + 8 * DAY).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::Paused);
    let portal = stripe_billing::billing_portal_session::CreateBillingPortalSession::new()
        .customer(c.customer.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    sb.http
        .post(format!("{}/card", portal.url))
        .form(&[("card_number", "4242424242424242")])
        .send()
        .await
        .unwrap();
    let resumed = ResumeSubscription::new(id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(resumed.status, SubscriptionStatus::Active);
    assert_eq!(resumed.items.data[0].current_period_start, T0 + 8 * DAY);
    let last = invoices(&sb, &id).await.pop().unwrap();
    assert_eq!(
        (last.status, last.amount_paid),
        (Some(InvoiceStatus::Paid), 900)
    );
}

#[tokio::test]
async fn a_trial_without_a_card_set_to_cancel_ends_at_the_trial_end() {
    let sb = spawn().await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = checkout(
        &sb,
        &c,
        p.id.as_str(),
        "",
        trial_without_card(Missing::Cancel),
    )
    .await;
    advance(&sb, &c, T0 + 8 * DAY).await;
    let s = sub(&sb, &id).await;
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    assert_eq!(s.ended_at, Some(T0 + 7 * DAY));
}

#[tokio::test]
async fn deleting_a_customer_cancels_their_subscriptions_first() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = checkout(&sb, &c, p.id.as_str(), "4242424242424242", |r| r).await;
    DeleteCustomer::new(c.customer.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::Canceled);
    let got = hook.wait_for_type("customer.deleted").await;
    let types: Vec<String> = hook.types();
    let deleted_sub = types
        .iter()
        .position(|t| t == "customer.subscription.deleted")
        .expect("the subscription's deletion is announced");
    let deleted_customer = types.iter().position(|t| t == "customer.deleted").unwrap();
    assert!(deleted_sub < deleted_customer, "{types:?}");
    assert_eq!(got.json()["data"]["object"]["id"], c.customer.as_str());
}

#[tokio::test]
async fn the_portal_refuses_a_card_that_declines_and_takes_0341() {
    let sb = spawn().await;
    crate::support::save_default_portal(&sb).await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = checkout(&sb, &c, p.id.as_str(), "4242424242424242", |r| r).await;
    let before = sub(&sb, &id)
        .await
        .default_payment_method
        .unwrap()
        .id()
        .clone();
    let portal = stripe_billing::billing_portal_session::CreateBillingPortalSession::new()
        .customer(c.customer.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    for (card, message) in [
        ("4000000000000002", "declined"),
        ("4000000000009995", "insufficient funds"),
    ] {
        let res = sb
            .http
            .post(format!("{}/card", portal.url))
            .form(&[("card_number", card)])
            .send()
            .await
            .unwrap();
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let decoded: String = url::form_urlencoded::parse(location.as_bytes())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert!(
            decoded.contains("error=") && decoded.contains(message),
            "{card}: {decoded}"
        );
        assert_eq!(
            sub(&sb, &id).await.default_payment_method.unwrap().id(),
            &before
        );
    }
    let (_, methods) = sb
        .get(&format!("/v1/customers/{}/payment_methods", c.customer))
        .await;
    assert_eq!(
        methods["data"].as_array().unwrap().len(),
        1,
        "nothing declined was attached"
    );

    let res = sb
        .http
        .post(format!("{}/card", portal.url))
        .form(&[("card_number", "4000000000000341")])
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .contains("done=")
    );
    assert_ne!(
        sub(&sb, &id).await.default_payment_method.unwrap().id(),
        &before
    );
}

#[tokio::test]
async fn with_dunning_mark_unpaid_the_last_failed_retry_leaves_the_subscription_unpaid() {
    let sb = spawn_with(Config {
        dunning_retry_days: vec![2],
        dunning_mark_unpaid: true,
        ..Config::for_tests()
    })
    .await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let trial = |r: stripe_checkout::checkout_session::CreateCheckoutSession| {
        r.subscription_data(CreateCheckoutSessionSubscriptionData {
            trial_period_days: Some(7),
            ..Default::default()
        })
    };
    let id = checkout(&sb, &c, p.id.as_str(), "4000000000000341", trial).await;
    advance(&sb, &c, T0 + 7 * DAY + HOUR).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::PastDue);
    advance(&sb, &c, T0 + 9 * DAY + HOUR).await;
    let s = sub(&sb, &id).await;
    assert_eq!(s.status, SubscriptionStatus::Unpaid);
    let inv = invoices(&sb, &id).await;
    assert_eq!(
        inv[1].status,
        Some(InvoiceStatus::Open),
        "the invoice stays open"
    );
    assert_eq!(
        (inv[1].attempt_count, inv[1].next_payment_attempt),
        (2, None)
    );
    advance(&sb, &c, T0 + 60 * DAY).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::Unpaid);
    assert_eq!(
        invoices(&sb, &id).await.len(),
        2,
        "an unpaid subscription stops renewing"
    );
}

#[tokio::test]
async fn a_trial_without_a_card_set_to_create_invoice_goes_past_due_without_retries() {
    let sb = spawn().await;
    let c = clocked(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = checkout(
        &sb,
        &c,
        p.id.as_str(),
        "",
        trial_without_card(Missing::CreateInvoice),
    )
    .await;
    advance(&sb, &c, T0 + 7 * DAY + 2 * HOUR).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::PastDue);
    let inv = invoices(&sb, &id).await;
    assert_eq!(inv[1].status, Some(InvoiceStatus::Open));
    assert_eq!(inv[1].attempt_count, 1);
    assert_eq!(
        inv[1].next_payment_attempt, None,
        "Stripe does not retry without a payment method"
    );
}
