//! The catalogue: products (soft-deleted, never removed) and their prices.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::{ProductKind, ProductStatus, RecurringInterval, UsageType};
use tollgate_domain::{
    Amount, Currency, PriceId, ProductId, StripePriceId, StripeProductId, TenantId, Timestamp,
};

use crate::{
    Result, Store, StoreError, db, enum_col, id_col, opt_enum_col, opt_id_col, opt_ts_col, ts_col,
};

#[derive(Debug, Clone)]
pub struct Product {
    pub id: ProductId,
    pub tenant_id: TenantId,
    pub kind: ProductKind,
    pub title: String,
    pub description: Option<String>,
    pub status: ProductStatus,
    pub creator_id: Option<String>,
    pub capacity: Option<i64>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub stripe_product_id: Option<StripeProductId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

impl Product {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        let metadata: String = row.try_get("metadata")?;
        Ok(Self {
            id: id_col(row, "id", ProductId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            kind: enum_col(row, "kind", ProductKind::parse)?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            status: enum_col(row, "status", ProductStatus::parse)?,
            creator_id: row.try_get("creator_id")?,
            capacity: row.try_get("capacity")?,
            metadata: serde_json::from_str(&metadata).unwrap_or_default(),
            stripe_product_id: opt_id_col(row, "stripe_product_id", StripeProductId::from_db)?,
            created_at: ts_col(row, "created_at")?,
            updated_at: ts_col(row, "updated_at")?,
            deleted_at: opt_ts_col(row, "deleted_at")?,
        })
    }

    /// For sale: published and not deleted.
    pub fn is_sellable(&self) -> bool {
        self.status == ProductStatus::Published && self.deleted_at.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub kind: ProductKind,
    pub title: String,
    pub description: Option<String>,
    pub status: ProductStatus,
    pub creator_id: Option<String>,
    pub capacity: Option<i64>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductUpdate {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<ProductStatus>,
    pub capacity: Option<i64>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// How a recurring price bills: every `count` `interval`s, with trial days for new
/// subscriptions, a quantity bought or usage reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    pub interval: RecurringInterval,
    pub interval_count: i64,
    pub trial_days: Option<i64>,
    pub usage_type: UsageType,
    /// For a metered price: the usage events it bills.
    pub meter_event_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Price {
    pub id: PriceId,
    pub tenant_id: TenantId,
    pub product_id: ProductId,
    pub currency: Currency,
    pub unit_amount: Amount,
    pub recurring: Option<Recurring>,
    pub lookup_key: Option<String>,
    pub active: bool,
    pub stripe_price_id: Option<StripePriceId>,
    pub created_at: Timestamp,
}

impl Price {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        let interval = opt_enum_col(row, "recurring_interval", RecurringInterval::parse)?;
        let recurring = match interval {
            None => None,
            Some(interval) => Some(Recurring {
                interval,
                interval_count: row
                    .try_get::<Option<i64>, _>("recurring_interval_count")?
                    .unwrap_or(1),
                trial_days: row.try_get("trial_days")?,
                usage_type: enum_col(row, "usage_type", UsageType::parse)?,
                meter_event_name: row.try_get("meter_event_name")?,
            }),
        };
        Ok(Self {
            id: id_col(row, "id", PriceId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            product_id: id_col(row, "product_id", ProductId::from_db)?,
            currency: Currency::from_db(row.try_get("currency")?),
            unit_amount: Amount::from_db(row.try_get("unit_amount")?),
            recurring,
            lookup_key: row.try_get("lookup_key")?,
            active: crate::flag_col(row, "active")?,
            stripe_price_id: opt_id_col(row, "stripe_price_id", StripePriceId::from_db)?,
            created_at: ts_col(row, "created_at")?,
        })
    }

    pub fn is_recurring(&self) -> bool {
        self.recurring.is_some()
    }

    pub fn is_metered(&self) -> bool {
        self.recurring
            .as_ref()
            .is_some_and(|r| r.usage_type == UsageType::Metered)
    }

    /// The usage event name a metered price bills.
    pub fn meter_event_name(&self) -> Option<&str> {
        self.recurring
            .as_ref()
            .and_then(|r| r.meter_event_name.as_deref())
    }
}

#[derive(Debug, Clone)]
pub struct NewPrice {
    pub currency: Currency,
    pub unit_amount: Amount,
    pub recurring: Option<Recurring>,
    pub lookup_key: Option<String>,
}

const PRODUCT_COLUMNS: &str = "id, tenant_id, kind, title, description, status, creator_id, capacity, metadata, \
    stripe_product_id, created_at, updated_at, deleted_at";
const PRICE_COLUMNS: &str = "id, tenant_id, product_id, currency, unit_amount, recurring_interval, \
    recurring_interval_count, trial_days, lookup_key, active, stripe_price_id, usage_type, meter_event_name, created_at";

impl Store {
    pub async fn create_product(&self, tenant: &TenantId, p: &NewProduct) -> Result<Product> {
        let id = ProductId::generate();
        let now = Timestamp::now().secs();
        db(sqlx::query(
            "INSERT INTO products (id, tenant_id, kind, title, description, status, creator_id, capacity, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(p.kind.as_str())
        .bind(&p.title)
        .bind(&p.description)
        .bind(p.status.as_str())
        .bind(&p.creator_id)
        .bind(p.capacity)
        .bind(serde_json::Value::Object(p.metadata.clone()).to_string())
        .bind(now)
        .execute(&self.pool)
        .await)?;
        self.product(tenant, &id).await
    }

    /// A product, deleted or not (callers decide what a deleted one means).
    pub async fn product(&self, tenant: &TenantId, id: &ProductId) -> Result<Product> {
        self.one(
            &format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant_id = $1 AND id = $2"),
            tenant,
            id.as_str(),
            Product::from_row,
        )
        .await
    }

    pub async fn update_product(
        &self,
        tenant: &TenantId,
        id: &ProductId,
        u: &ProductUpdate,
    ) -> Result<Product> {
        let done = db(sqlx::query(
            "UPDATE products SET title = COALESCE($3, title), description = COALESCE($4, description), \
             status = COALESCE($5, status), capacity = COALESCE($6, capacity), metadata = COALESCE($7, metadata), \
             updated_at = $8 WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(&u.title)
        .bind(&u.description)
        .bind(u.status.map(|s| s.as_str()))
        .bind(u.capacity)
        .bind(
            u.metadata
                .as_ref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string()),
        )
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.product(tenant, id).await
    }

    /// Soft delete: the row stays for the ledger; the product can no longer be sold.
    pub async fn delete_product(&self, tenant: &TenantId, id: &ProductId) -> Result<Product> {
        let done = db(sqlx::query("UPDATE products SET deleted_at = $3, updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .bind(Timestamp::now().secs())
            .execute(&self.pool)
            .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.product(tenant, id).await
    }

    pub async fn set_stripe_product(
        &self,
        tenant: &TenantId,
        id: &ProductId,
        stripe_id: &StripeProductId,
    ) -> Result<()> {
        self.set_stripe_id(
            "products",
            "stripe_product_id",
            tenant,
            id.as_str(),
            stripe_id.as_str(),
        )
        .await
    }

    /// Live products newest first, optionally of one status.
    pub async fn list_products(
        &self,
        tenant: &TenantId,
        status: Option<ProductStatus>,
        limit: i64,
        starting_after: Option<&ProductId>,
    ) -> Result<Vec<Product>> {
        let (after_created, after_id) = match starting_after {
            Some(id) => {
                let p = self.product(tenant, id).await?;
                (p.created_at.secs(), p.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let rows = db(sqlx::query(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant_id = $1 AND deleted_at IS NULL \
             AND ($2 = '' OR status = $2) AND (created_at < $3 OR (created_at = $3 AND id < $4) OR $4 = '') \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(tenant.as_str())
        .bind(status.map(|s| s.as_str()).unwrap_or(""))
        .bind(after_created)
        .bind(&after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Product::from_row(r))).collect()
    }

    pub async fn create_price(
        &self,
        tenant: &TenantId,
        product: &ProductId,
        p: &NewPrice,
    ) -> Result<Price> {
        let id = PriceId::generate();
        let r = p.recurring.as_ref();
        db(sqlx::query(
            "INSERT INTO prices (id, tenant_id, product_id, currency, unit_amount, recurring_interval, recurring_interval_count, \
             trial_days, lookup_key, usage_type, meter_event_name, active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(product.as_str())
        .bind(p.currency.as_str())
        .bind(p.unit_amount.get())
        .bind(r.map(|r| r.interval.as_str()))
        .bind(r.map(|r| r.interval_count))
        .bind(r.and_then(|r| r.trial_days))
        .bind(&p.lookup_key)
        .bind(r.map_or(UsageType::Licensed, |r| r.usage_type).as_str())
        .bind(r.and_then(|r| r.meter_event_name.as_deref()))
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        self.price(tenant, &id).await
    }

    pub async fn price(&self, tenant: &TenantId, id: &PriceId) -> Result<Price> {
        self.one(
            &format!("SELECT {PRICE_COLUMNS} FROM prices WHERE tenant_id = $1 AND id = $2"),
            tenant,
            id.as_str(),
            Price::from_row,
        )
        .await
    }

    /// Active prices of a product, oldest first (the first is the default).
    pub async fn prices_for_product(
        &self,
        tenant: &TenantId,
        product: &ProductId,
    ) -> Result<Vec<Price>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {PRICE_COLUMNS} FROM prices WHERE tenant_id = $1 AND product_id = $2 AND active = 1 ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .bind(product.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Price::from_row(r))).collect()
    }

    pub async fn set_stripe_price(
        &self,
        tenant: &TenantId,
        id: &PriceId,
        stripe_id: &StripePriceId,
    ) -> Result<()> {
        self.set_stripe_id(
            "prices",
            "stripe_price_id",
            tenant,
            id.as_str(),
            stripe_id.as_str(),
        )
        .await
    }

    /// The tenant's price Stripe knows by this id.
    pub async fn price_by_stripe_id(
        &self,
        tenant: &TenantId,
        stripe_id: &StripePriceId,
    ) -> Result<Price> {
        self.one(
            &format!(
                "SELECT {PRICE_COLUMNS} FROM prices WHERE tenant_id = $1 AND stripe_price_id = $2"
            ),
            tenant,
            stripe_id.as_str(),
            Price::from_row,
        )
        .await
    }

    /// The tenant's price with this lookup key (active or not: the key follows the price a
    /// migration put in place).
    pub async fn price_by_lookup_key(&self, tenant: &TenantId, key: &str) -> Result<Price> {
        self.one(
            &format!("SELECT {PRICE_COLUMNS} FROM prices WHERE tenant_id = $1 AND lookup_key = $2"),
            tenant,
            key,
            Price::from_row,
        )
        .await
    }

    /// Puts `to` in the place of `from` for new sign-ups: `from` stops being sold and its
    /// lookup key, if it had one, moves to `to`. One transaction.
    pub async fn replace_price(
        &self,
        tenant: &TenantId,
        from: &PriceId,
        to: &PriceId,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let key: Option<String> = db(sqlx::query(
            "SELECT lookup_key FROM prices WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await)?
        .ok_or(StoreError::NotFound)
        .and_then(|r| db(r.try_get("lookup_key")))?;
        db(sqlx::query(
            "UPDATE prices SET active = 0, lookup_key = NULL WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(from.as_str())
        .execute(&mut *tx)
        .await)?;
        if key.is_some() {
            db(
                sqlx::query("UPDATE prices SET lookup_key = $3 WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_str())
                    .bind(to.as_str())
                    .bind(&key)
                    .execute(&mut *tx)
                    .await,
            )?;
        }
        db(tx.commit().await)?;
        Ok(())
    }

    /// Every price of a product, archived ones included, oldest first.
    pub async fn all_prices_for_product(
        &self,
        tenant: &TenantId,
        product: &ProductId,
    ) -> Result<Vec<Price>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {PRICE_COLUMNS} FROM prices WHERE tenant_id = $1 AND product_id = $2 ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .bind(product.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Price::from_row(r))).collect()
    }
}
