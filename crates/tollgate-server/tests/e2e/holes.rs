//! The holes an attacker and a careless client found, each pinned: promotion codes and
//! fees across tenants, concurrent checkouts and refunds, unchecked input, events acted on
//! without asking Stripe, disputes and guest purchases in the ledger, refunds made twice,
//! early events, and refunds Stripe later fails.

use serde_json::{Value, json};
use stripe_sandbox::Faults;

use crate::flows::{CARD, paid, paid_in_two_tabs, two_tabs};
use crate::support::{ADMIN_KEY, Engine, TestApp, spawn};

/// One purchase of `product` by `customer` paid with `card`; answers the purchase.
async fn bought(t: &TestApp, customer: &str, product: &str, card: &str) -> Value {
    let s = t
        .checkout(json!({ "customer": customer, "product": product }))
        .await;
    assert_eq!(t.pay(&s, card).await, 303);
    t.eventually("the purchase", || async {
        !t.purchases(&format!("customer={customer}&product={product}"))
            .await
            .is_empty()
    })
    .await;
    t.purchases(&format!("customer={customer}&product={product}"))
        .await
        .remove(0)
}

async fn purchase(t: &TestApp, id: &str) -> Value {
    let (status, p) = t.get(&format!("/v1/purchases/{id}")).await;
    assert_eq!(status, 200, "{p}");
    p
}

/// Stripe's refunds of a payment, as Stripe has them.
async fn stripe_refunds(t: &TestApp, purchase: &Value) -> Vec<Value> {
    let pi = purchase["stripe_payment_intent_id"].as_str().unwrap();
    let (_, list) = t
        .sandbox_call(&format!("/v1/refunds?payment_intent={pi}&limit=100"), None)
        .await;
    list["data"].as_array().unwrap().clone()
}

fn sum(refunds: &[Value], status: &str) -> i64 {
    refunds
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["amount"].as_i64().unwrap())
        .sum()
}

/// Item 1: a tenant's promotion code is the tenant's alone, through the API and on
/// Stripe's page.
pub async fn one_tenants_promotion_code_never_discounts_another_tenants_product(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    // Tenant A (the test app's own) makes a 100%-off code.
    let (_, coupon) = t
        .post("/v1/coupons", json!({ "percent_off_bps": 10_000 }))
        .await;
    let (status, code) = t
        .post(
            "/v1/promotion_codes",
            json!({ "coupon": coupon["id"], "code": "FREE100" }),
        )
        .await;
    assert_eq!(status, 200, "{code}");
    // Tenant B sells an event ticket.
    let (_, b_key) = t.new_tenant("B", (0, 0)).await;
    let (_, product) = t.call_as(
        &b_key,
        reqwest::Method::POST,
        "/v1/products",
        Some(json!({ "kind": "course", "title": "B's course", "status": "published", "price": { "unit_amount": 1500 } })),
    )
    .await;
    let (_, buyer) = t
        .call_as(
            &b_key,
            reqwest::Method::POST,
            "/v1/customers",
            Some(json!({ "external_user_id": "b-buyer", "email": "b@example.com" })),
        )
        .await;
    let checkout = |extra: Value| {
        let mut body = json!({ "customer": buyer["id"], "product": product["id"] });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (t, key) = (&t, b_key.clone());
        async move {
            t.call_as(
                &key,
                reqwest::Method::POST,
                "/v1/checkout_sessions",
                Some(body),
            )
            .await
        }
    };
    for (extra, status, code) in [
        (
            json!({ "promotion_code": "FREE100" }),
            404,
            "resource_missing",
        ),
        (
            json!({ "promotion_code": code["id"] }),
            404,
            "resource_missing",
        ),
        (
            json!({ "allow_promotion_codes": true }),
            400,
            "parameter_not_allowed",
        ),
    ] {
        let (got, err) = checkout(extra.clone()).await;
        assert_eq!(
            (got, err["error"]["code"].as_str()),
            (status, Some(code)),
            "{extra} -> {err}"
        );
    }
    // On Stripe's page, typing A's code (as Stripe holds it) is refused.
    let (status, session) = checkout(json!({})).await;
    assert_eq!(status, 200, "{session}");
    let stripe_code = tollgate::usecases::coupons::stripe_code(
        &tollgate_domain::TenantId::parse(&t.tenant_id).unwrap(),
        "FREE100",
    );
    let page = session["url"].as_str().unwrap();
    let typed = t
        .http
        .post(format!("{page}/promotion_code"))
        .form(&[("code", stripe_code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(typed.status(), 400, "the page takes no code");
    assert_eq!(t.pay(&session, CARD).await, 303);
    t.eventually("B's purchase", || async {
        let (_, list) = t
            .call_as(
                &b_key,
                reqwest::Method::GET,
                &format!("/v1/purchases?product={}", product["id"].as_str().unwrap()),
                None,
            )
            .await;
        !list["data"].as_array().unwrap().is_empty()
    })
    .await;
    let (_, list) = t
        .call_as(
            &b_key,
            reqwest::Method::GET,
            &format!("/v1/purchases?product={}", product["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(list["data"][0]["amount"], 1500, "paid in full: {list}");
}

/// Item 2: every tenant may use any code name, and a collision tells nothing of others.
pub async fn promotion_code_names_are_each_tenants_own(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (_, b_key) = t.new_tenant("B", (0, 0)).await;
    for key in [t.key.clone(), b_key.clone()] {
        let (_, coupon) = t
            .call_as(
                &key,
                reqwest::Method::POST,
                "/v1/coupons",
                Some(json!({ "percent_off_bps": 1000 })),
            )
            .await;
        let (status, code) = t
            .call_as(
                &key,
                reqwest::Method::POST,
                "/v1/promotion_codes",
                Some(json!({ "coupon": coupon["id"], "code": "LAUNCH" })),
            )
            .await;
        assert_eq!(status, 200, "{code}");
        let (status, again) = t
            .call_as(
                &key,
                reqwest::Method::POST,
                "/v1/promotion_codes",
                Some(json!({ "coupon": coupon["id"], "code": "launch" })),
            )
            .await;
        assert_eq!(
            (status, again["error"]["code"].as_str()),
            (409, Some("code_taken")),
            "{again}"
        );
    }
}

/// Item 3: the platform fee is the operator's.
pub async fn a_tenant_reads_but_never_sets_the_platform_fee(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (status, err) = t.post("/v1/tenant", json!({ "platform_fee_bps": 0 })).await;
    assert_eq!(
        (
            status,
            err["error"]["code"].as_str(),
            err["error"]["param"].as_str()
        ),
        (400, Some("parameter_not_allowed"), Some("platform_fee_bps"))
    );
    let (_, own) = t.get("/v1/tenant").await;
    assert_eq!(own["platform_fee_bps"], 1000);
    let (status, _) = t
        .post("/v1/tenant", json!({ "organization_fee_bps": 700 }))
        .await;
    assert_eq!(status, 200, "the tenant sets its own organization fee");
    let (status, changed) = t
        .call_as(
            ADMIN_KEY,
            reqwest::Method::POST,
            &format!("/v1/tenants/{}", t.tenant_id),
            Some(json!({ "platform_fee_bps": 250 })),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let (_, own) = t.get("/v1/tenant").await;
    t.eventually("the operator's fee", || async {
        t.get("/v1/tenant").await.1["platform_fee_bps"] == 250
    })
    .await;
    assert_eq!(own["organization_fee_bps"], 700);
}

/// Item 4: parallel buyers of one event get exactly its seats, the rest `sold_out`, no 5xx.
pub async fn parallel_checkouts_of_one_event_sell_exactly_its_seats(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    for (seats, buyers) in [(3, 10), (100, 10)] {
        let event = t.product("event", 500, Some(seats)).await;
        let mut customers = Vec::new();
        for i in 0..buyers {
            customers.push(t.customer(&format!("buyer-{seats}-{i}")).await);
        }
        let mut calls = Vec::new();
        for c in customers {
            let (http, url, key, event) = (
                t.http.clone(),
                format!("{}/v1/checkout_sessions", t.base),
                t.key.clone(),
                event.clone(),
            );
            calls.push(tokio::spawn(async move {
                let res = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({ "customer": c, "product": event }))
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.unwrap())
            }));
        }
        let mut ok = 0;
        let mut sold_out = 0;
        for call in calls {
            let (status, body) = call.await.unwrap();
            match status {
                200 => ok += 1,
                409 if body["error"]["code"] == "sold_out" => sold_out += 1,
                other => panic!("{other}: {body}"),
            }
        }
        let want = seats.min(buyers);
        assert_eq!((ok, sold_out), (want, buyers - want), "{seats} seats");
    }
}

/// Item 4, the same for refunds: parallel partial refunds of one purchase refund exactly
/// what fits, never more, and each moves money once.
pub async fn parallel_refunds_of_one_purchase_never_exceed_it(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("refunds").await;
    let p = bought(&t, &customer, &product, CARD).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let mut calls = Vec::new();
    for i in 0..10 {
        let (http, url, key) = (
            t.http.clone(),
            format!("{}/v1/purchases/{id}/refund", t.base),
            t.key.clone(),
        );
        calls.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", format!("parallel-{i}"))
                .json(&json!({ "amount": 150 }))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }));
    }
    let mut refunded = 0;
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert!(status < 500, "{status}: {body}");
        if status == 200 {
            refunded += 150;
        } else {
            assert_eq!(body["error"]["code"], "amount_too_large", "{body}");
        }
    }
    assert_eq!(refunded, 900, "six refunds of 150 fit in 1000");
    let after = purchase(&t, &id).await;
    assert_eq!(after["refunded_amount"], 900);
    assert_eq!(sum(&stripe_refunds(&t, &after).await, "succeeded"), 900);
}

/// Items 5 and 7: hostile values on every route of the OpenAPI document, on both engines:
/// never a 5xx, and every refusal in the documented error shape.
pub async fn hostile_values_on_every_route_answer_without_5xx_in_the_error_shape(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (status, doc) = t.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].clone();
    let long = "x".repeat(5000);
    let path_ids = [
        "%ff",
        "%00",
        "a%00b",
        "cus_123",
        "prod_123",
        "sub_123",
        "%E2%80%AE",
        "..%2F..%2Fetc",
        long.as_str(),
        "ten_abc",
    ];
    // A server may close a connection after refusing an oversized body unread: no
    // connection is reused here, so each request stands alone.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let big = format!("{{\"title\":\"{}\"}}", "y".repeat(70_000));
    let mut tally = std::collections::BTreeMap::<u16, usize>::new();
    let check = |what: String, status: u16, body: &Value| {
        assert!(status < 500, "{what} -> {status} {body}");
        if !(200..300).contains(&status) {
            let e = &body["error"];
            assert!(
                e["type"].is_string() && e["code"].is_string() && e["message"].is_string(),
                "{what} -> {status} not in the error shape: {body}"
            );
        }
    };
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let key = if path.starts_with("/v1/tenants") {
                ADMIN_KEY.to_owned()
            } else {
                t.key.clone()
            };
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let send = |url: String, body: Option<String>| {
                let mut req = http.request(m.clone(), url).bearer_auth(&key);
                if let Some(b) = body {
                    req = req.header("content-type", "application/json").body(b);
                }
                async move {
                    let res = req.send().await.unwrap();
                    let status = res.status().as_u16();
                    let text = res.text().await.unwrap();
                    (
                        status,
                        serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
                    )
                }
            };
            // Odd ids in the path.
            if path.contains('{') {
                for id in path_ids {
                    let p = fill(path, id);
                    let (status, body) = send(format!("{}{p}", t.base), None).await;
                    check(format!("{method} {p}"), status, &body);
                    *tally.entry(status).or_default() += 1;
                }
            }
            let real = fill(path, "prd_nothere");
            // Hostile query strings.
            for q in [
                "limit=99999999999999999999",
                "limit=-1",
                "limit=%00",
                "starting_after=%00",
                "starting_after=cus_1",
                "customer_id=cust_x",
                "status=%ff",
                "page=9223372036854775807&page_size=100",
            ] {
                let (status, body) = send(format!("{}{real}?{q}", t.base), None).await;
                check(format!("{method} {real}?{q}"), status, &body);
                if q.starts_with("customer_id=") {
                    assert_eq!(
                        (status, body["error"]["code"].as_str()),
                        (400, Some("parameter_unknown")),
                        "{method} {real}?{q}"
                    );
                }
                *tally.entry(status).or_default() += 1;
            }
            if method != "post" {
                continue;
            }
            // Hostile bodies: malformed, deep, wrong shapes, oversized ...
            let mut bodies = vec![
                "{".to_owned(),
                deep.clone(),
                "[]".into(),
                "\"str\"".into(),
                "1e400".into(),
                "18446744073709551616".into(),
                "{\"\\u0000\": 1}".into(),
                big.clone(),
            ];
            // ... and the route's own fields, each given hostile values.
            for props in body_properties(op, &schemas) {
                for value in [
                    json!("a\u{0}b"),
                    json!("\u{202e}"),
                    json!(long),
                    json!(i64::MAX),
                    json!(i64::MIN),
                    json!(-1),
                    json!(1.5),
                    json!([]),
                    json!({ "x": { "y": { "z": [null] } } }),
                    Value::Null,
                    json!(true),
                ] {
                    let body: serde_json::Map<String, Value> =
                        props.iter().map(|p| (p.clone(), value.clone())).collect();
                    bodies.push(Value::Object(body).to_string());
                    for p in &props {
                        bodies.push(json!({ p: value }).to_string());
                    }
                }
            }
            for b in bodies {
                let (status, body) = send(format!("{}{real}", t.base), Some(b.clone())).await;
                let shown: String = b.chars().take(80).collect();
                check(format!("{method} {real} {shown}"), status, &body);
                *tally.entry(status).or_default() += 1;
            }
        }
    }
    // Webhooks larger than the endpoint takes.
    let res = http
        .post(format!("{}/webhooks/stripe", t.base))
        .body(vec![b'x'; 2 << 20])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    *tally.entry(status).or_default() += 1;
    let sent: usize = tally.values().sum();
    let server_errors: usize = tally.range(500..).map(|(_, n)| n).sum();
    eprintln!(
        "hostile input on {engine:?}: {sent} requests, {server_errors} answered 5xx, by status {tally:?}"
    );
    assert_eq!(server_errors, 0);
    assert!(sent > 1000, "{sent} hostile requests");
}

/// The path with every `{param}` set to `id`.
fn fill(path: &str, id: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        out.push_str(id);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The names of the properties of a POST's JSON body, per its schema.
fn body_properties(op: &Value, schemas: &Value) -> Vec<Vec<String>> {
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    let resolved = match schema["$ref"].as_str() {
        Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
        None => schema,
    };
    match resolved["properties"].as_object() {
        Some(props) => vec![props.keys().cloned().collect()],
        None => vec![],
    }
}

/// Every operation of the OpenAPI document asks for the key the document names: a tenant
/// operation refuses no key and the operator's key, an operator operation refuses a
/// tenant's key, and Stripe's webhook asks for no key (it checks its signature).
pub async fn every_operation_asks_for_the_key_its_document_names(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let (status, doc) = t.get("/openapi.json").await;
    assert_eq!(status, 200);
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let p = fill(path, "x_1");
            let scheme = op["security"][0].as_object().and_then(|s| s.keys().next());
            let refused_keys = match scheme.map(String::as_str) {
                Some("tenant_key") => vec!["", ADMIN_KEY],
                Some("operator_key") => vec!["", t.key.as_str()],
                None => {
                    let (status, body) = t.call_as("", m.clone(), &p, Some(json!({}))).await;
                    assert_ne!(status, 401, "{method} {p} takes no key: {body}");
                    vec![]
                }
                Some(other) => panic!("{method} {path}: unknown scheme {other}"),
            };
            for key in refused_keys {
                let (status, body) = t.call_as(key, m.clone(), &p, Some(json!({}))).await;
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (401, Some("invalid_api_key")),
                    "{method} {p} with key {key:?}"
                );
            }
            *seen
                .entry(scheme.map_or("none", String::as_str))
                .or_default() += 1;
        }
    }
    // The document names all three, and most operations are a tenant's.
    assert!(
        seen["tenant_key"] > 20 && seen["operator_key"] > 0 && seen["none"] > 0,
        "{seen:?}"
    );
}

/// Item 6: query strings are strict, and the lookups users reach for exist.
pub async fn unknown_query_parameters_are_refused_and_lookups_find_one(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 700, None).await;
    let jo = t.customer("jo").await;
    let _ann = t.customer("ann").await;
    paid(&t, &jo, &product).await;
    for path in [
        "/v1/purchases?customer_id=x",
        "/v1/purchases?email=jo@example.com",
        "/v1/customers?external_user=jo",
        "/v1/subscriptions?customers=x",
        "/v1/orders?product=x",
        // Routes that take no query string at all refuse one too.
        "/v1/tenant?customer=x",
        &format!("/v1/customers/{jo}?expand=purchases"),
        &format!("/v1/products/{product}?sync=true"),
    ] {
        let (status, err) = t.get(path).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("parameter_unknown")),
            "{path} -> {err}"
        );
    }
    // Names are read decoded: an encoded unknown one is named as such, an encoded known
    // one is taken.
    let (status, err) = t.get("/v1/purchases?customer%5Fid=x").await;
    assert_eq!(
        (status, err["error"]["param"].as_str()),
        (400, Some("customer_id")),
        "{err}"
    );
    // A method the route does not take is answered 405 whatever the query and the key.
    for key in [t.key.as_str(), ""] {
        let (status, err) = t
            .call_as(key, reqwest::Method::DELETE, "/v1/customers?limit=1", None)
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{err}"
        );
    }
    let (status, found) = t.get("/v1/customers?external%5Fuser%5Fid=jo").await;
    assert_eq!(
        (status, found["data"][0]["id"].as_str()),
        (200, Some(jo.as_str()))
    );
    let (_, found) = t.get("/v1/customers?external_user_id=jo").await;
    let found = found["data"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], jo.as_str());
    let (_, by_email) = t.get("/v1/customers?email=JO@example.com").await;
    assert_eq!(by_email["data"][0]["id"], jo.as_str());
    let (_, none) = t.get("/v1/customers?external_user_id=nobody").await;
    assert!(
        none["data"].as_array().unwrap().is_empty(),
        "no customer made by a lookup"
    );
    assert_eq!(t.purchases("creator_id=creator_1").await.len(), 1);
    assert!(t.purchases("creator_id=someone_else").await.is_empty());
    assert!(t.purchases("disputed=true").await.is_empty());
    assert_eq!(t.purchases("disputed=false").await.len(), 1);
}

/// Item 8: a signed event that says a payment failed changes nothing Stripe does not say.
pub async fn an_event_alone_never_fails_a_paid_order(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 900, None).await;
    let customer = t.customer("paid-up").await;
    let s = paid(&t, &customer, &product).await;
    let session = s["stripe_checkout_session_id"].as_str().unwrap();
    let forged = format!(
        r#"{{"id":"evt_forged_fail","object":"event","type":"checkout.session.async_payment_failed","created":1,"data":{{"object":{{"id":"{session}","object":"checkout.session","metadata":{{"tenant_id":"{}"}}}}}}}}"#,
        t.tenant_id
    );
    assert_eq!(t.post_event(&forged).await, 200);
    t.drained().await;
    let (_, order) = t
        .get(&format!("/v1/orders/{}", s["order_id"].as_str().unwrap()))
        .await;
    assert_eq!(order["status"], "completed", "{order}");
    assert!(t.access(&customer, &product).await);
}

/// Item 9: a lost dispute takes the money back in the ledger (split reversed, fee
/// recorded) and access stays revoked; a won one restores access. Both are listed.
pub async fn a_lost_dispute_takes_the_money_back_and_a_won_one_gives_access_back(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 2000, None).await;
    let loser = t.customer("loser").await;
    let winner = t.customer("winner").await;
    // 4000 0000 0000 0259: the payment succeeds, then the cardholder disputes it.
    let lost = bought(&t, &loser, &product, "4000000000000259").await;
    let won = bought(&t, &winner, &product, "4000000000000259").await;
    t.eventually("both frozen", || async {
        !t.access(&loser, &product).await && !t.access(&winner, &product).await
    })
    .await;
    for (p, outcome) in [(&lost, "lost"), (&won, "won")] {
        let pi = p["stripe_payment_intent_id"].as_str().unwrap();
        let (_, disputes) = t
            .sandbox_call(&format!("/v1/disputes?payment_intent={pi}"), None)
            .await;
        let id = disputes["data"][0]["id"].as_str().unwrap().to_owned();
        let res = t
            .http
            .post(format!(
                "{}/_sandbox/disputes/{id}/resolve?status={outcome}",
                t.sandbox.url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    t.eventually("the lost dispute in the ledger", || async {
        purchase(&t, lost["id"].as_str().unwrap()).await["status"] == "refunded"
    })
    .await;
    t.eventually("access back for the winner", || t.access(&winner, &product))
        .await;
    assert!(!t.access(&loser, &product).await, "the loser stays revoked");
    let after = purchase(&t, lost["id"].as_str().unwrap()).await;
    assert_eq!(after["refunded_amount"], 2000);
    assert_eq!(after["refunded_platform_fee"], after["platform_fee"]);
    assert_eq!(after["refunded_creator_payout"], after["creator_payout"]);
    let record = &after["refunds"][0];
    assert_eq!(record["reason"], "dispute_lost");
    assert!(record["stripe_dispute_id"].is_string(), "{record}");
    assert_eq!(
        purchase(&t, won["id"].as_str().unwrap()).await["status"],
        "completed"
    );
    let (_, list) = t.get("/v1/disputes").await;
    let list = list["data"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let lost_view = list
        .iter()
        .find(|d| d["purchase_ids"][0] == lost["id"])
        .unwrap();
    assert_eq!(lost_view["status"], "lost");
    assert_eq!(lost_view["purchase_ids"], json!([lost["id"]]));
    let won_view = list.iter().find(|d| d["status"] == "won").unwrap();
    assert_eq!(won_view["purchase_ids"], json!([won["id"]]));
    assert_eq!(lost_view["amount"], 2000);
    assert_eq!(lost_view["fee"], 1500);
    assert_eq!(lost_view["reason"], "fraudulent");
    assert!(lost_view["evidence_due_at"].is_i64());
    assert!(lost_view["loss_recorded_at"].is_i64());
    let (_, only_won) = t.get("/v1/disputes?status=won").await;
    assert_eq!(only_won["data"].as_array().unwrap().len(), 1);
}

/// Item 10: guest purchases become the customer's when the tenant vouches for the email.
pub async fn guest_purchases_are_claimed_by_the_customer_with_that_email(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("digital_product", 400, None).await;
    let s = t
        .checkout(json!({ "customer_email": "later@example.com", "product": product }))
        .await;
    assert_eq!(t.pay(&s, CARD).await, 303);
    t.eventually("the guest purchase", || async {
        !t.purchases(&format!("product={product}")).await.is_empty()
    })
    .await;
    let customer = t.customer("later").await;
    assert!(!t.access(&customer, &product).await, "not linked by itself");
    let path = format!("/v1/customers/{customer}/claim_guest_purchases");
    let (status, linked) = t.post(&path, json!({ "email": "LATER@example.com" })).await;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["data"].as_array().unwrap().len(), 1);
    assert!(t.access(&customer, &product).await);
    assert_eq!(t.purchases(&format!("customer={customer}")).await.len(), 1);
    let (_, again) = t.post(&path, json!({ "email": "later@example.com" })).await;
    assert!(again["data"].as_array().unwrap().is_empty(), "linked once");
    let (status, err) = t.post(&path, json!({ "email": "not-an-email" })).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_email"))
    );
}

/// Item 11: a refund retried with the same key after Stripe's answer was lost moves
/// money once, in part or in full, and the retry answers with the refund.
pub async fn a_refund_retried_after_a_lost_answer_moves_money_once(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("lost-answers").await;
    let p = bought(&t, &customer, &product, CARD).await;
    let path = format!("/v1/purchases/{}/refund", p["id"].as_str().unwrap());
    for (key, body, total) in [
        ("partial", json!({ "amount": 300 }), 300),
        ("rest", json!({}), 1000),
    ] {
        t.set_faults(Faults {
            lost_answer_rate: 1.0,
            ..Faults::default()
        });
        let (status, err) = t.post_keyed(&path, key, body.clone()).await;
        assert!(status >= 500, "Stripe's answer was lost: {status} {err}");
        t.set_faults(Faults::default());
        for _ in 0..2 {
            let (status, after) = t.post_keyed(&path, key, body.clone()).await;
            assert_eq!(status, 200, "{after}");
            assert_eq!(after["refunded_amount"], total, "{after}");
        }
        let refunds = stripe_refunds(&t, &p).await;
        assert_eq!(sum(&refunds, "succeeded"), total, "{refunds:?}");
    }
    assert_eq!(
        stripe_refunds(&t, &p).await.len(),
        2,
        "one Stripe refund per request"
    );
    assert!(!t.access(&customer, &product).await);
}

/// Item 11, with the process killed: a refund whose request died after Stripe made it is
/// settled by the sweep, once; money moved exactly once.
pub async fn a_refund_whose_request_died_is_settled_once(engine: Engine) {
    let Some(mut t) = spawn(engine).await else {
        return;
    };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("killed").await;
    let p = bought(&t, &customer, &product, CARD).await;
    let id = p["id"].as_str().unwrap().to_owned();
    t.stop_app().await;
    let mut process = t.spawn_process(2);
    // Stripe answers slowly: the refund is in flight when the process dies.
    t.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    let (http, url, key) = (
        t.http.clone(),
        format!("{}/v1/purchases/{id}/refund", t.base),
        t.key.clone(),
    );
    t.eventually("the process to answer", || {
        let (http, base) = (http.clone(), t.base.clone());
        async move { http.get(format!("{base}/healthz")).send().await.is_ok() }
    })
    .await;
    let call = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(key)
            .header("idempotency-key", "dies")
            .json(&json!({ "amount": 400 }))
            .send()
            .await
    });
    let store = tollgate_store::Store::connect(&t.database_url)
        .await
        .unwrap();
    let tenant = tollgate_domain::TenantId::parse(&t.tenant_id).unwrap();
    let pid = tollgate_domain::PurchaseId::parse(&id).unwrap();
    t.eventually("the refund request recorded", || {
        let (store, tenant, pid) = (store.clone(), tenant.clone(), pid.clone());
        async move {
            !store
                .refund_requests_for_purchase(&tenant, &pid)
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    process.kill().unwrap();
    process.wait().unwrap();
    assert!(
        call.await.unwrap().is_err(),
        "the request died with the process"
    );
    t.set_faults(Faults::default());
    t.start_app(2).await;
    // Stripe may or may not have made the refund; the sweep asks again with the same key.
    sqlx::query("UPDATE refund_requests SET updated_at = 0")
        .execute(store.pool())
        .await
        .unwrap();
    tollgate::maintenance::sweep(t.state()).await.unwrap();
    t.eventually("the refund settled", || async {
        purchase(&t, &id).await["refunded_amount"] == 400
    })
    .await;
    tollgate::maintenance::sweep(t.state()).await.unwrap();
    let refunds = stripe_refunds(&t, &p).await;
    assert_eq!(sum(&refunds, "succeeded"), 400, "{refunds:?}");
    assert_eq!(refunds.len(), 1);
    let (status, after) = t
        .post_keyed(
            &format!("/v1/purchases/{id}/refund"),
            "dies",
            json!({ "amount": 400 }),
        )
        .await;
    assert_eq!(
        (status, after["refunded_amount"].as_i64()),
        (200, Some(400)),
        "{after}"
    );
    assert_eq!(
        stripe_refunds(&t, &p).await.len(),
        1,
        "the retry made no second refund"
    );
}

/// Item 12: refund and dispute events that arrive before the purchase is recorded wait for
/// it (and completion reads what Stripe has), so nothing is lost.
pub async fn refunds_and_disputes_before_the_purchase_is_recorded_still_count(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1200, None).await;
    let customer = t.customer("early").await;
    // Nothing reaches Tollgate while the payment is refunded in part and disputed.
    t.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let s = t
        .checkout(json!({ "customer": customer, "product": product }))
        .await;
    assert_eq!(t.pay(&s, CARD).await, 303);
    let session = s["stripe_checkout_session_id"].as_str().unwrap();
    let (_, stripe_session) = t
        .sandbox_call(&format!("/v1/checkout/sessions/{session}"), None)
        .await;
    let pi = stripe_session["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = t
        .sandbox_call(
            "/v1/refunds",
            Some(&[("payment_intent", pi.as_str()), ("amount", "200")]),
        )
        .await;
    assert_eq!(status, 200);
    let (_, intent) = t
        .sandbox_call(&format!("/v1/payment_intents/{pi}"), None)
        .await;
    let charge = intent["latest_charge"].as_str().unwrap();
    let res = t
        .http
        .post(format!(
            "{}/_sandbox/charges/{charge}/dispute",
            t.sandbox.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    t.deliveries_settled().await;
    t.set_faults(Faults::default());
    // The refund and dispute events first, the completion last.
    for kind in [
        "charge.refunded",
        "charge.dispute.created",
        "checkout.session.completed",
    ] {
        t.resend_all(kind).await;
        t.deliveries_settled().await;
    }
    t.eventually("the purchase, refunded in part and disputed", || async {
        let list = t.purchases(&format!("customer={customer}")).await;
        list.len() == 1 && list[0]["refunded_amount"] == 200 && list[0]["disputed"] == true
    })
    .await;
    t.drained().await;
    assert!(
        !t.access(&customer, &product).await,
        "a dispute freezes access"
    );
    let (_, dead) = t.get("/v1/events?status=dead").await;
    assert!(
        dead["data"].as_array().unwrap().is_empty(),
        "nothing dead-lettered: {dead}"
    );
}

/// Item 14: a refund Stripe later reports failed is undone: the money counts as the
/// merchant's again and access comes back.
pub async fn a_refund_stripe_fails_later_is_undone(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 800, None).await;
    let customer = t.customer("failing-refund").await;
    // 4000 0000 0000 5126: refunds succeed at first and fail afterwards.
    let p = bought(&t, &customer, &product, "4000000000005126").await;
    let id = p["id"].as_str().unwrap();
    let (status, refunded) = t
        .post(&format!("/v1/purchases/{id}/refund"), json!({}))
        .await;
    // This sandbox fails the refund right after its answer, so the failure's event may be
    // applied before the refund's own answer is recorded (the answer is then a refusal)
    // or just after (the answer then shows the refund undone). Each is true to Stripe.
    match (status, refunded["status"].as_str()) {
        (200, Some("refunded")) => assert_eq!(refunded["refunded_amount"], 800, "{refunded}"),
        // The refund's record (reversed) is checked on the purchase below.
        (200, Some("completed")) => {
            assert_eq!(refunded["refunded_amount"], 0, "undone already: {refunded}")
        }
        _ => assert_eq!(
            refunded["error"]["code"], "refund_failed",
            "{status}: {refunded}"
        ),
    }
    t.eventually("the refund undone", || async {
        purchase(&t, id).await["refunded_amount"] == 0
    })
    .await;
    let after = purchase(&t, id).await;
    assert_eq!(after["status"], "completed");
    assert_eq!(after["refunded_platform_fee"], 0);
    assert!(after["refunds"][0]["reversed_at"].is_i64(), "{after}");
    t.eventually("access back", || t.access(&customer, &product))
        .await;
}

/// A second payment for a product the customer owns is refunded on its own, and Stripe
/// fails that refund (4000 0000 0000 5126). The duplicate goes back to `failed` with
/// nothing refunded (it grants nothing), its event is not dead-lettered, and a redelivered
/// completion does not ask Stripe for another refund.
pub async fn a_duplicate_payments_failed_refund_is_undone_and_not_asked_again(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1200, None).await;
    let customer = t.customer("dup-refund-fails").await;
    paid_in_two_tabs(&t, &customer, &product, "4000000000005126").await;
    let duplicate = || async {
        t.purchases(&format!("customer={customer}"))
            .await
            .into_iter()
            .find(|p| p["refund_reason"] == "duplicate_purchase")
    };
    t.eventually("the duplicate's refund undone", || async {
        match duplicate().await {
            Some(d) => {
                purchase(&t, d["id"].as_str().unwrap()).await["refunds"][0]["reversed_at"].is_i64()
            }
            None => false,
        }
    })
    .await;
    t.drained().await;
    let d = purchase(&t, duplicate().await.unwrap()["id"].as_str().unwrap()).await;
    assert_eq!(
        (d["status"].as_str(), d["refunded_amount"].as_i64()),
        (Some("failed"), Some(0)),
        "{d}"
    );
    let (_, dead) = t.get("/v1/events?status=dead").await;
    assert!(
        dead["data"].as_array().unwrap().is_empty(),
        "nothing dead-lettered: {dead}"
    );
    assert!(
        t.access(&customer, &product).await,
        "the first purchase stands"
    );
    // The order's completion arriving again finds nothing owed a refund.
    t.resend_all("checkout.session.completed").await;
    t.deliveries_settled().await;
    t.drained().await;
    let refunds = stripe_refunds(&t, &d).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["status"], "failed");
}

/// A second payment's refund that Stripe made but whose answer was lost (a 500), with
/// none of Stripe's events delivered: the completion reads the payment's refunds from
/// Stripe after asking, so the refund it made is recorded, once. The sweep does not ask
/// again, and the events delivered afterwards count nothing more.
pub async fn a_duplicate_payments_refund_whose_answer_was_lost_is_made_once(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 1200, None).await;
    let customer = t.customer("dup-refund-lost").await;
    let (first, second) = two_tabs(&t, &customer, &product).await;
    assert_eq!(t.pay(&first, CARD).await, 303);
    t.eventually("access", || t.access(&customer, &product))
        .await;
    t.set_faults(Faults {
        lost_answer_rate: 1.0,
        drop_rate: 1.0,
        ..Faults::default()
    });
    assert_eq!(t.pay(&second, CARD).await, 303);
    // The return page's sync completes the order and asks for the refund: Stripe makes
    // it, and its answer is lost.
    let session = second["stripe_checkout_session_id"].as_str().unwrap();
    let (status, synced) = t
        .get(&format!("/v1/checkout_sessions/{session}?sync=true"))
        .await;
    assert_eq!(status, 200, "{synced}");
    let duplicate = || async {
        t.purchases(&format!("customer={customer}"))
            .await
            .into_iter()
            .find(|p| p["refund_reason"] == "duplicate_purchase")
            .expect("the second payment is recorded as a duplicate")
    };
    let d = duplicate().await;
    let made = stripe_refunds(&t, &d).await;
    assert_eq!(
        (made.len(), sum(&made, "succeeded")),
        (1, 1200),
        "Stripe made the refund: {made:?}"
    );
    let refunded_once = |d: &Value| {
        assert_eq!(
            (d["status"].as_str(), d["refunded_amount"].as_i64()),
            (Some("refunded"), Some(1200)),
            "{d}"
        );
        assert_eq!(d["refunds"].as_array().map(Vec::len), Some(1), "{d}");
        assert_eq!(d["refunds"][0]["stripe_refund_id"], made[0]["id"], "{d}");
    };
    refunded_once(&purchase(&t, d["id"].as_str().unwrap()).await);

    t.set_faults(Faults::default());
    tollgate::maintenance::sweep(t.state()).await.unwrap();
    // Every event Stripe made meanwhile, delivered now.
    for kind in [
        "checkout.session.completed",
        "charge.refunded",
        "refund.created",
    ] {
        t.resend_all(kind).await;
    }
    t.deliveries_settled().await;
    t.drained().await;
    tollgate::maintenance::sweep(t.state()).await.unwrap();
    refunded_once(&purchase(&t, d["id"].as_str().unwrap()).await);
    assert_eq!(stripe_refunds(&t, &d).await.len(), 1);
    assert!(
        t.access(&customer, &product).await,
        "the first purchase stands"
    );
}

/// Item 16: every refund of a payment counts, past Stripe's first page.
pub async fn more_than_a_page_of_refunds_all_count(engine: Engine) {
    let Some(t) = spawn(engine).await else { return };
    let product = t.product("course", 500, None).await;
    let customer = t.customer("many-refunds").await;
    let p = bought(&t, &customer, &product, CARD).await;
    let pi = p["stripe_payment_intent_id"].as_str().unwrap();
    for _ in 0..105 {
        let (status, _) = t
            .sandbox_call(
                "/v1/refunds",
                Some(&[("payment_intent", pi), ("amount", "1")]),
            )
            .await;
        assert_eq!(status, 200);
    }
    t.eventually("105 refunds counted", || async {
        purchase(&t, p["id"].as_str().unwrap()).await["refunded_amount"] == 105
    })
    .await;
}

/// Item 16: a refresh of the access index that fails (the database refused the read) is
/// tried again until it succeeds; the revoked grant does not linger in memory. SQLite
/// only: there, nothing else ever rebuilds the index (PostgreSQL also reloads it whole
/// every minute), and renaming a table makes the read fail at once (PostgreSQL's
/// prepared statements follow the table by its identity, not its name).
pub async fn a_failed_access_refresh_is_retried_until_it_succeeds() {
    let Some(t) = spawn(Engine::Sqlite).await else {
        return;
    };
    let product = t.product("course", 1000, None).await;
    let customer = t.customer("rhea").await;
    paid(&t, &customer, &product).await;
    let id = t.purchases(&format!("customer={customer}")).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The grant read joins subscriptions, which a one-time refund never touches: hiding
    // that table lets the refund commit and makes every refresh of the index fail.
    let db = tollgate_store::Store::connect(&t.database_url)
        .await
        .unwrap();
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    sqlx::query(&rename("subscriptions", "subscriptions_away"))
        .execute(db.pool())
        .await
        .unwrap();
    let (status, refund) = t
        .post(&format!("/v1/purchases/{id}/refund"), json!({}))
        .await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["status"], "refunded");
    assert!(
        t.access(&customer, &product).await,
        "the refresh should have failed while the table was away"
    );

    sqlx::query(&rename("subscriptions_away", "subscriptions"))
        .execute(db.pool())
        .await
        .unwrap();
    t.eventually("the revoked grant to leave the index", || async {
        !t.access(&customer, &product).await
    })
    .await;
}
