//! An offline, stateful Stripe: the part of Stripe's API that Tollgate uses, served on
//! loopback in Stripe's wire format, with hosted Checkout and portal pages, signed webhooks
//! and test clocks.
//!
//! It is a model of Stripe, not of our wishes: whatever Stripe refuses (cross-field rules
//! included), it refuses with Stripe's error, so that a request that passes here would pass
//! on Stripe. Each rule sits beside the Stripe documentation it comes from.
//!
//! # Behaving like Stripe, where clients must adapt
//!
//! - A test clock advance answers `status: "advancing"` and finishes in the background: poll
//!   `GET /v1/test_helpers/test_clocks/{id}` until it is `ready`. A second advance while one
//!   runs, and an advance beyond two intervals of the clock's shortest subscription (two
//!   years without one), are refused.
//! - A portal session without `configuration` needs the account's default configuration,
//!   which only the Dashboard makes on Stripe: here `Config::portal_default_configuration` or
//!   `POST /_sandbox/billing_portal/default_configuration`.
//! - Checkout for an existing `customer` with `automatic_tax[enabled]` needs a customer
//!   address Stripe Tax can use or `customer_update[address]=auto`; `tax_id_collection`
//!   needs `customer_update[name]=auto` too.
//! - `Stripe-Version` must be [`API_VERSION`] (or one of `Config::extra_api_versions`).
//!
//! # Configuration ([`Config`])
//!
//! | field | what it does |
//! |---|---|
//! | `api_key` | the only secret key accepted (else any `sk_test_...`) |
//! | `public_url` | where hosted pages are linked from, when not the bound address |
//! | `webhook_retry_base`, `webhook_max_attempts`, `webhook_timeout` | webhook retries |
//! | `dunning_retry_days`, `dunning_mark_unpaid` | renewal retries and their end |
//! | `faults` | injected faults, latency with jitter included ([`Faults`]) |
//! | `state_path` | a file the world is loaded from on start and written to after each change |
//! | `portal_default_configuration` | start with the default portal configuration saved |
//! | `extra_api_versions` | `Stripe-Version` values served besides [`API_VERSION`] |
//! | `test_clock_advance_delay` | how long an advance stays `advancing` |
//! | `refund_failure_delay` | how long before a 4000 0000 0000 5126 refund fails |
//!
//! # Admin routes (not Stripe's; no API key)
//!
//! | route | what it does |
//! |---|---|
//! | `GET`/`POST /_sandbox/faults` | read or set [`Faults`] (JSON) |
//! | `GET /_sandbox/deliveries?event=&endpoint=` | every webhook delivery and its attempts |
//! | `POST /_sandbox/events/{id}/resend` | send an event again |
//! | `POST /_sandbox/charges/{id}/dispute?reason=` | dispute a charge |
//! | `POST /_sandbox/disputes/{id}/resolve?status=won\|lost` | close a dispute |
//! | `POST /_sandbox/billing_portal/default_configuration` | save the default portal configuration (form body: the configuration's parameters) |
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
mod persist;
mod webhooks;
mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Where the world is kept between runs. `Some`: loaded on start (if the file exists)
    /// and written durably after every request that changes it. `None`: in memory only.
    pub state_path: Option<PathBuf>,
    /// Start with the account's default customer portal configuration already saved, as
    /// after someone saved the portal settings in the Dashboard. `false` (the default) is a
    /// new Stripe account: portal sessions without `configuration` are refused until a
    /// default exists (`POST /_sandbox/billing_portal/default_configuration` makes one).
    pub portal_default_configuration: bool,
    /// `Stripe-Version` values served besides [`API_VERSION`], answered exactly as
    /// `API_VERSION` is. The default holds the version async-stripe 1.0.0-rc.10 sends on
    /// every request and cannot be told otherwise (the sandbox's answers are checked against
    /// those types); any other version is refused.
    pub extra_api_versions: Vec<String>,
    /// How long a test clock advance takes before its work runs and the clock is `ready`.
    /// Stripe's take seconds; zero runs the work right after the answer, which keeps tests
    /// fast while still making clients wait for `ready`.
    pub test_clock_advance_delay: Duration,
    /// How long after it is created the refund of a 4000 0000 0000 5126 payment fails
    /// (Stripe: "the refund will appear to be successful at first and will only have the
    /// failed status on subsequent fetches"). Zero fails it right after the answer.
    pub refund_failure_delay: Duration,
}

/// The `Stripe-Version` that async-stripe 1.0.0-rc.10, the client this workspace pins,
/// sends on every request.
pub const ASYNC_STRIPE_API_VERSION: &str = "2026-09-30.endive";

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
            state_path: None,
            portal_default_configuration: false,
            extra_api_versions: vec![ASYNC_STRIPE_API_VERSION.to_owned()],
            test_clock_advance_delay: Duration::ZERO,
            refund_failure_delay: Duration::ZERO,
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
    /// Writes the world to `Config::state_path`, when set.
    pub persister: Option<persist::Persister>,
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

    /// Ends a change to the world: the events it caused go to the webhook dispatcher, the
    /// world is written to the state file if it changed, and test clock advances it accepted
    /// start in the background. Takes the guard so that the file is written, and clocks
    /// run, after the lock is released.
    pub fn settle(self: &Arc<Self>, mut world: MutexGuard<'_, world::World>) {
        let events = std::mem::take(&mut world.outbox);
        self.webhooks.enqueue(&mut world, &events);
        let pending = std::mem::take(&mut world.pending);
        let snapshot = self
            .persister
            .as_ref()
            .map(|_| (world.version(), world.snapshot()));
        drop(world);
        if let (Some(persister), Some((version, snapshot))) = (&self.persister, snapshot)
            && let Err(e) = persister.save(version, &snapshot)
        {
            tracing::error!(error = %e, "could not write the sandbox's state file");
        }
        for job in pending {
            let shared = self.clone();
            let delay = match job {
                world::Pending::AdvanceClock(_) => self.config.test_clock_advance_delay,
                world::Pending::FailRefund(_) => self.config.refund_failure_delay,
            };
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                shared.run_pending(&job);
            });
        }
    }

    /// Runs work accepted earlier: a test clock advance to its end, a refund's failure.
    fn run_pending(self: &Arc<Self>, job: &world::Pending) {
        let mut world = self.world();
        let ctx = api::Ctx {
            base_url: &self.base_url,
            config: &self.config,
        };
        let result = match job {
            world::Pending::AdvanceClock(clock) => {
                api::test_clocks::finish_advance(&mut world, &ctx, clock)
            }
            world::Pending::FailRefund(refund) => {
                api::payments::refunds::fail_refund(&mut world, refund)
            }
        };
        if let Err(e) = result {
            tracing::error!(?job, error = %e.message, "background work failed");
        }
        self.settle(world);
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
        let persister = config.state_path.clone().map(persist::Persister::new);
        let mut world = match &persister {
            Some(p) => p.load()?.unwrap_or_default(),
            None => world::World::default(),
        };
        if config.portal_default_configuration
            && !world
                .all("billing_portal.configuration")
                .any(|c| c["is_default"] == true)
        {
            api::billing::portal::save_default_configuration(&mut world, &serde_json::json!({}));
        }
        // Work a stop cut short finishes now, as Stripe's would have.
        world.pending = world
            .all("test_helpers.test_clock")
            .filter(|c| c["status"] == "advancing")
            .filter_map(|c| c["id"].as_str())
            .map(|id| world::Pending::AdvanceClock(id.to_owned()))
            .chain(
                world
                    .hidden
                    .iter()
                    .filter(|(_, h)| h["will_fail"] == true)
                    .map(|(id, _)| world::Pending::FailRefund(id.clone())),
            )
            .collect();
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let base_url = config
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| {
                // Bound to every interface (0.0.0.0, ::): link the pages on loopback, the
                // one address of the machine that certainly reaches them.
                let mut reachable = addr;
                if addr.ip().is_unspecified() {
                    reachable.set_ip(if addr.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                format!("http://{reachable}")
            });
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            faults: Mutex::new(config.faults.clone()),
            webhooks: webhooks::Dispatcher::new(&config),
            config,
            base_url,
            persister,
        });
        shared.webhooks.attach(&shared);
        shared.settle(shared.world());
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
