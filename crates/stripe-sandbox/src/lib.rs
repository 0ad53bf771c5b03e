//! An offline, stateful Stripe: the part of Stripe's API that Tollgate uses, served on
//! loopback in Stripe's wire format, with hosted Checkout and portal pages, signed webhooks
//! and test clocks.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sandbox = stripe_sandbox::Sandbox::start(
//!     stripe_sandbox::Config::default(),
//!     "127.0.0.1:0".parse().unwrap(),
//! ).await?;
//! println!("point a Stripe client at {}", sandbox.url());
//! # Ok(()) }
//! ```

#![recursion_limit = "256"]

mod api;
mod error;
mod expand;
mod faults;
mod http;
mod ids;
mod pages;
pub mod params;
mod webhooks;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use faults::Faults;
pub use webhooks::{DeliveryAttempt, DeliveryRecord};
pub use world::API_VERSION;

/// How the sandbox behaves. `Default` is what `tollgate sandbox` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// If set, the only secret key accepted; otherwise any `sk_test_...` key is.
    pub api_key: Option<String>,
    /// The address the hosted pages are linked from, when it differs from the bound one
    /// (behind a proxy). `None`: `http://` + the bound address.
    pub public_url: Option<String>,
    /// Delay before the first webhook retry; each later retry waits twice as long.
    pub webhook_retry_base: Duration,
    /// Delivery attempts per event and endpoint, the first included.
    pub webhook_max_attempts: u32,
    /// How long a receiver may take to answer before the attempt counts as failed.
    pub webhook_timeout: Duration,
    /// Days after a failed renewal at which Stripe retries the invoice; after the last
    /// failed retry the subscription is canceled (or left `unpaid`, see below).
    pub dunning_retry_days: Vec<i64>,
    /// After the last failed retry: `true` marks the subscription `unpaid` instead of canceling it.
    pub dunning_mark_unpaid: bool,
    /// Faults in effect from the start (they can be changed at run time on `/_sandbox/faults`).
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_key: None,
            public_url: None,
            // Stripe retries test-mode deliveries a few times over hours; the sandbox keeps
            // the shape (exponential backoff) on a scale a person at a terminal can watch.
            webhook_retry_base: Duration::from_secs(5),
            webhook_max_attempts: 4,
            webhook_timeout: Duration::from_secs(10),
            dunning_retry_days: vec![3, 5, 7],
            dunning_mark_unpaid: false,
            faults: Faults::default(),
        }
    }
}

impl Config {
    /// Settings for tests: webhook retries in tens of milliseconds.
    pub fn for_tests() -> Self {
        Self {
            webhook_retry_base: Duration::from_millis(20),
            webhook_timeout: Duration::from_secs(2),
            ..Self::default()
        }
    }
}

/// State shared by every request handler and the webhook dispatcher.
pub(crate) struct Shared {
    world: Mutex<world::World>,
    pub config: Config,
    pub faults: Mutex<Faults>,
    pub base_url: String,
    pub webhooks: webhooks::Dispatcher,
}

impl Shared {
    /// The world, locked. A panic while it was held leaves it as it was at the panic, which
    /// for a test double is more useful than refusing every later request.
    pub fn world(&self) -> MutexGuard<'_, world::World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running sandbox. Dropping it stops the server.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Sandbox {
    /// Binds `listen` (port 0 picks a free port) and serves until dropped.
    pub async fn start(config: Config, listen: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let shared = Arc::new(Shared {
            world: Mutex::new(world::World::default()),
            faults: Mutex::new(config.faults.clone()),
            webhooks: webhooks::Dispatcher::new(&config),
            config,
            base_url,
        });
        shared.webhooks.attach(&shared);
        let app = http::router(shared.clone());
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        Ok(Self { addr, shared, stop })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give a Stripe client (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Changes the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// Every webhook delivery so far, with its attempts.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.webhooks.records()
    }

    /// Stops serving.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
    }
}
