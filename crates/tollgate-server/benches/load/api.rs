//! Small clients for Tollgate's API (with a tenant's key) and the sandbox's Stripe API
//! (form bodies, as Stripe takes them), for the setup and the checks around a measurement.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::procs::STRIPE_KEY;

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn answer(what: &str, res: reqwest::Response) -> anyhow::Result<Value> {
    let status = res.status();
    let text = res
        .text()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    if !status.is_success() {
        bail!("{what}: {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))
}

/// Tollgate's API as one tenant.
#[derive(Clone)]
pub struct Tollgate {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Tollgate {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: client()?,
            base: base.to_owned(),
            key: key.to_owned(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        answer(&format!("GET {path}"), res).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        answer(&format!("POST {path}"), res).await
    }

    /// Every object of a list route, page after page (`path` has no query or ends in one).
    pub async fn list_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = match &after {
                Some(a) => {
                    self.get(&format!("{path}{sep}limit=100&starting_after={a}"))
                        .await?
                }
                None => self.get(&format!("{path}{sep}limit=100")).await?,
            };
            let data = page["data"].as_array().cloned().unwrap_or_default();
            after = data.last().and_then(id_of);
            all.extend(data);
            if page["has_more"] != json!(true) || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// The tenant's events in one state: `limit` of them at most.
    pub async fn events(&self, status: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
        let page = self
            .get(&format!("/v1/events?status={status}&limit={limit}"))
            .await?;
        Ok(page["data"].as_array().cloned().unwrap_or_default())
    }
}

/// Lists name the next page by the last object's id; events go by their Stripe id.
fn id_of(v: &Value) -> Option<String> {
    v["stripe_event_id"]
        .as_str()
        .or(v["id"].as_str())
        .map(str::to_owned)
}

/// The sandbox's Stripe API and its `/_sandbox` controls.
#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
}

impl Stripe {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: client()?,
            base: base.to_owned(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(STRIPE_KEY)
            .send()
            .await
            .with_context(|| format!("Stripe GET {path}"))?;
        answer(&format!("Stripe GET {path}"), res).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Value> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(STRIPE_KEY)
            .form(form)
            .send()
            .await
            .with_context(|| format!("Stripe POST {path}"))?;
        answer(&format!("Stripe POST {path}"), res).await
    }

    /// Pays a Checkout Session on its hosted page with a card that always succeeds.
    pub async fn pay(&self, url: &str) -> anyhow::Result<()> {
        let res = self
            .http
            .post(url)
            .form(&[("card_number", "4242424242424242")])
            .send()
            .await
            .context("paying a Checkout Session")?;
        if !res.status().is_redirection() {
            bail!(
                "paying a Checkout Session: {}: {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Every answer of Stripe's API waits `min_ms..=max_ms` from now on.
    pub async fn set_latency(&self, min_ms: u64, max_ms: u64) -> anyhow::Result<()> {
        let res = self
            .http
            .post(format!("{}/_sandbox/faults", self.base))
            .json(&json!({ "latency_ms": min_ms, "latency_max_ms": max_ms }))
            .send()
            .await
            .context("setting the sandbox's latency")?;
        answer("setting the sandbox's latency", res)
            .await
            .map(|_| ())
    }

    /// How many webhook deliveries the sandbox has made (none are expected: no endpoint).
    pub async fn deliveries(&self) -> anyhow::Result<usize> {
        let res = self
            .http
            .get(format!("{}/_sandbox/deliveries", self.base))
            .send()
            .await
            .context("listing the sandbox's deliveries")?;
        let v = answer("listing the sandbox's deliveries", res).await?;
        Ok(v["data"].as_array().map_or(0, Vec::len))
    }
}
