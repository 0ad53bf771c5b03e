//! Cross-field rules Stripe enforces that the sandbox must enforce too, each refused with
//! Stripe's error: portal sessions without a default configuration, test clock advances.

use stripe_billing::test_helpers_test_clock::{
    AdvanceTestHelpersTestClock, CreateTestHelpersTestClock, RetrieveTestHelpersTestClock,
};
use stripe_shared::TestHelpersTestClockStatus;

use crate::support::{Receiver, save_default_portal, spawn};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400;

#[tokio::test]
async fn a_portal_session_without_configuration_is_refused_until_a_default_is_saved() {
    let sb = spawn().await;
    let (_, customer) = sb.post("/v1/customers", "email=p%40example.com").await;
    let form = format!("customer={}", customer["id"].as_str().unwrap());
    let (status, body) = sb.post("/v1/billing_portal/sessions", &form).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https://dashboard.stripe.com/test/settings/billing/portal"),
        "{body}"
    );
    // Creating a configuration through the API does not make a default.
    let (status, config) = sb
        .post(
            "/v1/billing_portal/configurations",
            "features[invoice_history][enabled]=true",
        )
        .await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["is_default"], false);
    let (status, _) = sb.post("/v1/billing_portal/sessions", &form).await;
    assert_eq!(status, 400, "still no default");
    // Naming it works.
    let (status, session) = sb
        .post(
            "/v1/billing_portal/sessions",
            &format!("{form}&configuration={}", config["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200, "{session}");

    let default = save_default_portal(&sb).await;
    assert_eq!(default["is_default"], true);
    let (status, session) = sb.post("/v1/billing_portal/sessions", &form).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["configuration"], default["id"]);
}

#[tokio::test]
async fn the_config_flag_starts_the_sandbox_with_a_default_portal_configuration() {
    let sb = crate::support::spawn_with(stripe_sandbox::Config {
        portal_default_configuration: true,
        ..stripe_sandbox::Config::for_tests()
    })
    .await;
    let (_, customer) = sb.post("/v1/customers", "email=q%40example.com").await;
    let (status, body) = sb
        .post(
            "/v1/billing_portal/sessions",
            &format!("customer={}", customer["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_test_clock_advance_answers_advancing_and_becomes_ready_later_with_both_events() {
    let sb = spawn().await;
    let hooks = Receiver::start().await;
    sb.endpoint(&hooks.url).await;
    let clock = CreateTestHelpersTestClock::new(T0)
        .send(&sb.client)
        .await
        .unwrap();
    let started = AdvanceTestHelpersTestClock::new(clock.id.as_str(), T0 + DAY)
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(started.status, TestHelpersTestClockStatus::Advancing);
    assert_eq!(
        started.frozen_time, T0,
        "time moves once the advance is done"
    );
    let (_, raw) = sb
        .get(&format!("/v1/test_helpers/test_clocks/{}", clock.id))
        .await;
    let target = raw["status_details"]["advancing"]["target_frozen_time"].as_i64();
    assert!(
        raw["status"] == "ready" || target == Some(T0 + DAY),
        "while advancing, the target is shown: {raw}"
    );
    let ready = crate::support::wait_for_clock_ready(&sb, clock.id.as_str(), T0 + DAY).await;
    assert_eq!(ready.frozen_time, T0 + DAY);
    let got = hooks
        .wait_for("advancing and ready", |r| {
            r.iter()
                .any(|x| x.event_type() == "test_helpers.test_clock.ready")
        })
        .await;
    let types: Vec<String> = got.iter().map(|r| r.event_type()).collect();
    let advancing = types
        .iter()
        .position(|t| t == "test_helpers.test_clock.advancing")
        .expect("advancing event");
    let ready_at = types
        .iter()
        .position(|t| t == "test_helpers.test_clock.ready")
        .unwrap();
    assert!(advancing < ready_at, "{types:?}");
}

#[tokio::test]
async fn a_clock_that_is_advancing_cannot_be_advanced_again() {
    // Advances that take a while, as Stripe's do, so that the clock is seen advancing.
    let sb = crate::support::spawn_with(stripe_sandbox::Config {
        test_clock_advance_delay: std::time::Duration::from_millis(300),
        ..stripe_sandbox::Config::for_tests()
    })
    .await;
    let clock = CreateTestHelpersTestClock::new(T0)
        .send(&sb.client)
        .await
        .unwrap();
    let path = format!("/v1/test_helpers/test_clocks/{}/advance", clock.id);
    let (status, body) = sb.post(&path, &format!("frozen_time={}", T0 + DAY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "advancing");
    let now = RetrieveTestHelpersTestClock::new(clock.id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        now.status,
        TestHelpersTestClockStatus::Advancing,
        "a client must wait"
    );
    assert_eq!(now.frozen_time, T0);
    let (status, body) = sb
        .post(&path, &format!("frozen_time={}", T0 + 2 * DAY))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already advancing"),
        "{body}"
    );
    crate::support::wait_for_clock_ready(&sb, clock.id.as_str(), T0 + DAY).await;
    let (status, _) = sb
        .post(&path, &format!("frozen_time={}", T0 + 2 * DAY))
        .await;
    assert_eq!(status, 200, "ready again, it advances again");
}

#[tokio::test]
async fn a_clock_advances_at_most_two_years_without_subscriptions() {
    let sb = spawn().await;
    let clock = CreateTestHelpersTestClock::new(T0)
        .send(&sb.client)
        .await
        .unwrap();
    let path = format!("/v1/test_helpers/test_clocks/{}/advance", clock.id);
    let (status, body) = sb
        .post(&path, &format!("frozen_time={}", T0 + 3 * 365 * DAY))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "frozen_time");
    let (status, body) = sb
        .post(&path, &format!("frozen_time={}", T0 + 700 * DAY))
        .await;
    assert_eq!(status, 200, "{body}");
}
