//! What plans grant (entitlements: other products, or named features), and the billing
//! meters that metered prices bill from.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{EntitlementId, MeterId, ProductId, StripeMeterId, TenantId, Timestamp};

use crate::{AccessChanges, Result, Store, StoreError, db, id_col, opt_id_col, ts_col};

/// Something a plan grants besides itself.
#[derive(Debug, Clone)]
pub struct Entitlement {
    pub id: EntitlementId,
    pub plan_id: ProductId,
    pub product_id: Option<ProductId>,
    pub feature: Option<String>,
    pub created_at: Timestamp,
}

impl Entitlement {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: id_col(row, "id", EntitlementId::from_db)?,
            plan_id: id_col(row, "plan_id", ProductId::from_db)?,
            product_id: opt_id_col(row, "product_id", ProductId::from_db)?,
            feature: row.try_get("feature")?,
            created_at: ts_col(row, "created_at")?,
        })
    }
}

/// A tenant's billing meter for one event name.
#[derive(Debug, Clone)]
pub struct Meter {
    pub id: MeterId,
    pub tenant_id: TenantId,
    pub event_name: String,
    /// The name Stripe knows the events by (carries the tenant: one namespace per account).
    pub stripe_event_name: String,
    pub stripe_meter_id: Option<StripeMeterId>,
}

impl Store {
    /// Adds what `plan` grants: a product or a feature. Subscribers' access changes: they
    /// are returned so their index entries can be refreshed (other instances are told on
    /// commit).
    pub async fn add_entitlement(
        &self,
        tenant: &TenantId,
        plan: &ProductId,
        product: Option<&ProductId>,
        feature: Option<&str>,
    ) -> Result<(Entitlement, AccessChanges)> {
        let id = EntitlementId::generate();
        let mut tx = self.begin().await?;
        db(sqlx::query(
            "INSERT INTO entitlements (id, tenant_id, plan_id, product_id, feature, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(plan.as_str())
        .bind(product.map(|p| p.as_str()))
        .bind(feature)
        .bind(Timestamp::now().secs())
        .execute(&mut *tx)
        .await)?;
        let customers = self
            .notify_plan_subscribers_in(&mut tx, tenant, plan)
            .await?;
        db(tx.commit().await)?;
        Ok((self.entitlement(tenant, &id).await?, customers))
    }

    pub async fn entitlement(&self, tenant: &TenantId, id: &EntitlementId) -> Result<Entitlement> {
        self.one("SELECT id, plan_id, product_id, feature, created_at FROM entitlements WHERE tenant_id = $1 AND id = $2", tenant, id.as_str(), Entitlement::from_row).await
    }

    pub async fn entitlements_for_plan(
        &self,
        tenant: &TenantId,
        plan: &ProductId,
    ) -> Result<Vec<Entitlement>> {
        let rows = db(sqlx::query(
            "SELECT id, plan_id, product_id, feature, created_at FROM entitlements WHERE tenant_id = $1 AND plan_id = $2 \
             ORDER BY created_at, id",
        )
        .bind(tenant.as_str())
        .bind(plan.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Entitlement::from_row(r))).collect()
    }

    /// Removes an entitlement; returns the subscribers whose access changed.
    pub async fn delete_entitlement(
        &self,
        tenant: &TenantId,
        plan: &ProductId,
        id: &EntitlementId,
    ) -> Result<AccessChanges> {
        let mut tx = self.begin().await?;
        let done = db(sqlx::query(
            "DELETE FROM entitlements WHERE tenant_id = $1 AND plan_id = $2 AND id = $3",
        )
        .bind(tenant.as_str())
        .bind(plan.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let customers = self
            .notify_plan_subscribers_in(&mut tx, tenant, plan)
            .await?;
        db(tx.commit().await)?;
        Ok(customers)
    }

    /// The tenant's meter for `event_name`, made on first use.
    pub async fn get_or_create_meter(&self, tenant: &TenantId, event_name: &str) -> Result<Meter> {
        db(sqlx::query(
            "INSERT INTO meters (id, tenant_id, event_name, stripe_event_name, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, event_name) DO NOTHING",
        )
        .bind(MeterId::generate().as_str())
        .bind(tenant.as_str())
        .bind(event_name)
        .bind(format!("{tenant}.{event_name}"))
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        self.meter_by_event(tenant, event_name).await
    }

    pub async fn meter_by_event(&self, tenant: &TenantId, event_name: &str) -> Result<Meter> {
        self.one_meter("event_name", tenant, event_name).await
    }

    pub async fn meter(&self, tenant: &TenantId, id: &MeterId) -> Result<Meter> {
        self.one_meter("id", tenant, id.as_str()).await
    }

    async fn one_meter(&self, column: &str, tenant: &TenantId, value: &str) -> Result<Meter> {
        let row = db(sqlx::query(&format!(
            "SELECT id, tenant_id, event_name, stripe_event_name, stripe_meter_id FROM meters WHERE tenant_id = $1 AND {column} = $2"
        ))
        .bind(tenant.as_str())
        .bind(value)
        .fetch_optional(&self.pool)
        .await)?
        .ok_or(StoreError::NotFound)?;
        db((|| {
            Ok(Meter {
                id: id_col(&row, "id", MeterId::from_db)?,
                tenant_id: id_col(&row, "tenant_id", TenantId::from_db)?,
                event_name: row.try_get("event_name")?,
                stripe_event_name: row.try_get("stripe_event_name")?,
                stripe_meter_id: opt_id_col(&row, "stripe_meter_id", StripeMeterId::from_db)?,
            })
        })())
    }

    pub async fn set_stripe_meter(
        &self,
        tenant: &TenantId,
        id: &MeterId,
        stripe_id: &StripeMeterId,
    ) -> Result<()> {
        self.set_stripe_id(
            "meters",
            "stripe_meter_id",
            tenant,
            id.as_str(),
            stripe_id.as_str(),
        )
        .await
    }
}
