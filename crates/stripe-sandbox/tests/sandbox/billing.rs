//! Subscriptions over time with test clocks: trials, renewals, failed renewals and dunning,
//! plan changes with proration, cancellation, pause, and the customer portal.

use stripe_billing::subscription::{
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionProrationBehavior,
};
use stripe_billing::test_helpers_test_clock::CreateTestHelpersTestClock;
use stripe_checkout::checkout_session::RetrieveCheckoutSession;
use stripe_core::customer::CreateCustomer;
use stripe_shared::CheckoutSessionMode::Subscription;
use stripe_shared::SubscriptionStatus;

use crate::support::{Receiver, TestSandbox, price, session, spawn};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// 2026-01-01T00:00:00Z: a fixed start so that month lengths are known.
const T0: i64 = 1_767_225_600;

struct Clocked {
    clock: String,
    customer: String,
}

async fn clocked_customer(sb: &TestSandbox) -> Clocked {
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

/// Subscribes the clocked customer through Checkout and returns the subscription id.
async fn subscribe(
    sb: &TestSandbox,
    c: &Clocked,
    price: &str,
    card: &str,
    trial_days: Option<u32>,
) -> String {
    let s = session(sb, price, Subscription, |r| {
        let r = r.customer(c.customer.as_str());
        match trial_days {
            Some(d) => r.subscription_data(
                stripe_checkout::checkout_session::CreateCheckoutSessionSubscriptionData {
                    trial_period_days: Some(d),
                    ..Default::default()
                },
            ),
            None => r,
        }
    })
    .await;
    let answer = sb.pay(s.url.as_deref().unwrap(), card, None).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let done = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    done.subscription.unwrap().id().to_string()
}

async fn sub(sb: &TestSandbox, id: &str) -> stripe_shared::Subscription {
    RetrieveSubscription::new(id)
        .send(&sb.client)
        .await
        .unwrap()
}

async fn invoices(sb: &TestSandbox, sub: &str) -> Vec<serde_json::Value> {
    let (_, list) = sb
        .get(&format!("/v1/invoices?subscription={sub}&limit=100"))
        .await;
    let mut data = list["data"].as_array().unwrap().clone();
    // The same list must read as async-stripe's Invoice type, field for field.
    let typed = stripe_billing::invoice::ListInvoice::new()
        .subscription(sub)
        .limit(100)
        .send(&sb.client)
        .await
        .unwrap();
    let ids: Vec<String> = typed
        .data
        .iter()
        .map(|i| i.id.as_ref().unwrap().to_string())
        .collect();
    let raw_ids: Vec<&str> = data.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, raw_ids);
    data.reverse(); // oldest first
    data
}

#[tokio::test]
async fn a_trial_ends_into_a_paid_period_and_renews_each_month() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let c = clocked_customer(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = subscribe(&sb, &c, p.id.as_str(), "4242424242424242", Some(14)).await;
    let s = sub(&sb, &id).await;
    assert_eq!(s.status, SubscriptionStatus::Trialing);
    assert_eq!(s.trial_end, Some(T0 + 14 * DAY));
    assert_eq!(
        invoices(&sb, &id).await[0]["amount_due"],
        0,
        "the trial's invoice is free"
    );

    advance(&sb, &c, T0 + 12 * DAY).await;
    let warned = hook
        .wait_for_type("customer.subscription.trial_will_end")
        .await;
    assert_eq!(
        warned.json()["created"],
        T0 + 11 * DAY,
        "three days before the trial ends"
    );

    advance(&sb, &c, T0 + 15 * DAY).await;
    let s = sub(&sb, &id).await;
    assert_eq!(s.status, SubscriptionStatus::Active);
    assert_eq!(s.items.data[0].current_period_start, T0 + 14 * DAY);
    let inv = invoices(&sb, &id).await;
    assert_eq!(inv.len(), 2);
    assert_eq!(
        (inv[1]["status"].as_str(), inv[1]["amount_paid"].as_i64()),
        (Some("paid"), Some(900))
    );

    advance(&sb, &c, T0 + 50 * DAY).await;
    let inv = invoices(&sb, &id).await;
    assert_eq!(inv.len(), 3, "one renewal a month after the trial ended");
    assert_eq!(inv[2]["billing_reason"], "subscription_cycle");
    assert_eq!(inv[2]["period_start"], T0 + 14 * DAY + 31 * DAY);
    let updated = hook
        .wait_for("the renewal update", |r| {
            r.iter()
                .filter(|x| x.event_type() == "customer.subscription.updated")
                .count()
                >= 2
        })
        .await;
    let last = updated
        .iter()
        .rev()
        .find(|x| x.event_type() == "customer.subscription.updated")
        .unwrap()
        .json();
    assert!(
        last["data"]["previous_attributes"].get("items").is_some(),
        "the period change is in previous_attributes"
    );
}

#[tokio::test]
async fn a_renewal_on_card_0341_fails_goes_past_due_retries_and_then_cancels() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let c = clocked_customer(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    // 0341 attaches fine, so the trial starts; the first real charge fails.
    let id = subscribe(&sb, &c, p.id.as_str(), "4000000000000341", Some(7)).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::Trialing);

    advance(&sb, &c, T0 + 8 * DAY).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::PastDue);
    let inv = invoices(&sb, &id).await;
    let open = &inv[1];
    assert_eq!(
        (open["status"].as_str(), open["attempt_count"].as_i64()),
        (Some("open"), Some(1))
    );
    // The renewal draft is finalized and charged an hour after the trial ends.
    let first_attempt = T0 + 7 * DAY + HOUR;
    assert_eq!(open["status_transitions"]["finalized_at"], first_attempt);
    assert_eq!(open["next_payment_attempt"], first_attempt + 3 * DAY);

    // Retries 3, 5 and 7 days after the previous attempt (the sandbox's default schedule),
    // then cancellation.
    advance(&sb, &c, first_attempt + 3 * DAY + 1).await;
    assert_eq!(invoices(&sb, &id).await[1]["attempt_count"], 2);
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::PastDue);
    advance(&sb, &c, first_attempt + 15 * DAY + 1).await;
    let s = sub(&sb, &id).await;
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    assert_eq!(
        s.cancellation_details.unwrap().reason,
        Some(stripe_shared::CancellationDetailsReason::PaymentFailed)
    );
    // One worker per endpoint sends in order: once the deletion arrived, so had the rest.
    hook.wait_for_type("customer.subscription.deleted").await;
    let failures = hook
        .received()
        .iter()
        .filter(|r| r.event_type() == "invoice.payment_failed")
        .count();
    assert_eq!(failures, 4, "the first attempt and three retries");
}

#[tokio::test]
async fn an_upgrade_mid_cycle_with_always_invoice_bills_the_proration_now() {
    let sb = spawn().await;
    let c = clocked_customer(&sb).await;
    let basic = price(&sb, "Basic", 1000, Some("month")).await;
    let pro = price(&sb, "Pro", 3000, Some("month")).await;
    let id = subscribe(&sb, &c, basic.id.as_str(), "4242424242424242", None).await;
    // Halfway through January (31 days): 15.5 days in.
    advance(&sb, &c, T0 + 31 * DAY / 2).await;
    let s = sub(&sb, &id).await;
    let item = s.items.data[0].id.to_string();
    let mut change = UpdateSubscriptionItems::new();
    change.id = Some(item);
    change.price = Some(pro.id.to_string());
    let updated = UpdateSubscription::new(id.as_str())
        .items(vec![change])
        .proration_behavior(UpdateSubscriptionProrationBehavior::AlwaysInvoice)
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(updated.items.data[0].price.id, pro.id);
    let inv = invoices(&sb, &id).await;
    let proration = inv.last().unwrap();
    assert_eq!(proration["billing_reason"], "subscription_update");
    let lines: Vec<i64> = proration["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [-500, 1500], "half a month of each price");
    assert_eq!(
        (
            proration["status"].as_str(),
            proration["amount_paid"].as_i64()
        ),
        (Some("paid"), Some(1000))
    );
}

#[tokio::test]
async fn a_downgrade_without_proration_bills_the_new_price_from_the_next_period() {
    let sb = spawn().await;
    let c = clocked_customer(&sb).await;
    let pro = price(&sb, "Pro", 3000, Some("month")).await;
    let basic = price(&sb, "Basic", 1000, Some("month")).await;
    let id = subscribe(&sb, &c, pro.id.as_str(), "4242424242424242", None).await;
    advance(&sb, &c, T0 + 10 * DAY).await;
    let item = sub(&sb, &id).await.items.data[0].id.to_string();
    let mut change = UpdateSubscriptionItems::new();
    change.id = Some(item);
    change.price = Some(basic.id.to_string());
    UpdateSubscription::new(id.as_str())
        .items(vec![change])
        .proration_behavior(UpdateSubscriptionProrationBehavior::None)
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(invoices(&sb, &id).await.len(), 1, "nothing billed now");
    advance(&sb, &c, T0 + 32 * DAY).await;
    let inv = invoices(&sb, &id).await;
    assert_eq!(inv.len(), 2);
    assert_eq!(inv[1]["amount_paid"], 1000);
}

#[tokio::test]
async fn cancel_at_period_end_keeps_the_subscription_until_the_period_ends_and_resume_undoes_it() {
    let sb = spawn().await;
    let c = clocked_customer(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = subscribe(&sb, &c, p.id.as_str(), "4242424242424242", None).await;
    let s = UpdateSubscription::new(id.as_str())
        .cancel_at_period_end(true)
        .send(&sb.client)
        .await
        .unwrap();
    assert!(s.cancel_at_period_end);
    assert_eq!(s.status, SubscriptionStatus::Active);
    let s = UpdateSubscription::new(id.as_str())
        .cancel_at_period_end(false)
        .send(&sb.client)
        .await
        .unwrap();
    assert!(!s.cancel_at_period_end);
    UpdateSubscription::new(id.as_str())
        .cancel_at_period_end(true)
        .send(&sb.client)
        .await
        .unwrap();
    advance(&sb, &c, T0 + 20 * DAY).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::Active);
    advance(&sb, &c, T0 + 32 * DAY).await;
    let s = sub(&sb, &id).await;
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    assert_eq!(s.ended_at, Some(T0 + 31 * DAY));
    assert_eq!(
        invoices(&sb, &id).await.len(),
        1,
        "no renewal after cancellation"
    );
}

#[tokio::test]
async fn cancelling_now_ends_the_subscription_at_once() {
    let sb = spawn().await;
    let c = clocked_customer(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = subscribe(&sb, &c, p.id.as_str(), "4242424242424242", None).await;
    let s = stripe_billing::subscription::CancelSubscription::new(id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(s.status, SubscriptionStatus::Canceled);
    assert!(
        UpdateSubscription::new(id.as_str())
            .cancel_at_period_end(true)
            .send(&sb.client)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn paused_collection_voids_renewal_invoices_until_unpaused() {
    let sb = spawn().await;
    let c = clocked_customer(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = subscribe(&sb, &c, p.id.as_str(), "4242424242424242", None).await;
    let paused = UpdateSubscription::new(id.as_str())
        .pause_collection(
            stripe_billing::subscription::UpdateSubscriptionPauseCollection {
                behavior:
                    stripe_billing::subscription::UpdateSubscriptionPauseCollectionBehavior::Void,
                resumes_at: None,
            },
        )
        .send(&sb.client)
        .await
        .unwrap();
    assert!(paused.pause_collection.is_some());
    advance(&sb, &c, T0 + 32 * DAY).await;
    assert_eq!(invoices(&sb, &id).await[1]["status"], "void");
    let (status, _) = sb
        .post(&format!("/v1/subscriptions/{id}"), "pause_collection=")
        .await;
    assert_eq!(status, 200);
    advance(&sb, &c, T0 + 60 * DAY).await;
    let inv = invoices(&sb, &id).await;
    assert_eq!(
        (inv[2]["status"].as_str(), inv[2]["amount_paid"].as_i64()),
        (Some("paid"), Some(900))
    );
}

#[tokio::test]
async fn the_portal_page_cancels_switches_plan_and_its_actions_flow_back_as_events() {
    let sb = spawn().await;
    crate::support::save_default_portal(&sb).await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let c = clocked_customer(&sb).await;
    let basic = price(&sb, "Basic", 1000, Some("month")).await;
    let pro = price(&sb, "Pro", 3000, Some("month")).await;
    let id = subscribe(&sb, &c, basic.id.as_str(), "4242424242424242", None).await;
    let portal = stripe_billing::billing_portal_session::CreateBillingPortalSession::new()
        .customer(c.customer.as_str())
        .return_url("https://shop.test/account")
        .send(&sb.client)
        .await
        .unwrap();
    let page = sb
        .http
        .get(&portal.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Cancel plan") && page.contains(&format!("data-price=\"{}\"", pro.id)));
    assert!(page.contains("https://shop.test/account"));

    let res = sb
        .http
        .post(format!("{}/cancel", portal.url))
        .form(&[("subscription", id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(sub(&sb, &id).await.cancel_at_period_end);
    let ev = hook
        .wait_for("the cancel update", |r| {
            r.iter().any(|x| {
                x.event_type() == "customer.subscription.updated"
                    && x.json()["data"]["object"]["cancel_at_period_end"] == true
            })
        })
        .await;
    assert!(!ev.is_empty());

    sb.http
        .post(format!("{}/resume", portal.url))
        .form(&[("subscription", id.as_str())])
        .send()
        .await
        .unwrap();
    assert!(!sub(&sb, &id).await.cancel_at_period_end);

    let res = sb
        .http
        .post(format!("{}/switch", portal.url))
        .form(&[("subscription", id.as_str()), ("price", pro.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(sub(&sb, &id).await.items.data[0].price.id, pro.id);

    // Another customer's subscription is not reachable through this portal.
    let other = CreateCustomer::new().send(&sb.client).await.unwrap();
    let other_portal = stripe_billing::billing_portal_session::CreateBillingPortalSession::new()
        .customer(other.id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    let res = sb
        .http
        .post(format!("{}/cancel", other_portal.url))
        .form(&[("subscription", id.as_str())])
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=")
    );
    assert!(!sub(&sb, &id).await.cancel_at_period_end);
}

#[tokio::test]
async fn a_card_updated_in_the_portal_pays_the_next_retry() {
    let sb = spawn().await;
    crate::support::save_default_portal(&sb).await;
    let c = clocked_customer(&sb).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let id = subscribe(&sb, &c, p.id.as_str(), "4000000000000341", Some(7)).await;
    advance(&sb, &c, T0 + 8 * DAY).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::PastDue);
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
    advance(&sb, &c, T0 + 11 * DAY).await;
    assert_eq!(sub(&sb, &id).await.status, SubscriptionStatus::Active);
    assert_eq!(invoices(&sb, &id).await[1]["status"], "paid");
}
