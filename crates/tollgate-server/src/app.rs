//! Building and running the service: storage, Stripe (or the built-in sandbox), the HTTP
//! API and the workers, under one stop signal. `Application::build` binds first (port 0 in
//! tests) and reports the address.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_domain::{CustomerId, TenantId};
use tollgate_store::{Engine, Store};
use tollgate_stripe::Gateway;

use crate::config::Settings;
use crate::state::AppState;

/// The key Tollgate uses with its built-in sandbox.
const SANDBOX_KEY: &str = "sk_test_tollgate_builtin_sandbox";

pub struct Application {
    addr: SocketAddr,
    state: AppState,
    sandbox: Option<stripe_sandbox::Sandbox>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ingest: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        Self::build_on(listener, settings).await
    }

    /// Builds on a listener bound already (tests bind first to learn the address).
    pub async fn build_on(listener: TcpListener, settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database_url)
            .await
            .with_context(|| {
                format!(
                    "connecting to {}",
                    tollgate_store::redact_url(&settings.database_url)
                )
            })?;
        store.migrate().await.context("applying migrations")?;
        let addr = listener.local_addr()?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));

        let (stripe, secrets, sandbox) = match &settings.stripe_secret_key {
            Some(key) => {
                let gateway = Gateway::new(key, settings.stripe_api_base.as_deref())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                (gateway, settings.stripe_webhook_secrets.clone(), None)
            }
            None => {
                let sandbox = stripe_sandbox::Sandbox::start(
                    stripe_sandbox::Config::default(),
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                )
                .await
                .context("starting the built-in Stripe sandbox")?;
                let secret =
                    register_webhook(&sandbox.url(), &format!("{public_url}/webhooks/stripe"))
                        .await?;
                let gateway = Gateway::new(SANDBOX_KEY, Some(&sandbox.url()))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                tracing::warn!(sandbox = %sandbox.url(), "no STRIPE_SECRET_KEY: running against the built-in offline Stripe sandbox; no real money moves");
                (gateway, vec![secret], Some(sandbox))
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
        let app = crate::http::router(state.clone());
        let mut server_stop = stopped.clone();
        let server = tokio::spawn(async move {
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

    /// Serves until `shutdown` resolves, then stops the workers and waits for them.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        shutdown.await;
        self.stop().await
    }

    /// Stops serving and waits for in-flight work to end.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let served = self.server.await;
        // Every request has been answered, so no event waits to be stored.
        self.ingest.abort();
        for t in self.tasks {
            let _ = t.await;
        }
        served.context("server task")?.context("server")?;
        Ok(())
    }
}

/// Creates a webhook endpoint in the sandbox for every event and returns its secret.
async fn register_webhook(sandbox_url: &str, target: &str) -> anyhow::Result<String> {
    let res: serde_json::Value = reqwest::Client::new()
        .post(format!("{sandbox_url}/v1/webhook_endpoints"))
        .bearer_auth(SANDBOX_KEY)
        .form(&[("url", target), ("enabled_events[]", "*")])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .context("registering the webhook endpoint with the sandbox")?
        .json()
        .await?;
    res["secret"]
        .as_str()
        .map(str::to_owned)
        .context("the sandbox returned no webhook secret")
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
