//! Refunds that fail and disputes that are won or lost, as Stripe's test cards make them.

use serde_json::Value;

use crate::support::{Receiver, TestSandbox, spawn};

/// Pays a one-time price with `card` through the hosted page; returns the charge id.
async fn paid_charge(sb: &TestSandbox, card: &str, amount: i64) -> String {
    let price = crate::support::price(sb, "Course", amount, None).await;
    let (status, session) = sb
        .post(
            "/v1/checkout/sessions",
            &format!(
                "mode=payment&customer_email=buyer%40example.com&line_items[0][price]={}&line_items[0][quantity]=1&success_url=https%3A%2F%2Fshop.test%2Fok",
                price.id
            ),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let paid = sb.pay(session["url"].as_str().unwrap(), card, None).await;
    assert_eq!(paid.status, 303, "{paid:?}");
    let (_, done) = sb
        .get(&format!(
            "/v1/checkout/sessions/{}",
            session["id"].as_str().unwrap()
        ))
        .await;
    let (_, pi) = sb
        .get(&format!(
            "/v1/payment_intents/{}",
            done["payment_intent"].as_str().unwrap()
        ))
        .await;
    pi["latest_charge"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_refund_of_a_5126_payment_looks_successful_then_fails_and_gives_the_amount_back() {
    let sb = spawn().await;
    let hooks = Receiver::start().await;
    sb.endpoint(&hooks.url).await;
    let charge = paid_charge(&sb, "4000000000005126", 2500).await;
    let (status, refund) = sb.post("/v1/refunds", &format!("charge={charge}")).await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["status"], "succeeded", "successful at first");
    let id = refund["id"].as_str().unwrap().to_owned();
    let failed: Value = {
        let mut last = Value::Null;
        for _ in 0..1000 {
            let (_, r) = sb.get(&format!("/v1/refunds/{id}")).await;
            if r["status"] == "failed" {
                last = r;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        last
    };
    assert_eq!(failed["status"], "failed", "failed on a later fetch");
    assert_eq!(failed["failure_reason"], "expired_or_canceled_card");
    assert!(failed["failure_balance_transaction"].is_string());
    let (_, c) = sb.get(&format!("/v1/charges/{charge}")).await;
    assert_eq!(c["amount_refunded"], 0, "the money is the merchant's again");
    assert_eq!(c["refunded"], false);
    let got = hooks
        .wait_for("the refund's failure events", |r| {
            let types: Vec<String> = r.iter().map(|x| x.event_type()).collect();
            ["refund.updated", "refund.failed", "charge.refund.updated"]
                .iter()
                .all(|t| types.iter().any(|x| x == t))
        })
        .await;
    let updated = got
        .iter()
        .find(|x| x.event_type() == "charge.refund.updated")
        .unwrap()
        .json();
    assert_eq!(updated["data"]["object"]["id"], id.as_str());
    assert_eq!(
        updated["data"]["previous_attributes"]["status"],
        "succeeded"
    );
    // The charge can be refunded again.
    let (status, _) = sb.post("/v1/refunds", &format!("charge={charge}")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_0259_payment_is_disputed_as_fraudulent_with_the_money_and_fee_withdrawn() {
    let sb = spawn().await;
    let hooks = Receiver::start().await;
    sb.endpoint(&hooks.url).await;
    let charge = paid_charge(&sb, "4000000000000259", 4000).await;
    let (_, disputes) = sb.get(&format!("/v1/disputes?charge={charge}")).await;
    let dispute = &disputes["data"][0];
    assert_eq!(dispute["reason"], "fraudulent");
    assert_eq!(dispute["status"], "needs_response");
    assert_eq!(dispute["amount"], 4000);
    assert!(
        dispute["evidence_details"]["due_by"].as_i64().unwrap()
            > dispute["created"].as_i64().unwrap()
    );
    let bt = &dispute["balance_transactions"][0];
    assert_eq!(bt["amount"], -4000);
    assert_eq!(bt["fee"], 1500, "Stripe's $15 dispute fee");
    assert_eq!(bt["net"], -5500);
    let typed = stripe_core::dispute::RetrieveDispute::new(dispute["id"].as_str().unwrap())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(typed.balance_transactions.len(), 1, "async-stripe reads it");
    hooks.wait_for_type("charge.dispute.funds_withdrawn").await;

    // Lost: the money stays withdrawn.
    let id = dispute["id"].as_str().unwrap();
    let (status, lost) = sb.post(&format!("/v1/disputes/{id}/close"), "").await;
    assert_eq!(status, 200, "{lost}");
    assert_eq!(lost["status"], "lost");
    assert_eq!(lost["balance_transactions"].as_array().unwrap().len(), 1);
    hooks.wait_for_type("charge.dispute.closed").await;
    assert!(
        !hooks
            .types()
            .iter()
            .any(|t| t == "charge.dispute.funds_reinstated")
    );
}

#[tokio::test]
async fn a_won_dispute_reinstates_the_money_but_not_the_fee() {
    let sb = spawn().await;
    let hooks = Receiver::start().await;
    sb.endpoint(&hooks.url).await;
    let charge = paid_charge(&sb, "4000000000002685", 3000).await;
    let (_, disputes) = sb.get(&format!("/v1/disputes?charge={charge}")).await;
    let dispute = disputes["data"][0].clone();
    assert_eq!(dispute["reason"], "product_not_received");
    let res = sb
        .http
        .post(sb.url(&format!(
            "/_sandbox/disputes/{}/resolve?status=won",
            dispute["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let won: Value = res.json().await.unwrap();
    assert_eq!(won["status"], "won");
    let bts = won["balance_transactions"].as_array().unwrap();
    assert_eq!(bts.len(), 2);
    assert_eq!(bts[1]["amount"], 3000);
    assert_eq!(bts[1]["fee"], 0);
    let got = hooks
        .wait_for("reinstated and closed", |r| {
            r.iter().any(|x| x.event_type() == "charge.dispute.closed")
        })
        .await;
    let types: Vec<String> = got.iter().map(|x| x.event_type()).collect();
    let reinstated = types
        .iter()
        .position(|t| t == "charge.dispute.funds_reinstated")
        .expect("funds reinstated");
    let closed = types
        .iter()
        .position(|t| t == "charge.dispute.closed")
        .unwrap();
    assert!(reinstated < closed, "{types:?}");
}

#[tokio::test]
async fn refunds_of_a_payment_intent_page_past_a_hundred() {
    let sb = spawn().await;
    let charge = paid_charge(&sb, "4242424242424242", 500).await;
    let (_, c) = sb.get(&format!("/v1/charges/{charge}")).await;
    let pi = c["payment_intent"].as_str().unwrap().to_owned();
    for _ in 0..105 {
        let (status, body) = sb
            .post("/v1/refunds", &format!("charge={charge}&amount=1"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, first) = sb
        .get(&format!("/v1/refunds?payment_intent={pi}&limit=100"))
        .await;
    assert_eq!(first["data"].as_array().unwrap().len(), 100);
    assert_eq!(first["has_more"], true);
    let last = first["data"][99]["id"].as_str().unwrap();
    let (_, rest) = sb
        .get(&format!(
            "/v1/refunds?payment_intent={pi}&limit=100&starting_after={last}"
        ))
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 5);
    assert_eq!(rest["has_more"], false);
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut all = ids(&first);
    all.extend(ids(&rest));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 105, "every refund once");
}
