//! Building and running the service: storage, Stripe (or the built-in sandbox), the HTTP
//! API and the workers, under one stop signal. `Application::build` binds first (port 0 in
//! tests) and reports the address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_domain::{CustomerId, TenantId};
use tollgate_store::Engine;
use tollgate_stripe::{Gateway, GatewayError};

use crate::config::{Settings, StripeKeyKind, StripeMode};
use crate::state::AppState;
use crate::usecases::events::HANDLED;

/// The key Tollgate uses with its built-in sandbox.
const SANDBOX_KEY: &str = "sk_test_tollgate_builtin_sandbox";
/// The metadata that marks the built-in sandbox's webhook endpoints as this service's own.
const BUILTIN_MARK: (&str, &str) = ("tollgate", "builtin");
/// Stripe's API, when `STRIPE_API_BASE` does not say otherwise.
pub const STRIPE_API: &str = "https://api.stripe.com";
/// How long the key check on start may take per attempt, and how many attempts it makes
/// when Stripe does not answer.
const KEY_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const KEY_CHECK_ATTEMPTS: u32 = 3;
/// How long a stop waits for requests in flight and the events being applied.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What this instance runs on, for the start-up summary.
#[derive(Debug, Clone)]
pub struct Summary {
    pub listen: SocketAddr,
    pub public_url: String,
    /// The database URL, its password hidden.
    pub database: String,
    /// Where the Stripe API calls go.
    pub stripe_base: String,
    pub stripe_mode: StripeMode,
    /// A restricted key (`rk_`).
    pub restricted_key: bool,
    pub workers: usize,
    /// The built-in sandbox's state file (in memory when `None`).
    pub sandbox_state: Option<PathBuf>,
    /// Where the built-in sandbox's hosted pages are.
    pub sandbox_public_url: Option<String>,
}

impl Summary {
    /// `test`, `live` or `built-in sandbox`, with the kind of key.
    pub fn stripe_description(&self) -> String {
        match self.stripe_mode {
            StripeMode::BuiltInSandbox => format!(
                "built-in sandbox, offline, no real money (pages at {}, state {})",
                self.sandbox_public_url
                    .as_deref()
                    .unwrap_or(&self.stripe_base),
                self.sandbox_state
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "in memory".into())
            ),
            mode => format!(
                "{} mode, {} key",
                mode.as_str(),
                if self.restricted_key {
                    "restricted"
                } else {
                    "secret"
                }
            ),
        }
    }

    /// Logs the summary as one line (fields for JSON logs, readable as text).
    pub fn log(&self) {
        tracing::info!(
            listen = %self.listen,
            public_url = %self.public_url,
            database = %self.database,
            stripe_base = %self.stripe_base,
            stripe_mode = self.stripe_mode.as_str(),
            stripe = %self.stripe_description(),
            workers = self.workers,
            "tollgate ready"
        );
    }
}

pub struct Application {
    addr: SocketAddr,
    state: AppState,
    sandbox: Option<stripe_sandbox::Sandbox>,
    summary: Summary,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ingest: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: another process may use the port, or the address is not this machine's (TOLLGATE_LISTEN)",
                settings.listen
            )
        })?;
        Self::build_on(listener, settings).await
    }

    /// Builds on a listener bound already (tests bind first to learn the address). Nothing
    /// is served until the database is migrated and Stripe has accepted the key.
    pub async fn build_on(listener: TcpListener, settings: Settings) -> anyhow::Result<Self> {
        settings.check()?;
        let store = crate::database::open(&settings.database_url).await?;
        let addr = listener.local_addr()?;
        let public_url = settings
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{addr}"));

        let mut summary = Summary {
            listen: addr,
            public_url: public_url.clone(),
            database: tollgate_store::redact_url(&settings.database_url),
            stripe_base: STRIPE_API.into(),
            stripe_mode: settings.stripe_mode(),
            restricted_key: false,
            workers: settings.workers,
            sandbox_state: None,
            sandbox_public_url: None,
        };
        let (stripe, secrets, sandbox) = match &settings.stripe_secret_key {
            Some(key) => {
                let kind = StripeKeyKind::of(key)?;
                let base = settings
                    .stripe_api_base
                    .as_deref()
                    .map(|b| b.trim_end_matches('/').to_owned())
                    .unwrap_or_else(|| STRIPE_API.into());
                let gateway = Gateway::new(key, settings.stripe_api_base.as_deref())
                    .map_err(|e| anyhow::anyhow!("STRIPE_SECRET_KEY cannot be used: {e}"))?;
                check_key(&gateway, &base).await?;
                summary.stripe_base = base;
                summary.restricted_key = kind.restricted;
                (gateway, settings.stripe_webhook_secrets.clone(), None)
            }
            None => {
                let builtin = start_builtin_sandbox(&settings, &public_url).await?;
                summary.stripe_base = builtin.api_base.clone();
                summary.sandbox_state = builtin.state_path.clone();
                summary.sandbox_public_url = Some(builtin.sandbox.url());
                (builtin.gateway, vec![builtin.secret], Some(builtin.sandbox))
            }
        };

        let (state, arrivals) =
            AppState::new(&settings, store.clone(), stripe, secrets, public_url);
        state
            .reload_access()
            .await
            .context("loading the access index")?;

        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if settings.workers == 0 {
            tracing::warn!(
                "TOLLGATE_WORKERS=0: this instance stores Stripe's events but applies none; another instance on the same database must run workers"
            );
        }
        // Runs until the server has answered its last request (see `stop`).
        let ingest = tokio::spawn(crate::ingest::run(state.clone(), arrivals));
        if settings.workers > 0 {
            let (dispatcher, worker_tasks) =
                crate::worker::start(&state, stopped.clone(), settings.workers);
            let _ = state.dispatcher.set(dispatcher);
            tasks.extend(worker_tasks);
            tasks.push(tokio::spawn(crate::usage_reporter::run(
                state.clone(),
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::maintenance::run(
            state.clone(),
            stopped.clone(),
        )));
        if store.engine() == Engine::Postgres {
            tasks.push(tokio::spawn(follow_access_changes(
                state.clone(),
                stopped.clone(),
            )));
        }
        let app = axum::ServiceExt::into_make_service(
            crate::http::service(state.clone()).context("building the routes")?,
        );
        let mut server_stop = stopped.clone();
        // On the stop signal the listener is closed at once (new connections are refused),
        // requests in flight run to their end, and idle connections are closed.
        let server = tokio::spawn(async move {
            // Answers go out as soon as they are written: without TCP_NODELAY, the end of an
            // answer written in more than one piece can wait for the client's delayed ACK.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY could not be set on a connection");
                }
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await
        });
        Ok(Self {
            addr,
            state,
            sandbox,
            summary,
            stop,
            tasks,
            ingest,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The built-in sandbox, when running without a Stripe key.
    pub fn sandbox(&self) -> Option<&stripe_sandbox::Sandbox> {
        self.sandbox.as_ref()
    }

    /// What this instance runs on.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Serves until `shutdown` resolves, then stops as [`Application::stop`] does.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        shutdown.await;
        self.stop().await
    }

    /// Stops accepting, lets requests in flight and the events being applied finish
    /// (for at most [`SHUTDOWN_GRACE`]), and returns when all is done.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let Self {
            tasks,
            server,
            sandbox,
            ingest,
            ..
        } = self;
        let drain = async {
            let served = server.await;
            // Every request has been answered, so no event waits to be stored.
            ingest.abort();
            for t in tasks {
                let _ = t.await;
            }
            served.context("server task")?.context("server")
        };
        let result = match tokio::time::timeout(SHUTDOWN_GRACE, drain).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "gave up waiting after {} s for requests in flight and the workers",
                SHUTDOWN_GRACE.as_secs()
            )),
        };
        // The sandbox goes last: requests in flight may still have been calling it.
        drop(sandbox);
        result
    }
}

/// Proves the key works before anything is served: a wrong or revoked key stops the start
/// with what to do; Stripe not answering is tried again a few times first.
pub async fn check_key(gateway: &Gateway, base: &str) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        let err = match gateway.check_key(KEY_CHECK_TIMEOUT).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match &err {
            GatewayError::Rejected {
                status: 401,
                message,
                ..
            } => bail!(
                "Stripe ({base}) refused STRIPE_SECRET_KEY: {message} (401). The key is wrong, revoked or expired: \
                 copy the secret or restricted key again from the Stripe Dashboard, Developers, API keys"
            ),
            GatewayError::Rejected {
                status: 403,
                message,
                ..
            } => bail!(
                "Stripe ({base}) knows STRIPE_SECRET_KEY but it may not read customers: {message} (403). \
                 A restricted key needs the permissions listed in the README (Going live)"
            ),
            GatewayError::Rejected { .. } => {
                bail!("Stripe ({base}) refused the key check: {err}")
            }
            _ if attempt < KEY_CHECK_ATTEMPTS => {
                tracing::warn!(error = %err, attempt, "checking the Stripe key: Stripe did not answer; trying again");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                attempt += 1;
            }
            _ => bail!(
                "cannot check STRIPE_SECRET_KEY: {err} (at {base}, {KEY_CHECK_ATTEMPTS} attempts). \
                 Check this machine's network and STRIPE_API_BASE; Tollgate starts only once Stripe answers"
            ),
        }
    }
}

/// The built-in sandbox, running, with the webhook endpoint made for this run.
struct Builtin {
    sandbox: stripe_sandbox::Sandbox,
    gateway: Gateway,
    /// Where Tollgate calls its API (loopback, whatever address its pages are linked from).
    api_base: String,
    secret: String,
    state_path: Option<PathBuf>,
}

/// Starts the sandbox on its state file, removes the webhook endpoints earlier runs made
/// (their URLs and secrets are gone with those runs) and makes one for this run: the
/// sandbox shows an endpoint's secret only when it creates it.
async fn start_builtin_sandbox(settings: &Settings, public_url: &str) -> anyhow::Result<Builtin> {
    let state_path = settings.sandbox_state_path();
    let config = stripe_sandbox::Config {
        state_path: state_path.clone(),
        public_url: settings.sandbox_public_url.clone(),
        ..stripe_sandbox::Config::default()
    };
    let sandbox = stripe_sandbox::Sandbox::start(config, settings.sandbox_listen)
        .await
        .with_context(|| {
            format!(
                "starting the built-in Stripe sandbox on {} (TOLLGATE_SANDBOX_LISTEN) with state {}",
                settings.sandbox_listen,
                state_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "in memory".into())
            )
        })?;
    let mut local = sandbox.addr();
    if local.ip().is_unspecified() {
        local.set_ip(if local.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let api_base = format!("http://{local}");
    let gateway = Gateway::new(SANDBOX_KEY, Some(&api_base))
        .map_err(|e| anyhow::anyhow!("the built-in sandbox's client: {e}"))?;
    for old in gateway
        .list_webhook_endpoints()
        .await
        .context("listing the built-in sandbox's webhook endpoints")?
        .into_iter()
        .filter(|e| e.metadata.get(BUILTIN_MARK.0).map(String::as_str) == Some(BUILTIN_MARK.1))
    {
        gateway
            .delete_webhook_endpoint(&old.id)
            .await
            .with_context(|| format!("deleting the earlier run's webhook endpoint {}", old.id))?;
    }
    let endpoint = gateway
        .create_webhook_endpoint(
            &format!("{public_url}/webhooks/stripe"),
            HANDLED,
            "Tollgate (built-in sandbox)",
            [(BUILTIN_MARK.0.to_owned(), BUILTIN_MARK.1.to_owned())].into(),
        )
        .await
        .context("registering the webhook endpoint with the built-in sandbox")?;
    let secret = endpoint
        .secret
        .context("the built-in sandbox returned no webhook secret")?;
    tracing::warn!(sandbox = %sandbox.url(), "no STRIPE_SECRET_KEY: running against the built-in offline Stripe sandbox; no real money moves");
    Ok(Builtin {
        sandbox,
        gateway,
        api_base,
        secret,
        state_path,
    })
}

/// On PostgreSQL, every committed change of access is announced on the access channel (by
/// the transaction that made it, so a crash cannot lose the announcement); this keeps the
/// local index in step, and rebuilds it whole after a lost connection and every minute.
async fn follow_access_changes(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut full_reload = tokio::time::interval(Duration::from_secs(60));
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(state.store.url()).await {
            Ok(mut l) => match l.listen(tollgate_store::ACCESS_CHANNEL).await {
                Ok(()) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for access changes failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "connecting the access listener failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        reload(&state).await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = full_reload.tick() => reload(&state).await,
                n = listener.recv() => match n {
                    Ok(n) => {
                        let mut parts = n.payload().split(' ');
                        let (tenant, customer, by) = (parts.next(), parts.next(), parts.next());
                        // This instance applied its own changes when it made them.
                        if by == Some(state.store.instance_id()) {
                            continue;
                        }
                        if let (Some(t), Some(c)) = (
                            tenant.and_then(|t| TenantId::parse(t).ok()),
                            customer.and_then(|c| CustomerId::parse(c).ok()),
                        ) {
                            state.refresh_customer(t, c).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "access listener lost its connection; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

async fn reload(state: &AppState) {
    if let Err(e) = state.reload_access().await {
        tracing::warn!(error = %e, "reloading the access index failed");
    }
}
