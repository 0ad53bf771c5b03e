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
mod disputes;
mod idempotency;
mod inbox;
mod orders;
mod plans;
mod purchases;
mod refund_requests;
mod subscriptions;
mod tenants;
mod usage;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, ConnectOptions, Row};

pub use billing::{Coupon, Discount, NewCoupon, NewPromotionCode, PriceMigration, PromotionCode};
pub use catalog::{NewPrice, NewProduct, Price, Product, ProductUpdate, Recurring};
pub use customers::{Customer, CustomerFilter};
pub use disputes::{Dispute, DisputeRecord};
pub use idempotency::{IDEMPOTENCY_RETENTION, IdempotencyOutcome};
pub use inbox::{Claimed, InboxEvent, InboxFilter, NewInboxEvent};
pub use orders::{Booking, NewOrder, NewOrderItem, Order, OrderItem, StaleOrder};
pub use plans::{Entitlement, Meter};
pub use purchases::{
    Grant, GrantSource, GrantTarget, NewPurchase, Purchase, PurchaseFilter, RefundRecord,
    StripeRefund,
};
pub use refund_requests::{Opened, RefundRefusal, RefundRequest};
pub use subscriptions::{Subscription, SubscriptionFilter, SubscriptionItem, SubscriptionRecord};
pub use tenants::{
    ApiKey, DEFAULT_GRACE_PERIOD_DAYS, IssuedKey, NewTenant, PortalSettings, Tenant,
};
pub use usage::{NewUsage, UsageRecord, UsageToReport};

use tollgate_domain::{CustomerId, ProductId, TenantId, Timestamp};

/// The PostgreSQL channel on which a committed change of a customer's access is announced
/// (`"<tenant> <customer> <instance>"`), so that every other instance refreshes its index.
pub const ACCESS_CHANNEL: &str = "tollgate_access";

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

macro_rules! constraints {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, sqlite: $sqlite:literal;)+) => {
        /// The constraints a write can run into, named the same on both engines.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Constraint {
            $($(#[$doc])* $variant,)+
        }

        impl Constraint {
            /// The constraint's (or unique index's) name in the schema.
            pub fn name(self) -> &'static str {
                match self { $(Constraint::$variant => $name,)+ }
            }

            /// PostgreSQL names the constraint; SQLite names the columns of a unique
            /// constraint (`UNIQUE constraint failed: t.a, t.b`), the index of a unique
            /// index on an expression, or the constraint of a CHECK.
            fn find(pg_name: Option<&str>, message: &str) -> Option<Constraint> {
                let all = [$(Constraint::$variant),+];
                if let Some(name) = pg_name {
                    return all.into_iter().find(|c| c.name() == name);
                }
                let detail = message
                    .split_once("constraint failed: ")
                    .map(|(_, d)| d.trim())
                    .unwrap_or(message);
                all.into_iter().find(|c| {
                    let sqlite = match *c { $(Constraint::$variant => $sqlite,)+ };
                    detail == sqlite
                        || detail == c.name()
                        || detail == format!("index '{}'", c.name())
                })
            }
        }
    };
}

constraints! {
    /// One customer per tenant and external user id.
    CustomersTenantExternalUser = "customers_tenant_external_user", sqlite: "customers.tenant_id, customers.external_user_id";
    /// A lookup key names one price of a tenant.
    PricesTenantLookupKey = "prices_tenant_lookup_key", sqlite: "prices.tenant_id, prices.lookup_key";
    /// One purchase per product per payment.
    PurchasesPaymentIntentProduct = "purchases_payment_intent_product", sqlite: "purchases.stripe_payment_intent_id, purchases.product_id";
    /// At most one owned purchase per customer and product.
    PurchasesOneActivePerCustomerProduct = "purchases_one_active_per_customer_product", sqlite: "purchases.tenant_id, purchases.customer_id, purchases.product_id";
    /// One purchase per order item.
    PurchasesOrderItem = "purchases_order_item_id_key", sqlite: "purchases.order_item_id";
    /// A plan grants a product once.
    EntitlementsPlanProduct = "entitlements_plan_product", sqlite: "entitlements.plan_id, entitlements.product_id";
    /// A plan grants a feature once.
    EntitlementsPlanFeature = "entitlements_plan_feature", sqlite: "entitlements.plan_id, entitlements.feature";
    /// A promotion code is unique per tenant, whatever its case.
    PromotionCodesTenantCode = "promotion_codes_tenant_code", sqlite: "index 'promotion_codes_tenant_code'";
    /// Usage is recorded once per idempotency key.
    UsageRecordsTenantKey = "usage_records_tenant_key", sqlite: "usage_records.tenant_id, usage_records.idempotency_key";
    /// One meter per tenant and event name.
    MetersTenantEvent = "meters_tenant_event", sqlite: "meters.tenant_id, meters.event_name";
    /// A Checkout Session belongs to one order.
    OrdersCheckoutSession = "orders_stripe_checkout_session_id_key", sqlite: "orders.stripe_checkout_session_id";
    /// A Stripe refund is recorded once.
    RefundsStripeRefund = "refunds_stripe_refund_id_key", sqlite: "refunds.stripe_refund_id";
    /// A Stripe subscription is mirrored once.
    SubscriptionsStripeSubscription = "subscriptions_stripe_subscription_id_key", sqlite: "subscriptions.stripe_subscription_id";
    /// A purchase's split adds up to its amount.
    PurchasesSplitAddsUp = "purchases_split_adds_up", sqlite: "purchases_split_adds_up";
    /// Refunds never exceed the amount.
    PurchasesRefundWithinAmount = "purchases_refund_within_amount", sqlite: "purchases_refund_within_amount";
    /// Fees add up to at most 100%.
    TenantsFeesAtMost100Percent = "tenants_fees_at_most_100_percent", sqlite: "tenants_fees_at_most_100_percent";
}

/// A storage failure. Constraint violations are named so that callers can answer each as
/// it deserves; nothing here carries an engine's own wording.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint: the row exists already.
    #[error("conflict on {}", .0.name())]
    Conflict(Constraint),
    /// An event has no seats left for an order.
    #[error("no seats left for {0}")]
    SoldOut(ProductId),
    /// The database refused a value (a CHECK constraint, an unstorable character): input
    /// that should have been refused before it got here.
    #[error("the database refused a value: {0}")]
    Refused(String),
    /// The database cannot be reached, or is overloaded.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Maps sqlx's error, naming constraint violations.
    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                if db.is_unique_violation() {
                    match Constraint::find(db.constraint(), db.message()) {
                        Some(c) => StoreError::Conflict(c),
                        None => StoreError::Refused(format!("unique: {}", db.message())),
                    }
                } else if db.is_check_violation() || db.is_foreign_key_violation() {
                    let name = Constraint::find(db.constraint(), db.message())
                        .map(|c| c.name().to_owned())
                        .unwrap_or_else(|| db.message().to_owned());
                    StoreError::Refused(name)
                } else if matches!(code.as_ref(), "22021" | "22P02" | "22003" | "54000") {
                    // Bad byte sequence (a NUL), invalid text for a type, a number out of
                    // range, or a value too large to index.
                    StoreError::Refused(db.message().to_owned())
                } else if matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "08006" | "08003" | "08001"
                ) || code.starts_with("08")
                {
                    StoreError::Unavailable(db.message().to_owned())
                } else {
                    StoreError::Database(e)
                }
            }
            _ => StoreError::Database(e),
        }
    }

    /// Worth trying again later: the database may answer then.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                // Serialization failures and deadlocks are lost races, not bad requests.
                matches!(db.code().as_deref(), Some("40001" | "40P01"))
                    || db.message().contains("database is locked")
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn db<T>(r: std::result::Result<T, sqlx::Error>) -> Result<T> {
    r.map_err(StoreError::from_sqlx)
}

/// `$first, $first+1, ...`: `n` numbered parameters, for a list in `IN (...)`.
pub(crate) fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The customers whose access a committed write changed. The caller refreshes them in
/// the access index (other instances hear of them through the database).
#[must_use = "refresh these customers' access"]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessChanges(Vec<(TenantId, CustomerId)>);

impl AccessChanges {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn one(tenant: &TenantId, customer: &CustomerId) -> Self {
        Self(vec![(tenant.clone(), customer.clone())])
    }

    pub(crate) fn add(&mut self, tenant: &TenantId, customer: &CustomerId) {
        let key = (tenant.clone(), customer.clone());
        if !self.0.contains(&key) {
            self.0.push(key);
        }
    }

    /// Adds another write's changes.
    pub fn merge(&mut self, other: AccessChanges) {
        for (t, c) in other.0 {
            self.add(&t, &c);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_inner(self) -> Vec<(TenantId, CustomerId)> {
        self.0
    }
}

/// Reads a column holding one of a string enum's values.
pub(crate) fn enum_col<T>(
    row: &AnyRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> std::result::Result<T, sqlx::Error> {
    let s: String = row.try_get(column)?;
    parse(&s).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unknown value '{s}'").into(),
    })
}

/// Reads a nullable column holding one of a string enum's values.
pub(crate) fn opt_enum_col<T>(
    row: &AnyRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> std::result::Result<Option<T>, sqlx::Error> {
    match row.try_get::<Option<String>, _>(column)? {
        None => Ok(None),
        Some(s) => parse(&s)
            .map(Some)
            .ok_or_else(|| sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: format!("unknown value '{s}'").into(),
            }),
    }
}

/// Reads a time column.
pub(crate) fn ts_col(row: &AnyRow, column: &str) -> std::result::Result<Timestamp, sqlx::Error> {
    row.try_get::<i64, _>(column).map(Timestamp::from_secs)
}

/// Reads a nullable time column.
pub(crate) fn opt_ts_col(
    row: &AnyRow,
    column: &str,
) -> std::result::Result<Option<Timestamp>, sqlx::Error> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(Timestamp::from_secs))
}

/// Reads a flag stored as 0/1.
pub(crate) fn flag_col(row: &AnyRow, column: &str) -> std::result::Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

/// Reads a nullable text column into an id-like type.
pub(crate) fn opt_id_col<T>(
    row: &AnyRow,
    column: &str,
    wrap: fn(String) -> T,
) -> std::result::Result<Option<T>, sqlx::Error> {
    Ok(row.try_get::<Option<String>, _>(column)?.map(wrap))
}

/// Reads a text column into an id-like type.
pub(crate) fn id_col<T>(
    row: &AnyRow,
    column: &str,
    wrap: fn(String) -> T,
) -> std::result::Result<T, sqlx::Error> {
    Ok(wrap(row.try_get::<String, _>(column)?))
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The store: a connection pool and the engine behind it.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    url: String,
    instance: Arc<Instance>,
}

/// This process, as other instances on the same database know it: an id, and on
/// PostgreSQL a session-level advisory lock on that id, held on a connection of its own for
/// as long as the process lives. The database drops the lock when the process dies (a kill
/// -9, a crash, a lost host), so another instance can tell a live holder of a claim from a
/// dead one at once.
struct Instance {
    id: String,
    /// Numbers of subscription reads reserved and not yet handed out, `(last handed out,
    /// last reserved)` (SQLite only; see [`Store::next_sync_seq`]).
    seq_block: tokio::sync::Mutex<(i64, i64)>,
    /// Turns for SQLite's write lock (see [`Store::begin`]).
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The connection holding the advisory lock (PostgreSQL only).
    _holder: Option<tokio::sync::Mutex<sqlx::AnyConnection>>,
    /// The connection webhook batches are written on, kept between batches (PostgreSQL
    /// only; see [`Store::inbox_insert_many`]).
    inbox_conn: tokio::sync::Mutex<Option<sqlx::AnyConnection>>,
}

/// A transaction of the store: it reads and writes through its connection as sqlx's own
/// does, and on SQLite holds this process's turn for the write lock until it ends.
pub(crate) struct Tx<'a> {
    inner: sqlx::Transaction<'a, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx<'_> {
    pub(crate) async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.inner.commit().await
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// How long a pooled PostgreSQL connection sits idle before it is tested again before use.
const TEST_WHEN_IDLE: Duration = Duration::from_secs(1);

/// The advisory lock key of an instance id.
const INSTANCE_LOCK: &str = "hashtextextended('tollgate-instance:' || $1, 0)";

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
                Engine::Sqlite => 8,
                Engine::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(5))
            // sqlx tests every connection given back to the pool with a round trip, and by
            // default every one it hands out too: two round trips to the server per use.
            // Only a PostgreSQL connection that has sat idle a while is tested before use
            // (it may have been cut off: the server restarted, a proxy timed it out); one
            // given back moments ago was tested then, so under load nothing is tested
            // twice. An SQLite connection is a file of this process, not a peer that can go
            // away between uses; testing it was a round trip to its thread for every query.
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if engine == Engine::Postgres && meta.idle_for >= TEST_WHEN_IDLE {
                        use sqlx::Connection;
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        use sqlx::Executor;
                        // `synchronous = FULL`: a commit (an acknowledged webhook among
                        // them) is on disk before it returns, surviving a power cut or an
                        // OS crash, not only a process crash as NORMAL does in WAL mode.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let id = tollgate_domain::random_token();
        let holder = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => {
                let mut conn = db(pool.acquire().await)?.detach();
                db(
                    sqlx::query(&format!("SELECT pg_advisory_lock({INSTANCE_LOCK})"))
                        .bind(&id)
                        .execute(&mut conn)
                        .await,
                )?;
                Some(tokio::sync::Mutex::new(conn))
            }
        };
        Ok(Self {
            pool,
            engine,
            url,
            instance: Arc::new(Instance {
                id,
                seq_block: tokio::sync::Mutex::new((0, 0)),
                writer: Arc::new(tokio::sync::Mutex::new(())),
                _holder: holder,
                inbox_conn: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// This process's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance.id
    }

    /// Whether the instance with this id is alive. SQLite serves one instance, so any other
    /// id belongs to a process that has ended; on PostgreSQL the instance's advisory lock
    /// says (taking it for the length of a transaction succeeds only if its holder is gone).
    pub async fn instance_alive(&self, id: &str) -> Result<bool> {
        if id == self.instance.id {
            return Ok(true);
        }
        match self.engine {
            Engine::Sqlite => Ok(false),
            Engine::Postgres => {
                let mut tx = db(self.pool.begin().await)?;
                let free: bool = db(sqlx::query(&format!(
                    "SELECT pg_try_advisory_xact_lock({INSTANCE_LOCK}) AS free"
                ))
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get("free")))?;
                db(tx.commit().await)?;
                Ok(!free)
            }
        }
    }

    /// Applies the embedded migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        if self.engine == Engine::Postgres {
            self.compress_payloads_with_lz4().await;
            self.create_sync_sequence().await?;
        }
        Ok(())
    }

    /// On PostgreSQL, the numbers of subscription reads come from a sequence (see
    /// `next_sync_seq`), created here once and started past the counter that served before
    /// it. Engine-specific, so not a migration (the migrations are shared). Instances
    /// starting together take turns through the counter's lock.
    async fn create_sync_sequence(&self) -> Result<()> {
        const EXISTS: &str = "SELECT to_regclass('subscription_sync_seq') IS NOT NULL";
        // Every start but the first finds it and takes no lock.
        if db(sqlx::query_scalar::<_, bool>(EXISTS)
            .fetch_one(&self.pool)
            .await)?
        {
            return Ok(());
        }
        let mut tx = db(self.pool.begin().await)?;
        db(sqlx::query("LOCK TABLE sync_counters IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await)?;
        let exists: bool = db(sqlx::query_scalar(EXISTS).fetch_one(&mut *tx).await)?;
        if !exists {
            db(sqlx::query("CREATE SEQUENCE subscription_sync_seq")
                .execute(&mut *tx)
                .await)?;
            db(sqlx::query(
                "SELECT setval('subscription_sync_seq', \
                 (SELECT value FROM sync_counters WHERE name = 'subscriptions') + 1, false)",
            )
            .execute(&mut *tx)
            .await)?;
        }
        db(tx.commit().await)
    }

    /// On PostgreSQL, event bodies (2–5 kB, over the size at which PostgreSQL compresses a
    /// value) are compressed with lz4 rather than the default pglz, which took a fifth of
    /// the database's time when storing webhooks. Engine-specific, so not a migration (the
    /// migrations are shared); a server built without lz4 keeps pglz, which is only slower.
    async fn compress_payloads_with_lz4(&self) {
        let current: std::result::Result<Option<String>, sqlx::Error> = sqlx::query_scalar(
            "SELECT attcompression::text FROM pg_attribute \
             WHERE attrelid = 'webhook_payloads'::regclass AND attname = 'payload'",
        )
        .fetch_optional(&self.pool)
        .await;
        if matches!(current.as_ref().map(|c| c.as_deref()), Ok(Some("l"))) {
            return;
        }
        if let Err(e) =
            sqlx::query("ALTER TABLE webhook_payloads ALTER COLUMN payload SET COMPRESSION lz4")
                .execute(&self.pool)
                .await
        {
            tracing::warn!(error = %e, "event bodies stay compressed with pglz");
        }
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
    /// Transactions of this process take turns for that lock in order of arrival, before
    /// they take a connection: SQLite's own wait for a busy lock sleeps in growing steps
    /// (up to 100 ms), which under load turns a queue of writers into long stalls. Only
    /// transactions take turns: a single statement run on the pool still meets SQLite's
    /// own wait, which suits the writes off the hot paths that do so.
    pub(crate) async fn begin(&self) -> Result<Tx<'static>> {
        match self.engine {
            Engine::Sqlite => {
                let turn = self.instance.writer.clone().lock_owned().await;
                Ok(Tx {
                    inner: db(self.pool.begin_with("BEGIN IMMEDIATE").await)?,
                    _turn: Some(turn),
                })
            }
            Engine::Postgres => Ok(Tx {
                inner: db(self.pool.begin().await)?,
                _turn: None,
            }),
        }
    }

    /// The one row `sql` finds by tenant (`$1`) and id (`$2`), read by `from_row`;
    /// `NotFound` when there is none.
    pub(crate) async fn one<T>(
        &self,
        sql: &str,
        tenant: &TenantId,
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
        tenant: &TenantId,
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

    /// A landed migration is never edited: a database that ran it would refuse to start
    /// (sqlx keeps each migration's checksum). `migrations.lock` lists every landed
    /// migration with its SHA-256; a new migration adds its line there.
    #[test]
    fn migrations_that_landed_are_never_edited() {
        use sha2::Digest;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let lock = std::fs::read_to_string(dir.join("migrations.lock")).unwrap();
        let landed: std::collections::BTreeMap<&str, &str> = lock
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_once(' '))
            .collect();
        let mut present = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir.join("migrations")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()));
            present.insert(name, sha);
        }
        for (name, sha) in &landed {
            match present.get(*name) {
                Some(now) => assert_eq!(
                    now, sha,
                    "{name} landed and was edited since: add a new migration instead"
                ),
                None => panic!("{name} landed and is gone: migrations are never removed"),
            }
        }
        for name in present.keys() {
            assert!(
                landed.contains_key(name.as_str()),
                "{name} is new: add its line to migrations.lock (name and SHA-256)"
            );
        }
    }

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://tollgate.db"), "sqlite://tollgate.db");
    }
}
