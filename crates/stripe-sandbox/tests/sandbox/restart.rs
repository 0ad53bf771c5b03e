//! State that survives a restart: with `Config::state_path`, a new sandbox on the same file
//! carries on where the old one stopped.

use stripe_webhook::Webhook;

use crate::support::{Receiver, TestSandbox, advance_clock, spawn_with};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400;

fn state_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stripe-sandbox-restart-{}-{name}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.json")
}

async fn start(path: &std::path::Path) -> TestSandbox {
    spawn_with(stripe_sandbox::Config {
        state_path: Some(path.to_owned()),
        ..stripe_sandbox::Config::for_tests()
    })
    .await
}

#[tokio::test]
async fn a_new_sandbox_on_the_same_state_file_carries_on_where_the_old_one_stopped() {
    let path = state_file("carry-on");
    let hooks = Receiver::start().await;

    let first = start(&path).await;
    let secret = first.endpoint(&hooks.url).await;
    let (_, clock) = first
        .post("/v1/test_helpers/test_clocks", &format!("frozen_time={T0}"))
        .await;
    let clock = clock["id"].as_str().unwrap().to_owned();
    let (status, customer) = first
        .post_with(
            "/v1/customers",
            &format!("email=kept%40example.com&test_clock={clock}"),
            Some("create-kept"),
        )
        .await;
    assert_eq!(status, 200, "{customer}");
    let customer = customer["id"].as_str().unwrap().to_owned();
    let price = crate::support::price(&first, "Kept plan", 2000, Some("month")).await;
    let (status, session) = first
        .post(
            "/v1/checkout/sessions",
            &format!(
                "mode=subscription&customer={customer}&line_items[0][price]={}&line_items[0][quantity]=1&success_url=https%3A%2F%2Fshop.test%2Fok",
                price.id
            ),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let paid = first
        .pay(session["url"].as_str().unwrap(), "4242424242424242", None)
        .await;
    assert_eq!(paid.status, 303, "{paid:?}");
    let (_, done) = first
        .get(&format!(
            "/v1/checkout/sessions/{}",
            session["id"].as_str().unwrap()
        ))
        .await;
    let sub = done["subscription"].as_str().unwrap().to_owned();
    first.sandbox.stop();
    drop(first);

    let second = start(&path).await;
    let (status, kept) = second.get(&format!("/v1/customers/{customer}")).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["email"], "kept@example.com");
    let (status, _) = second.get(&format!("/v1/prices/{}", price.id)).await;
    assert_eq!(status, 200);
    let (_, before) = second.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(before["status"], "active");
    // An idempotent request made before the restart still replays.
    let (status, replay) = second
        .post_with(
            "/v1/customers",
            &format!("email=kept%40example.com&test_clock={clock}"),
            Some("create-kept"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(replay["id"], customer.as_str());

    // The clock still drives the subscription: a month on, it renews.
    advance_clock(&second, &clock, T0 + 32 * DAY).await;
    let (_, invoices) = second
        .get(&format!("/v1/invoices?subscription={sub}"))
        .await;
    let reasons: Vec<&str> = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["billing_reason"].as_str())
        .collect();
    assert!(reasons.contains(&"subscription_cycle"), "{reasons:?}");

    // And the endpoint still delivers, signed with the secret it was created with.
    let got = hooks
        .wait_for("a renewal after the restart", |r| {
            r.iter().any(|x| {
                x.event_type() == "invoice.created"
                    && x.json()["data"]["object"]["billing_reason"] == "subscription_cycle"
            })
        })
        .await;
    let renewal = got
        .iter()
        .find(|x| x.json()["data"]["object"]["billing_reason"] == "subscription_cycle")
        .unwrap();
    Webhook::construct_event(&renewal.payload, &renewal.signature, &secret)
        .expect("signed with the endpoint's original secret");
}

#[tokio::test]
async fn a_state_file_of_another_layout_is_refused_on_start() {
    let path = state_file("garbage");
    std::fs::write(&path, br#"{"format": 999}"#).unwrap();
    let started = stripe_sandbox::Sandbox::start(
        stripe_sandbox::Config {
            state_path: Some(path),
            ..stripe_sandbox::Config::for_tests()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    assert!(
        started.is_err(),
        "the sandbox does not start on a state it cannot read"
    );
}
