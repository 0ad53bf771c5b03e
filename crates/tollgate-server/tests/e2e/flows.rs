//! The flows, each run on both engines by `main.rs`.

use serde_json::{Value, json};
use stripe_sandbox::Faults;
use tollgate_domain::StripeEventId;
use tollgate_domain::status::InboxStatus;

use crate::support::{Engine, Options, TestApp, spawn, spawn_with};

pub const CARD: &str = "4242424242424242";

pub async fn paid(t: &TestApp, customer: &str, product: &str) -> serde_json::Value {
    let s = t
        .checkout(json!({ "customer": customer, "product": product }))
        .await;
    assert_eq!(t.pay(&s, CARD).await, 303);
    t.eventually("access", || t.access(customer, product)).await;
    s
}

/// Two tabs: two checkouts of one product open before either is paid.
pub async fn two_tabs(t: &TestApp, customer: &str, product: &str) -> (Value, Value) {
    let open = || t.checkout(json!({ "customer": customer, "product": product }));
    (open().await, open().await)
}

/// Two tabs, both paid, the second with `second_card`.
pub async fn paid_in_two_tabs(t: &TestApp, customer: &str, product: &str, second_card: &str) {
    let (first, second) = two_tabs(t, customer, product).await;
    assert_eq!(t.pay(&first, CARD).await, 303);
    assert_eq!(t.pay(&second, second_card).await, 303);
}

pub async fn a_paid_checkout_becomes_a_purchase_with_its_split_and_grants_access(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 999, None).await;
    let customer = t.customer("ada").await;
    assert!(!t.access(&customer, &product).await);
    let s = t
        .checkout(json!({ "customer": customer, "product": product }))
        .await;
    assert!(
        s["stripe_checkout_session_id"]
            .as_str()
            .unwrap()
            .starts_with("cs_test_")
    );
    assert!(s["expires_at"].as_i64().unwrap() > 0);
    let (_, order) = t
        .get(&format!("/v1/orders/{}", s["order_id"].as_str().unwrap()))
        .await;
    assert_eq!(order["status"], "pending", "the order waits for payment");
    assert_eq!(t.pay(&s, CARD).await, 303);
    t.eventually("access", || t.access(&customer, &product))
        .await;
    let purchases = t.purchases(&format!("customer={customer}")).await;
    assert_eq!(purchases.len(), 1);
    let p = &purchases[0];
    // 10% and 5% of 999, rounded down; the creator gets the remainder.
    assert_eq!(
        (
            p["amount"].as_i64(),
            p["platform_fee"].as_i64(),
            p["organization_fee"].as_i64(),
            p["creator_payout"].as_i64()
        ),
        (Some(999), Some(99), Some(49), Some(851))
    );
    assert_eq!(p["status"], "completed");
    assert_eq!(p["creator_id"], "creator_1");
    let (_, order) = t
        .get(&format!("/v1/orders/{}", s["order_id"].as_str().unwrap()))
        .await;
    assert_eq!(order["status"], "completed");
    let (_, a) = t
        .get(&format!("/v1/access?customer={customer}&product={product}"))
        .await;
    assert_eq!(
        (a["source"].as_str(), a["purchase_id"].as_str()),
        (Some("purchase"), p["id"].as_str())
    );
    // A malformed id is named by its parameter, alone or in its place in a batch.
    let (status, err) = t
        .get(&format!("/v1/access?customer=cus_nope&product={product}"))
        .await;
    assert_eq!(
        (
            status,
            err["error"]["code"].as_str(),
            err["error"]["param"].as_str()
        ),
        (400, Some("invalid_id"), Some("customer"))
    );
    let (status, err) = t
        .post(
            "/v1/access/batch",
            json!({ "checks": [
                { "customer": customer, "product": product },
                { "customer": customer, "product": "prod_nope" },
            ] }),
        )
        .await;
    assert_eq!(
        (
            status,
            err["error"]["code"].as_str(),
            err["error"]["param"].as_str()
        ),
        (400, Some("invalid_id"), Some("checks[1][product]"))
    );
    // Buying it again is refused.
    let (status, err) = t
        .post(
            "/v1/checkout_sessions",
            json!({ "customer": customer, "product": product }),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("already_purchased"))
    );
}

pub async fn duplicated_reordered_and_retried_webhooks_make_exactly_one_purchase(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1500, None).await;
    let customer = t.customer("bo").await;
    // Every delivery duplicated and reordered, and the first three answered 500.
    t.set_faults(Faults {
        duplicate_rate: 1.0,
        reorder_rate: 1.0,
        ..Faults::default()
    });
    t.flaky
        .fail_next
        .store(3, std::sync::atomic::Ordering::SeqCst);
    paid(&t, &customer, &product).await;
    assert!(
        t.flaky.failed.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the receiver did answer 500"
    );
    // And everything once more, newest first.
    t.set_faults(Faults::default());
    t.resend_all("checkout.session.completed").await;
    t.resend_all("payment_intent.succeeded").await;
    t.deliveries_settled().await;
    t.drained().await;
    assert_eq!(t.purchases(&format!("customer={customer}")).await.len(), 1);
    let (_, events) = t.get("/v1/events?status=processed").await;
    let completed = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "checkout.session.completed")
        .count();
    assert_eq!(
        completed, 1,
        "one stored event per Stripe event id, however often delivered"
    );
}

pub async fn the_success_page_sync_completes_the_order_before_any_webhook(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 700, None).await;
    let customer = t.customer("cy").await;
    t.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let s = t
        .checkout(json!({ "customer": customer, "product": product }))
        .await;
    let id = s["stripe_checkout_session_id"].as_str().unwrap();
    let (_, before) = t
        .get(&format!("/v1/checkout_sessions/{id}?sync=true"))
        .await;
    assert_eq!(
        before["status"], "pending",
        "nothing is granted before payment: {before}"
    );
    assert!(!t.access(&customer, &product).await);
    assert_eq!(t.pay(&s, CARD).await, 303);
    assert!(
        !t.access(&customer, &product).await,
        "the redirect alone grants nothing"
    );
    let (status, synced) = t
        .get(&format!("/v1/checkout_sessions/{id}?sync=true"))
        .await;
    assert_eq!(status, 200, "{synced}");
    assert_eq!(synced["status"], "completed");
    assert!(t.access(&customer, &product).await);
    // The webhook arriving later changes nothing.
    t.set_faults(Faults::default());
    t.resend_all("checkout.session.completed").await;
    t.deliveries_settled().await;
    t.applied("checkout.session.completed", 1).await;
    assert_eq!(t.purchases(&format!("customer={customer}")).await.len(), 1);
}

pub async fn refunds_reverse_the_split_and_a_full_refund_revokes_access(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("di").await;
    paid(&t, &customer, &product).await;
    let id = t.purchases(&format!("customer={customer}")).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, partial) = t
        .post(
            &format!("/v1/purchases/{id}/refund"),
            json!({ "amount": 400, "reason": "requested_by_customer" }),
        )
        .await;
    assert_eq!(status, 200, "{partial}");
    assert_eq!(partial["status"], "partially_refunded");
    assert_eq!(
        (
            partial["refunded_platform_fee"].as_i64(),
            partial["refunded_organization_fee"].as_i64(),
            partial["refunded_creator_payout"].as_i64()
        ),
        (Some(40), Some(20), Some(340))
    );
    assert!(
        t.access(&customer, &product).await,
        "a partial refund keeps access"
    );
    let (status, err) = t
        .post(
            &format!("/v1/purchases/{id}/refund"),
            json!({ "amount": 601 }),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("amount_too_large"))
    );
    let (status, full) = t
        .post(&format!("/v1/purchases/{id}/refund"), json!({}))
        .await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(
        (full["status"].as_str(), full["refunded_amount"].as_i64()),
        (Some("refunded"), Some(1000))
    );
    assert!(!t.access(&customer, &product).await);
    let (status, _) = t
        .post(&format!("/v1/purchases/{id}/refund"), json!({}))
        .await;
    assert_eq!(status, 409, "nothing left to refund");
    // Stripe's charge.refunded events for our own refunds change nothing more.
    t.applied("charge.refunded", 2).await;
    let (_, p) = t.get(&format!("/v1/purchases/{id}")).await;
    assert_eq!(p["refunded_amount"], 1000);
    assert_eq!(p["refunds"].as_array().unwrap().len(), 2);
}

pub async fn a_refund_made_in_stripe_has_the_same_effect(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("ed").await;
    paid(&t, &customer, &product).await;
    let pi = t.purchases(&format!("customer={customer}")).await[0]["stripe_payment_intent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = t
        .http
        .post(format!("{}/v1/refunds", t.sandbox.url()))
        .bearer_auth(crate::support::STRIPE_KEY)
        .form(&[("payment_intent", pi.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    t.eventually("access revoked", || async {
        !t.access(&customer, &product).await
    })
    .await;
    let p = &t.purchases(&format!("customer={customer}")).await[0];
    assert_eq!(
        (p["status"].as_str(), p["refunded_creator_payout"].as_i64()),
        (Some("refunded"), Some(850))
    );
}

pub async fn a_dispute_freezes_access(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("fa").await;
    paid(&t, &customer, &product).await;
    let pi = t.purchases(&format!("customer={customer}")).await[0]["stripe_payment_intent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let intent: serde_json::Value = t
        .http
        .get(format!("{}/v1/payment_intents/{pi}", t.sandbox.url()))
        .bearer_auth(crate::support::STRIPE_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let charge = intent["latest_charge"].as_str().unwrap();
    let dispute: serde_json::Value = t
        .http
        .post(format!(
            "{}/_sandbox/charges/{charge}/dispute",
            t.sandbox.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    t.eventually("access frozen", || async {
        !t.access(&customer, &product).await
    })
    .await;
    let (status, err) = t
        .post(
            &format!(
                "/v1/purchases/{}/refund",
                t.purchases(&format!("customer={customer}")).await[0]["id"]
                    .as_str()
                    .unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("disputed"))
    );
    // Won: access comes back.
    t.http
        .post(format!(
            "{}/_sandbox/disputes/{}/resolve?status=won",
            t.sandbox.url(),
            dispute["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    t.eventually("access restored", || t.access(&customer, &product))
        .await;
    // The dispute's first event arriving again, late, does not freeze access anew: the
    // worker asks Stripe how the dispute stands now.
    t.resend_all("charge.dispute.created").await;
    t.deliveries_settled().await;
    t.drained().await;
    assert!(t.access(&customer, &product).await);
}

pub async fn two_paid_checkouts_of_one_product_keep_one_purchase_and_refund_the_other(
    engine: Engine,
) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1200, None).await;
    let customer = t.customer("ty").await;
    paid_in_two_tabs(&t, &customer, &product, CARD).await;
    t.eventually("the second payment refunded", || async {
        let list = t.purchases(&format!("customer={customer}")).await;
        list.len() == 2 && list.iter().any(|p| p["status"] == "refunded")
    })
    .await;
    let list = t.purchases(&format!("customer={customer}")).await;
    let kept: Vec<_> = list.iter().filter(|p| p["status"] == "completed").collect();
    let refunded: Vec<_> = list.iter().filter(|p| p["status"] == "refunded").collect();
    assert_eq!((kept.len(), refunded.len()), (1, 1), "{list:?}");
    assert_eq!(refunded[0]["refund_reason"], "duplicate_purchase");
    assert_eq!(refunded[0]["refunded_amount"], 1200);
    assert!(t.access(&customer, &product).await);
    // Stripe holds the refund, on the duplicate's payment only.
    let refunds: serde_json::Value = t
        .http
        .get(format!(
            "{}/v1/refunds?payment_intent={}",
            t.sandbox.url(),
            refunded[0]["stripe_payment_intent_id"].as_str().unwrap()
        ))
        .bearer_auth(crate::support::STRIPE_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refunds["data"].as_array().unwrap().len(), 1);
    assert_eq!(refunds["data"][0]["amount"], 1200);
}

pub async fn a_paid_session_its_order_never_recorded_still_completes_the_order(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 800, None).await;
    let customer = t.customer("uz").await;
    let s = t
        .checkout(json!({ "customer": customer, "product": product }))
        .await;
    // As if the request that created the session died before writing it down.
    sqlx::query("UPDATE orders SET stripe_checkout_session_id = NULL WHERE id = $1")
        .bind(s["order_id"].as_str().unwrap())
        .execute(t.state().store.pool())
        .await
        .unwrap();
    assert_eq!(t.pay(&s, CARD).await, 303);
    t.eventually("access", || t.access(&customer, &product))
        .await;
    let (_, order) = t
        .get(&format!("/v1/orders/{}", s["order_id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (
            order["status"].as_str(),
            order["stripe_checkout_session_id"].as_str()
        ),
        (Some("completed"), s["stripe_checkout_session_id"].as_str())
    );
    // An order whose request died before Stripe was even asked is failed by the sweep,
    // and its seats come back.
    let event = t.product("event", 500, Some(2)).await;
    let stale = t
        .state()
        .store
        .create_order(
            &tollgate_domain::TenantId::parse(&t.tenant_id).unwrap(),
            &tollgate_store::NewOrder {
                customer_id: None,
                email: Some(tollgate_domain::Email::parse("gone@example.com").unwrap()),
                currency: tollgate_domain::Currency::parse("usd").unwrap(),
                items: vec![tollgate_store::NewOrderItem {
                    product_id: tollgate_domain::ProductId::parse(&event).unwrap(),
                    price_id: tollgate_domain::PriceId::parse(
                        t.get(&format!("/v1/products/{event}")).await.1["prices"][0]["id"]
                            .as_str()
                            .unwrap(),
                    )
                    .unwrap(),
                    title: "seat".into(),
                    quantity: 2,
                    unit_amount: tollgate_domain::Amount::new(500).unwrap(),
                    event_capacity: Some(2),
                }],
                fees: Default::default(),
                mode: tollgate_domain::status::CheckoutMode::Payment,
            },
        )
        .await
        .unwrap();
    let (status, err) = t
        .post(
            "/v1/checkout_sessions",
            json!({ "customer": customer, "product": event }),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("sold_out"))
    );
    sqlx::query("UPDATE orders SET created_at = 0 WHERE id = $1")
        .bind(stale.id.as_str())
        .execute(t.state().store.pool())
        .await
        .unwrap();
    tollgate::maintenance::sweep(t.state()).await.unwrap();
    let (_, order) = t.get(&format!("/v1/orders/{}", stale.id)).await;
    assert_eq!(order["status"], "failed");
    let (status, _) = t
        .post(
            "/v1/checkout_sessions",
            json!({ "customer": customer, "product": event }),
        )
        .await;
    assert_eq!(status, 200, "the seats came back");
}

pub async fn a_three_item_cart_books_an_event_and_a_sold_out_event_is_refused(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let course = t.product("course", 2000, None).await;
    let ebook = t.product("digital_product", 500, None).await;
    let event = t.product("event", 1500, Some(3)).await;
    let customer = t.customer("gi").await;
    let s = t.checkout(json!({ "customer": customer, "items": [{ "product": course }, { "product": ebook }, { "product": event, "quantity": 2 }] })).await;
    let (_, order) = t
        .get(&format!("/v1/orders/{}", s["order_id"].as_str().unwrap()))
        .await;
    assert_eq!(order["amount_total"], 2000 + 500 + 3000);
    assert_eq!(order["bookings"][0]["status"], "pending");
    // Two of three seats are held: a second buyer cannot take two more.
    let other = t.customer("ho").await;
    let (status, err) = t
        .post(
            "/v1/checkout_sessions",
            json!({ "customer": other, "items": [{ "product": event, "quantity": 2 }] }),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("sold_out"))
    );
    assert_eq!(t.pay(&s, CARD).await, 303);
    t.eventually("all three granted", || async {
        t.access(&customer, &event).await
            && t.access(&customer, &course).await
            && t.access(&customer, &ebook).await
    })
    .await;
    let purchases = t.purchases(&format!("customer={customer}")).await;
    assert_eq!(purchases.len(), 3, "one purchase per item");
    let total: i64 = purchases
        .iter()
        .map(|p| p["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 5500);
    let (_, order) = t
        .get(&format!("/v1/orders/{}", s["order_id"].as_str().unwrap()))
        .await;
    assert_eq!(order["bookings"][0]["status"], "confirmed");
    // The last seat is still for sale.
    let (status, _) = t
        .post(
            "/v1/checkout_sessions",
            json!({ "customer": other, "items": [{ "product": event, "quantity": 1 }] }),
        )
        .await;
    assert_eq!(status, 200);
}

pub async fn a_guest_checkout_records_the_purchase_against_the_email(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("digital_product", 900, None).await;
    let s = t
        .checkout(json!({ "customer_email": "guest@example.com", "product": product }))
        .await;
    assert_eq!(t.pay(&s, CARD).await, 303);
    t.drained().await;
    t.eventually("the guest purchase", || async {
        !t.purchases(&format!("product={product}")).await.is_empty()
    })
    .await;
    let p = &t.purchases(&format!("product={product}")).await[0];
    assert_eq!(
        (p["email"].as_str(), p["customer_id"].as_str()),
        (Some("guest@example.com"), None)
    );
}

pub async fn the_validation_pipeline_answers_each_mistake_with_its_error(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("ik").await;
    let (_, draft) = t
        .post(
            "/v1/products",
            json!({ "kind": "course", "title": "Draft", "price": { "unit_amount": 100 } }),
        )
        .await;
    let (_, free) = t.post("/v1/products", json!({ "kind": "content", "title": "Free", "status": "published", "price": { "unit_amount": 0 } })).await;
    let (_, gone) = t.post("/v1/products", json!({ "kind": "course", "title": "Gone", "status": "published", "price": { "unit_amount": 100 } })).await;
    t.call_as(
        &t.key,
        reqwest::Method::DELETE,
        &format!("/v1/products/{}", gone["id"].as_str().unwrap()),
        None,
    )
    .await;
    let cases = [
        (
            json!({ "customer": customer, "items": [] }),
            400,
            "cart_empty",
        ),
        (
            json!({ "customer": customer, "product": "prd_nope" }),
            404,
            "product_not_found",
        ),
        // A Stripe id where Tollgate's belongs is named as such.
        (
            json!({ "customer": customer, "product": "prod_nope" }),
            400,
            "invalid_id",
        ),
        (
            json!({ "customer": customer, "product": draft["id"] }),
            404,
            "product_not_found",
        ),
        (
            json!({ "customer": customer, "product": gone["id"] }),
            404,
            "product_not_found",
        ),
        (
            json!({ "customer": customer, "product": free["id"] }),
            400,
            "free_product",
        ),
        (
            json!({ "customer_email": "not-an-email", "product": product }),
            400,
            "invalid_email",
        ),
        (
            json!({ "customer": "cust_missing", "product": product }),
            404,
            "resource_missing",
        ),
        (
            json!({ "customer": "cus_missing", "product": product }),
            400,
            "invalid_id",
        ),
        (
            json!({ "customer": customer, "product": product, "success_url": "javascript:alert(1)" }),
            400,
            "invalid_url",
        ),
        (
            json!({ "customer": customer, "product": product, "quantity": 2 }),
            400,
            "invalid_quantity",
        ),
        (json!({ "product": product }), 400, "customer_required"),
        (
            json!({ "customer": customer, "product": product, "surprise": true }),
            400,
            "parameter_unknown",
        ),
        (
            json!({ "customer": customer, "product": product, "allow_promotion_codes": true }),
            400,
            "parameter_not_allowed",
        ),
        (
            json!({ "customer": customer, "customer_email": "a@example.com", "product": product }),
            400,
            "parameter_conflict",
        ),
    ];
    for (body, status, code) in cases {
        let (got, err) = t.post("/v1/checkout_sessions", body.clone()).await;
        assert_eq!(
            (got, err["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} -> {err}"
        );
    }
    let (_, orders) = t.get("/v1/orders").await;
    assert!(
        orders["data"].as_array().unwrap().is_empty(),
        "no refused checkout left an order"
    );
}

pub async fn when_stripe_fails_the_order_is_marked_failed_and_nothing_is_purchased(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("jo").await;
    let attempt = || {
        t.post(
            "/v1/checkout_sessions",
            json!({ "customer": customer, "product": product }),
        )
    };
    // Stripe failing (500) is a 502; Stripe turning us away (429) is unavailable, a 503.
    for (faults, want) in [
        (
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            (502, "stripe_error"),
        ),
        (
            Faults {
                rate_limit_rate: 1.0,
                ..Faults::default()
            },
            (503, "stripe_unavailable"),
        ),
    ] {
        t.set_faults(faults);
        let (status, err) = attempt().await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (want.0, Some(want.1)),
            "{err}"
        );
        assert!(
            !err.to_string().contains("sandbox") && !err.to_string().contains("127.0.0.1"),
            "no internal detail leaks: {err}"
        );
    }
    let (_, orders) = t.get("/v1/orders").await;
    let orders = orders["data"].as_array().unwrap();
    assert_eq!(orders.len(), 2);
    assert!(orders.iter().all(|o| o["status"] == "failed"), "{orders:?}");
    assert!(t.purchases("").await.is_empty());
    // A refusal (Stripe no longer knows the customer) is a 502 that copies nothing of
    // Stripe's words (they may name other tenants' objects).
    t.set_faults(Faults::default());
    let (_, c) = t.get(&format!("/v1/customers/{customer}")).await;
    let res = t
        .http
        .delete(format!(
            "{}/v1/customers/{}",
            t.sandbox.url(),
            c["stripe_customer_id"].as_str().unwrap()
        ))
        .bearer_auth(crate::support::STRIPE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, err) = attempt().await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (502, Some("stripe_error"))
    );
    let stripe_customer = c["stripe_customer_id"].as_str().unwrap();
    assert!(
        !err.to_string().contains("No such customer") && !err.to_string().contains(stripe_customer),
        "{err}"
    );
    // Stripe back, with a customer it knows: checkout works again.
    let other = t.customer("jo2").await;
    let (status, _) = t
        .post(
            "/v1/checkout_sessions",
            json!({ "customer": other, "product": product }),
        )
        .await;
    assert_eq!(status, 200);
}

pub async fn an_event_acknowledged_before_a_crash_is_applied_once_after_restart(engine: Engine) {
    let Some(mut t) = spawn(engine).await else {
        return;
    };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("ka").await;
    // The same service as its own process, with no workers: it acknowledges and stores
    // Stripe's events and applies none, so the kill lands between the two.
    t.stop_app().await;
    let mut process = t.spawn_process(0);
    t.eventually("the process to serve", || async {
        t.http
            .get(format!("{}/healthz", t.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let s = t
        .checkout(json!({ "customer": customer, "product": product }))
        .await;
    assert_eq!(t.pay(&s, CARD).await, 303);
    let store = tollgate_store::Store::connect(&t.database_url)
        .await
        .unwrap();
    t.eventually("the event acknowledged and stored", || {
        let store = store.clone();
        async move {
            store
                .inbox_list(&Default::default(), 100, None)
                .await
                .unwrap()
                .iter()
                .any(|e| e.event_type == "checkout.session.completed")
        }
    })
    .await;
    assert!(!t.access(&customer, &product).await);
    // SIGKILL: no shutdown, no chance to finish anything.
    process.kill().unwrap();
    process.wait().unwrap();
    t.start_app(2).await;
    t.eventually("access after restart", || t.access(&customer, &product))
        .await;
    t.drained().await;
    assert_eq!(t.purchases(&format!("customer={customer}")).await.len(), 1);
    let completed: Vec<_> = store
        .inbox_list(&Default::default(), 100, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "checkout.session.completed")
        .collect();
    assert_eq!(completed.len(), 1);
    assert_eq!(
        (completed[0].status.as_str(), completed[0].attempts),
        ("processed", 1),
        "applied once, by the restarted service"
    );
}

pub async fn another_tenants_key_finds_none_of_this_tenants_objects(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("la").await;
    let s = paid(&t, &customer, &product).await;
    let purchase = t.purchases("").await[0]["id"].as_str().unwrap().to_owned();
    let price = t.get(&format!("/v1/products/{product}")).await.1["prices"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = s["order_id"].as_str().unwrap().to_owned();
    let session = s["stripe_checkout_session_id"].as_str().unwrap().to_owned();
    t.applied("checkout.session.completed", 1).await;
    let (_, events) = t.get("/v1/events").await;
    let event = events["data"][0]["stripe_event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, other_key) = t.new_tenant("Other", (0, 0)).await;
    use reqwest::Method as M;
    let probes: Vec<(M, String, Option<serde_json::Value>)> = vec![
        (M::GET, format!("/v1/customers/{customer}"), None),
        (M::GET, format!("/v1/products/{product}"), None),
        (
            M::POST,
            format!("/v1/products/{product}"),
            Some(json!({ "title": "mine now" })),
        ),
        (M::DELETE, format!("/v1/products/{product}"), None),
        (
            M::POST,
            format!("/v1/products/{product}/prices"),
            Some(json!({ "unit_amount": 1 })),
        ),
        (M::GET, format!("/v1/prices/{price}"), None),
        (M::GET, format!("/v1/orders/{order}"), None),
        (M::GET, format!("/v1/checkout_sessions/{session}"), None),
        (
            M::GET,
            format!("/v1/checkout_sessions/{session}?sync=true"),
            None,
        ),
        (M::GET, format!("/v1/purchases/{purchase}"), None),
        (
            M::POST,
            format!("/v1/purchases/{purchase}/refund"),
            Some(json!({})),
        ),
        (
            M::POST,
            "/v1/checkout_sessions".into(),
            Some(json!({ "customer": customer, "product": product })),
        ),
        (
            M::GET,
            format!("/v1/access?customer={customer}&product={product}"),
            None,
        ),
        (
            M::POST,
            "/v1/access/batch".into(),
            Some(json!({ "checks": [{ "customer": customer, "product": product }] })),
        ),
        (M::POST, format!("/v1/events/{event}/replay"), None),
    ];
    for (method, path, body) in probes {
        let (status, err) = t.call_as(&other_key, method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path} -> {err}");
    }
    // Lists see nothing either.
    for list in [
        "/v1/purchases",
        "/v1/orders",
        "/v1/customers",
        "/v1/products",
        "/v1/events",
    ] {
        let (status, body) = t.call_as(&other_key, M::GET, list, None).await;
        assert_eq!(status, 200, "{list} -> {body}");
        assert!(
            body["data"].as_array().unwrap().is_empty(),
            "{list} -> {body}"
        );
        let (_, own) = t.get(list).await;
        assert!(
            !own["data"].as_array().unwrap().is_empty(),
            "{list} lists the owner's objects"
        );
    }
    // And the first tenant's objects are untouched.
    assert!(t.access(&customer, &product).await);
    assert_eq!(
        t.get(&format!("/v1/products/{product}")).await.1["title"],
        "course item"
    );
}

pub async fn idempotency_keys_replay_and_refuse_other_bodies(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let send = |body: serde_json::Value, key: &'static str| {
        let t = &t;
        async move {
            let res = t
                .http
                .post(format!("{}/v1/customers", t.base))
                .bearer_auth(&t.key)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = res.headers().get("idempotent-replayed").is_some();
            (
                res.status().as_u16(),
                replayed,
                res.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (s1, r1, first) = send(json!({ "external_user_id": "u1" }), "k1").await;
    let (s2, r2, second) = send(json!({ "external_user_id": "u1" }), "k1").await;
    assert_eq!((s1, r1, s2, r2), (200, false, 200, true));
    assert_eq!(first, second);
    let (s3, _, err) = send(json!({ "external_user_id": "u2" }), "k1").await;
    assert_eq!(
        (s3, err["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
}

pub async fn errors_are_in_our_format_everywhere(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let raw = |method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Vec<u8>>| {
        let mut req = t.http.request(method, format!("{}{path}", t.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        async move {
            let res = req.send().await.unwrap();
            (
                res.status().as_u16(),
                res.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let cases = [
        (
            raw(reqwest::Method::GET, "/v1/purchases", None, None).await,
            401,
            "invalid_api_key",
        ),
        (
            raw(
                reqwest::Method::GET,
                "/v1/purchases",
                Some("tg_sk_wrong"),
                None,
            )
            .await,
            401,
            "invalid_api_key",
        ),
        (
            raw(
                reqwest::Method::POST,
                "/v1/customers",
                Some(&t.key),
                Some(b"{not json".to_vec()),
            )
            .await,
            400,
            "invalid_json",
        ),
        (
            raw(
                reqwest::Method::POST,
                "/v1/customers",
                Some(&t.key),
                Some(vec![b' '; 70_000]),
            )
            .await,
            413,
            "body_too_large",
        ),
        (
            raw(reqwest::Method::GET, "/v1/nothing-here", Some(&t.key), None).await,
            404,
            "route_not_found",
        ),
        (
            raw(
                reqwest::Method::GET,
                "/v1/purchases?limit=1000",
                Some(&t.key),
                None,
            )
            .await,
            400,
            "parameter_invalid",
        ),
        (
            raw(
                reqwest::Method::GET,
                "/v1/purchases?customer_id=cust_x",
                Some(&t.key),
                None,
            )
            .await,
            400,
            "parameter_unknown",
        ),
        (
            raw(reqwest::Method::GET, "/v1/tenants", Some(&t.key), None).await,
            401,
            "invalid_api_key",
        ),
    ];
    for ((status, body), want_status, code) in cases {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (want_status, Some(code)),
            "{body}"
        );
        assert!(body["error"]["type"].is_string() && body["error"]["message"].is_string());
    }
    // Pages of purchases carry totals.
    let (_, page) = t.get("/v1/purchases?page=1&page_size=5").await;
    assert_eq!(
        (page["total_count"].as_i64(), page["total_pages"].as_i64()),
        (Some(0), Some(0))
    );
}

pub async fn checkout_creation_is_rate_limited_per_tenant(engine: Engine) {
    let Some(t) = spawn_with(
        engine,
        Options {
            checkout_rate_per_minute: 2,
            ..Options::default()
        },
    )
    .await
    else {
        return;
    };
    let product = t.product("event", 100, Some(100)).await;
    let customer = t.customer("ma").await;
    for _ in 0..2 {
        let (status, _) = t
            .post(
                "/v1/checkout_sessions",
                json!({ "customer": customer, "product": product }),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, err) = t
        .post(
            "/v1/checkout_sessions",
            json!({ "customer": customer, "product": product }),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    // Another tenant has its own allowance.
    let (_, other) = t.new_tenant("Other", (0, 0)).await;
    let (status, p) = t
        .call_as(
            &other,
            reqwest::Method::POST,
            "/v1/products",
            Some(json!({ "kind": "course", "title": "Theirs", "status": "published", "price": { "unit_amount": 100 } })),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let (status, c) = t
        .call_as(
            &other,
            reqwest::Method::POST,
            "/v1/customers",
            Some(json!({ "external_user_id": "theirs" })),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    let (status, s) = t
        .call_as(
            &other,
            reqwest::Method::POST,
            "/v1/checkout_sessions",
            Some(json!({ "customer": c["id"], "product": p["id"] })),
        )
        .await;
    assert_eq!(
        status, 200,
        "the other tenant may still create checkouts: {s}"
    );
    // A turned-away request is not kept against its Idempotency-Key: the retry runs.
    let res = t
        .http
        .post(format!("{}/v1/checkout_sessions", t.base))
        .bearer_auth(&t.key)
        .header("idempotency-key", "after-429")
        .json(&json!({ "customer": customer, "product": product }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(
        t.state()
            .store
            .idempotency_begin(
                &t.tenant_id,
                "after-429",
                "other",
                std::time::Duration::from_secs(60),
            )
            .await
            .unwrap()
            == tollgate_store::IdempotencyOutcome::Proceed,
        "the key was given back"
    );
}

pub async fn webhooks_with_bad_signatures_are_refused_and_stored_events_can_be_replayed(
    engine: Engine,
) {
    let Some(t) = spawn(engine).await else { return };
    let payload = r#"{"id":"evt_forged","object":"event","type":"checkout.session.completed","created":1,"data":{"object":{"id":"cs_x","metadata":{}}}}"#;
    let now = chrono_now();
    for header in [
        String::new(),
        format!("t={now},v1=00"),
        "garbage".to_owned(),
    ] {
        let res = t
            .http
            .post(format!("{}/webhooks/stripe", t.base))
            .header("stripe-signature", header)
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_signature");
    }
    // A correctly signed but foreign event is stored and ignored; replay runs it again.
    let sig = sign(&t.webhook_secret, now, payload);
    let res = t
        .http
        .post(format!("{}/webhooks/stripe", t.base))
        .header("stripe-signature", format!("t={now},v1={sig}"))
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    t.drained().await;
    let store = &t.state().store;
    assert_eq!(
        store
            .inbox_event(&StripeEventId::from_stripe("evt_forged"))
            .await
            .unwrap()
            .unwrap()
            .status,
        InboxStatus::Ignored
    );
    // A dead letter of this tenant's: the session it names is unknown to Stripe.
    let dead = format!(
        r#"{{"id":"evt_dead","object":"event","type":"checkout.session.completed","created":1,"data":{{"object":{{"id":"cs_test_gone","object":"checkout.session","metadata":{{"tenant_id":"{}"}}}}}}}}"#,
        t.tenant_id
    );
    let res = t
        .http
        .post(format!("{}/webhooks/stripe", t.base))
        .header(
            "stripe-signature",
            format!("t={now},v1={}", sign(&t.webhook_secret, now, &dead)),
        )
        .body(dead.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    t.drained().await;
    let (_, listed) = t.get("/v1/events?status=dead").await;
    assert_eq!(listed["data"][0]["stripe_event_id"], "evt_dead", "{listed}");
    assert!(
        listed["data"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("stripe_error")
    );
    // Replayed through the API: it runs again (and dies again, Stripe still not knowing it).
    let (status, replayed) = t.post("/v1/events/evt_dead/replay", json!({})).await;
    assert_eq!(
        (status, replayed["status"].as_str()),
        (200, Some("pending")),
        "{replayed}"
    );
    t.drained().await;
    let dead_id = StripeEventId::from_stripe("evt_dead");
    let after = store.inbox_event(&dead_id).await.unwrap().unwrap();
    assert_eq!((after.status.as_str(), after.attempts), ("dead", 1));
    // Times are whole seconds: mark when it died as long ago, to see it die again.
    sqlx::query("UPDATE webhook_inbox SET next_attempt_at = 0 WHERE event_id = $1")
        .bind(dead_id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    // And through the command line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["events", "replay", "--dead"])
        .env("TOLLGATE_DATABASE_URL", &t.database_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.state().inbox_signal.notify_waiters();
    t.drained().await;
    let after = store.inbox_event(&dead_id).await.unwrap().unwrap();
    assert_eq!((after.status.as_str(), after.attempts), ("dead", 1));
    assert!(after.next_attempt_at.secs() > 0, "it ran once more");
    // An old signature is refused even if it matches.
    let old = now - 301;
    let res = t
        .http
        .post(format!("{}/webhooks/stripe", t.base))
        .header(
            "stripe-signature",
            format!("t={old},v1={}", sign(&t.webhook_secret, old, payload)),
        )
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn sign(secret: &str, t: i64, payload: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{payload}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub async fn concurrent_get_or_create_calls_make_one_customer_and_one_stripe_customer(
    engine: Engine,
) {
    let Some(t) = spawn(engine).await else { return };
    let mut calls = Vec::new();
    for _ in 0..12 {
        let (http, url, key) = (
            t.http.clone(),
            format!("{}/v1/customers", t.base),
            t.key.clone(),
        );
        calls.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({ "external_user_id": "same-user", "email": "same@example.com" }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.json::<serde_json::Value>().await.unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut stripe_ids = std::collections::HashSet::new();
    for c in calls {
        let c = c.await.unwrap();
        ids.insert(c["id"].as_str().unwrap().to_owned());
        stripe_ids.insert(c["stripe_customer_id"].as_str().unwrap().to_owned());
    }
    assert_eq!((ids.len(), stripe_ids.len()), (1, 1));
    let list: serde_json::Value = t
        .http
        .get(format!(
            "{}/v1/customers?email=same@example.com",
            t.sandbox.url()
        ))
        .bearer_auth(crate::support::STRIPE_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "exactly one Stripe customer"
    );
}

pub async fn a_second_instance_sees_access_changes(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("na").await;
    // A second instance: same database, its own port and index, no workers of its own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_base = format!("http://{}", listener.local_addr().unwrap());
    let settings = tollgate::Settings {
        listen: listener.local_addr().unwrap(),
        database_url: t.database_url.clone(),
        stripe_secret_key: Some(crate::support::STRIPE_KEY.into()),
        stripe_api_base: Some(t.sandbox.url()),
        stripe_webhook_secrets: vec![t.webhook_secret.clone()],
        workers: 0,
        ..tollgate::Settings::default()
    };
    let second = tollgate::Application::build_on(listener, settings)
        .await
        .unwrap();
    let ask_second = || async {
        let (_, a) = {
            let res = t
                .http
                .get(format!(
                    "{second_base}/v1/access?customer={customer}&product={product}"
                ))
                .bearer_auth(&t.key)
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<serde_json::Value>().await.unwrap())
        };
        a["has_access"] == true
    };
    assert!(!ask_second().await);
    paid(&t, &customer, &product).await;
    t.eventually("the second instance to see the grant", ask_second)
        .await;
    let id = t.purchases(&format!("customer={customer}")).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = t
        .post(&format!("/v1/purchases/{id}/refund"), json!({}))
        .await;
    assert_eq!(status, 200);
    t.eventually("the second instance to see the revocation", || async {
        !ask_second().await
    })
    .await;
    second.stop().await.unwrap();
}
