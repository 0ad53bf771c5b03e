//! Stripe's wire conventions: keys, parameters, errors, idempotency, lists, expand.

use serde_json::json;
use stripe::StripeRequest;
use stripe_core::customer::{CreateCustomer, ListCustomer, RetrieveCustomer};
use stripe_sandbox::Faults;

use crate::support::spawn;

#[tokio::test]
async fn a_request_without_a_key_or_with_a_live_key_is_refused_with_401() {
    let sb = spawn().await;
    let res = sb.http.get(sb.url("/v1/customers")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not provide an API key")
    );

    let res = sb
        .http
        .get(sb.url("/v1/customers"))
        .bearer_auth("sk_live_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid API Key provided: sk_live_")
    );
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sk_live_nope"),
        "the key is redacted"
    );
}

#[tokio::test]
async fn basic_auth_with_the_key_as_user_is_accepted() {
    let sb = spawn().await;
    let res = sb
        .http
        .get(sb.url("/v1/customers"))
        .basic_auth(crate::support::KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_unknown_parameter_is_rejected_with_its_full_bracketed_name() {
    let sb = spawn().await;
    let (status, body) = sb
        .post("/v1/customers", "email=a%40b.co&favourite_colour=blue")
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        body["error"]["message"],
        "Received unknown parameter: favourite_colour"
    );
    assert_eq!(body["error"]["param"], "favourite_colour");

    let (status, body) = sb
        .post(
            "/v1/checkout/sessions",
            "mode=payment&success_url=https%3A%2F%2Fx.test&line_items[0][quantity]=1&line_items[0][pryce]=price_1",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "line_items[0][pryce]");
}

#[tokio::test]
async fn a_mistyped_parameter_is_rejected_as_stripe_rejects_it() {
    let sb = spawn().await;
    let (status, body) = sb
        .post(
            "/v1/prices",
            "currency=usd&unit_amount=12.5&product_data[name]=x",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "Invalid integer: 12.5");
    assert_eq!(body["error"]["param"], "unit_amount");

    let (status, body) = sb.post("/v1/checkout/sessions", "mode=rent").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "mode");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid mode: must be one of payment"),
        "{body}"
    );
}

#[tokio::test]
async fn a_missing_required_parameter_is_named() {
    let sb = spawn().await;
    let (status, body) = sb.post("/v1/products", "description=nameless").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "Missing required param: name.");
    assert_eq!(body["error"]["param"], "name");
}

#[tokio::test]
async fn an_unknown_route_and_an_unknown_object_answer_404_with_stripe_errors() {
    let sb = spawn().await;
    let (status, body) = sb.get("/v1/teapots").await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Unrecognized request URL (GET: /v1/teapots)")
    );

    let err = RetrieveCustomer::new("cus_missing")
        .send(&sb.client)
        .await
        .unwrap_err();
    match err {
        stripe::StripeError::Stripe(e, status) => {
            assert_eq!(status, 404);
            assert_eq!(e.code, Some(stripe_shared::ApiErrorsCode::ResourceMissing));
            assert_eq!(
                e.message.as_deref(),
                Some("No such customer: 'cus_missing'")
            );
        }
        other => panic!("expected a Stripe error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_same_idempotency_key_and_parameters_replays_the_first_answer() {
    let sb = spawn().await;
    let (s1, first) = sb
        .post_with("/v1/customers", "email=once%40example.com", Some("k-1"))
        .await;
    let (s2, second) = sb
        .post_with("/v1/customers", "email=once%40example.com", Some("k-1"))
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["id"], second["id"]);
    let (_, list) = sb.get("/v1/customers?email=once%40example.com").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "only one customer was created"
    );

    let res = sb
        .http
        .post(sb.url("/v1/customers"))
        .bearer_auth(crate::support::KEY)
        .header("idempotency-key", "k-1")
        .form(&[("email", "once@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("idempotent-replayed").unwrap(), "true");
}

#[tokio::test]
async fn the_same_idempotency_key_with_other_parameters_is_an_idempotency_error() {
    let sb = spawn().await;
    sb.post_with("/v1/customers", "email=a%40example.com", Some("k-2"))
        .await;
    let (status, body) = sb
        .post_with("/v1/customers", "email=b%40example.com", Some("k-2"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "idempotency_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("k-2"));
}

#[tokio::test]
async fn async_stripe_idempotent_requests_replay() {
    let sb = spawn().await;
    let key = stripe::IdempotencyKey::new("typed-key").unwrap();
    let a = CreateCustomer::new()
        .email("typed@example.com")
        .customize()
        .request_strategy(stripe::RequestStrategy::Idempotent(key.clone()))
        .send(&sb.client)
        .await
        .unwrap();
    let b = CreateCustomer::new()
        .email("typed@example.com")
        .customize()
        .request_strategy(stripe::RequestStrategy::Idempotent(key))
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(a.id, b.id);
}

#[tokio::test]
async fn lists_page_newest_first_with_starting_after_and_ending_before() {
    let sb = spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = CreateCustomer::new()
            .email(format!("p{i}@example.com"))
            .send(&sb.client)
            .await
            .unwrap();
        ids.push(c.id.to_string());
    }
    ids.reverse(); // newest first
    let page1 = ListCustomer::new().limit(2).send(&sb.client).await.unwrap();
    assert!(page1.has_more);
    assert_eq!(
        page1
            .data
            .iter()
            .map(|c| c.id.to_string())
            .collect::<Vec<_>>(),
        ids[0..2]
    );
    let page2 = ListCustomer::new()
        .limit(2)
        .starting_after(page1.data[1].id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        page2
            .data
            .iter()
            .map(|c| c.id.to_string())
            .collect::<Vec<_>>(),
        ids[2..4]
    );
    let page3 = ListCustomer::new()
        .limit(2)
        .starting_after(page2.data[1].id.as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(page3.data.len(), 1);
    assert!(!page3.has_more);
    let back = ListCustomer::new()
        .limit(2)
        .ending_before(ids[2].as_str())
        .send(&sb.client)
        .await
        .unwrap();
    assert_eq!(
        back.data
            .iter()
            .map(|c| c.id.to_string())
            .collect::<Vec<_>>(),
        ids[0..2]
    );
    assert_eq!(page1.url, "/v1/customers");

    let (status, body) = sb.get("/v1/customers?limit=101").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "limit");
}

#[tokio::test]
async fn expand_replaces_an_id_with_its_object_and_refuses_what_cannot_be_expanded() {
    let sb = spawn().await;
    let (_, price) = sb
        .post(
            "/v1/prices",
            "currency=usd&unit_amount=500&product_data[name]=Book",
        )
        .await;
    let product_id = price["product"].as_str().unwrap().to_owned();
    let (_, expanded) = sb
        .get(&format!(
            "/v1/prices/{}?expand[]=product",
            price["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(expanded["product"]["id"], product_id.as_str());
    assert_eq!(expanded["product"]["name"], "Book");
    let (status, body) = sb
        .get(&format!(
            "/v1/prices/{}?expand[]=currency",
            price["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "expand");
    let (_, listed) = sb.get("/v1/prices?expand[]=data.product").await;
    assert_eq!(listed["data"][0]["product"]["name"], "Book");
}

#[tokio::test]
async fn injected_faults_answer_500_and_429_with_should_retry_and_then_stop() {
    let sb = spawn().await;
    sb.sandbox.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let res = sb
        .http
        .get(sb.url("/v1/customers"))
        .bearer_auth(crate::support::KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers().get("stripe-should-retry").unwrap(), "true");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");

    sb.sandbox.set_faults(Faults {
        rate_limit_rate: 1.0,
        ..Faults::default()
    });
    let res = sb
        .http
        .get(sb.url("/v1/customers"))
        .bearer_auth(crate::support::KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers().get("stripe-should-retry").unwrap(), "true");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"].get("code").is_none(),
        "no `rate_limit` code since API version 2015-09-08: {body}"
    );

    // The admin route sets the same knobs.
    let res = sb
        .http
        .post(sb.url("/_sandbox/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, _) = sb.get("/v1/customers").await;
    assert_eq!(status, 200);
    let res = sb
        .http
        .post(sb.url("/_sandbox/faults"))
        .json(&json!({ "error_rate": 2.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a rate above 1 is refused");
}

#[tokio::test]
async fn the_latency_fault_delays_answers_and_can_be_lifted() {
    let sb = spawn().await;
    sb.sandbox.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let (status, _) = sb.get("/v1/customers").await;
    assert_eq!(status, 200, "a slow answer is still an answer");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "answered after {:?}",
        started.elapsed()
    );
    sb.sandbox.set_faults(Faults::default());
    let faults: serde_json::Value = sb
        .http
        .get(sb.url("/_sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["latency_ms"], 0, "lifted");
}

#[tokio::test]
async fn a_lost_answer_is_carried_out_and_its_retry_replays_the_real_answer() {
    let sb = spawn().await;
    sb.sandbox.set_faults(Faults {
        lost_answer_rate: 1.0,
        ..Faults::default()
    });
    let (status, body) = sb
        .post_with("/v1/customers", "email=lost%40example.com", Some("lost-1"))
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["type"], "api_error");
    sb.sandbox.set_faults(Faults::default());
    let (_, listed) = sb.get("/v1/customers?email=lost%40example.com").await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "the request was carried out"
    );
    let (status, replayed) = sb
        .post_with("/v1/customers", "email=lost%40example.com", Some("lost-1"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        replayed["id"], listed["data"][0]["id"],
        "the retry replays it"
    );
    let (_, listed) = sb.get("/v1/customers?email=lost%40example.com").await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "and makes no other"
    );
}

#[tokio::test]
async fn a_stripe_route_the_sandbox_does_not_serve_is_an_unrecognized_url_not_a_missing_object() {
    let sb = spawn().await;
    let (status, body) = sb
        .get("/v1/customers/search?query=email%3A%27a%40b.c%27")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        body["error"]["message"],
        "Unrecognized request URL (GET: /v1/customers/search). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
    );
    assert!(
        body["error"].get("param").is_none(),
        "not a parameter error"
    );
    // An id in the same place is still a customer lookup.
    let (status, body) = sb.get("/v1/customers/cus_nobody").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "resource_missing");
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_a_replay_names_the_original_request() {
    let sb = spawn().await;
    let send = || {
        sb.http
            .post(sb.url("/v1/customers"))
            .bearer_auth(crate::support::KEY)
            .header("idempotency-key", "orig-1")
            .form(&[("email", "orig@example.com")])
            .send()
    };
    let first = send().await.unwrap();
    let first_id = first.headers()["request-id"].to_str().unwrap().to_owned();
    assert!(first_id.starts_with("req_"));
    assert!(first.headers().get("original-request").is_none());
    let replay = send().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["original-request"], first_id.as_str());
    assert_ne!(
        replay.headers()["request-id"],
        first_id.as_str(),
        "a replay is a request of its own"
    );

    let failed = sb
        .http
        .get(sb.url("/v1/teapots"))
        .bearer_auth(crate::support::KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 404);
    assert!(
        failed.headers().contains_key("request-id"),
        "errors have one too"
    );
}

#[tokio::test]
async fn stripe_version_must_be_the_one_the_sandbox_speaks() {
    let sb = spawn().await;
    let get = |version: &'static str| {
        sb.http
            .get(sb.url("/v1/customers"))
            .bearer_auth(crate::support::KEY)
            .header("stripe-version", version)
            .send()
    };
    let ok = get(stripe_sandbox::API_VERSION).await.unwrap();
    assert_eq!(ok.status(), 200);

    let other = get("2024-06-20").await.unwrap();
    assert_eq!(other.status(), 400);
    let body: serde_json::Value = other.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Invalid Stripe API version: 2024-06-20"),
        "{message}"
    );
    assert!(message.contains(stripe_sandbox::API_VERSION), "{message}");

    let malformed = get("2019-2-19").await.unwrap();
    assert_eq!(malformed.status(), 400);
    let body: serde_json::Value = malformed.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Invalid Stripe API version: 2019-2-19"
    );
}

#[tokio::test]
async fn latency_with_jitter_varies_per_request_and_slow_requests_overlap() {
    let sb = spawn().await;
    let res = sb
        .http
        .post(sb.url("/_sandbox/faults"))
        .json(&json!({ "latency_ms": 150, "latency_max_ms": 250 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let started = std::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let req = sb
            .http
            .get(sb.url("/v1/customers"))
            .bearer_auth(crate::support::KEY);
        requests.spawn(async move { req.send().await.unwrap().status().as_u16() });
    }
    let answers: Vec<u16> = requests.join_all().await;
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    assert!(
        elapsed >= std::time::Duration::from_millis(150),
        "{elapsed:?}"
    );
    // Six requests in a row would take at least 900 ms; side by side they take one delay.
    assert!(
        elapsed < std::time::Duration::from_millis(800),
        "slow requests queued behind one another: {elapsed:?}"
    );
    let res = sb
        .http
        .post(sb.url("/_sandbox/faults"))
        .json(&json!({ "latency_ms": 300, "latency_max_ms": 100 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a reversed range is refused");
}
