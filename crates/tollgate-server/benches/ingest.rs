//! Webhook ingest end to end over loopback: N signed Stripe events POSTed by C concurrent
//! senders to a real Tollgate (release build, in-process on port 0), timed until every event
//! is processed; the acknowledgement latency of each POST is recorded.
//!
//! `cargo bench -p tollgate --bench ingest` (SQLite); with
//! `TOLLGATE_BENCH_DATABASE_URL=postgres://...` for PostgreSQL. `BENCH_EVENTS` and
//! `BENCH_CONCURRENCY` change the load (default 20,000 events, 32 senders);
//! `BENCH_WORKERS` the inbox workers (default: `tollgate serve`'s).
//!
//! The events are `payment_intent.succeeded`, which the worker stores, claims, reads and
//! marks processed without calling Stripe: what is measured is Tollgate's own pipeline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use tokio::net::TcpListener;
use tollgate::{Application, Settings};

const SECRET: &str = "whsec_bench_ingest_secret";

fn sign(t: i64, payload: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{payload}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Settings::default().workers);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sandbox = stripe_sandbox::Sandbox::start(stripe_sandbox::Config::default(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = std::env::temp_dir().join(format!("tollgate-bench-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = std::env::var("TOLLGATE_BENCH_DATABASE_URL").unwrap_or_else(|_| format!("sqlite://{}", dir.join("bench.db").display()));
        if url.starts_with("postgres") {
            // A clean slate: the bench owns this database.
            let store = tollgate_store::Store::connect(&url).await.unwrap();
            for t in ["webhook_inbox"] {
                let _ = sqlx::query(&format!("DELETE FROM {t}")).execute(store.pool()).await;
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = Settings {
            listen: addr,
            database_url: url.clone(),
            stripe_secret_key: Some("sk_test_bench".into()),
            // The events sent are ignored without a Stripe call; Stripe must only answer
            // the key check made on start.
            stripe_api_base: Some(sandbox.url()),
            stripe_webhook_secrets: vec![SECRET.into()],
            workers,
            ..Settings::default()
        };
        let app = Application::build_on(listener, settings).await.unwrap();
        let store = app.state().store.clone();
        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
        let target = Arc::new(format!("http://{addr}/webhooks/stripe"));
        let run = std::process::id();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut senders = Vec::new();
        for _ in 0..concurrency {
            let (client, target, next) = (client.clone(), target.clone(), next.clone());
            senders.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= events {
                        return latencies;
                    }
                    let payload = format!(
                        r#"{{"id":"evt_bench_{run}_{i}","object":"event","api_version":"2026-05-27.dahlia","created":{t},"livemode":false,"pending_webhooks":1,"type":"payment_intent.succeeded","data":{{"object":{{"id":"pi_bench_{i}","object":"payment_intent","amount":1000,"currency":"usd","status":"succeeded","metadata":{{}}}}}}}}"#,
                        t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                    );
                    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                    let sent = Instant::now();
                    let res = client.post(target.as_str()).header("stripe-signature", sign(t, &payload)).body(payload).send().await.unwrap();
                    assert!(res.status().is_success(), "status {}", res.status());
                    latencies.push(sent.elapsed());
                }
            }));
        }
        let mut latencies = Vec::with_capacity(events);
        for s in senders {
            latencies.extend(s.await.unwrap());
        }
        let acked = started.elapsed();
        loop {
            if store.inbox_pending().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = started.elapsed();
        latencies.sort();
        let engine = if url.starts_with("postgres") { "PostgreSQL" } else { "SQLite" };
        println!("ingest on {engine}: {events} events, {concurrency} concurrent senders, {workers} workers");
        println!("  all acknowledged after {:.2} s ({:.0} events/s acknowledged)", acked.as_secs_f64(), events as f64 / acked.as_secs_f64());
        println!("  all processed after    {:.2} s ({:.0} events/s end to end)", done.as_secs_f64(), events as f64 / done.as_secs_f64());
        println!(
            "  acknowledgement latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.90).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3
        );
        app.stop().await.unwrap();
    });
}
