//! The catalogue: products (soft-deleted, never removed) and their prices.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{PriceId, ProductId, TenantId};

use crate::{Result, Store, StoreError, db, now_ms};

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub id: ProductId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub kind: String,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub creator_id: Option<String>,
    pub capacity: Option<i64>,
    pub metadata: serde_json::Value,
    pub stripe_product_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

impl Product {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        let metadata: String = row.try_get("metadata")?;
        Ok(Self {
            id: ProductId::from_db(row.try_get("id")?),
            tenant_id: TenantId::from_db(row.try_get("tenant_id")?),
            kind: row.try_get("kind")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            status: row.try_get("status")?,
            creator_id: row.try_get("creator_id")?,
            capacity: row.try_get("capacity")?,
            metadata: serde_json::from_str(&metadata).unwrap_or_else(|_| serde_json::json!({})),
            stripe_product_id: row.try_get("stripe_product_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub kind: String,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub creator_id: Option<String>,
    pub capacity: Option<i64>,
    pub metadata: serde_json::Value,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductUpdate {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<String>,
    pub capacity: Option<i64>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Price {
    pub id: PriceId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub product_id: ProductId,
    pub currency: String,
    pub unit_amount: i64,
    pub recurring_interval: Option<String>,
    pub recurring_interval_count: Option<i64>,
    pub trial_days: Option<i64>,
    pub lookup_key: Option<String>,
    pub active: bool,
    pub stripe_price_id: Option<String>,
    /// `licensed` (a quantity is bought) or `metered` (reported usage is billed).
    pub usage_type: String,
    /// For metered prices: the usage events that are billed.
    pub meter_event_name: Option<String>,
    pub created_at: i64,
}

impl Price {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: PriceId::from_db(row.try_get("id")?),
            tenant_id: TenantId::from_db(row.try_get("tenant_id")?),
            product_id: ProductId::from_db(row.try_get("product_id")?),
            currency: row.try_get("currency")?,
            unit_amount: row.try_get("unit_amount")?,
            recurring_interval: row.try_get("recurring_interval")?,
            recurring_interval_count: row.try_get("recurring_interval_count")?,
            trial_days: row.try_get("trial_days")?,
            lookup_key: row.try_get("lookup_key")?,
            active: row.try_get::<i64, _>("active")? != 0,
            stripe_price_id: row.try_get("stripe_price_id")?,
            usage_type: row.try_get("usage_type")?,
            meter_event_name: row.try_get("meter_event_name")?,
            created_at: row.try_get("created_at")?,
        })
    }

    pub fn is_recurring(&self) -> bool {
        self.recurring_interval.is_some()
    }

    pub fn is_metered(&self) -> bool {
        self.usage_type == "metered"
    }
}

#[derive(Debug, Clone)]
pub struct NewPrice {
    pub currency: String,
    pub unit_amount: i64,
    pub recurring_interval: Option<String>,
    pub recurring_interval_count: Option<i64>,
    pub trial_days: Option<i64>,
    pub lookup_key: Option<String>,
    /// `licensed` or `metered`.
    pub usage_type: String,
    pub meter_event_name: Option<String>,
}

const PRODUCT_COLUMNS: &str = "id, tenant_id, kind, title, description, status, creator_id, capacity, metadata, \
    stripe_product_id, created_at, updated_at, deleted_at";
const PRICE_COLUMNS: &str = "id, tenant_id, product_id, currency, unit_amount, recurring_interval, \
    recurring_interval_count, trial_days, lookup_key, active, stripe_price_id, usage_type, meter_event_name, created_at";

impl Store {
    pub async fn create_product(&self, tenant: &TenantId, p: &NewProduct) -> Result<Product> {
        let id = ProductId::generate();
        let now = now_ms();
        db(sqlx::query(
            "INSERT INTO products (id, tenant_id, kind, title, description, status, creator_id, capacity, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(&p.kind)
        .bind(&p.title)
        .bind(&p.description)
        .bind(&p.status)
        .bind(&p.creator_id)
        .bind(p.capacity)
        .bind(p.metadata.to_string())
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
        .bind(&u.status)
        .bind(u.capacity)
        .bind(u.metadata.as_ref().map(|m| m.to_string()))
        .bind(now_ms())
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
            .bind(now_ms())
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
        stripe_id: &str,
    ) -> Result<()> {
        self.set_stripe_id(
            "products",
            "stripe_product_id",
            tenant,
            id.as_str(),
            stripe_id,
        )
        .await
    }

    /// Live products newest first, optionally of one status.
    pub async fn list_products(
        &self,
        tenant: &TenantId,
        status: Option<&str>,
        limit: i64,
        starting_after: Option<&ProductId>,
    ) -> Result<Vec<Product>> {
        let (after_created, after_id) = match starting_after {
            Some(id) => {
                let p = self.product(tenant, id).await?;
                (p.created_at, p.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let rows = db(sqlx::query(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant_id = $1 AND deleted_at IS NULL \
             AND ($2 = '' OR status = $2) AND (created_at < $3 OR (created_at = $3 AND id < $4) OR $4 = '') \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(tenant.as_str())
        .bind(status.unwrap_or(""))
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
        db(sqlx::query(
            "INSERT INTO prices (id, tenant_id, product_id, currency, unit_amount, recurring_interval, recurring_interval_count, \
             trial_days, lookup_key, usage_type, meter_event_name, active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(product.as_str())
        .bind(&p.currency)
        .bind(p.unit_amount)
        .bind(&p.recurring_interval)
        .bind(p.recurring_interval_count)
        .bind(p.trial_days)
        .bind(&p.lookup_key)
        .bind(&p.usage_type)
        .bind(&p.meter_event_name)
        .bind(now_ms())
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
        stripe_id: &str,
    ) -> Result<()> {
        db(
            sqlx::query("UPDATE prices SET stripe_price_id = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(stripe_id)
                .execute(&self.pool)
                .await,
        )?;
        Ok(())
    }

    /// The tenant's price Stripe knows by this id.
    pub async fn price_by_stripe_id(&self, tenant: &TenantId, stripe_id: &str) -> Result<Price> {
        self.one(
            &format!(
                "SELECT {PRICE_COLUMNS} FROM prices WHERE tenant_id = $1 AND stripe_price_id = $2"
            ),
            tenant,
            stripe_id,
            Price::from_row,
        )
        .await
    }

    /// A price by its id, or else by one of the tenant's lookup keys.
    pub async fn price_by_ref(&self, tenant: &TenantId, reference: &str) -> Result<Price> {
        match PriceId::parse(reference) {
            Some(id) => self.price(tenant, &id).await,
            None => self.price_by_lookup_key(tenant, reference).await,
        }
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
