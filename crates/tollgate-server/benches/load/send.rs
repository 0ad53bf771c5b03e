//! Sending events as Stripe does: each body signed at send time
//! (`Stripe-Signature: t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>`), by a number of
//! senders each on its own keep-alive connection, every acknowledgement timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};

use crate::procs::WEBHOOK_SECRET;

/// How often a refused or failed delivery is tried again, as Stripe would (sooner).
const ATTEMPTS: usize = 5;
const RETRY_AFTER: Duration = Duration::from_millis(100);

pub fn signature(t: u64, body: &str) -> String {
    // A key of any length is accepted by HMAC; this cannot fail.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Seconds since the Unix epoch, now (0 should the clock stand before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What sending a set of events came to.
pub struct Sent {
    /// Each acknowledged event's latency (its successful attempt), sorted.
    pub latencies: Latencies,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    /// Attempts answered with other than 2xx, or not answered.
    pub failed_attempts: usize,
    /// Events never acknowledged after every attempt.
    pub lost: usize,
}

/// Sends every body to `url` with `senders` concurrent senders, which take the next body
/// as they finish the last one.
pub async fn send_all(url: &str, bodies: Arc<Vec<String>>, senders: usize) -> anyhow::Result<Sent> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(senders)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..senders {
        let (http, url, bodies, next) =
            (http.clone(), url.to_owned(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(bodies.len() / senders + 1);
            let (mut failed, mut lost) = (0, 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return (latencies, failed, lost);
                };
                let mut acknowledged = false;
                for _ in 0..ATTEMPTS {
                    let sent = Instant::now();
                    let res = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("stripe-signature", signature(unix_now(), body))
                        .body(body.clone())
                        .send()
                        .await;
                    let ok = match res {
                        // The body is read so the connection goes back to the pool.
                        Ok(r) => {
                            let success = r.status().is_success();
                            r.bytes().await.is_ok() && success
                        }
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(micros(sent.elapsed()));
                        acknowledged = true;
                        break;
                    }
                    failed += 1;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                if !acknowledged {
                    lost += 1;
                }
            }
        });
    }
    let (mut all, mut failed_attempts, mut lost) = (Vec::with_capacity(bodies.len()), 0, 0);
    while let Some(done) = tasks.join_next().await {
        let (l, f, x) = done?;
        all.extend(l);
        failed_attempts += f;
        lost += x;
    }
    Ok(Sent {
        latencies: Latencies::new(all),
        elapsed: started.elapsed(),
        failed_attempts,
        lost,
    })
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Latencies in microseconds, sorted.
pub struct Latencies(Vec<u32>);

impl Latencies {
    pub fn new(mut v: Vec<u32>) -> Self {
        v.sort_unstable();
        Self(v)
    }

    /// The `p` quantile (0.0 to 1.0) in milliseconds; 0 when nothing was measured.
    pub fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        f64::from(self.0[i]) / 1e3
    }

    pub fn max_ms(&self) -> f64 {
        self.ms(1.0)
    }
}
