//! Settings, from the environment and an optional `KEY=VALUE` file (the environment wins).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};

/// Everything `tollgate serve` needs to start.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    /// `None`: run against the built-in sandbox.
    pub stripe_secret_key: Option<String>,
    pub stripe_api_base: Option<String>,
    /// Several during a rotation.
    pub stripe_webhook_secrets: Vec<String>,
    pub admin_key: Option<String>,
    /// Where this service is reached from outside (default URLs, the sandbox's webhook).
    pub public_url: Option<String>,
    /// Checkout sessions a tenant may create per minute.
    pub checkout_rate_per_minute: u32,
    /// Stripe events applied at once by this process (0: none, only stored).
    pub workers: usize,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are named, never shown.
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &tollgate_store::redact_url(&self.database_url),
            )
            .field(
                "stripe_secret_key",
                &self.stripe_secret_key.as_ref().map(|_| "***"),
            )
            .field("stripe_api_base", &self.stripe_api_base)
            .field("stripe_webhook_secrets", &self.stripe_webhook_secrets.len())
            .field("admin_key", &self.admin_key.as_ref().map(|_| "***"))
            .field("public_url", &self.public_url)
            .field("checkout_rate_per_minute", &self.checkout_rate_per_minute)
            .field("workers", &self.workers)
            .finish()
    }
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://tollgate.db";

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DEFAULT_DATABASE_URL.into(),
            stripe_secret_key: None,
            stripe_api_base: None,
            stripe_webhook_secrets: vec![],
            admin_key: None,
            public_url: None,
            checkout_rate_per_minute: 600,
            workers: 64,
        }
    }
}

impl Settings {
    /// Reads the settings: `file` first (if given), then the environment on top.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(path) = file {
            // Values from the file fill only what the environment does not set.
            dotenvy::from_path(path)
                .with_context(|| format!("reading settings from {}", path.display()))?;
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut s = Settings::default();
        if let Some(v) = env("TOLLGATE_LISTEN") {
            s.listen = v
                .parse()
                .with_context(|| format!("TOLLGATE_LISTEN is not an address: {v}"))?;
        }
        if let Some(v) = env("TOLLGATE_DATABASE_URL") {
            s.database_url = v;
        }
        s.stripe_secret_key = env("STRIPE_SECRET_KEY");
        s.stripe_api_base = env("STRIPE_API_BASE");
        s.stripe_webhook_secrets = env("STRIPE_WEBHOOK_SECRET")
            .map(|v| {
                v.split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        s.admin_key = env("TOLLGATE_ADMIN_KEY");
        s.public_url = env("TOLLGATE_PUBLIC_URL");
        if let Some(v) = env("TOLLGATE_CHECKOUT_RATE_PER_MINUTE") {
            s.checkout_rate_per_minute = v
                .parse()
                .context("TOLLGATE_CHECKOUT_RATE_PER_MINUTE must be a whole number")?;
        }
        if let Some(v) = env("TOLLGATE_WORKERS") {
            s.workers = v
                .parse()
                .context("TOLLGATE_WORKERS must be a whole number")?;
        }
        if s.stripe_secret_key.is_some() && s.stripe_webhook_secrets.is_empty() {
            bail!(
                "STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not: webhooks could not be verified"
            );
        }
        if let Some(key) = &s.admin_key
            && (!key.starts_with("tg_admin_") || key.len() < 24)
        {
            bail!("TOLLGATE_ADMIN_KEY must start with tg_admin_ and be at least 24 characters");
        }
        Ok(s)
    }
}
