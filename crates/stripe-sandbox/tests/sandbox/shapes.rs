//! Every object the sandbox renders has the properties Stripe's schema requires, of the
//! kinds it allows, and nothing the schema does not know. The shapes come from the vendored
//! OpenAPI subset (`objects`), so the check moves with the spec.

use serde_json::Value;

use crate::support::{TestSandbox, save_default_portal, spawn};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn shapes() -> Value {
    let subset: Value = serde_json::from_str(include_str!("../../openapi/subset.json")).unwrap();
    subset["objects"].clone()
}

/// Fields the spec of this API version no longer has but async-stripe 1.0.0-rc.10, whose
/// types the sandbox's answers must deserialize into, still requires.
const EXTRA: &[(&str, &str)] = &[("product", "type"), ("subscription_item", "plan")];

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What is wrong with `obj` as a `name`, one line per fault.
fn faults(shapes: &Value, name: &str, obj: &Value) -> Vec<String> {
    let shape = &shapes[name];
    assert!(shape.is_object(), "no vendored shape for {name}");
    let mut out = Vec::new();
    for (prop, rule) in shape["required"].as_object().unwrap() {
        match obj.get(prop) {
            None => out.push(format!("{name}.{prop} is missing")),
            Some(Value::Null) if rule["nullable"] != true => {
                out.push(format!("{name}.{prop} is null but not nullable"))
            }
            Some(Value::Null) => {}
            Some(v) => {
                let kind = kind_of(v);
                let allowed: Vec<&str> = rule["kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let ok =
                    allowed.contains(&kind) || (kind == "integer" && allowed.contains(&"number"));
                if !ok {
                    out.push(format!("{name}.{prop} is {kind}, allowed {allowed:?}"));
                }
            }
        }
    }
    let known: Vec<&str> = shape["properties"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for key in obj.as_object().unwrap().keys() {
        if !known.contains(&key.as_str()) && !EXTRA.contains(&(name, key.as_str())) {
            out.push(format!("{name}.{key} is not in Stripe's schema"));
        }
    }
    out
}

async fn get(sb: &TestSandbox, path: &str) -> Value {
    let (status, body) = sb.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn post(sb: &TestSandbox, path: &str, form: &str) -> Value {
    let (status, body) = sb.post(path, form).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn every_object_the_sandbox_renders_has_the_fields_stripes_spec_requires() {
    let sb = spawn().await;
    let shapes = shapes();
    let mut objects: Vec<(&str, Value)> = Vec::new();

    let endpoint = post(
        &sb,
        "/v1/webhook_endpoints",
        "url=https%3A%2F%2Fhooks.test%2Fs&enabled_events[0]=*",
    )
    .await;
    objects.push((
        "webhook_endpoint",
        get(
            &sb,
            &format!("/v1/webhook_endpoints/{}", endpoint["id"].as_str().unwrap()),
        )
        .await,
    ));
    let clock = post(
        &sb,
        "/v1/test_helpers/test_clocks",
        &format!("frozen_time={T0}"),
    )
    .await;
    objects.push(("test_helpers.test_clock", clock.clone()));
    let customer = post(
        &sb,
        "/v1/customers",
        &format!(
            "email=s%40example.com&test_clock={}",
            clock["id"].as_str().unwrap()
        ),
    )
    .await;
    objects.push(("customer", customer.clone()));
    let product = post(&sb, "/v1/products", "name=Shape").await;
    objects.push(("product", product.clone()));
    let price = post(
        &sb,
        "/v1/prices",
        &format!(
            "product={}&currency=usd&unit_amount=1000&recurring[interval]=month",
            product["id"].as_str().unwrap()
        ),
    )
    .await;
    objects.push(("price", price.clone()));
    let coupon = post(&sb, "/v1/coupons", "percent_off=10&duration=forever").await;
    objects.push(("coupon", coupon.clone()));
    let promo = post(
        &sb,
        "/v1/promotion_codes",
        &format!(
            "promotion[type]=coupon&promotion[coupon]={}",
            coupon["id"].as_str().unwrap()
        ),
    )
    .await;
    objects.push(("promotion_code", promo.clone()));
    let meter = post(
        &sb,
        "/v1/billing/meters",
        "display_name=Calls&event_name=api_call&default_aggregation[formula]=sum",
    )
    .await;
    objects.push(("billing.meter", meter));

    let session = post(
        &sb,
        "/v1/checkout/sessions",
        &format!(
            "mode=subscription&customer={}&line_items[0][price]={}&line_items[0][quantity]=1&success_url=https%3A%2F%2Fshop.test%2Fok",
            customer["id"].as_str().unwrap(),
            price["id"].as_str().unwrap()
        ),
    )
    .await;
    objects.push(("checkout.session", session.clone()));
    let paid = sb
        .pay(session["url"].as_str().unwrap(), "4242424242424242", None)
        .await;
    assert_eq!(paid.status, 303, "{paid:?}");
    let done = get(
        &sb,
        &format!("/v1/checkout/sessions/{}", session["id"].as_str().unwrap()),
    )
    .await;
    objects.push(("checkout.session", done.clone()));
    let sub = get(
        &sb,
        &format!(
            "/v1/subscriptions/{}",
            done["subscription"].as_str().unwrap()
        ),
    )
    .await;
    objects.push(("subscription_item", sub["items"]["data"][0].clone()));
    objects.push(("subscription", sub.clone()));
    let invoice = get(
        &sb,
        &format!("/v1/invoices/{}", sub["latest_invoice"].as_str().unwrap()),
    )
    .await;
    objects.push(("invoice", invoice.clone()));
    let pis = get(&sb, "/v1/payment_intents").await;
    let pi = pis["data"][0].clone();
    objects.push(("payment_intent", pi.clone()));
    let charge = get(
        &sb,
        &format!("/v1/charges/{}", pi["latest_charge"].as_str().unwrap()),
    )
    .await;
    objects.push(("charge", charge.clone()));
    objects.push((
        "payment_method",
        get(
            &sb,
            &format!(
                "/v1/payment_methods/{}",
                charge["payment_method"].as_str().unwrap()
            ),
        )
        .await,
    ));
    let refund = post(
        &sb,
        "/v1/refunds",
        &format!("charge={}&amount=100", charge["id"].as_str().unwrap()),
    )
    .await;
    objects.push(("refund", refund));
    let dispute = sb
        .http
        .post(sb.url(&format!(
            "/_sandbox/charges/{}/dispute",
            charge["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    objects.push(("dispute", dispute));

    let config = save_default_portal(&sb).await;
    objects.push(("billing_portal.configuration", config));
    let portal = post(
        &sb,
        "/v1/billing_portal/sessions",
        &format!("customer={}", customer["id"].as_str().unwrap()),
    )
    .await;
    objects.push(("billing_portal.session", portal));
    let events = get(&sb, "/v1/events?limit=100").await;
    for event in events["data"].as_array().unwrap() {
        objects.push(("event", event.clone()));
    }

    // What events carry is checked as what it is.
    let carried: Vec<(String, Value)> = objects
        .iter()
        .filter(|(name, _)| *name == "event")
        .map(|(_, e)| e["data"]["object"].clone())
        .filter_map(|o| Some((o["object"].as_str()?.to_owned(), o)))
        .filter(|(kind, _)| shapes.get(kind).is_some())
        .collect();
    let mut all = Vec::new();
    for (name, obj) in objects
        .iter()
        .map(|(n, o)| (*n, o))
        .chain(carried.iter().map(|(n, o)| (n.as_str(), o)))
    {
        all.extend(faults(&shapes, name, obj));
        if name == "charge" {
            all.extend(faults(
                &shapes,
                "payment_method_details_card",
                &obj["payment_method_details"]["card"],
            ));
        }
    }
    all.sort();
    all.dedup();
    assert!(all.is_empty(), "{} faults:\n{}", all.len(), all.join("\n"));
}
