//! Webhook delivery: signatures an independent verifier accepts, retries, recorded
//! attempts, and the delivery faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stripe_core::customer::CreateCustomer;
use stripe_misc::webhook_endpoint::{
    CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents, UpdateWebhookEndpoint,
    UpdateWebhookEndpointEnabledEvents,
};
use stripe_sandbox::{Config, Faults};
use stripe_webhook::{EventObject, Webhook};

use crate::support::{Receiver, eventually, spawn, spawn_with};

#[tokio::test]
async fn deliveries_are_signed_so_that_async_stripe_verifies_and_parses_them() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    let endpoint = CreateWebhookEndpoint::new(
        vec![CreateWebhookEndpointEnabledEvents::CustomerCreated],
        hook.url.as_str(),
    )
    .send(&sb.client)
    .await
    .unwrap();
    let secret = endpoint.secret.clone().unwrap();
    assert!(secret.starts_with("whsec_"));
    let customer = CreateCustomer::new()
        .email("signed@example.com")
        .send(&sb.client)
        .await
        .unwrap();
    let got = hook.wait_for_type("customer.created").await;
    let event = Webhook::construct_event(&got.payload, &got.signature, &secret).unwrap();
    match event.data.object {
        EventObject::CustomerCreated(c) => assert_eq!(c.id, customer.id),
        other => panic!("unexpected object {other:?}"),
    }
    assert!(Webhook::construct_event(&got.payload, &got.signature, "whsec_wrong").is_err());
    let tampered = got.payload.replace("signed@", "forged@");
    assert!(Webhook::construct_event(&tampered, &got.signature, &secret).is_err());
    // Only the types it asked for.
    assert_eq!(hook.types(), ["customer.created"]);
    let (_, retrieved) = sb
        .get(&format!("/v1/webhook_endpoints/{}", endpoint.id))
        .await;
    assert!(
        retrieved.get("secret").is_none(),
        "the secret is shown at creation only"
    );
}

#[tokio::test]
async fn a_delivery_answered_500_is_retried_until_it_succeeds_and_every_attempt_is_recorded() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    hook.fail_next(2);
    sb.endpoint(&hook.url).await;
    CreateCustomer::new()
        .email("retry@example.com")
        .send(&sb.client)
        .await
        .unwrap();
    let got = hook.wait_for("three attempts", |r| r.len() >= 3).await;
    assert!(got.iter().all(|r| r.event_type() == "customer.created"));
    assert_eq!(got[0].event_id(), got[2].event_id());
    let record = eventually("a succeeded delivery", || {
        sb.sandbox
            .deliveries()
            .into_iter()
            .find(|d| d.status == "succeeded")
    })
    .await;
    let statuses: Vec<Option<u16>> = record.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
}

#[tokio::test]
async fn a_receiver_that_never_answers_2xx_exhausts_the_attempts_and_the_delivery_fails() {
    let sb = spawn_with(Config {
        webhook_max_attempts: 3,
        ..Config::for_tests()
    })
    .await;
    let hook = Receiver::start().await;
    hook.fail_next(100);
    sb.endpoint(&hook.url).await;
    CreateCustomer::new().send(&sb.client).await.unwrap();
    let record = eventually("a failed delivery", || {
        sb.sandbox
            .deliveries()
            .into_iter()
            .find(|d| d.status == "failed")
    })
    .await;
    assert_eq!(record.attempts.len(), 3);
    // Listable over HTTP too.
    let list: serde_json::Value = sb
        .http
        .get(sb.url("/_sandbox/deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["status"], "failed");
}

#[tokio::test]
async fn an_unreachable_endpoint_counts_as_a_failed_attempt() {
    let sb = spawn_with(Config {
        webhook_max_attempts: 2,
        ..Config::for_tests()
    })
    .await;
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    sb.endpoint(&format!("http://127.0.0.1:{port}/hook")).await;
    CreateCustomer::new().send(&sb.client).await.unwrap();
    let record = eventually("a failed delivery", || {
        sb.sandbox
            .deliveries()
            .into_iter()
            .find(|d| d.status == "failed")
    })
    .await;
    assert!(
        record
            .attempts
            .iter()
            .all(|a| a.status.is_none() && a.error.is_some())
    );
}

#[tokio::test]
async fn the_duplicate_fault_delivers_the_same_event_twice() {
    let sb = spawn_with(Config {
        faults: Faults {
            duplicate_rate: 1.0,
            ..Faults::default()
        },
        ..Config::for_tests()
    })
    .await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    CreateCustomer::new().send(&sb.client).await.unwrap();
    let got = hook.wait_for("two deliveries", |r| r.len() == 2).await;
    assert_eq!(got[0].event_id(), got[1].event_id());
}

#[tokio::test]
async fn the_drop_fault_never_sends_and_records_the_drop() {
    let sb = spawn_with(Config {
        faults: Faults {
            drop_rate: 1.0,
            ..Faults::default()
        },
        ..Config::for_tests()
    })
    .await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    CreateCustomer::new().send(&sb.client).await.unwrap();
    eventually("a dropped delivery", || {
        sb.sandbox
            .deliveries()
            .into_iter()
            .find(|d| d.status == "dropped")
    })
    .await;
    assert!(hook.received().is_empty());
}

#[tokio::test]
async fn the_reorder_fault_delivers_a_later_event_first() {
    let sb = spawn_with(Config {
        faults: Faults {
            reorder_rate: 1.0,
            ..Faults::default()
        },
        ..Config::for_tests()
    })
    .await;
    let hook = Receiver::start().await;
    CreateWebhookEndpoint::new(
        vec![
            CreateWebhookEndpointEnabledEvents::TestHelpersTestClockAdvancing,
            CreateWebhookEndpointEnabledEvents::TestHelpersTestClockReady,
        ],
        hook.url.as_str(),
    )
    .send(&sb.client)
    .await
    .unwrap();
    let clock =
        stripe_billing::test_helpers_test_clock::CreateTestHelpersTestClock::new(1_767_225_600)
            .send(&sb.client)
            .await
            .unwrap();
    // One request causes both events, so they reach the delivery worker together and the
    // held-back first one is sent after the second however slowly the machine runs.
    stripe_billing::test_helpers_test_clock::AdvanceTestHelpersTestClock::new(
        clock.id.clone(),
        1_767_225_600 + 60,
    )
    .send(&sb.client)
    .await
    .unwrap();
    let got = hook.wait_for("two deliveries", |r| r.len() == 2).await;
    assert_eq!(
        got.iter().map(|r| r.event_type()).collect::<Vec<_>>(),
        [
            "test_helpers.test_clock.ready",
            "test_helpers.test_clock.advancing"
        ]
    );
}

#[tokio::test]
async fn resending_an_event_delivers_it_again() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    sb.endpoint(&hook.url).await;
    CreateCustomer::new().send(&sb.client).await.unwrap();
    let first = hook.wait_for_type("customer.created").await;
    let res = sb
        .http
        .post(sb.url(&format!("/_sandbox/events/{}/resend", first.event_id())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = hook.wait_for("a second delivery", |r| r.len() == 2).await;
    assert_eq!(got[1].event_id(), first.event_id());
}

#[tokio::test]
async fn a_disabled_endpoint_gets_no_delivery_record_while_an_enabled_one_does() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    let on = Receiver::start().await;
    sb.endpoint(&on.url).await;
    let off = CreateWebhookEndpoint::new(
        vec![CreateWebhookEndpointEnabledEvents::All],
        hook.url.as_str(),
    )
    .send(&sb.client)
    .await
    .unwrap();
    let disabled = UpdateWebhookEndpoint::new(off.id.clone())
        .disabled(true)
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(disabled.status, "disabled");
    CreateCustomer::new().send(&sb.client).await.unwrap();
    on.wait_for_type("customer.created").await;
    let deliveries = sb.sandbox.deliveries();
    assert!(
        deliveries
            .iter()
            .any(|d| d.event_type == "customer.created" && d.endpoint_id != off.id.as_str()),
        "the enabled endpoint's delivery is recorded"
    );
    assert!(
        deliveries.iter().all(|d| d.endpoint_id != off.id.as_str()),
        "nothing was queued for the disabled endpoint: {deliveries:?}"
    );
    assert!(hook.received().is_empty());
}

#[tokio::test]
async fn an_endpoint_receives_only_the_event_types_it_enabled_and_updates_change_them() {
    let sb = spawn().await;
    let hook = Receiver::start().await;
    let endpoint = CreateWebhookEndpoint::new(
        vec![
            CreateWebhookEndpointEnabledEvents::CustomerCreated,
            CreateWebhookEndpointEnabledEvents::CustomerDeleted,
        ],
        hook.url.as_str(),
    )
    .send(&sb.client)
    .await
    .unwrap();
    let c = CreateCustomer::new().send(&sb.client).await.unwrap();
    stripe_core::customer::UpdateCustomer::new(c.id.clone())
        .email("changed@example.com")
        .send(&sb.client)
        .await
        .unwrap();
    stripe_core::customer::DeleteCustomer::new(c.id.clone())
        .send(&sb.client)
        .await
        .unwrap();
    // One worker per endpoint sends in order: once the deletion is in, so is the rest.
    hook.wait_for_type("customer.deleted").await;
    assert_eq!(hook.types(), ["customer.created", "customer.deleted"]);

    UpdateWebhookEndpoint::new(endpoint.id.clone())
        .enabled_events(vec![UpdateWebhookEndpointEnabledEvents::CustomerUpdated])
        .send(&sb.client)
        .await
        .unwrap();
    let other = CreateCustomer::new().send(&sb.client).await.unwrap();
    stripe_core::customer::UpdateCustomer::new(other.id.clone())
        .email("again@example.com")
        .send(&sb.client)
        .await
        .unwrap();
    hook.wait_for_type("customer.updated").await;
    assert_eq!(
        hook.types(),
        ["customer.created", "customer.deleted", "customer.updated"]
    );
}

#[tokio::test]
async fn a_receiver_that_does_not_answer_in_time_is_retried_and_the_timeout_recorded() {
    let sb = spawn_with(Config {
        webhook_timeout: Duration::from_millis(300),
        ..Config::for_tests()
    })
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    // The first request is never answered; the rest are answered at once.
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    sb.endpoint(&url).await;
    CreateCustomer::new().send(&sb.client).await.unwrap();
    let record = eventually("a delivery that succeeded on retry", || {
        sb.sandbox
            .deliveries()
            .into_iter()
            .find(|d| d.status == "succeeded")
    })
    .await;
    assert_eq!(record.attempts.len(), 2);
    assert_eq!(record.attempts[0].status, None);
    assert_eq!(record.attempts[0].error.as_deref(), Some("timed out"));
    assert_eq!(record.attempts[1].status, Some(200));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
