//! Webhook delivery: each event goes to every enabled endpoint that asked for its type,
//! signed as Stripe signs (`Stripe-Signature: t=...,v1=...`), retried with exponential
//! backoff on a non-2xx answer or a timeout, every attempt recorded.
//!
//! Each endpoint has one worker that sends first attempts in the order events happened;
//! retries run on their own timers, so a failing delivery does not hold back later ones
//! (Stripe does not promise order either). The fault knobs drop, duplicate or reorder
//! deliveries here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::faults::{Faults, roll};
use crate::ids::new_id;
use crate::world::{World, wall_clock};
use crate::{Config, Shared};

/// One delivery of one event to one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub url: String,
    /// `pending`, `succeeded`, `failed` (attempts exhausted) or `dropped` (fault injection).
    pub status: String,
    pub attempts: Vec<DeliveryAttempt>,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryAttempt {
    /// Unix seconds when it was sent.
    pub at: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed without an answer (timeout, connection refused).
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Sent again by the duplicate fault rather than as a retry.
    pub duplicate: bool,
}

struct Job {
    record: usize,
    payload: String,
    secret: String,
    url: String,
}

/// Owns the delivery workers and the record of every delivery.
pub struct Dispatcher {
    records: Arc<Mutex<Vec<DeliveryRecord>>>,
    workers: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    http: reqwest::Client,
    retry_base: Duration,
    max_attempts: u32,
    shared_faults: Mutex<Option<std::sync::Weak<Shared>>>,
}

impl Dispatcher {
    pub fn new(config: &Config) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .build()
            .unwrap_or_default();
        Self {
            records: Arc::default(),
            workers: Mutex::default(),
            http,
            retry_base: config.webhook_retry_base,
            max_attempts: config.webhook_max_attempts.max(1),
            shared_faults: Mutex::default(),
        }
    }

    pub fn records(&self) -> Vec<DeliveryRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues `events` for every endpoint that takes them and sets their `pending_webhooks`.
    pub fn enqueue(&self, world: &mut World, events: &[Value]) {
        for event in events {
            let kind = event["type"].as_str().unwrap_or_default();
            let endpoints: Vec<(String, String, String)> = world
                .all("webhook_endpoint")
                .filter(|e| e["status"] == "enabled")
                .filter(|e| {
                    e["enabled_events"]
                        .as_array()
                        .is_some_and(|list| list.iter().any(|t| t == "*" || t == kind))
                })
                .filter_map(|e| {
                    let id = e["id"].as_str()?.to_owned();
                    let url = e["url"].as_str()?.to_owned();
                    let secret = world.hidden.get(&id)?["secret"].as_str()?.to_owned();
                    Some((id, url, secret))
                })
                .collect();
            let event_id = event["id"].as_str().unwrap_or_default().to_owned();
            world.set_pending_webhooks(&event_id, endpoints.len());
            let mut payload_event = event.clone();
            payload_event["pending_webhooks"] = endpoints.len().into();
            let payload = payload_event.to_string();
            for (endpoint_id, url, secret) in endpoints {
                let record = {
                    let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
                    records.push(DeliveryRecord {
                        id: new_id("whdel"),
                        event_id: event_id.clone(),
                        event_type: kind.to_owned(),
                        endpoint_id: endpoint_id.clone(),
                        url: url.clone(),
                        status: "pending".into(),
                        attempts: vec![],
                    });
                    records.len() - 1
                };
                let job = Job {
                    record,
                    payload: payload.clone(),
                    secret,
                    url,
                };
                self.worker(&endpoint_id).send(job).ok();
            }
        }
    }

    /// Lets workers read the current faults.
    pub fn attach(&self, shared: &Arc<Shared>) {
        *self.shared_faults.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::downgrade(shared));
    }

    fn worker(&self, endpoint_id: &str) -> mpsc::UnboundedSender<Job> {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = workers.get(endpoint_id)
            && !tx.is_closed()
        {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = Delivery {
            records: self.records.clone(),
            http: self.http.clone(),
            retry_base: self.retry_base,
            max_attempts: self.max_attempts,
        };
        let faults = FaultSource(
            self.shared_faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );
        tokio::spawn(run_worker(ctx, faults, rx));
        workers.insert(endpoint_id.to_owned(), tx.clone());
        tx
    }
}

struct FaultSource(Option<std::sync::Weak<Shared>>);

impl FaultSource {
    fn get(&self) -> Faults {
        self.0
            .as_ref()
            .and_then(|w| w.upgrade())
            .map(|s| s.faults())
            .unwrap_or_default()
    }
}

#[derive(Clone)]
struct Delivery {
    records: Arc<Mutex<Vec<DeliveryRecord>>>,
    http: reqwest::Client,
    retry_base: Duration,
    max_attempts: u32,
}

async fn run_worker(ctx: Delivery, faults: FaultSource, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut held: Option<Job> = None;
    loop {
        // A held-back delivery waits for the next one, but not for ever.
        let next = match &held {
            Some(_) => match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                Ok(job) => job,
                Err(_) => {
                    if let Some(job) = held.take() {
                        ctx.clone().first_attempt(job, &faults.get()).await;
                    }
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(job) = next else { break };
        let f = faults.get();
        if roll(f.drop_rate) {
            ctx.set_status(job.record, "dropped");
            continue;
        }
        if held.is_none() && roll(f.reorder_rate) {
            held = Some(job);
            continue;
        }
        ctx.clone().first_attempt(job, &f).await;
        if let Some(job) = held.take() {
            ctx.clone().first_attempt(job, &f).await;
        }
    }
}

impl Delivery {
    async fn first_attempt(self, job: Job, faults: &Faults) {
        let duplicate = roll(faults.duplicate_rate);
        let ok = self.attempt(&job, false).await;
        if duplicate {
            self.attempt(&job, true).await;
        }
        if !ok {
            tokio::spawn(self.retry(job));
        }
    }

    async fn retry(self, job: Job) {
        for n in 1..self.max_attempts {
            let delay = self.retry_base.saturating_mul(1u32 << (n - 1).min(16));
            tokio::time::sleep(delay).await;
            if self.attempt(&job, false).await {
                return;
            }
        }
        self.set_status(job.record, "failed");
    }

    /// Sends once; records the attempt; true on a 2xx answer.
    async fn attempt(&self, job: &Job, duplicate: bool) -> bool {
        let t = wall_clock();
        let header = signature_header(&job.secret, t, &job.payload);
        let started = Instant::now();
        let result = self
            .http
            .post(&job.url)
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", header)
            .body(job.payload.clone())
            .send()
            .await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match result {
            Ok(res) => (Some(res.status().as_u16()), None),
            Err(e) if e.is_timeout() => (None, Some("timed out".to_owned())),
            Err(e) => (None, Some(format!("connection failed: {e}"))),
        };
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = records.get_mut(job.record) {
            r.attempts.push(DeliveryAttempt {
                at: t,
                status,
                error,
                duration_ms,
                duplicate,
            });
            if ok {
                r.status = "succeeded".into();
            }
        }
        ok
    }

    fn set_status(&self, record: usize, status: &str) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = records.get_mut(record)
            && r.status != "succeeded"
        {
            r.status = status.to_owned();
        }
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.payload" keyed with the endpoint secret>`.
pub fn signature_header(secret: &str, t: i64, payload: &str) -> String {
    format!("t={t},v1={}", sign(secret, t, payload))
}

fn sign(secret: &str, t: i64, payload: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
