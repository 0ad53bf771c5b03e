//! The load driver for Tollgate's throughput floors, run against a release `tollgate serve`
//! and a `tollgate sandbox`, each in its own process so that CPU is told apart per process
//! (Tollgate, the PostgreSQL backends, the sandbox, this driver).
//!
//! - `ack`: signed, real-sized `customer.subscription.updated` events sent by many senders;
//!   measures acknowledgement only (rate, latency percentiles, Tollgate's CPU).
//! - `apply`: 2,000 subscriptions made through Tollgate, changed in Stripe, then 10,000
//!   events about them; measures from the first send until every event is applied, checks
//!   that the mirror equals Stripe's state, and reports CPU per applied event.
//!
//! Why a driver of our own: no off-the-shelf load tool sends a distinct body with a fresh
//! Stripe signature per request, and Tollgate stores each event id once, so replaying one
//! body would measure duplicates.
//!
//! ```sh
//! cargo bench -p tollgate --bench load -- ack --engine sqlite
//! cargo bench -p tollgate --bench load -- apply --engine postgres --latency-ms 0,150
//! ```
//!
//! `scripts/bench.sh` runs both on both engines with the access bench and prints a summary.

// Stripe's objects are deep: `json!` needs more room to expand them.
#![recursion_limit = "256"]

mod ack;
mod api;
mod apply;
mod events;
mod procs;
mod report;
mod send;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "load", about = "Load driver for Tollgate's webhook floors")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Passed by `cargo bench` to every bench target; nothing to do with it.
    #[arg(long, global = true, hide = true)]
    bench: bool,
}

#[derive(Subcommand)]
enum Scenario {
    /// Acknowledgement: signed events in, 2xx out; nothing waits for the worker.
    Ack(ack::AckArgs),
    /// Subscription events applied end to end, at a given Stripe latency.
    Apply(apply::ApplyArgs),
}

/// The database engine Tollgate runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    Sqlite,
    Postgres,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Sqlite => "sqlite",
            EngineKind::Postgres => "postgres",
        }
    }

    /// The engine's display name, for reports.
    pub fn label(self) -> &'static str {
        match self {
            EngineKind::Sqlite => "SQLite",
            EngineKind::Postgres => "PostgreSQL",
        }
    }
}

/// What every scenario takes.
#[derive(Args, Clone)]
pub struct Common {
    /// The database Tollgate runs on: a fresh SQLite file, or a fresh PostgreSQL database.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub engine: EngineKind,
    /// Concurrent senders, each on its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    pub senders: usize,
    /// A PostgreSQL server the bench may create and drop databases on.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    /// Appends the results as one JSON line to this file (`scripts/bench.sh` reads it).
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Keeps the run's directory (logs, the SQLite file) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Two threads: the machine has two cores, shared with Tollgate and its database.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.scenario {
            Scenario::Ack(args) => ack::run(args).await,
            Scenario::Apply(args) => apply::run(args).await,
        }
    })
}
