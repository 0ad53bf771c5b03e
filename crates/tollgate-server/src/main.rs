//! The `tollgate` command: a thin shell over the library. Operator commands call the same
//! use cases as the API and print the same views; every failure exits non-zero.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tollgate::Settings;
use tollgate::config::{self, StripeKeyKind, StripeMode};
use tollgate::usecases::tenants::{self, Actor, TenantInput};
use tollgate::views::{ApiKeyView, EventView, IssuedKeyView, TenantView};
use tollgate_domain::status::InboxStatus;
use tollgate_domain::{ApiKeyId, Currency, StripeEventId, TenantId};
use tollgate_store::{InboxFilter, Store};

/// Every request allocates a few dozen short-lived values across two or more threads;
/// mimalloc's per-thread heaps serve that with less time in the allocator than glibc's
/// (a tenth of an access check's time was in malloc and free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Billing for platforms that sell through Stripe on behalf of many tenants",
    after_help = "Settings come from flags, the environment and a --config file, in that order of precedence; `tollgate serve --help` lists them all."
)]
struct Cli {
    /// A KEY=VALUE settings file (the names of the environment variables); the environment wins over it.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API, the webhook endpoint and the workers, until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Apply database migrations (serve does it on start too).
    Migrate,
    /// Start everything on defaults and walk one purchase end to end.
    Demo,
    /// Operator tasks on tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Operator tasks on API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Stored Stripe events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The Stripe account: the webhook endpoint Tollgate needs.
    #[command(subcommand)]
    Stripe(StripeCommand),
    /// Run the offline Stripe sandbox on its own.
    Sandbox {
        /// Address to listen on.
        #[arg(
            long,
            env = "TOLLGATE_SANDBOX_LISTEN",
            default_value = "127.0.0.1:12111"
        )]
        listen: SocketAddr,
        /// Accept only this secret key (default: any `sk_test_` key).
        #[arg(long, env = "STRIPE_SANDBOX_API_KEY")]
        api_key: Option<String>,
        /// Keep the sandbox's state in this file, across restarts.
        #[arg(long, env = "TOLLGATE_SANDBOX_STATE")]
        state: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum StripeCommand {
    /// Create or correct the webhook endpoint for TOLLGATE_PUBLIC_URL/webhooks/stripe, with exactly the event types Tollgate handles; prints what to set. Uses STRIPE_SECRET_KEY and STRIPE_API_BASE.
    Setup {
        /// This service's public address (default: TOLLGATE_PUBLIC_URL).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Change nothing: say what would change, and exit non-zero if anything would.
        #[arg(long)]
        check: bool,
    },
}

/// Settings a tenant command may set.
#[derive(clap::Args)]
struct TenantFlags {
    /// The tenant's name (1 to 200 characters).
    #[arg(long)]
    name: Option<String>,
    /// The tenant's default currency (a code Stripe charges in, such as usd).
    #[arg(long)]
    currency: Option<String>,
    /// The platform's cut in basis points (1000 = 10%).
    #[arg(long)]
    platform_fee_bps: Option<u32>,
    /// The organization's cut in basis points.
    #[arg(long)]
    organization_fee_bps: Option<u32>,
    /// Where Checkout returns after payment ({CHECKOUT_SESSION_ID}, {ORDER_ID} filled in).
    #[arg(long)]
    success_url: Option<String>,
    /// Where Checkout returns when the payer cancels.
    #[arg(long)]
    cancel_url: Option<String>,
    /// Where the customer portal returns ({CUSTOMER_ID} filled in).
    #[arg(long)]
    portal_return_url: Option<String>,
    /// Days a past_due subscription keeps its access (0 to 60).
    #[arg(long)]
    grace_period_days: Option<i64>,
}

impl TenantFlags {
    fn input(self) -> anyhow::Result<TenantInput> {
        let default_currency = self
            .currency
            .map(|c| Currency::parse(&c).map_err(|e| anyhow::anyhow!("--currency: {e}")))
            .transpose()?;
        Ok(TenantInput {
            name: self.name,
            default_currency,
            success_url_template: self.success_url,
            cancel_url_template: self.cancel_url,
            portal_return_url_template: self.portal_return_url,
            platform_fee_bps: self.platform_fee_bps,
            organization_fee_bps: self.organization_fee_bps,
            grace_period_days: self.grace_period_days,
            portal: None,
        })
    }
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints it with its first API key (shown once).
    Create(TenantFlags),
    /// List tenants.
    List,
    /// Show one tenant's settings.
    Show {
        /// The tenant's id (ten_...).
        #[arg(long)]
        tenant: String,
    },
    /// Change a tenant's settings (the platform fee among them).
    Update {
        /// The tenant's id (ten_...).
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        flags: TenantFlags,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Issue another API key for a tenant (shown once).
    Create {
        /// The tenant's id (ten_...).
        #[arg(long)]
        tenant: String,
    },
    /// List a tenant's keys (never their secrets).
    List {
        /// The tenant's id (ten_...).
        #[arg(long)]
        tenant: String,
    },
    /// Revoke an API key.
    Revoke {
        /// The tenant's id (ten_...).
        #[arg(long)]
        tenant: String,
        /// The key's id (key_...).
        #[arg(long)]
        key: String,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List stored events, newest first.
    List {
        /// Only this tenant's events (ten_...).
        #[arg(long)]
        tenant: Option<String>,
        /// Only events in this state: pending, processed, ignored or dead.
        #[arg(long)]
        status: Option<String>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put stored events back in the queue: one by id, or every dead letter.
    Replay {
        /// The Stripe event's id (evt_...).
        #[arg(long, conflicts_with = "dead", required_unless_present = "dead")]
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        dead: bool,
    },
}

async fn store(settings: &Settings) -> anyhow::Result<Store> {
    tollgate::database::open(&settings.database_url).await
}

fn print<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn tenant_id(s: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(s).map_err(|e| anyhow::anyhow!("--tenant: {e}"))
}

/// A use case's error, as the command line tells it.
fn fail(e: tollgate::error::Error) -> anyhow::Error {
    match &e.param {
        Some(p) => anyhow::anyhow!("{p}: {}", e.message),
        None => anyhow::anyhow!("{}", e.message),
    }
}

/// `--config FILE` (or `--config=FILE`, or `TOLLGATE_CONFIG`), read before clap parses the
/// rest: the file's values must be in the environment by then.
fn config_file() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(v) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("TOLLGATE_CONFIG").map(PathBuf::from)
}

fn main() -> ExitCode {
    // The settings file goes into the environment before any other thread exists.
    let file_names = match config_file() {
        Some(path) => match config::load_file(&path) {
            Ok(names) => names,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        None => vec![],
    };
    let cli = match config::ignore_empty_env(Cli::command())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, file_names)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if tollgate::logging::is_json() {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM or Ctrl-C (SIGINT), naming it.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops gracefully");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

fn live_mode_banner() {
    let bar = "=".repeat(72);
    eprintln!("{bar}");
    eprintln!("  LIVE MODE: STRIPE_SECRET_KEY is a live key. Real customers, real charges,");
    eprintln!("  real money. Test keys (sk_test_/rk_test_) and test cards do not work here.");
    eprintln!("{bar}");
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    settings.check()?;
    // Listening for the stop signals starts now: one during start-up ends it cleanly too.
    let stop = stop_signal();
    tokio::pin!(stop);
    let app = tokio::select! {
        app = tollgate::Application::build(settings) => app?,
        signal = &mut stop => {
            tracing::info!(signal, "stopped before start-up finished");
            return Ok(());
        }
    };
    let summary = app.summary().clone();
    // Banners are for people at a terminal or reading a journal; JSON logs get the same
    // news as log lines, and nothing else on stderr.
    let plain = !tollgate::logging::is_json();
    match summary.stripe_mode {
        StripeMode::Live => {
            if plain {
                live_mode_banner();
            }
            tracing::warn!("LIVE MODE: real customers, real charges, real money");
        }
        StripeMode::BuiltInSandbox if plain => eprintln!(
            "NO STRIPE_SECRET_KEY: using the built-in offline Stripe sandbox at {} (test mode, no real money)",
            summary
                .sandbox_public_url
                .as_deref()
                .unwrap_or(&summary.stripe_base)
        ),
        StripeMode::BuiltInSandbox | StripeMode::Test => {}
    }
    summary.log();
    app.run_until(async {
        let signal = stop.await;
        tracing::info!(
            signal,
            "stopping: no new connections; finishing requests in flight and the events being applied (a second signal stops at once)"
        );
        tokio::spawn(async {
            let signal = stop_signal().await;
            tracing::warn!(signal, "stopping at once");
            std::process::exit(130);
        });
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn run(cli: Cli, file_names: Vec<String>) -> anyhow::Result<()> {
    // The demo prints its own story; the service logs at info.
    // async-stripe warns of every error answer itself; the gateway logs them once, with
    // Stripe's request id.
    let default_filter = if matches!(cli.command, Command::Demo) {
        "warn,stripe=error"
    } else {
        "info,sqlx=warn,stripe=error"
    };
    let log_format = match &cli.command {
        Command::Serve(args) => args.settings.log_format,
        _ => Settings::from_env()
            .map(|s| s.log_format)
            .unwrap_or_default(),
    };
    tollgate::logging::init(log_format, default_filter);
    for (name, nearest) in config::unknown_settings(file_names.iter().map(String::as_str))
        .into_iter()
        .map(|u| (u, "the settings file"))
        .chain(
            config::unknown_environment()
                .into_iter()
                .map(|u| (u, "the environment")),
        )
        .map(|((name, nearest), place)| ((name, place), nearest))
    {
        let (name, place) = name;
        match nearest {
            Some(known) => tracing::warn!(
                "{name} in {place} is not a setting Tollgate reads; did you mean {known}? (`tollgate serve --help` lists them)"
            ),
            None => tracing::warn!(
                "{name} in {place} is not a setting Tollgate reads (`tollgate serve --help` lists them)"
            ),
        }
    }
    let settings = Settings::from_env;
    match cli.command {
        Command::Serve(args) => serve(args.settings).await,
        Command::Stripe(StripeCommand::Setup { public_url, check }) => {
            let settings = settings()?;
            let key = settings.stripe_secret_key.clone().context(
                "STRIPE_SECRET_KEY is not set: `tollgate stripe setup` works on a Stripe account (the built-in sandbox makes its own endpoint on every start)",
            )?;
            StripeKeyKind::of(&key)?;
            let public_url = public_url.or(settings.public_url.clone()).context(
                "TOLLGATE_PUBLIC_URL is not set: Stripe must be told where this service is reached (or pass --public-url https://...)",
            )?;
            let base = settings
                .stripe_api_base
                .clone()
                .unwrap_or_else(|| tollgate::app::STRIPE_API.into());
            let gateway = tollgate_stripe::Gateway::new(&key, settings.stripe_api_base.as_deref())
                .map_err(|e| anyhow::anyhow!("STRIPE_SECRET_KEY cannot be used: {e}"))?;
            tollgate::app::check_key(&gateway, &base).await?;
            let report = tollgate::setup::webhook_endpoint(&gateway, &public_url, !check)
                .await
                .map_err(|e| anyhow::anyhow!("setting up the webhook endpoint: {e:#}"))?;
            for line in tollgate::setup::next_steps(&report) {
                eprintln!("{line}");
            }
            print(&report)?;
            if check && report.changed_or_would_change() {
                bail!(
                    "the webhook endpoint is not as Tollgate needs it; run `tollgate stripe setup`"
                );
            }
            Ok(())
        }
        Command::Migrate => {
            let settings = settings()?;
            store(&settings).await?;
            eprintln!(
                "migrations applied to {}",
                tollgate_store::redact_url(&settings.database_url)
            );
            Ok(())
        }
        Command::Demo => tollgate::demo::run(settings()?).await,
        Command::Tenant(TenantCommand::Create(flags)) => {
            let input = flags.input()?;
            let (tenant, key) = tenants::create_tenant_in(&store(&settings()?).await?, input)
                .await
                .map_err(fail)?;
            print(&IssuedKeyView {
                tenant_id: tenant.id.clone(),
                api_key: key.secret,
                api_key_id: key.id,
                tenant: Some(TenantView::of(&tenant)),
            })
        }
        Command::Tenant(TenantCommand::List) => {
            let rows = store(&settings()?).await?.list_tenants().await?;
            print(&rows.iter().map(TenantView::of).collect::<Vec<_>>())
        }
        Command::Tenant(TenantCommand::Show { tenant }) => {
            let t = tenants::find(&store(&settings()?).await?, &tenant_id(&tenant)?)
                .await
                .map_err(fail)?;
            print(&TenantView::of(&t))
        }
        Command::Tenant(TenantCommand::Update { tenant, flags }) => {
            let (t, _changes) = tenants::update_tenant_in(
                &store(&settings()?).await?,
                &tenant_id(&tenant)?,
                flags.input()?,
                Actor::Operator,
            )
            .await
            .map_err(fail)?;
            // A running service learns of the change by itself (its key cache expires,
            // and on PostgreSQL the access changes are announced by the write).
            print(&TenantView::of(&t))
        }
        Command::Key(KeyCommand::Create { tenant }) => {
            let t = tenant_id(&tenant)?;
            let store = store(&settings()?).await?;
            tenants::find(&store, &t).await.map_err(fail)?;
            let key = store.create_key(&t).await?;
            print(&IssuedKeyView {
                tenant_id: t,
                api_key: key.secret,
                api_key_id: key.id,
                tenant: None,
            })
        }
        Command::Key(KeyCommand::List { tenant }) => {
            let t = tenant_id(&tenant)?;
            let store = store(&settings()?).await?;
            tenants::find(&store, &t).await.map_err(fail)?;
            let keys = store.list_keys(&t).await?;
            print(&keys.iter().map(ApiKeyView::of).collect::<Vec<_>>())
        }
        Command::Key(KeyCommand::Revoke { tenant, key }) => {
            let t = tenant_id(&tenant)?;
            let k = ApiKeyId::parse(&key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
            let store = store(&settings()?).await?;
            match store.revoke_key(&t, &k).await {
                Ok(()) => {}
                Err(tollgate_store::StoreError::NotFound) => {
                    bail!("no live key {k} for tenant {t}")
                }
                Err(e) => return Err(e.into()),
            }
            let keys = store.list_keys(&t).await?;
            match keys.iter().find(|x| x.id == k) {
                Some(key) => print(&ApiKeyView::of(key)),
                None => bail!("no key {k} for tenant {t}"),
            }
        }
        Command::Events(EventsCommand::List {
            tenant,
            status,
            limit,
        }) => {
            if !(1..=1000).contains(&limit) {
                bail!("--limit is 1 to 1000");
            }
            let filter = InboxFilter {
                tenant_id: tenant.as_deref().map(tenant_id).transpose()?,
                status: status
                    .as_deref()
                    .map(|s| {
                        InboxStatus::parse(s)
                            .with_context(|| format!("--status must be {}", InboxStatus::choices()))
                    })
                    .transpose()?,
                event_type: None,
            };
            let rows = store(&settings()?)
                .await?
                .inbox_list(&filter, limit, None)
                .await?;
            print(&rows.iter().map(EventView::of).collect::<Vec<_>>())
        }
        Command::Events(EventsCommand::Replay { id, dead }) => {
            let store = store(&settings()?).await?;
            let ids: Vec<StripeEventId> = match id {
                Some(id) => {
                    vec![StripeEventId::parse(&id).map_err(|e| anyhow::anyhow!("--id: {e}"))?]
                }
                None if dead => store
                    .inbox_list(
                        &InboxFilter {
                            tenant_id: None,
                            status: Some(InboxStatus::Dead),
                            event_type: None,
                        },
                        10_000,
                        None,
                    )
                    .await?
                    .into_iter()
                    .map(|e| e.event_id)
                    .collect(),
                None => vec![],
            };
            let mut queued = 0;
            let mut missing = Vec::new();
            for id in &ids {
                if store.inbox_replay(id).await? {
                    queued += 1;
                } else {
                    missing.push(id.to_string());
                }
            }
            eprintln!("{queued} event(s) queued again; a running `tollgate serve` applies them");
            if !missing.is_empty() {
                bail!("no stored event {}", missing.join(", "));
            }
            Ok(())
        }
        Command::Sandbox {
            listen,
            api_key,
            state,
        } => {
            let config = stripe_sandbox::Config {
                api_key,
                state_path: state,
                ..Default::default()
            };
            let sandbox = stripe_sandbox::Sandbox::start(config, listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            println!("Stripe sandbox listening on {}", sandbox.url());
            println!("Point a Stripe client at it, e.g.:");
            println!(
                "  curl {}/v1/customers -u sk_test_123: -d email=jenny@example.com",
                sandbox.url()
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            sandbox.stop();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of every command says what it is for.
    #[test]
    fn every_flag_of_every_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "{path} --{} has no help",
                    arg.get_id()
                );
            }
            for sub in cmd.get_subcommands() {
                assert!(
                    sub.get_about().is_some(),
                    "{path} {} has no help",
                    sub.get_name()
                );
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        walk(&cmd, "tollgate");
    }
}
