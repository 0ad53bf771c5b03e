//! Tollgate's own time on checkout creation: `POST /v1/checkout_sessions` against the
//! in-process sandbox, compared with the same session created on the sandbox directly.
//! The difference is what Tollgate adds (validation, the pending order, bookkeeping).
//!
//! `cargo bench -p tollgate --bench checkout` (SQLite); with
//! `TOLLGATE_BENCH_DATABASE_URL=postgres://...` for PostgreSQL. `BENCH_CHECKOUTS` sets the
//! count (default 1,000), sent one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate::{Application, Settings};
use tollgate_domain::FeeSchedule;
use tollgate_store::NewTenant;

const KEY: &str = "sk_test_bench_checkout";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

fn report(name: &str, mut l: Vec<Duration>) -> f64 {
    l.sort();
    println!(
        "  {name}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        percentile(&l, 0.5),
        percentile(&l, 0.9),
        percentile(&l, 0.99)
    );
    percentile(&l, 0.5)
}

fn main() {
    let n: usize = std::env::var("BENCH_CHECKOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sandbox = stripe_sandbox::Sandbox::start(stripe_sandbox::Config::default(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = std::env::temp_dir().join(format!("tollgate-bench-checkout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = std::env::var("TOLLGATE_BENCH_DATABASE_URL").unwrap_or_else(|_| format!("sqlite://{}", dir.join("bench.db").display()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = Settings {
            listen: addr,
            database_url: url.clone(),
            stripe_secret_key: Some(KEY.into()),
            stripe_api_base: Some(sandbox.url()),
            stripe_webhook_secrets: vec!["whsec_unused".into()],
            checkout_rate_per_minute: 1_000_000,
            ..Settings::default()
        };
        let app = Application::build_on(listener, settings).await.unwrap();
        let (_, key) = app
            .state()
            .store
            .create_tenant(&NewTenant { name: "Bench".into(), fees: FeeSchedule::new(1000, 0).unwrap(), ..Default::default() })
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        let post = |path: String, body: Value| {
            let (http, key) = (http.clone(), key.secret.clone());
            async move { http.post(path).bearer_auth(key).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let product = post(format!("{base}/v1/products"), json!({ "kind": "event", "title": "Conference", "status": "published", "capacity": 1_000_000_000i64, "price": { "unit_amount": 5000 } })).await;
        let customer = post(format!("{base}/v1/customers"), json!({ "external_user_id": "bench", "email": "bench@example.com" })).await;
        let body = json!({ "customer": customer["id"], "product": product["id"], "success_url": "https://shop.test/ok?session_id={CHECKOUT_SESSION_ID}", "cancel_url": "https://shop.test/cart" });
        // Warm up both paths.
        for _ in 0..20 {
            post(format!("{base}/v1/checkout_sessions"), body.clone()).await;
        }
        let mut tollgate = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let s = post(format!("{base}/v1/checkout_sessions"), body.clone()).await;
            tollgate.push(t.elapsed());
            assert!(s["url"].is_string(), "{s}");
        }
        let stripe_price = product["prices"][0]["stripe_price_id"].as_str().unwrap().to_owned();
        let stripe_customer = customer["stripe_customer_id"].as_str().unwrap().to_owned();
        let mut direct = Vec::with_capacity(n);
        for i in 0..n {
            let form = [
                ("mode", "payment".to_owned()),
                ("line_items[0][price]", stripe_price.clone()),
                ("line_items[0][quantity]", "1".into()),
                ("customer", stripe_customer.clone()),
                ("success_url", "https://shop.test/ok?session_id={CHECKOUT_SESSION_ID}".into()),
                ("cancel_url", "https://shop.test/cart".into()),
                ("metadata[tenant_id]", "ten_bench".into()),
                ("metadata[order_id]", format!("ord_{i}")),
                ("payment_intent_data[metadata][order_id]", format!("ord_{i}")),
            ];
            let t = Instant::now();
            let res = http.post(format!("{}/v1/checkout/sessions", sandbox.url())).bearer_auth(KEY).header("idempotency-key", format!("direct-{i}")).form(&form).send().await.unwrap();
            assert!(res.status().is_success());
            let _ = res.bytes().await.unwrap();
            direct.push(t.elapsed());
        }
        let engine = if url.starts_with("postgres") { "PostgreSQL" } else { "SQLite" };
        println!("checkout creation on {engine}, {n} sessions one at a time:");
        let total = report("POST /v1/checkout_sessions (Tollgate + sandbox)", tollgate);
        let stripe = report("POST /v1/checkout/sessions on the sandbox alone", direct);
        println!("  Tollgate's own time at p50: {:.2} ms", total - stripe);
        app.stop().await.unwrap();
    });
}
