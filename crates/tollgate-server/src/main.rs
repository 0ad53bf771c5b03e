//! The `tollgate` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use tollgate::Settings;
use tollgate_domain::{ApiKeyId, TenantId};
use tollgate_store::{InboxFilter, Store};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Billing for platforms that sell through Stripe on behalf of many tenants"
)]
struct Cli {
    /// A KEY=VALUE settings file; the environment wins over it.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API, the webhook endpoint and the workers.
    Serve,
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
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its id and its first API key (shown once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "usd")]
        currency: String,
        #[arg(long, default_value_t = 0)]
        platform_fee_bps: u32,
        #[arg(long, default_value_t = 0)]
        organization_fee_bps: u32,
        #[arg(long)]
        success_url: Option<String>,
        #[arg(long)]
        cancel_url: Option<String>,
    },
    /// List tenants.
    List,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Issue another API key for a tenant.
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke an API key.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        key: String,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Put stored events back in the queue: one by id, or every dead letter.
    Replay {
        #[arg(long, conflicts_with = "dead", required_unless_present = "dead")]
        id: Option<String>,
        #[arg(long)]
        dead: bool,
    },
}

async fn store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(&settings.database_url)
        .await
        .with_context(|| {
            format!(
                "connecting to {}",
                tollgate_store::redact_url(&settings.database_url)
            )
        })?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

fn print(value: serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo prints its own story; the service logs at info.
    let default_filter = if matches!(cli.command, Command::Demo) {
        "warn"
    } else {
        "info,sqlx=warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            let app = tollgate::Application::build(settings).await?;
            eprintln!("tollgate listening on http://{}", app.addr());
            if let Some(s) = app.sandbox() {
                eprintln!(
                    "NO STRIPE_SECRET_KEY: using the built-in offline Stripe sandbox at {} (test mode, no real money)",
                    s.url()
                );
            }
            app.run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
        }
        Command::Migrate => {
            store(&settings).await?;
            eprintln!(
                "migrations applied to {}",
                tollgate_store::redact_url(&settings.database_url)
            );
            Ok(())
        }
        Command::Demo => tollgate::demo::run(settings).await,
        Command::Tenant(TenantCommand::Create {
            name,
            currency,
            platform_fee_bps,
            organization_fee_bps,
            success_url,
            cancel_url,
        }) => {
            let input = tollgate::http::admin_settings(
                name,
                currency,
                platform_fee_bps,
                organization_fee_bps,
                success_url,
                cancel_url,
            )
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let (tenant, key) = store(&settings).await?.create_tenant(&input).await?;
            print(json!({ "tenant_id": tenant.id, "api_key": key.secret, "api_key_id": key.id }))
        }
        Command::Tenant(TenantCommand::List) => print(serde_json::to_value(
            store(&settings).await?.list_tenants().await?,
        )?),
        Command::Key(KeyCommand::Create { tenant }) => {
            let t = TenantId::parse(&tenant).context("not a tenant id")?;
            let key = store(&settings)
                .await?
                .create_key(&t)
                .await
                .context("no such tenant")?;
            print(json!({ "tenant_id": t, "api_key": key.secret, "api_key_id": key.id }))
        }
        Command::Key(KeyCommand::Revoke { tenant, key }) => {
            let t = TenantId::parse(&tenant).context("not a tenant id")?;
            let k = ApiKeyId::parse(&key).context("not a key id (key_...)")?;
            store(&settings)
                .await?
                .revoke_key(&t, &k)
                .await
                .context("no such live key for this tenant")?;
            print(json!({ "id": k, "revoked": true }))
        }
        Command::Events(EventsCommand::Replay { id, dead }) => {
            let store = store(&settings).await?;
            let ids: Vec<String> = match id {
                Some(id) => vec![id],
                None if dead => store
                    .inbox_list(
                        &InboxFilter {
                            tenant_id: None,
                            status: Some("dead".into()),
                        },
                        10_000,
                    )
                    .await?
                    .into_iter()
                    .map(|e| e.event_id)
                    .collect(),
                None => vec![],
            };
            let mut queued = 0;
            for id in &ids {
                if store.inbox_replay(id).await? {
                    queued += 1;
                } else {
                    eprintln!("no stored event {id}");
                }
            }
            eprintln!("{queued} event(s) queued again; a running `tollgate serve` applies them");
            Ok(())
        }
        Command::Sandbox { listen, api_key } => {
            let config = stripe_sandbox::Config {
                api_key,
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
