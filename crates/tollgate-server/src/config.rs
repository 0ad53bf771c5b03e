//! Settings: flags of `tollgate serve`, each with an environment variable and a default,
//! read by clap, so that `tollgate serve --help` lists every one of them. A `KEY=VALUE`
//! file given with `--config` fills only what the environment does not set (see
//! [`load_file`]). Values are checked here, before anything starts, with messages that say
//! what to do; names of `TOLLGATE_*` variables nobody reads are reported with the nearest
//! known one (see [`unknown_settings`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tollgate.db";
pub const DEFAULT_CHECKOUT_RATE_PER_MINUTE: u32 = 600;
pub const DEFAULT_WORKERS: usize = 64;
pub const DEFAULT_SANDBOX_LISTEN: &str = "127.0.0.1:0";
/// The built-in sandbox's state file with PostgreSQL (no database file to sit beside).
pub const POSTGRES_SANDBOX_STATE: &str = "tollgate-sandbox.json";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything `tollgate serve` needs to start.
#[derive(Clone, clap::Args)]
#[command(next_help_heading = "Settings (flag, environment variable, default)")]
pub struct Settings {
    /// Address to serve on: an IP address and a port (0.0.0.0:8080 for every interface).
    #[arg(long = "listen", env = "TOLLGATE_LISTEN", default_value = DEFAULT_LISTEN, value_parser = parse_listen, value_name = "IP:PORT")]
    pub listen: SocketAddr,

    /// The database: sqlite://FILE or postgres://USER:PASSWORD@HOST:PORT/DB. Migrations run on start.
    #[arg(long = "database-url", env = "TOLLGATE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true, value_name = "URL")]
    pub database_url: String,

    /// Stripe secret (sk_live_/sk_test_) or restricted (rk_live_/rk_test_) key. Without it, the built-in sandbox runs in-process.
    #[arg(
        long = "stripe-secret-key",
        env = "STRIPE_SECRET_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub stripe_secret_key: Option<String>,

    /// Another Stripe-compatible API (stripe-mock, `tollgate sandbox`) instead of Stripe's.
    #[arg(long = "stripe-api-base", env = "STRIPE_API_BASE", value_name = "URL")]
    pub stripe_api_base: Option<String>,

    /// The webhook endpoint's signing secret (whsec_...); several comma-separated during a rotation. Required with a key.
    #[arg(
        long = "stripe-webhook-secret",
        env = "STRIPE_WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        value_parser = trimmed,
        value_name = "WHSEC"
    )]
    pub stripe_webhook_secrets: Vec<String>,

    /// Operator key (tg_admin_..., at least 24 characters): enables the operator routes /v1/tenants.
    #[arg(
        long = "admin-key",
        env = "TOLLGATE_ADMIN_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub admin_key: Option<String>,

    /// Where Stripe and browsers reach this service (default URLs, the webhook endpoint). Default: http:// and the bound address.
    #[arg(long = "public-url", env = "TOLLGATE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Checkout Sessions a tenant may create per minute.
    #[arg(long = "checkout-rate-per-minute", env = "TOLLGATE_CHECKOUT_RATE_PER_MINUTE", default_value_t = DEFAULT_CHECKOUT_RATE_PER_MINUTE, value_name = "N")]
    pub checkout_rate_per_minute: u32,

    /// Stripe events applied at once by this process (events about one object still one at a time); 0 makes an instance that only stores events (another instance on the same PostgreSQL applies them).
    #[arg(long = "workers", env = "TOLLGATE_WORKERS", default_value_t = DEFAULT_WORKERS, value_name = "N")]
    pub workers: usize,

    /// Built-in sandbox only: the file its state is kept in across restarts. Default: beside the SQLite database (FILE.sandbox.json), or tollgate-sandbox.json in the working directory with PostgreSQL.
    #[arg(
        long = "sandbox-state",
        env = "TOLLGATE_SANDBOX_STATE",
        value_name = "FILE"
    )]
    pub sandbox_state: Option<PathBuf>,

    /// Built-in sandbox only: the address its API and hosted pages listen on (port 0: any free port).
    #[arg(long = "sandbox-listen", env = "TOLLGATE_SANDBOX_LISTEN", default_value = DEFAULT_SANDBOX_LISTEN, value_parser = parse_sandbox_listen, value_name = "IP:PORT")]
    pub sandbox_listen: SocketAddr,

    /// Built-in sandbox only: where browsers on other hosts reach its hosted Checkout and portal pages. Default: http:// and its bound address.
    #[arg(
        long = "sandbox-public-url",
        env = "TOLLGATE_SANDBOX_PUBLIC_URL",
        value_name = "URL"
    )]
    pub sandbox_public_url: Option<String>,

    /// Log line format: text (coloured on a terminal only) or json (one object per line). RUST_LOG filters what is logged.
    #[arg(long = "log-format", env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, ignore_case = true, value_name = "FORMAT")]
    pub log_format: LogFormat,
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
            .field("sandbox_state", &self.sandbox_state)
            .field("sandbox_listen", &self.sandbox_listen)
            .field("sandbox_public_url", &self.sandbox_public_url)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Default for Settings {
    /// The defaults `serve --help` shows (the same constants).
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DEFAULT_DATABASE_URL.into(),
            stripe_secret_key: None,
            stripe_api_base: None,
            stripe_webhook_secrets: vec![],
            admin_key: None,
            public_url: None,
            checkout_rate_per_minute: DEFAULT_CHECKOUT_RATE_PER_MINUTE,
            workers: DEFAULT_WORKERS,
            sandbox_state: None,
            sandbox_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sandbox_public_url: None,
            log_format: LogFormat::Text,
        }
    }
}

/// `Settings` as a command of its own, to read them from the environment alone (for the
/// commands that take no settings flags).
#[derive(Parser)]
#[command(name = "tollgate")]
struct SettingsOnly {
    #[command(flatten)]
    settings: Settings,
}

/// An address to listen on. A host name is refused with the address to write instead:
/// binding resolves nothing, and `localhost` may mean two addresses.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    listen_address(value).map_err(|e| format!("TOLLGATE_LISTEN: {e}"))
}

fn parse_sandbox_listen(value: &str) -> Result<SocketAddr, String> {
    listen_address(value).map_err(|e| format!("TOLLGATE_SANDBOX_LISTEN: {e}"))
}

fn listen_address(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let hint = match value.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            if host.eq_ignore_ascii_case("localhost") {
                format!(
                    "write 127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface)"
                )
            } else {
                format!(
                    "'{host}' is not an IP address; write the address itself, such as 127.0.0.1:{port} or 0.0.0.0:{port}"
                )
            }
        }
        _ => "write an IP address and a port, such as 127.0.0.1:8080 or 0.0.0.0:8080".into(),
    };
    Err(format!("'{value}' is not an IP address and port: {hint}"))
}

impl Settings {
    /// The settings from the environment and defaults alone (after [`load_file`]).
    pub fn from_env() -> anyhow::Result<Self> {
        let clap_error = |e: clap::Error| {
            let text = e.render().to_string();
            anyhow::anyhow!("{}", text.trim().trim_start_matches("error: "))
        };
        let matches = ignore_empty_env(SettingsOnly::command())
            .no_binary_name(true)
            .try_get_matches_from(std::iter::empty::<String>())
            .map_err(clap_error)?;
        let s = SettingsOnly::from_arg_matches(&matches).map_err(clap_error)?;
        Ok(s.settings)
    }

    /// Reads the settings: `file` first (if given), then the environment on top. For
    /// callers outside the command line; the binary parses its flags with clap.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(path) = file {
            load_file(path)?;
        }
        let s = Self::from_env()?;
        s.check()?;
        Ok(s)
    }

    /// Refuses settings that cannot work, saying what to set instead. Secrets are never
    /// repeated in the messages.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(key) = &self.stripe_secret_key {
            StripeKeyKind::of(key)?;
            if self.stripe_webhook_secrets.is_empty() {
                bail!(
                    "STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not: Stripe's webhooks could not be verified. \
                     Run `tollgate stripe setup` to create the webhook endpoint and print its secret, or copy the \
                     endpoint's signing secret (whsec_...) from the Stripe Dashboard"
                );
            }
        }
        for secret in &self.stripe_webhook_secrets {
            if !secret.starts_with("whsec_") || secret.len() <= "whsec_".len() {
                bail!(
                    "STRIPE_WEBHOOK_SECRET must be webhook signing secrets (whsec_...), comma-separated; one starts with '{}'. \
                     Use the signing secret of the webhook endpoint (Stripe shows it when the endpoint is created; \
                     `tollgate stripe setup` prints it), not an API key",
                    prefix_of(secret)
                );
            }
        }
        if let Some(key) = &self.admin_key
            && (!key.starts_with("tg_admin_") || key.len() < 24)
        {
            bail!(
                "TOLLGATE_ADMIN_KEY must start with tg_admin_ and be at least 24 characters (for example tg_admin_ and 32 random letters)"
            );
        }
        for (name, url) in [
            ("TOLLGATE_PUBLIC_URL", &self.public_url),
            ("STRIPE_API_BASE", &self.stripe_api_base),
            ("TOLLGATE_SANDBOX_PUBLIC_URL", &self.sandbox_public_url),
        ] {
            if let Some(u) = url {
                match url::Url::parse(u) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                    _ => bail!(
                        "{name} must be an http:// or https:// URL, such as https://billing.example.com; got '{u}'"
                    ),
                }
            }
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            bail!(
                "TOLLGATE_DATABASE_URL must be sqlite://FILE or postgres://USER:PASSWORD@HOST:PORT/DB; got '{}'",
                tollgate_store::redact_url(&self.database_url)
            );
        }
        Ok(())
    }

    /// What kind of Stripe this instance talks to.
    pub fn stripe_mode(&self) -> StripeMode {
        match &self.stripe_secret_key {
            None => StripeMode::BuiltInSandbox,
            Some(k) => match StripeKeyKind::of(k) {
                Ok(kind) if kind.live => StripeMode::Live,
                _ => StripeMode::Test,
            },
        }
    }

    /// Where the built-in sandbox keeps its state: the setting, or beside the SQLite file,
    /// or `tollgate-sandbox.json` with PostgreSQL; `None` for an in-memory SQLite database.
    pub fn sandbox_state_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.sandbox_state {
            return Some(p.clone());
        }
        match self.database_url.strip_prefix("sqlite:") {
            Some(rest) => {
                let file = rest.trim_start_matches("//");
                let file = file.split('?').next().unwrap_or_default();
                if file.is_empty() || file == ":memory:" {
                    None
                } else {
                    Some(PathBuf::from(format!("{file}.sandbox.json")))
                }
            }
            None => Some(PathBuf::from(POSTGRES_SANDBOX_STATE)),
        }
    }
}

/// `cmd` with the environment variables that are set but empty (or blank) not read, as if
/// unset: `STRIPE_API_BASE=` in a settings file means "none", as it always has.
pub fn ignore_empty_env(mut cmd: clap::Command) -> clap::Command {
    let blank: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| {
            a.get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.to_string_lossy().trim().is_empty())
        })
        .map(|a| a.get_id().clone())
        .collect();
    for id in blank {
        cmd = cmd.mut_arg(id, |a| a.env(None));
    }
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subcommands {
        cmd = cmd.mut_subcommand(name, ignore_empty_env);
    }
    cmd
}

/// A value without the blanks around it (`whsec_a, whsec_b` is two secrets).
fn trimmed(value: &str) -> Result<String, String> {
    Ok(value.trim().to_owned())
}

/// The start of a value, up to its first `_` (at most 8 characters): enough to say what
/// kind of value it is without showing it.
fn prefix_of(value: &str) -> String {
    let head: String = value.chars().take(8).collect();
    match head.find('_') {
        Some(i) => format!("{}...", &head[..=i]),
        None => "(no prefix)".into(),
    }
}

/// Test or live, the built-in sandbox aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StripeMode {
    Test,
    Live,
    BuiltInSandbox,
}

impl StripeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StripeMode::Test => "test",
            StripeMode::Live => "live",
            StripeMode::BuiltInSandbox => "built-in sandbox",
        }
    }
}

/// What a Stripe API key is, from its prefix (docs.stripe.com/keys: secret keys start
/// `sk_live_`/`sk_test_`, restricted keys `rk_live_`/`rk_test_`, publishable keys `pk_`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeKeyKind {
    pub live: bool,
    pub restricted: bool,
}

impl StripeKeyKind {
    /// Accepts secret and restricted keys; refuses publishable keys and anything else with
    /// what to use instead.
    pub fn of(key: &str) -> anyhow::Result<Self> {
        let kind = if let Some(rest) = key.strip_prefix("sk_live_") {
            (true, false, rest)
        } else if let Some(rest) = key.strip_prefix("sk_test_") {
            (false, false, rest)
        } else if let Some(rest) = key.strip_prefix("rk_live_") {
            (true, true, rest)
        } else if let Some(rest) = key.strip_prefix("rk_test_") {
            (false, true, rest)
        } else if key.starts_with("pk_") {
            bail!(
                "STRIPE_SECRET_KEY is a publishable key (pk_...), which only browsers use. Tollgate needs a secret key \
                 (sk_live_/sk_test_) or a restricted key (rk_live_/rk_test_): Stripe Dashboard, Developers, API keys"
            );
        } else {
            bail!(
                "STRIPE_SECRET_KEY is not a Stripe secret key: it must start with sk_live_, sk_test_, rk_live_ or rk_test_ \
                 (it starts with '{}'). Copy it again from the Stripe Dashboard, Developers, API keys",
                prefix_of(key)
            );
        };
        let (live, restricted, rest) = kind;
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!(
                "STRIPE_SECRET_KEY is malformed: after its prefix it must be letters and digits only (no spaces, \
                 quotes or line breaks). Copy it again from the Stripe Dashboard, Developers, API keys"
            );
        }
        Ok(Self { live, restricted })
    }
}

/// Loads a `KEY=VALUE` file into the environment, leaving what the environment already
/// sets. Call it before any other thread starts (it writes the process environment).
/// Returns the names the file sets, for [`unknown_settings`].
pub fn load_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let names = dotenvy::from_path_iter(path)
        .with_context(|| format!("reading settings from {}", path.display()))?
        .map(|item| item.map(|(k, _)| k))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading settings from {}", path.display()))?;
    dotenvy::from_path(path)
        .with_context(|| format!("reading settings from {}", path.display()))?;
    Ok(names)
}

/// Variables Tollgate's own tools read (tests, benchmarks, scripts): known, but not settings.
const TOOL_VARIABLES: &[&str] = &[
    "TOLLGATE_CONFIG",
    "RUST_LOG",
    "NO_COLOR",
    "TOLLGATE_TEST_POSTGRES_URL",
    "TOLLGATE_REQUIRE_POSTGRES",
    "TOLLGATE_REQUIRE_BROWSER",
    "TOLLGATE_BENCH_DATABASE_URL",
    "TOLLGATE_BIN",
];

/// Every environment variable `tollgate serve` reads, in the order `--help` lists them.
pub fn setting_names() -> Vec<String> {
    SettingsOnly::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// Names among `names` that look like Tollgate's settings (in the environment, only
/// `TOLLGATE_*`; in a settings file, every name) but are none, each with the nearest known
/// name when one is close.
pub fn unknown_settings<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, Option<String>)> {
    let known = setting_names();
    let mut out = Vec::new();
    for name in names {
        if known.iter().any(|k| k == name) || TOOL_VARIABLES.contains(&name) {
            continue;
        }
        let nearest = known
            .iter()
            .map(|k| (strsim::levenshtein(k, name), k))
            .min_by_key(|(d, _)| *d)
            .filter(|(d, k)| *d <= (k.len() / 3).max(2))
            .map(|(_, k)| k.clone());
        out.push((name.to_owned(), nearest));
    }
    out
}

/// `TOLLGATE_*` variables of this process's environment that no setting reads.
pub fn unknown_environment() -> Vec<(String, Option<String>)> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("TOLLGATE_"))
        .collect();
    unknown_settings(names.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help() -> String {
        SettingsOnly::command().render_long_help().to_string()
    }

    #[test]
    fn every_setting_has_help_an_environment_variable_and_shows_its_default() {
        let cmd = SettingsOnly::command();
        let help = help();
        for arg in cmd.get_arguments().filter(|a| a.get_id() != "help") {
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("{} has no environment variable", arg.get_id()));
            assert!(arg.get_help().is_some(), "{} has no help", arg.get_id());
            assert!(help.contains(&*env.to_string_lossy()), "{help}");
        }
        for default in [
            DEFAULT_LISTEN,
            DEFAULT_DATABASE_URL,
            "600",
            DEFAULT_SANDBOX_LISTEN,
        ] {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{default}: {help}"
            );
        }
    }

    #[test]
    fn the_defaults_are_those_the_help_shows() {
        let parsed = SettingsOnly::try_parse_from(["tollgate"]).unwrap().settings;
        let d = Settings::default();
        // The environment of the test process may set some; compare those it does not.
        if std::env::var_os("TOLLGATE_LISTEN").is_none() {
            assert_eq!(parsed.listen, d.listen);
        }
        assert_eq!(DEFAULT_LISTEN.parse::<SocketAddr>().unwrap(), d.listen);
        assert_eq!(
            DEFAULT_SANDBOX_LISTEN.parse::<SocketAddr>().unwrap(),
            d.sandbox_listen
        );
        assert_eq!(parsed.log_format, d.log_format);
    }

    #[test]
    fn a_host_name_as_listen_address_says_what_to_write() {
        let e = parse_listen("localhost:8080").unwrap_err();
        assert!(e.contains("127.0.0.1:8080"), "{e}");
        let e = parse_listen("example.com:80").unwrap_err();
        assert!(e.contains("not an IP address"), "{e}");
        let e = parse_listen("8080").unwrap_err();
        assert!(e.contains("127.0.0.1:8080"), "{e}");
        assert_eq!(
            parse_listen(" 0.0.0.0:9000 ").unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 9000))
        );
    }

    #[test]
    fn stripe_keys_are_told_apart_by_prefix() {
        let k = StripeKeyKind::of("sk_live_abc123").unwrap();
        assert!(k.live && !k.restricted);
        let k = StripeKeyKind::of("rk_test_abc123").unwrap();
        assert!(!k.live && k.restricted);
        let e = StripeKeyKind::of("pk_test_abc").unwrap_err().to_string();
        assert!(e.contains("publishable"), "{e}");
        let e = StripeKeyKind::of("sk_tset_abc").unwrap_err().to_string();
        assert!(e.contains("must start with"), "{e}");
        assert!(!e.contains("abc"), "the key is not repeated: {e}");
        let e = StripeKeyKind::of("sk_test_abc def")
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed"), "{e}");
        assert!(StripeKeyKind::of("sk_test_").is_err());
    }

    #[test]
    fn a_webhook_secret_that_is_not_whsec_is_refused_without_showing_it() {
        let s = Settings {
            stripe_secret_key: Some("sk_test_123".into()),
            stripe_webhook_secrets: vec!["whsec_ok".into(), "sk_test_oops".into()],
            ..Settings::default()
        };
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("whsec_"), "{e}");
        assert!(!e.contains("oops"), "{e}");
        let s = Settings {
            stripe_secret_key: Some("sk_test_123".into()),
            ..Settings::default()
        };
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .contains("tollgate stripe setup")
        );
    }

    #[test]
    fn webhook_secrets_are_split_on_commas_and_trimmed() {
        let s = SettingsOnly::try_parse_from([
            "tollgate",
            "--stripe-webhook-secret",
            "whsec_a, whsec_b",
        ])
        .unwrap()
        .settings;
        assert_eq!(s.stripe_webhook_secrets, vec!["whsec_a", "whsec_b"]);
        let s = SettingsOnly::try_parse_from(["tollgate", "--stripe-webhook-secret", "whsec_a,"])
            .unwrap()
            .settings;
        let with_key = Settings {
            stripe_secret_key: Some("sk_test_1".into()),
            ..s
        };
        assert!(
            with_key.check().is_err(),
            "an empty secret is never accepted"
        );
    }

    #[test]
    fn unknown_settings_name_the_nearest_known_one() {
        let found = unknown_settings([
            "TOLLGATE_LISTN",
            "TOLLGATE_LISTEN",
            "TOLLGATE_REQUIRE_POSTGRES",
            "TOLLGATE_DATABSE_URL",
            "TOLLGATE_SOMETHING_ELSE_ENTIRELY",
            "STRIPE_SECRET",
        ]);
        assert_eq!(
            found,
            vec![
                ("TOLLGATE_LISTN".into(), Some("TOLLGATE_LISTEN".into())),
                (
                    "TOLLGATE_DATABSE_URL".into(),
                    Some("TOLLGATE_DATABASE_URL".into())
                ),
                ("TOLLGATE_SOMETHING_ELSE_ENTIRELY".into(), None),
                ("STRIPE_SECRET".into(), Some("STRIPE_SECRET_KEY".into())),
            ]
        );
    }

    fn repo_file(name: &str) -> String {
        std::fs::read_to_string(format!("{}/../../{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_readme_table_lists_exactly_the_settings_in_order() {
        let readme = repo_file("README.md");
        let start = readme
            .find("<!-- settings:start -->")
            .expect("settings block");
        let end = readme
            .find("<!-- settings:end -->")
            .expect("settings block end");
        let listed: Vec<String> = readme[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_owned)
            .collect();
        assert_eq!(listed, setting_names());
    }

    #[test]
    fn the_example_settings_file_has_every_setting_and_no_other() {
        let example = repo_file("deploy/tollgate.env.example");
        let names: Vec<String> = example
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .map(str::to_owned)
            .collect();
        for name in setting_names() {
            assert!(names.contains(&name), "{name} is missing from the example");
        }
        assert_eq!(unknown_settings(names.iter().map(String::as_str)), vec![]);
    }

    #[test]
    fn the_sandbox_state_sits_beside_the_sqlite_file() {
        let at = |url: &str| {
            Settings {
                database_url: url.into(),
                ..Settings::default()
            }
            .sandbox_state_path()
        };
        assert_eq!(
            at("sqlite://tollgate.db"),
            Some(PathBuf::from("tollgate.db.sandbox.json"))
        );
        assert_eq!(
            at("sqlite:///var/lib/tollgate/t.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/tollgate/t.db.sandbox.json"))
        );
        assert_eq!(at("sqlite::memory:"), None);
        assert_eq!(
            at("postgres://u@h/db"),
            Some(PathBuf::from(POSTGRES_SANDBOX_STATE))
        );
    }
}
