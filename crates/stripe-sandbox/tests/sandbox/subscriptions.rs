//! Subscription-mode Checkout: what is made, in which order, and what a declined or
//! authenticating card leaves behind; trials without a card that pause and resume.

use std::collections::HashMap;

use stripe_billing::invoice::RetrieveInvoice;
use stripe_billing::subscription::{ListSubscription, ListSubscriptionStatus};
use stripe_checkout::checkout_session::{
    CreateCheckoutSessionSubscriptionData, RetrieveCheckoutSession,
};
use stripe_core::customer::ListCustomer;
use stripe_shared::CheckoutSessionMode::Subscription;
use stripe_shared::{InvoiceStatus, SubscriptionStatus};

use crate::support::{Receiver, TestSandbox, price, session, spawn};

const PAID: &str = "4242424242424242";

async fn customers(sb: &TestSandbox) -> usize {
    ListCustomer::new()
        .limit(100)
        .send(&sb.client)
        .await
        .unwrap()
        .data
        .len()
}

async fn all_subscriptions(sb: &TestSandbox) -> Vec<stripe_shared::Subscription> {
    ListSubscription::new()
        .status(ListSubscriptionStatus::All)
        .send(&sb.client)
        .await
        .unwrap()
        .data
}

fn tenant_metadata() -> HashMap<String, String> {
    HashMap::from([
        ("tenant_id".to_owned(), "ten_1".to_owned()),
        ("customer_id".to_owned(), "cust_1".to_owned()),
        ("order_id".to_owned(), "ord_1".to_owned()),
    ])
}

#[tokio::test]
async fn a_subscription_checkout_creates_then_charges_the_first_invoice_in_stripes_event_order() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let s = session(&sb, p.id.as_str(), Subscription, |r| {
        r.customer_email("member@example.com").subscription_data(
            CreateCheckoutSessionSubscriptionData {
                metadata: Some(tenant_metadata()),
                ..Default::default()
            },
        )
    })
    .await;
    let answer = sb.pay(s.url.as_deref().unwrap(), PAID, None).await;
    assert_eq!(answer.status, 303, "{}", answer.body);

    let got = hook
        .wait_for("checkout.session.completed", |r| {
            r.iter()
                .any(|x| x.event_type() == "checkout.session.completed")
        })
        .await;
    let types: Vec<String> = got
        .iter()
        .map(|r| r.event_type())
        .filter(|t| !t.starts_with("product.") && !t.starts_with("price."))
        .collect();
    assert_eq!(
        types,
        [
            "customer.created",
            "payment_method.attached",
            "customer.subscription.created",
            "invoice.created",
            "invoice.finalized",
            "payment_intent.created",
            "charge.succeeded",
            "payment_intent.succeeded",
            "invoice.paid",
            "invoice.payment_succeeded",
            "customer.subscription.updated",
            "checkout.session.completed",
        ]
    );
    let created = got
        .iter()
        .find(|r| r.event_type() == "customer.subscription.created")
        .unwrap()
        .json();
    assert_eq!(created["data"]["object"]["status"], "incomplete");
    let activated = got
        .iter()
        .find(|r| r.event_type() == "customer.subscription.updated")
        .unwrap()
        .json();
    assert_eq!(
        activated["data"]["previous_attributes"],
        serde_json::json!({ "status": "incomplete" })
    );

    let done = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    let sub_id = done.subscription.unwrap().id().to_string();
    let sub = stripe_billing::subscription::RetrieveSubscription::new(sub_id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(sub.metadata, tenant_metadata());
    let invoice_id = done.invoice.unwrap().id().clone().unwrap();
    let invoice = RetrieveInvoice::new(invoice_id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(invoice.status, Some(InvoiceStatus::Paid));
    assert_eq!(invoice.amount_paid, 900);
    let parent = invoice.parent.unwrap().subscription_details.unwrap();
    assert_eq!(parent.metadata, Some(tenant_metadata()));
    // The invoice's payment is the payment intent that was charged.
    let payment = &invoice.payments.unwrap().data[0];
    let pi = payment
        .payment
        .payment_intent
        .as_ref()
        .unwrap()
        .id()
        .clone();
    let charged = got
        .iter()
        .find(|r| r.event_type() == "payment_intent.succeeded")
        .unwrap()
        .json();
    assert_eq!(charged["data"]["object"]["id"], pi.as_str());
    assert_eq!(payment.status, "paid");
    assert_eq!(customers(&sb).await, 1);
}

#[tokio::test]
async fn declined_cards_in_a_subscription_checkout_leave_no_customer_or_subscription() {
    let sb = spawn().await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let s = session(&sb, p.id.as_str(), Subscription, |r| {
        r.customer_email("member@example.com")
    })
    .await;
    let url = s.url.clone().unwrap();
    for (card, message) in [
        ("4000000000000002", "Your card was declined."),
        ("4000000000009995", "Your card has insufficient funds."),
        ("4000000000000341", "Your card was declined."),
    ] {
        let answer = sb.pay(&url, card, None).await;
        assert_eq!(answer.status, 402, "{card}");
        assert!(answer.body.contains(message), "{card}: {}", answer.body);
    }
    assert_eq!(customers(&sb).await, 0);
    assert!(all_subscriptions(&sb).await.is_empty());

    assert_eq!(sb.pay(&url, PAID, None).await.status, 303);
    assert_eq!(customers(&sb).await, 1);
    assert_eq!(all_subscriptions(&sb).await.len(), 1);
}

#[tokio::test]
async fn three_d_secure_in_a_subscription_checkout_makes_one_customer_after_authentication() {
    let sb = spawn().await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let s = session(&sb, p.id.as_str(), Subscription, |r| {
        r.customer_email("member@example.com")
    })
    .await;
    let url = s.url.clone().unwrap();
    let answer = sb.pay(&url, "4000002500003155", None).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("Complete authentication"));
    assert_eq!(customers(&sb).await, 0, "nothing is made before 3-D Secure");

    let done = sb.authenticate(&url, true).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(customers(&sb).await, 1);
    let subs = all_subscriptions(&sb).await;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].status, SubscriptionStatus::Active);
}
