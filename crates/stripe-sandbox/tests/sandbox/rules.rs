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
    let (_, defaults) = sb
        .get("/v1/billing_portal/configurations?is_default=true")
        .await;
    let ids: Vec<&serde_json::Value> = defaults["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(
        ids,
        [&default["id"]],
        "the one default, found by the filter"
    );
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

/// A customer, with an address or without.
async fn customer(sb: &crate::support::TestSandbox, with_address: bool) -> String {
    let form = if with_address {
        "email=t%40example.com&address[country]=US&address[postal_code]=94103"
    } else {
        "email=t%40example.com"
    };
    let (status, c) = sb.post("/v1/customers", form).await;
    assert_eq!(status, 200, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

fn session_form(price: &str, mode: &str, extra: &str) -> String {
    format!(
        "mode={mode}&line_items[0][price]={price}&line_items[0][quantity]=1&success_url=https%3A%2F%2Fshop.test%2Fok{extra}"
    )
}

#[tokio::test]
async fn automatic_tax_for_an_existing_customer_needs_an_address_or_customer_update() {
    let sb = spawn().await;
    let price = crate::support::price(&sb, "Plan", 1500, Some("month")).await;
    let bare = customer(&sb, false).await;
    let tax = "&automatic_tax[enabled]=true";

    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(&price.id, "subscription", &format!("&customer={bare}{tax}")),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "customer_tax_location_invalid");
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with(
            "Automatic tax calculation in Checkout requires a valid address on the Customer."
        ),
        "{body}"
    );

    // shipping=auto counts only when Checkout collects a shipping address.
    let (status, _) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(
                &price.id,
                "subscription",
                &format!("&customer={bare}{tax}&customer_update[shipping]=auto"),
            ),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(
                &price.id,
                "subscription",
                &format!("&customer={bare}{tax}&customer_update[shipping]=auto&shipping_address_collection[allowed_countries][0]=US"),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // address=auto: accepted, and the address entered is saved onto the customer.
    let (status, session) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(
                &price.id,
                "subscription",
                &format!("&customer={bare}{tax}&customer_update[address]=auto"),
            ),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    assert!(
        session.get("customer_update").is_none(),
        "Stripe does not render it"
    );
    let paid = sb
        .pay(session["url"].as_str().unwrap(), "4242424242424242", None)
        .await;
    assert_eq!(paid.status, 303, "{paid:?}");
    let (_, c) = sb.get(&format!("/v1/customers/{bare}")).await;
    assert_eq!(c["address"]["country"], "US");
    assert!(c["address"]["postal_code"].is_string());
    // The subscription and its invoices tax automatically.
    let (_, done) = sb
        .get(&format!(
            "/v1/checkout/sessions/{}",
            session["id"].as_str().unwrap()
        ))
        .await;
    let sub_id = done["subscription"].as_str().unwrap();
    let (_, sub) = sb.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert_eq!(sub["automatic_tax"]["enabled"], true);
    let (_, invoices) = sb.get(&format!("/v1/invoices?subscription={sub_id}")).await;
    let invoices = invoices["data"].as_array().unwrap();
    assert!(!invoices.is_empty());
    assert!(
        invoices
            .iter()
            .all(|i| i["automatic_tax"]["enabled"] == true)
    );

    // A customer with an address needs nothing more.
    let located = customer(&sb, true).await;
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(
                &price.id,
                "subscription",
                &format!("&customer={located}{tax}"),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn tax_id_collection_for_an_existing_customer_needs_customer_update_name_auto() {
    let sb = spawn().await;
    let price = crate::support::price(&sb, "Book", 900, None).await;
    let located = customer(&sb, true).await;
    let taxid = "&tax_id_collection[enabled]=true";
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(&price.id, "payment", &format!("&customer={located}{taxid}")),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "customer_update[name]");
    assert_eq!(
        body["error"]["message"],
        "Tax ID collection requires updating business name on the customer. To enable tax ID collection for an existing customer, please set `customer_update[name]` to `auto`."
    );
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(
                &price.id,
                "payment",
                &format!("&customer={located}{taxid}&customer_update[name]=auto"),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Without an address, the address must be collected too.
    let bare = customer(&sb, false).await;
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(
                &price.id,
                "payment",
                &format!("&customer={bare}{taxid}&customer_update[name]=auto"),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "customer_update[address]");
    // A guest session (no customer) needs none of it.
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(&price.id, "payment", taxid),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn customer_update_needs_a_customer_and_mode_data_must_match_the_mode() {
    let sb = spawn().await;
    let once = crate::support::price(&sb, "Once", 900, None).await;
    let monthly = crate::support::price(&sb, "Monthly", 900, Some("month")).await;
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(&once.id, "payment", "&customer_update[address]=auto"),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "customer_update");

    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(
                &monthly.id,
                "subscription",
                "&payment_intent_data[metadata][k]=v",
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "You can not pass `payment_intent_data` in `subscription` mode."
    );
    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            &session_form(&once.id, "payment", "&subscription_data[metadata][k]=v"),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "You can not pass `subscription_data` in `payment` mode."
    );
    assert_eq!(body["error"]["param"], "subscription_data");
}

#[tokio::test]
async fn values_stripe_refuses_are_refused() {
    let sb = spawn().await;
    // Emails.
    let (status, body) = sb.post("/v1/customers", "email=someone%40gmail").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "email_invalid");
    assert_eq!(body["error"]["param"], "email");
    assert_eq!(
        body["error"]["message"],
        "Invalid email address: someone@gmail"
    );
    // Metadata: an empty value unsets the key on create as on update.
    let (status, c) = sb
        .post("/v1/customers", "metadata[keep]=1&metadata[drop]=")
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["metadata"], serde_json::json!({ "keep": "1" }));
    // Amounts have at most eight digits; currencies are Stripe's.
    let (_, product) = sb.post("/v1/products", "name=Big").await;
    let product = product["id"].as_str().unwrap();
    let (status, body) = sb
        .post(
            "/v1/prices",
            &format!("product={product}&currency=usd&unit_amount=100000000"),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "unit_amount");
    let (status, _) = sb
        .post(
            "/v1/prices",
            &format!("product={product}&currency=usd&unit_amount=99999999"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = sb
        .post(
            "/v1/prices",
            &format!("product={product}&currency=xyz&unit_amount=100"),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid currency: xyz."),
        "{body}"
    );
    // Names: a coupon's at most 40 characters, a product's never empty.
    let (status, body) = sb
        .post(
            "/v1/coupons",
            &format!("percent_off=10&name={}", "n".repeat(41)),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "name");
    let (status, body) = sb.post("/v1/products", "name=").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "name");
}
