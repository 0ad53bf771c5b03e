//! Tollgate's storage: SQLite (the embedded default) and PostgreSQL behind one seam.
//!
//! Both engines run through sqlx's `Any` driver with the same SQL: the schema and the
//! queries keep to what both accept (`$n` parameters, `ON CONFLICT`, `RETURNING`, partial
//! indexes, CHECK constraints), so there is one implementation to test twice rather than
//! two to keep in step. Work is claimed with a lease (`UPDATE ... WHERE lease expired ...
//! RETURNING`), which is safe on both engines and lets any instance die at any time.
//! Every method that reads or writes tenant data takes the tenant first.

mod access;
mod billing;
mod catalog;
mod customers;
mod idempotency;
mod inbox;
mod orders;
mod plans;
mod purchases;
mod subscriptions;
mod tenants;
mod usage;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

pub use billing::{Coupon, NewCoupon, NewPromotionCode, PriceMigration, PromotionCode};
pub use catalog::{NewPrice, NewProduct, Price, Product, ProductUpdate};
pub use customers::Customer;
pub use idempotency::{IDEMPOTENCY_RETENTION_MS, IdempotencyOutcome};
pub use inbox::{InboxEvent, InboxFilter, NewInboxEvent};
pub use orders::{Booking, NewOrder, NewOrderItem, Order, OrderItem, StaleOrder};
pub use plans::{Entitlement, Meter};
pub use purchases::{
    DUPLICATE_PURCHASE, Grant, GrantSource, GrantTarget, NewPurchase, Purchase, PurchaseFilter,
    RefundRecord,
};
pub use subscriptions::{Subscription, SubscriptionFilter, SubscriptionRecord};
pub use tenants::{DEFAULT_GRACE_PERIOD_DAYS, IssuedKey, NewTenant, PortalSettings, Tenant};
pub use usage::{NewUsage, UsageRecord, UsageToReport};

/// The PostgreSQL channel on which a committed change of a customer's access is announced
/// (`"<tenant> <customer>"`), so that every instance refreshes its index.
pub const ACCESS_CHANNEL: &str = "tollgate_access";

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A storage failure. Constraint violations are named so that callers can answer 409.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict on {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Maps sqlx's error, naming unique violations by the constraint or index.
    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                // Postgres names the constraint; SQLite names the columns in its message.
                let name = db
                    .constraint()
                    .map(str::to_owned)
                    .unwrap_or_else(|| db.message().to_owned());
                StoreError::Conflict(name)
            }
            _ => StoreError::Database(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn db<T>(r: std::result::Result<T, sqlx::Error>) -> Result<T> {
    r.map_err(StoreError::from_sqlx)
}

/// Unix milliseconds, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The store: a connection pool and the engine behind it.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    url: String,
}

impl Store {
    /// Connects to `sqlite://path` (created if missing) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else {
            return Err(StoreError::Unavailable(format!(
                "unsupported database URL (use sqlite://FILE or postgres://...): {}",
                redact_url(url)
            )));
        };
        let url = match engine {
            // Create the file on first start, and wait on a busy database instead of failing.
            Engine::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                // SQLite has one writer; a few connections serve reads while it writes.
                Engine::Sqlite => 4,
                Engine::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { pool, engine, url })
    }

    /// Applies the embedded migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The URL this store connected with (for a listener on the same database).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a transaction that reads and then writes would otherwise fail with SQLITE_BUSY when
    /// another connection wrote in between, and busy_timeout does not cover that case.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.engine {
            Engine::Sqlite => db(self.pool.begin_with("BEGIN IMMEDIATE").await),
            Engine::Postgres => db(self.pool.begin().await),
        }
    }

    /// The one row `sql` finds by tenant (`$1`) and id (`$2`), read by `from_row`;
    /// `NotFound` when there is none.
    pub(crate) async fn one<T>(
        &self,
        sql: &str,
        tenant: &tollgate_domain::TenantId,
        id: &str,
        from_row: fn(&sqlx::any::AnyRow) -> std::result::Result<T, sqlx::Error>,
    ) -> Result<T> {
        let row = db(sqlx::query(sql)
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await)?
        .ok_or(StoreError::NotFound)?;
        db(from_row(&row))
    }

    /// Records the Stripe id of one of the tenant's rows in `table` (`stripe_<column>_id`).
    pub(crate) async fn set_stripe_id(
        &self,
        table: &'static str,
        column: &'static str,
        tenant: &tollgate_domain::TenantId,
        id: &str,
        stripe_id: &str,
    ) -> Result<()> {
        db(sqlx::query(&format!(
            "UPDATE {table} SET {column} = $3 WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .bind(stripe_id)
        .execute(&self.pool)
        .await)?;
        Ok(())
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// A database URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// SHA-256 hex of a secret; API keys are stored only as this.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://tollgate.db"), "sqlite://tollgate.db");
    }
}
