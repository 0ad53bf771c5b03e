//! Tenants, their settings and their API keys (stored hashed, shown once).

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{ApiKeyId, CustomerId, FeeSchedule, TenantId};

use crate::purchases::Tx;
use crate::{Result, Store, StoreError, db, hash_secret, now_ms};

/// A tenant and its settings.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub default_currency: String,
    pub success_url_template: Option<String>,
    pub cancel_url_template: Option<String>,
    pub portal_return_url_template: Option<String>,
    pub platform_fee_bps: i64,
    pub organization_fee_bps: i64,
    /// Days a past_due subscription keeps its access.
    pub grace_period_days: i64,
    /// What the customer portal offers.
    pub portal: PortalSettings,
    /// The Stripe portal configuration made from `portal` (and the plans on offer).
    pub stripe_portal_configuration_id: Option<String>,
    #[serde(skip)]
    pub stripe_portal_configuration_hash: Option<String>,
    pub created_at: i64,
}

/// What the customer portal lets a customer do, and what it says at the top.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalSettings {
    /// Cancel a subscription (at the end of the period).
    pub cancel: bool,
    /// Switch to another of the tenant's plans.
    pub switch_plan: bool,
    /// Change the card.
    pub update_payment_method: bool,
    /// A line of text at the top of the portal.
    pub headline: Option<String>,
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            cancel: true,
            switch_plan: true,
            update_payment_method: true,
            headline: None,
        }
    }
}

/// Days a past_due subscription keeps its access unless the tenant says otherwise.
pub const DEFAULT_GRACE_PERIOD_DAYS: i64 = 3;

impl Tenant {
    /// The fee schedule; the database's CHECK keeps it valid.
    pub fn fees(&self) -> FeeSchedule {
        let bps = |v: i64| u32::try_from(v).unwrap_or(0);
        FeeSchedule::new(bps(self.platform_fee_bps), bps(self.organization_fee_bps))
            .unwrap_or_default()
    }

    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: TenantId::from_db(row.try_get("id")?),
            name: row.try_get("name")?,
            default_currency: row.try_get("default_currency")?,
            success_url_template: row.try_get("success_url_template")?,
            cancel_url_template: row.try_get("cancel_url_template")?,
            portal_return_url_template: row.try_get("portal_return_url_template")?,
            platform_fee_bps: row.try_get("platform_fee_bps")?,
            organization_fee_bps: row.try_get("organization_fee_bps")?,
            grace_period_days: row.try_get("grace_period_days")?,
            portal: serde_json::from_str(&row.try_get::<String, _>("portal_settings")?)
                .unwrap_or_default(),
            stripe_portal_configuration_id: row.try_get("stripe_portal_configuration_id")?,
            stripe_portal_configuration_hash: row.try_get("stripe_portal_configuration_hash")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Settings for a new tenant (or the new values of an update).
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub default_currency: String,
    pub success_url_template: Option<String>,
    pub cancel_url_template: Option<String>,
    pub portal_return_url_template: Option<String>,
    pub fees: FeeSchedule,
    pub grace_period_days: i64,
    pub portal: PortalSettings,
}

impl Default for NewTenant {
    fn default() -> Self {
        Self {
            name: String::new(),
            default_currency: "usd".into(),
            success_url_template: None,
            cancel_url_template: None,
            portal_return_url_template: None,
            fees: FeeSchedule::default(),
            grace_period_days: DEFAULT_GRACE_PERIOD_DAYS,
            portal: PortalSettings::default(),
        }
    }
}

const COLUMNS: &str = "id, name, default_currency, success_url_template, cancel_url_template, \
    portal_return_url_template, platform_fee_bps, organization_fee_bps, grace_period_days, portal_settings, \
    stripe_portal_configuration_id, stripe_portal_configuration_hash, created_at";

/// A freshly minted API key: the secret exists only in this value.
pub struct IssuedKey {
    pub id: ApiKeyId,
    pub secret: String,
}

/// A new secret: the prefix and 40 random letters and digits from the OS-seeded RNG.
fn mint_key(prefix: &str) -> String {
    use rand::Rng;
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

impl Store {
    /// Creates a tenant and its first API key.
    pub async fn create_tenant(&self, t: &NewTenant) -> Result<(Tenant, IssuedKey)> {
        let id = TenantId::generate();
        let mut tx = self.begin().await?;
        db(sqlx::query(
            "INSERT INTO tenants (id, name, default_currency, success_url_template, cancel_url_template, \
             portal_return_url_template, platform_fee_bps, organization_fee_bps, grace_period_days, portal_settings, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id.as_str())
        .bind(&t.name)
        .bind(&t.default_currency)
        .bind(&t.success_url_template)
        .bind(&t.cancel_url_template)
        .bind(&t.portal_return_url_template)
        .bind(i64::from(t.fees.platform_bps()))
        .bind(i64::from(t.fees.organization_bps()))
        .bind(t.grace_period_days)
        .bind(portal_json(&t.portal))
        .bind(now_ms())
        .execute(&mut *tx)
        .await)?;
        let key = insert_key(&mut tx, &id).await?;
        db(tx.commit().await)?;
        Ok((self.tenant(&id).await?, key))
    }

    pub async fn tenant(&self, id: &TenantId) -> Result<Tenant> {
        let row = db(
            sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await,
        )?
        .ok_or(StoreError::NotFound)?;
        db(Tenant::from_row(&row))
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tenants ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Tenant::from_row(r))).collect()
    }

    /// Replaces a tenant's settings.
    pub async fn update_tenant(&self, id: &TenantId, t: &NewTenant) -> Result<Tenant> {
        let mut tx = self.begin().await?;
        let done = db(sqlx::query(
            "UPDATE tenants SET name = $2, default_currency = $3, success_url_template = $4, \
             cancel_url_template = $5, portal_return_url_template = $6, platform_fee_bps = $7, \
             organization_fee_bps = $8, grace_period_days = $9, portal_settings = $10 WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(&t.name)
        .bind(&t.default_currency)
        .bind(&t.success_url_template)
        .bind(&t.cancel_url_template)
        .bind(&t.portal_return_url_template)
        .bind(i64::from(t.fees.platform_bps()))
        .bind(i64::from(t.fees.organization_bps()))
        .bind(t.grace_period_days)
        .bind(portal_json(&t.portal))
        .execute(&mut *tx)
        .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // The grace period decides what past_due subscriptions grant: every instance
        // re-reads those customers' access.
        for customer in self.customers_past_due_in(&mut tx, id).await? {
            self.notify_access_in(&mut tx, id, &customer).await?;
        }
        db(tx.commit().await)?;
        self.tenant(id).await
    }

    /// Customers of the tenant with a past_due subscription (their access depends on the
    /// grace period).
    pub async fn customers_past_due(&self, tenant: &TenantId) -> Result<Vec<CustomerId>> {
        let mut tx = self.begin().await?;
        let customers = self.customers_past_due_in(&mut tx, tenant).await?;
        db(tx.commit().await)?;
        Ok(customers.into_iter().map(CustomerId::from_db).collect())
    }

    async fn customers_past_due_in(
        &self,
        tx: &mut Tx<'_>,
        tenant: &TenantId,
    ) -> Result<Vec<String>> {
        let rows = db(sqlx::query(
            "SELECT DISTINCT customer_id FROM subscriptions WHERE tenant_id = $1 AND status = 'past_due'",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut **tx)
        .await)?;
        rows.iter()
            .map(|r| db(r.try_get::<String, _>("customer_id")))
            .collect()
    }

    /// Records the Stripe portal configuration made for the tenant's settings.
    pub async fn set_portal_configuration(
        &self,
        id: &TenantId,
        stripe_id: &str,
        hash: &str,
    ) -> Result<()> {
        db(sqlx::query(
            "UPDATE tenants SET stripe_portal_configuration_id = $2, stripe_portal_configuration_hash = $3 WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(stripe_id)
        .bind(hash)
        .execute(&self.pool)
        .await)?;
        Ok(())
    }

    /// Issues another API key for a tenant.
    pub async fn create_key(&self, tenant: &TenantId) -> Result<IssuedKey> {
        self.tenant(tenant).await?;
        let mut tx = self.begin().await?;
        let key = insert_key(&mut tx, tenant).await?;
        db(tx.commit().await)?;
        Ok(key)
    }

    /// Revokes a key; later requests with it are refused.
    pub async fn revoke_key(&self, tenant: &TenantId, key: &ApiKeyId) -> Result<()> {
        let done = db(sqlx::query(
            "UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(key.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await)?;
        if done.rows_affected() == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    /// The tenant a live secret key belongs to.
    pub async fn tenant_for_key(&self, secret: &str) -> Result<Option<TenantId>> {
        let row = db(sqlx::query(
            "SELECT tenant_id FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_secret(secret))
        .fetch_optional(&self.pool)
        .await)?;
        Ok(row
            .map(|r| r.try_get::<String, _>("tenant_id"))
            .transpose()
            .map_err(StoreError::from_sqlx)?
            .map(TenantId::from_db))
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &TenantId,
) -> Result<IssuedKey> {
    let id = ApiKeyId::generate();
    let secret = mint_key("tg_sk_");
    db(sqlx::query("INSERT INTO api_keys (id, tenant_id, secret_hash, last4, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(hash_secret(&secret))
        .bind(&secret[secret.len() - 4..])
        .bind(now_ms())
        .execute(&mut **tx)
        .await)?;
    Ok(IssuedKey { id, secret })
}

fn portal_json(p: &PortalSettings) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| "{}".into())
}
