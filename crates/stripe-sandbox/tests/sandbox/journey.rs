//! One subscription from trial to cancellation, and one paid order refunded and disputed,
//! with every webhook they caused verified and parsed by async-stripe; and every list and
//! retrieve endpoint answering in async-stripe's types.

use stripe_billing::subscription::RetrieveSubscription;
use stripe_billing::test_helpers_test_clock::CreateTestHelpersTestClock;
use stripe_checkout::checkout_session::{
    CreateCheckoutSessionSubscriptionData, RetrieveCheckoutSession,
};
use stripe_core::customer::CreateCustomer;
use stripe_misc::webhook_endpoint::{CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents};
use stripe_shared::CheckoutSessionMode::{Payment, Subscription};
use stripe_shared::SubscriptionStatus;
use stripe_webhook::{EventObject, Webhook};

use crate::support::{Receiver, TestSandbox, price, session, spawn};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

async fn advance(sb: &TestSandbox, clock: &str, to: i64) {
    crate::support::advance_clock(sb, clock, to).await;
}

async fn status(sb: &TestSandbox, id: &str) -> SubscriptionStatus {
    RetrieveSubscription::new(id)
        .send(&sb.client)
        .await
        .unwrap()
        .status
}

/// Event families whose payloads async-stripe has types for here: each must parse into
/// its type, never fall back to `EventObject::Unknown`.
const TYPED: &[&str] = &[
    "checkout.session.",
    "invoice.",
    "customer.subscription.",
    "payment_intent.",
    "charge.",
    "refund.",
    "customer.created",
    "customer.updated",
];

#[tokio::test]
async fn a_subscription_from_trial_to_cancellation_emits_events_that_async_stripe_parses() {
    let sb = spawn().await;
    crate::support::save_default_portal(&sb).await;
    let hook = Receiver::start().await;
    let endpoint = CreateWebhookEndpoint::new(
        vec![CreateWebhookEndpointEnabledEvents::All],
        hook.url.as_str(),
    )
    .send(&sb.client)
    .await
    .unwrap();
    let secret = endpoint.secret.unwrap();
    let clock = CreateTestHelpersTestClock::new(T0)
        .send(&sb.client)
        .await
        .unwrap()
        .id
        .to_string();
    let customer = CreateCustomer::new()
        .email("member@example.com")
        .test_clock(clock.as_str())
        .send(&sb.client)
        .await
        .unwrap()
        .id
        .to_string();
    let p = price(&sb, "Club", 900, Some("month")).await;
    let s = session(&sb, p.id.as_str(), Subscription, |r| {
        r.customer(customer.as_str())
            .subscription_data(CreateCheckoutSessionSubscriptionData {
                trial_period_days: Some(7),
                ..Default::default()
            })
    })
    .await;
    assert_eq!(
        sb.pay(s.url.as_deref().unwrap(), "4242424242424242", None)
            .await
            .status,
        303
    );
    let sub = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap()
        .subscription
        .unwrap()
        .id()
        .to_string();
    assert_eq!(status(&sb, &sub).await, SubscriptionStatus::Trialing);

    // The trial ends on 8 January; its first invoice is paid an hour later.
    advance(&sb, &clock, T0 + 7 * DAY + 2 * HOUR).await;
    assert_eq!(status(&sb, &sub).await, SubscriptionStatus::Active);

    // The member changes card to 0341 on the portal page: it attaches, charges fail.
    let portal = stripe_billing::billing_portal_session::CreateBillingPortalSession::new()
        .customer(customer.as_str())
        .send(&sb.client)
        .await
        .unwrap();
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

    // 8 February: the renewal fails an hour after it is created.
    let first_attempt = T0 + 38 * DAY + HOUR;
    advance(&sb, &clock, first_attempt).await;
    assert_eq!(status(&sb, &sub).await, SubscriptionStatus::PastDue);
    // Retries 3, 5 and 7 days after the previous attempt, then cancellation.
    for (at, expected) in [
        (first_attempt + 3 * DAY, SubscriptionStatus::PastDue),
        (first_attempt + 8 * DAY, SubscriptionStatus::PastDue),
        (first_attempt + 15 * DAY, SubscriptionStatus::Canceled),
    ] {
        advance(&sb, &clock, at - 1).await;
        assert_ne!(status(&sb, &sub).await, SubscriptionStatus::Canceled);
        advance(&sb, &clock, at).await;
        assert_eq!(status(&sb, &sub).await, expected, "at {at}");
    }

    let got = hook
        .wait_for("the cancellation", |r| {
            r.iter()
                .any(|x| x.event_type() == "customer.subscription.deleted")
        })
        .await;
    let sub_events: Vec<(String, Option<String>)> = got
        .iter()
        .map(|r| r.json())
        .filter(|e| {
            e["type"]
                .as_str()
                .unwrap()
                .starts_with("customer.subscription.")
        })
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["object"]["status"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let expected: Vec<(String, Option<String>)> = [
        ("customer.subscription.created", "trialing"),
        ("customer.subscription.trial_will_end", "trialing"),
        ("customer.subscription.updated", "active"),
        ("customer.subscription.updated", "active"),
        ("customer.subscription.updated", "active"),
        ("customer.subscription.updated", "past_due"),
        ("customer.subscription.deleted", "canceled"),
    ]
    .iter()
    .map(|(t, s)| ((*t).to_owned(), Some((*s).to_owned())))
    .collect();
    assert_eq!(sub_events, expected);
    let failures = got
        .iter()
        .filter(|r| r.event_type() == "invoice.payment_failed")
        .count();
    assert_eq!(failures, 4, "the first attempt and three retries");

    // A one-time order, refunded in part and disputed, for the money-movement events.
    let book = price(&sb, "Book", 2500, None).await;
    let order = session(&sb, book.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    sb.pay(order.url.as_deref().unwrap(), "4242424242424242", None)
        .await;
    let pi = RetrieveCheckoutSession::new(order.id.clone())
        .send(&sb.client)
        .await
        .unwrap()
        .payment_intent
        .unwrap()
        .id()
        .clone();
    stripe_core::refund::CreateRefund::new()
        .payment_intent(pi.as_str())
        .amount(500)
        .send(&sb.client)
        .await
        .unwrap();
    let charge = stripe_core::payment_intent::RetrievePaymentIntent::new(pi.clone())
        .send(&sb.client)
        .await
        .unwrap()
        .latest_charge
        .unwrap()
        .id()
        .clone();
    let dispute: serde_json::Value = sb
        .http
        .post(sb.url(&format!("/_sandbox/charges/{charge}/dispute")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stripe_core::dispute::CloseDispute::new(dispute["id"].as_str().unwrap())
        .send(&sb.client)
        .await
        .unwrap();
    let got = hook.wait_for_type("charge.dispute.closed").await;
    assert!(!got.payload.is_empty());

    let all = hook.received();
    let mut seen = std::collections::BTreeSet::new();
    for r in &all {
        let event = Webhook::construct_event(&r.payload, &r.signature, &secret)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", r.event_type()));
        let kind = r.event_type();
        if TYPED.iter().any(|t| kind.starts_with(t)) {
            assert!(
                !matches!(event.data.object, EventObject::Unknown(_)),
                "{kind} parsed as an unknown object"
            );
        }
        seen.insert(kind);
    }
    for kind in [
        "checkout.session.completed",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "customer.subscription.trial_will_end",
        "payment_intent.payment_failed",
        "charge.failed",
        "charge.refunded",
        "refund.created",
        "charge.dispute.created",
        "charge.dispute.closed",
    ] {
        assert!(seen.contains(kind), "no {kind} in {seen:?}");
    }
}

#[tokio::test]
async fn every_list_and_retrieve_endpoint_answers_in_async_stripes_types() {
    use stripe_billing::billing_portal_configuration::ListBillingPortalConfiguration;
    use stripe_billing::invoice::ListInvoice;
    use stripe_billing::subscription::ListSubscription;
    use stripe_billing::test_helpers_test_clock::{
        DeleteTestHelpersTestClock, ListTestHelpersTestClock, RetrieveTestHelpersTestClock,
    };
    use stripe_checkout::checkout_session::ListCheckoutSession;
    use stripe_core::charge::ListCharge;
    use stripe_core::customer::ListPaymentMethodsCustomer;
    use stripe_core::dispute::ListDispute;
    use stripe_core::payment_intent::ListPaymentIntent;
    use stripe_core::refund::ListRefund;
    use stripe_misc::webhook_endpoint::{DeleteWebhookEndpoint, ListWebhookEndpoint};
    use stripe_product::price::RetrievePrice;
    use stripe_product::promotion_code::{
        CreatePromotionCode, CreatePromotionCodePromotion, CreatePromotionCodePromotionType,
        RetrievePromotionCode, UpdatePromotionCode,
    };

    let sb = spawn().await;
    crate::support::save_default_portal(&sb).await;
    let hook = Receiver::start().await;
    let endpoint = CreateWebhookEndpoint::new(
        vec![CreateWebhookEndpointEnabledEvents::All],
        hook.url.as_str(),
    )
    .send(&sb.client)
    .await
    .unwrap();
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
    let club = price(&sb, "Club", 900, Some("month")).await;
    let s = session(&sb, club.id.as_str(), Subscription, |r| {
        r.customer(customer.id.as_str())
    })
    .await;
    sb.pay(s.url.as_deref().unwrap(), "4242424242424242", None)
        .await;
    let book = price(&sb, "Book", 2500, None).await;
    let order = session(&sb, book.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    sb.pay(order.url.as_deref().unwrap(), "4242424242424242", None)
        .await;
    let pi = RetrieveCheckoutSession::new(order.id.clone())
        .send(&sb.client)
        .await
        .unwrap()
        .payment_intent
        .unwrap()
        .id()
        .clone();
    stripe_core::refund::CreateRefund::new()
        .payment_intent(pi.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    let charge = stripe_core::payment_intent::RetrievePaymentIntent::new(pi.clone())
        .send(&sb.client)
        .await
        .unwrap()
        .latest_charge
        .unwrap()
        .id()
        .clone();
    let disputed = sb
        .http
        .post(sb.url(&format!("/_sandbox/charges/{charge}/dispute")))
        .send()
        .await
        .unwrap();
    assert_eq!(disputed.status(), 200);

    let subs = ListSubscription::new()
        .customer(customer.id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(subs.data.len(), 1);
    let sessions = ListCheckoutSession::new().send(&sb.client).await.unwrap();
    assert_eq!(sessions.data.len(), 2);
    let invoices = ListInvoice::new()
        .customer(customer.id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(invoices.data.len(), 1);
    let intents = ListPaymentIntent::new().send(&sb.client).await.unwrap();
    assert_eq!(intents.data.len(), 2, "the subscription's and the order's");
    let charges = ListCharge::new()
        .payment_intent(pi.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(charges.data.len(), 1);
    let refunds = ListRefund::new().send(&sb.client).await.unwrap();
    assert_eq!(refunds.data.len(), 1);
    let disputes = ListDispute::new().send(&sb.client).await.unwrap();
    assert_eq!(disputes.data.len(), 1);
    let methods = ListPaymentMethodsCustomer::new(customer.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(methods.data.len(), 1);
    let configs = ListBillingPortalConfiguration::new()
        .send(&sb.client)
        .await
        .unwrap();
    assert!(configs.data.iter().any(|c| c.is_default));
    assert_eq!(
        RetrievePrice::new(club.id.clone())
            .send(&sb.client)
            .await
            .unwrap()
            .unit_amount,
        Some(900)
    );

    let coupon = stripe_product::coupon::CreateCoupon::new()
        .percent_off(10.0)
        .send(&sb.client)
        .await
        .unwrap();
    let mut promotion = CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
    promotion.coupon = Some(coupon.id.to_string());
    let promo = CreatePromotionCode::new(promotion)
        .code("TENOFF")
        .send(&sb.client)
        .await
        .unwrap();
    let fetched = RetrievePromotionCode::new(promo.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(fetched.code, "TENOFF");
    let off = UpdatePromotionCode::new(promo.id.clone())
        .active(false)
        .send(&sb.client)
        .await
        .unwrap();
    assert!(!off.active);

    let fetched = RetrieveTestHelpersTestClock::new(clock.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(fetched.frozen_time, T0);
    let clocks = ListTestHelpersTestClock::new()
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(clocks.data.len(), 1);
    let deleted = DeleteTestHelpersTestClock::new(clock.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(deleted.id, clock.id);
    assert_eq!(
        ListTestHelpersTestClock::new()
            .send(&sb.client)
            .await
            .unwrap()
            .data
            .len(),
        0
    );

    let endpoints = ListWebhookEndpoint::new().send(&sb.client).await.unwrap();
    assert_eq!(endpoints.data.len(), 1);
    let gone = DeleteWebhookEndpoint::new(endpoint.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(gone.id, endpoint.id);
    assert!(
        ListWebhookEndpoint::new()
            .send(&sb.client)
            .await
            .unwrap()
            .data
            .is_empty()
    );
}
