//! Checkout: sessions, the hosted page with each test card, 3-D Secure, promotion codes,
//! expiry, refunds and disputes.

use stripe_checkout::checkout_session::{
    ExpireCheckoutSession, ListLineItemsCheckoutSession, RetrieveCheckoutSession,
};
use stripe_core::charge::RetrieveCharge;
use stripe_core::payment_intent::RetrievePaymentIntent;
use stripe_core::refund::CreateRefund;
use stripe_shared::CheckoutSessionMode::{Payment, Subscription};

use crate::support::{Receiver, price, session, spawn};

const PAID: &str = "4242424242424242";

#[tokio::test]
async fn paying_with_4242_completes_the_session_and_redirects_with_its_id() {
    let sb = spawn().await;
    let p = price(&sb, "Course", 2500, None).await;
    let s = session(&sb, p.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    assert!(s.id.as_str().starts_with("cs_test_"));
    assert_eq!(s.amount_total, Some(2500));
    let url = s.url.clone().unwrap();

    let page = sb
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Course") && page.contains("25.00 USD"),
        "the page shows items and total"
    );

    let answer = sb.pay(&url, PAID, None).await;
    assert_eq!(answer.status, 303);
    assert_eq!(
        answer.location.as_deref(),
        Some(format!("https://shop.test/thanks?session_id={}", s.id).as_str())
    );

    let done = RetrieveCheckoutSession::new(s.id.clone())
        .expand(vec!["line_items".to_owned(), "payment_intent".to_owned()])
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        done.status,
        Some(stripe_shared::CheckoutSessionStatus::Complete)
    );
    assert_eq!(
        done.payment_status,
        stripe_shared::CheckoutSessionPaymentStatus::Paid
    );
    assert!(
        done.customer.is_none(),
        "a guest payment creates no customer"
    );
    assert_eq!(
        done.customer_details.as_ref().unwrap().email.as_deref(),
        Some("buyer@example.com")
    );
    let items = done.line_items.unwrap();
    assert_eq!(items.data.len(), 1);
    assert_eq!(items.data[0].amount_total, 2500);
    let pi = done.payment_intent.unwrap();
    let pi = pi.as_object().unwrap();
    assert_eq!(pi.status, stripe_shared::PaymentIntentStatus::Succeeded);
    assert_eq!(pi.amount_received, 2500);
    let charge = RetrieveCharge::new(pi.latest_charge.as_ref().unwrap().id().clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert!(charge.paid);

    let items = ListLineItemsCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(items.data[0].price.as_ref().unwrap().id, p.id);
}

#[tokio::test]
async fn a_completed_payment_emits_stripes_events_in_order() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let p = price(&sb, "Course", 2500, None).await;
    let s = session(&sb, p.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    sb.pay(s.url.as_deref().unwrap(), PAID, None).await;
    let got = hook
        .wait_for("checkout.session.completed", |r| {
            r.iter()
                .any(|x| x.event_type() == "checkout.session.completed")
        })
        .await;
    let types: Vec<String> = got
        .iter()
        .map(|r| r.event_type())
        .filter(|t| !t.starts_with("pro") && !t.starts_with("price"))
        .collect();
    assert_eq!(
        types,
        [
            "payment_intent.created",
            "charge.succeeded",
            "payment_intent.succeeded",
            "checkout.session.completed"
        ]
    );
}

#[tokio::test]
async fn declined_cards_show_the_error_and_leave_the_session_open() {
    let sb = spawn().await;
    let p = price(&sb, "Course", 2500, None).await;
    for (card, message) in [
        ("4000000000000002", "Your card was declined."),
        ("4000000000009995", "Your card has insufficient funds."),
        ("4000000000000341", "Your card was declined."),
        ("4242424242424241", "Your card number is incorrect."),
    ] {
        let s = session(&sb, p.id.as_str(), Payment, |r| {
            r.customer_email("buyer@example.com")
        })
        .await;
        let answer = sb.pay(s.url.as_deref().unwrap(), card, None).await;
        assert_eq!(answer.status, 402, "{card}");
        assert!(answer.body.contains(message), "{card}: {}", answer.body);
        let after = RetrieveCheckoutSession::new(s.id.clone())
            .send(&sb.client)
            .await
            .unwrap();
        assert_eq!(
            after.status,
            Some(stripe_shared::CheckoutSessionStatus::Open),
            "{card}"
        );
        assert_eq!(
            after.payment_status,
            stripe_shared::CheckoutSessionPaymentStatus::Unpaid
        );
    }
}

#[tokio::test]
async fn a_declined_card_then_a_good_one_pays_through_the_same_payment_intent() {
    let sb = spawn().await;
    let p = price(&sb, "Course", 2500, None).await;
    let s = session(&sb, p.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    let url = s.url.clone().unwrap();
    sb.pay(&url, "4000000000009995", None).await;
    let failed = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    let pi_id = failed.payment_intent.unwrap().id().clone();
    let pi = RetrievePaymentIntent::new(pi_id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        pi.status,
        stripe_shared::PaymentIntentStatus::RequiresPaymentMethod
    );
    assert_eq!(
        pi.last_payment_error.unwrap().decline_code.as_deref(),
        Some("insufficient_funds")
    );

    assert_eq!(sb.pay(&url, PAID, None).await.status, 303);
    let paid = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(paid.payment_intent.unwrap().id(), &pi_id);
}

#[tokio::test]
async fn the_3155_card_asks_for_3d_secure_then_succeeds_or_fails_as_the_payer_chooses() {
    let sb = spawn().await;
    let p = price(&sb, "Course", 2500, None).await;
    let s = session(&sb, p.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    let url = s.url.clone().unwrap();
    let answer = sb.pay(&url, "4000002500003155", None).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("Complete authentication"));
    let pending = RetrieveCheckoutSession::new(s.id.clone())
        .expand(vec!["payment_intent".to_owned()])
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        pending.payment_intent.unwrap().as_object().unwrap().status,
        stripe_shared::PaymentIntentStatus::RequiresAction
    );

    let failed = sb.authenticate(&url, false).await;
    assert_eq!(failed.status, 402);
    assert!(failed.body.contains("unable to authenticate"));

    sb.pay(&url, "4000002500003155", None).await;
    let done = sb.authenticate(&url, true).await;
    assert_eq!(done.status, 303);
    let paid = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        paid.payment_status,
        stripe_shared::CheckoutSessionPaymentStatus::Paid
    );
}

#[tokio::test]
async fn the_page_asks_a_guest_for_an_email_and_refuses_without_one() {
    let sb = spawn().await;
    let p = price(&sb, "Course", 2500, None).await;
    let s = session(&sb, p.id.as_str(), Payment, |r| r).await;
    let url = s.url.clone().unwrap();
    let page = sb
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"name="email""#));
    assert_eq!(sb.pay(&url, PAID, None).await.status, 402);
    assert_eq!(
        sb.pay(&url, PAID, Some("guest@example.com")).await.status,
        303
    );
    let done = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        done.customer_details.unwrap().email.as_deref(),
        Some("guest@example.com")
    );
}

#[tokio::test]
async fn back_goes_to_the_cancel_url_and_an_expired_session_cannot_be_paid() {
    let sb = spawn().await;
    let p = price(&sb, "Course", 2500, None).await;
    let s = session(&sb, p.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    let url = s.url.clone().unwrap();
    let back = sb.http.get(format!("{url}/cancel")).send().await.unwrap();
    assert_eq!(back.headers()["location"], "https://shop.test/cart");

    let expired = ExpireCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        expired.status,
        Some(stripe_shared::CheckoutSessionStatus::Expired)
    );
    let err = ExpireCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Only Checkout Sessions with a status in"),
        "{err}"
    );
    let answer = sb.pay(&url, PAID, None).await;
    assert_eq!(answer.status, 402);
    assert!(answer.body.contains("expired"));
}

#[tokio::test]
async fn session_validation_follows_stripe() {
    let sb = spawn().await;
    let one_time = price(&sb, "Book", 500, None).await;
    let monthly = price(&sb, "Club", 900, Some("month")).await;
    let base = "success_url=https%3A%2F%2Fshop.test%2Fok&line_items[0][quantity]=1";
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &format!("mode=payment&{base}&line_items[0][price]={}", monthly.id),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recurring price")
    );
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &format!(
                "mode=subscription&{base}&line_items[0][price]={}",
                one_time.id
            ),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least one recurring price")
    );
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            "mode=payment&success_url=https%3A%2F%2Fshop.test",
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("line_items"))
    );
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &format!("mode=payment&{base}&line_items[0][price]=price_nope"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    let (status, body) = sb
        .post("/v1/checkout/sessions", &format!("mode=payment&{base}&line_items[0][price]={}&customer=cus_x&customer_email=a%40b.co", one_time.id))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = sb
        .post("/v1/checkout/sessions", &format!("mode=payment&line_items[0][quantity]=1&success_url=not-a-url&line_items[0][price]={}", one_time.id))
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("success_url"))
    );
}

#[tokio::test]
async fn a_cart_with_inline_price_data_sums_its_lines() {
    use stripe_checkout::checkout_session::{
        CreateCheckoutSession, CreateCheckoutSessionLineItems,
        CreateCheckoutSessionLineItemsPriceData, ProductData,
    };
    let sb = spawn().await;
    let book = price(&sb, "Book", 500, None).await;
    let mut books = CreateCheckoutSessionLineItems::new();
    books.price = Some(book.id.to_string());
    books.quantity = Some(2);
    let mut data = CreateCheckoutSessionLineItemsPriceData::new(stripe_types::Currency::USD);
    data.unit_amount = Some(1250);
    data.product_data = Some(ProductData::new("Workshop"));
    let mut workshop = CreateCheckoutSessionLineItems::new();
    workshop.price_data = Some(data);
    workshop.quantity = Some(1);
    let s = CreateCheckoutSession::new()
        .mode(Payment)
        .success_url("https://shop.test")
        .customer_email("a@b.co")
        .line_items(vec![books, workshop])
        .metadata(std::collections::HashMap::from([(
            "order_id".to_owned(),
            "ord_1".to_owned(),
        )]))
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(s.amount_subtotal, Some(2250));
    assert_eq!(s.metadata.unwrap()["order_id"], "ord_1");
    let items = ListLineItemsCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    let totals: Vec<i64> = items.data.iter().map(|i| i.amount_total).collect();
    assert_eq!(totals, [1000, 1250]);
    let inline = items.data[1].price.as_ref().unwrap();
    assert!(!inline.active, "an inline price is created inactive");
}

#[tokio::test]
async fn a_promotion_code_typed_on_the_page_discounts_the_total() {
    use stripe_product::coupon::CreateCoupon;
    use stripe_product::promotion_code::{
        CreatePromotionCode, CreatePromotionCodePromotion, CreatePromotionCodePromotionType,
        ListPromotionCode,
    };
    let sb = spawn().await;
    let p = price(&sb, "Course", 2000, None).await;
    let coupon = CreateCoupon::new()
        .percent_off(25.0)
        .send(&sb.client)
        .await
        .unwrap();
    let mut promotion = CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
    promotion.coupon = Some(coupon.id.to_string());
    CreatePromotionCode::new(promotion)
        .code("QUARTER")
        .send(&sb.client)
        .await
        .unwrap();
    let s = session(&sb, p.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
            .allow_promotion_codes(true)
    })
    .await;
    let url = s.url.clone().unwrap();
    let bad = sb
        .http
        .post(format!("{url}/promotion_code"))
        .form(&[("code", "NOPE")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let applied = sb
        .http
        .post(format!("{url}/promotion_code"))
        .form(&[("code", "quarter")])
        .send()
        .await
        .unwrap();
    assert!(applied.text().await.unwrap().contains("15.00 USD"));
    sb.pay(&url, PAID, None).await;
    let done = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(done.amount_total, Some(1500));
    assert_eq!(done.total_details.unwrap().amount_discount, 500);
    let promo = ListPromotionCode::new()
        .code("QUARTER")
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(promo.data[0].times_redeemed, 1);
}

#[tokio::test]
async fn refunds_are_full_or_partial_and_never_exceed_the_charge() {
    let sb = spawn().await;
    let p = price(&sb, "Course", 2500, None).await;
    let s = session(&sb, p.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    sb.pay(s.url.as_deref().unwrap(), PAID, None).await;
    let pi = RetrieveCheckoutSession::new(s.id.clone())
        .send(&sb.client)
        .await
        .unwrap()
        .payment_intent
        .unwrap()
        .id()
        .clone();

    let partial = CreateRefund::new()
        .payment_intent(pi.as_str())
        .amount(1000)
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(partial.amount, 1000);
    let err = CreateRefund::new()
        .payment_intent(pi.as_str())
        .amount(2000)
        .send(&sb.client)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("greater than unrefunded amount"),
        "{err}"
    );
    let rest = CreateRefund::new()
        .payment_intent(pi.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(rest.amount, 1500);
    let charge = RetrieveCharge::new(rest.charge.unwrap().id().clone())
        .send(&sb.client)
        .await
        .unwrap();
    assert!(charge.refunded);
    assert_eq!(charge.amount_refunded, 2500);
    let (status, body) = sb
        .post("/v1/refunds", &format!("payment_intent={pi}"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("charge_already_refunded"))
    );
}

#[tokio::test]
async fn a_dispute_raised_by_the_test_helper_emits_created_and_closed() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    let p = price(&sb, "Course", 2500, None).await;
    let s = session(&sb, p.id.as_str(), Payment, |r| {
        r.customer_email("buyer@example.com")
    })
    .await;
    sb.pay(s.url.as_deref().unwrap(), PAID, None).await;
    let pi = RetrievePaymentIntent::new(
        RetrieveCheckoutSession::new(s.id.clone())
            .send(&sb.client)
            .await
            .unwrap()
            .payment_intent
            .unwrap()
            .id()
            .clone(),
    )
    .send(&sb.client)
    .await
    .unwrap();
    let charge = pi.latest_charge.unwrap().id().clone();
    let res = sb
        .http
        .post(sb.url(&format!("/_sandbox/charges/{charge}/dispute")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let dispute: serde_json::Value = res.json().await.unwrap();
    let created = hook.wait_for_type("charge.dispute.created").await;
    assert_eq!(created.json()["data"]["object"]["id"], dispute["id"]);
    let (status, _) = sb.post("/v1/refunds", &format!("charge={charge}")).await;
    assert_eq!(status, 400, "a disputed charge cannot be refunded");
    let closed: stripe_shared::Dispute =
        stripe_core::dispute::CloseDispute::new(dispute["id"].as_str().unwrap())
            .send(&sb.client)
            .await
            .unwrap();
    assert_eq!(closed.status, stripe_shared::DisputeStatus::Lost);
    hook.wait_for_type("charge.dispute.closed").await;
}

#[tokio::test]
async fn a_subscription_checkout_creates_a_customer_and_an_active_subscription() {
    let sb = spawn().await;
    let p = price(&sb, "Club", 900, Some("month")).await;
    let s = session(&sb, p.id.as_str(), Subscription, |r| {
        r.customer_email("member@example.com")
    })
    .await;
    assert_eq!(
        sb.pay(s.url.as_deref().unwrap(), PAID, None).await.status,
        303
    );
    let done = RetrieveCheckoutSession::new(s.id.clone())
        .expand(vec!["subscription".to_owned()])
        .send(&sb.client)
        .await
        .unwrap();
    assert!(done.customer.is_some());
    let sub = done.subscription.unwrap();
    let sub = sub.as_object().unwrap();
    assert_eq!(sub.status, stripe_shared::SubscriptionStatus::Active);
    assert_eq!(sub.items.data[0].price.id, p.id);
    let period = sub.items.data[0].current_period_end - sub.items.data[0].current_period_start;
    assert!(
        (28 * 86_400..=31 * 86_400).contains(&period),
        "a month: {period}"
    );
}
