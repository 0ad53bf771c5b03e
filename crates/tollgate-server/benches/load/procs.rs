//! The processes under test: a `tollgate sandbox` and a `tollgate serve` pointed at it, on a
//! fresh SQLite file or a fresh PostgreSQL database; and what `/proc` says about their CPU
//! and memory.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection, Row};

use crate::EngineKind;

/// The Tollgate binary run: `TOLLGATE_BIN` if set (to compare two builds on one machine
/// with one driver), else the release binary built alongside this bench target.
pub fn tollgate_bin() -> String {
    std::env::var("TOLLGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tollgate").to_owned())
}
/// Any `sk_test_` key opens the sandbox.
pub const STRIPE_KEY: &str = "sk_test_bench_load";
/// The secret the driver signs events with and Tollgate verifies them with.
pub const WEBHOOK_SECRET: &str = "whsec_bench_load_secret";

/// The sandbox and Tollgate, running; stopped (and the database dropped) by [`Stack::stop`].
pub struct Stack {
    pub engine: EngineKind,
    pub dir: PathBuf,
    pub database_url: String,
    pub tollgate_url: String,
    pub sandbox_url: String,
    tollgate: Child,
    sandbox: Child,
    postgres: Option<Postgres>,
    keep: bool,
}

/// The database made for this run, and a connection to the server's maintenance database
/// to drop it and to find the backends serving it.
struct Postgres {
    admin: PgConnection,
    database: String,
}

impl Stack {
    pub async fn start(engine: EngineKind, postgres_url: &str, keep: bool) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (database_url, postgres) = match engine {
            EngineKind::Sqlite => (format!("sqlite://{}", dir.join("bench.db").display()), None),
            EngineKind::Postgres => {
                let (url, pg) = Postgres::create(postgres_url).await?;
                (url, Some(pg))
            }
        };
        let sandbox_port = free_port()?;
        let sandbox_url = format!("http://127.0.0.1:{sandbox_port}");
        let sandbox = spawn(
            Command::new(tollgate_bin())
                .args(["sandbox", "--listen", &format!("127.0.0.1:{sandbox_port}")])
                .env_remove("STRIPE_SANDBOX_API_KEY")
                .env_remove("TOLLGATE_SANDBOX_STATE"),
            &dir.join("sandbox.log"),
        )?;
        let tollgate_port = free_port()?;
        let tollgate_url = format!("http://127.0.0.1:{tollgate_port}");
        let mut tollgate_cmd = Command::new(tollgate_bin());
        tollgate_cmd.arg("serve");
        configure(&mut tollgate_cmd, &database_url, &sandbox_url);
        tollgate_cmd.env("TOLLGATE_LISTEN", format!("127.0.0.1:{tollgate_port}"));
        let tollgate = spawn(&mut tollgate_cmd, &dir.join("tollgate.log"))?;
        let mut stack = Self {
            engine,
            dir,
            database_url,
            tollgate_url,
            sandbox_url,
            tollgate,
            sandbox,
            postgres,
            keep,
        };
        if let Err(e) = stack.wait_ready().await {
            let dir = stack.dir.clone();
            stack.keep = true;
            stack.stop().await?;
            return Err(e.context(format!("logs in {}", dir.display())));
        }
        Ok(stack)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        for (name, url) in [
            (
                "the sandbox",
                format!("{}/_sandbox/faults", self.sandbox_url),
            ),
            ("tollgate", format!("{}/healthz", self.tollgate_url)),
        ] {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(r) = http.get(&url).send().await
                    && r.status().is_success()
                {
                    break;
                }
                for (child, what) in [
                    (&mut self.sandbox, "sandbox"),
                    (&mut self.tollgate, "tollgate"),
                ] {
                    if let Some(status) = child.try_wait()? {
                        bail!("{what} exited before it was ready ({status})");
                    }
                }
                if Instant::now() > deadline {
                    bail!("{name} did not answer {url} within a minute");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Runs a `tollgate` operator command on the same database and reads its JSON.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut cmd = Command::new(tollgate_bin());
        cmd.args(args);
        configure(&mut cmd, &self.database_url, &self.sandbox_url);
        let out = cmd.output().context("running tollgate")?;
        if !out.status.success() {
            bail!(
                "tollgate {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("reading tollgate's JSON")
    }

    /// CPU used so far by each process of interest.
    pub async fn cpu(&mut self) -> anyhow::Result<CpuSample> {
        let postgres = match &mut self.postgres {
            Some(pg) => {
                let mut ticks = HashMap::new();
                for (pid, backend) in pg.serving_pids().await? {
                    // A backend may end between the query and the read.
                    if let Ok(t) = cpu_ticks(pid) {
                        ticks.insert(pid, (t, backend));
                    }
                }
                Some(ticks)
            }
            None => None,
        };
        Ok(CpuSample {
            at: Instant::now(),
            tollgate: cpu_ticks(self.tollgate.id())?,
            sandbox: cpu_ticks(self.sandbox.id())?,
            driver: cpu_ticks(std::process::id())?,
            postgres,
        })
    }

    /// Tollgate's peak resident set so far (VmHWM), in bytes.
    pub fn tollgate_peak_rss(&self) -> anyhow::Result<u64> {
        peak_rss(self.tollgate.id())
    }

    /// Keeps the run's directory after [`Stack::stop`] (a run that failed keeps its logs).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// On PostgreSQL, gathers the planner's statistics of the run's database, as autovacuum
    /// does for any table that has grown, before a phase is measured. Without them, the
    /// plans each connection cached while the tables were empty stay in use for the whole
    /// short run (a customer's subscriptions found by walking the tenant's index, say),
    /// which is not what a deployment that has run a minute sees.
    pub async fn analyze(&self) -> anyhow::Result<()> {
        if self.postgres.is_some() {
            let mut conn = PgConnection::connect(&self.database_url).await?;
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
        Ok(())
    }

    /// Where the logs are, for messages.
    pub fn logs(&self) -> String {
        format!(
            "{} and {}",
            self.dir.join("tollgate.log").display(),
            self.dir.join("sandbox.log").display()
        )
    }

    /// Stops both processes, drops the run's database and deletes its directory (unless
    /// asked to keep it).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for child in [&mut self.tollgate, &mut self.sandbox] {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pg) = self.postgres.take() {
            pg.drop_database().await?;
        }
        if self.keep {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(())
    }
}

/// The settings `tollgate serve` and its operator commands share: this run's database and
/// the sandbox as Stripe. The sandbox has no webhook endpoint, so it delivers nothing:
/// the only events Tollgate receives are the driver's.
fn configure(cmd: &mut Command, database_url: &str, sandbox_url: &str) {
    cmd.env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_DATABASE_URL", database_url)
        .env("STRIPE_SECRET_KEY", STRIPE_KEY)
        .env("STRIPE_API_BASE", sandbox_url)
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        // The setup opens thousands of Checkout Sessions for one tenant.
        .env("TOLLGATE_CHECKOUT_RATE_PER_MINUTE", "1000000");
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", cmd.get_program().display()))
}

/// A port nobody listens on now (the child binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Postgres {
    async fn create(admin_url: &str) -> anyhow::Result<(String, Self)> {
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {}", tollgate_store::redact_url(admin_url)))?;
        let database = format!("tollgate_bench_{}", std::process::id());
        sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {database}"))?;
        let mut url = url::Url::parse(admin_url).context("the PostgreSQL URL")?;
        url.set_path(&database);
        Ok((url.to_string(), Self { admin, database }))
    }

    /// The server's processes that work for this run, each with whether it is a backend
    /// of this run's database (`true`) or a background process (WAL writer, checkpointer,
    /// ...) that works for every database (`false`). Backends of other databases on a
    /// shared server are left out.
    async fn serving_pids(&mut self) -> anyhow::Result<Vec<(u32, bool)>> {
        let rows = sqlx::query(
            "SELECT pid, datname IS NOT NULL AS backend FROM pg_stat_activity \
             WHERE (datname = $1 OR datname IS NULL) AND pid <> pg_backend_pid()",
        )
        .bind(&self.database)
        .fetch_all(&mut self.admin)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let pid = u32::try_from(r.try_get::<i32, _>("pid").ok()?).ok()?;
                Some((pid, r.try_get::<bool, _>("backend").ok()?))
            })
            .collect())
    }

    async fn drop_database(mut self) -> anyhow::Result<()> {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        ))
        .execute(&mut self.admin)
        .await
        .with_context(|| format!("dropping database {}", self.database))?;
        Ok(())
    }
}

/// CPU clock ticks (user + system) a process has used: fields 14 and 15 of
/// `/proc/PID/stat`, counted after the command name, which may hold spaces.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("a /proc stat line without a command name")?;
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// `VmHWM` of `/proc/PID/status`, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmHWM")?
        .parse()?;
    Ok(kb * 1024)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU ticks of each process at one moment.
pub struct CpuSample {
    at: Instant,
    tollgate: u64,
    sandbox: u64,
    driver: u64,
    /// Per PostgreSQL process, with whether it is a backend of this run's database;
    /// `None` on SQLite.
    postgres: Option<HashMap<u32, (u64, bool)>>,
}

/// CPU seconds each process used between two samples.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CpuUsage {
    pub wall_s: f64,
    pub tollgate_s: f64,
    /// The backends connected to this run's database.
    pub postgres_backends_s: Option<f64>,
    /// The server's background processes, which work for every database on the server.
    pub postgres_background_s: Option<f64>,
    pub sandbox_s: f64,
    pub driver_s: f64,
}

impl CpuUsage {
    /// Tollgate and everything PostgreSQL did (its backends and its background).
    pub fn tollgate_and_database_s(&self) -> f64 {
        self.tollgate_s
            + self.postgres_backends_s.unwrap_or(0.0)
            + self.postgres_background_s.unwrap_or(0.0)
    }

    /// This usage less `times` times `other`'s, per process (never below zero); the wall
    /// time stays.
    pub fn less(&self, other: &CpuUsage, times: f64) -> CpuUsage {
        let less = |a: f64, b: f64| (a - b * times).max(0.0);
        let less_opt = |a: Option<f64>, b: Option<f64>| a.map(|a| less(a, b.unwrap_or(0.0)));
        CpuUsage {
            wall_s: self.wall_s,
            tollgate_s: less(self.tollgate_s, other.tollgate_s),
            postgres_backends_s: less_opt(self.postgres_backends_s, other.postgres_backends_s),
            postgres_background_s: less_opt(
                self.postgres_background_s,
                other.postgres_background_s,
            ),
            sandbox_s: less(self.sandbox_s, other.sandbox_s),
            driver_s: less(self.driver_s, other.driver_s),
        }
    }
}

impl CpuSample {
    pub fn since(&self, before: &CpuSample) -> CpuUsage {
        let hz = clock_ticks_per_second();
        let secs = |after: u64, before: u64| after.saturating_sub(before) as f64 / hz;
        // A process that started during the phase counts from zero.
        let postgres = |backends: bool| match (&self.postgres, &before.postgres) {
            (Some(after), Some(before)) => Some(
                after
                    .iter()
                    .filter(|(_, (_, backend))| *backend == backends)
                    .map(|(pid, (t, _))| secs(*t, before.get(pid).map_or(0, |(b, _)| *b)))
                    .sum(),
            ),
            _ => None,
        };
        CpuUsage {
            wall_s: self.at.duration_since(before.at).as_secs_f64(),
            tollgate_s: secs(self.tollgate, before.tollgate),
            postgres_backends_s: postgres(true),
            postgres_background_s: postgres(false),
            sandbox_s: secs(self.sandbox, before.sandbox),
            driver_s: secs(self.driver, before.driver),
        }
    }
}
