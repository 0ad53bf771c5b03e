//! Tenants, their settings and their API keys (stored hashed, shown once).

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{
    ApiKeyId, Currency, CustomerId, FeeSchedule, StripePortalConfigurationId, TenantId, Timestamp,
};

use crate::purchases::Tx;
use crate::{
    AccessChanges, Result, Store, StoreError, db, hash_secret, id_col, opt_id_col, opt_ts_col,
    ts_col,
};

/// A tenant and its settings.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub default_currency: Currency,
    pub success_url_template: Option<String>,
    pub cancel_url_template: Option<String>,
    pub portal_return_url_template: Option<String>,
    pub fees: FeeSchedule,
    /// Days a past_due subscription keeps its access.
    pub grace_period_days: i64,
    /// What the customer portal offers.
    pub portal: PortalSettings,
    /// The Stripe portal configuration made from `portal` (and the plans on offer).
    pub stripe_portal_configuration_id: Option<StripePortalConfigurationId>,
    pub stripe_portal_configuration_hash: Option<String>,
    pub created_at: Timestamp,
}

/// What the customer portal lets a customer do, and what it says at the top.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        let bps = |c: &str| -> std::result::Result<u32, sqlx::Error> {
            let v: i64 = row.try_get(c)?;
            u32::try_from(v).map_err(|e| sqlx::Error::ColumnDecode {
                index: c.to_owned(),
                source: Box::new(e),
            })
        };
        let fees = FeeSchedule::new(bps("platform_fee_bps")?, bps("organization_fee_bps")?)
            .map_err(|e| sqlx::Error::ColumnDecode {
                index: "platform_fee_bps".into(),
                source: Box::new(e),
            })?;
        Ok(Self {
            id: id_col(row, "id", TenantId::from_db)?,
            name: row.try_get("name")?,
            default_currency: Currency::from_db(row.try_get("default_currency")?),
            success_url_template: row.try_get("success_url_template")?,
            cancel_url_template: row.try_get("cancel_url_template")?,
            portal_return_url_template: row.try_get("portal_return_url_template")?,
            fees,
            grace_period_days: row.try_get("grace_period_days")?,
            portal: serde_json::from_str(&row.try_get::<String, _>("portal_settings")?)
                .unwrap_or_default(),
            stripe_portal_configuration_id: opt_id_col(
                row,
                "stripe_portal_configuration_id",
                StripePortalConfigurationId::from_db,
            )?,
            stripe_portal_configuration_hash: row.try_get("stripe_portal_configuration_hash")?,
            created_at: ts_col(row, "created_at")?,
        })
    }
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    /// The secret's last four characters, to tell keys apart.
    pub last4: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Settings for a new tenant (or the new values of an update).
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub default_currency: Currency,
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
            default_currency: Currency::from_db("usd".into()),
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
        .bind(t.default_currency.as_str())
        .bind(&t.success_url_template)
        .bind(&t.cancel_url_template)
        .bind(&t.portal_return_url_template)
        .bind(i64::from(t.fees.platform_bps()))
        .bind(i64::from(t.fees.organization_bps()))
        .bind(t.grace_period_days)
        .bind(portal_json(&t.portal))
        .bind(Timestamp::now().secs())
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

    /// Replaces a tenant's settings. A change of the grace period changes what past_due
    /// subscriptions grant: those customers are returned (and announced).
    pub async fn update_tenant(
        &self,
        id: &TenantId,
        t: &NewTenant,
    ) -> Result<(Tenant, AccessChanges)> {
        let before = self.tenant(id).await?;
        let mut tx = self.begin().await?;
        let done = db(sqlx::query(
            "UPDATE tenants SET name = $2, default_currency = $3, success_url_template = $4, \
             cancel_url_template = $5, portal_return_url_template = $6, platform_fee_bps = $7, \
             organization_fee_bps = $8, grace_period_days = $9, portal_settings = $10 WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(&t.name)
        .bind(t.default_currency.as_str())
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
        let mut changes = AccessChanges::none();
        if before.grace_period_days != t.grace_period_days {
            for customer in self.customers_past_due_in(&mut tx, id).await? {
                self.notify_access_in(&mut tx, id, &customer).await?;
                changes.add(id, &customer);
            }
        }
        db(tx.commit().await)?;
        Ok((self.tenant(id).await?, changes))
    }

    async fn customers_past_due_in(
        &self,
        tx: &mut Tx<'_>,
        tenant: &TenantId,
    ) -> Result<Vec<CustomerId>> {
        let rows = db(sqlx::query(
            "SELECT DISTINCT customer_id FROM subscriptions WHERE tenant_id = $1 AND status = 'past_due'",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut **tx)
        .await)?;
        rows.iter()
            .map(|r| db(id_col(r, "customer_id", CustomerId::from_db)))
            .collect()
    }

    /// Records the Stripe portal configuration made for the tenant's settings.
    pub async fn set_portal_configuration(
        &self,
        id: &TenantId,
        stripe_id: &StripePortalConfigurationId,
        hash: &str,
    ) -> Result<()> {
        db(sqlx::query(
            "UPDATE tenants SET stripe_portal_configuration_id = $2, stripe_portal_configuration_hash = $3 WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(stripe_id.as_str())
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
        .bind(Timestamp::now().secs())
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
        row.map(|r| db(id_col(&r, "tenant_id", TenantId::from_db)))
            .transpose()
    }

    /// A tenant's API keys, newest first (revoked ones too).
    pub async fn list_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>> {
        self.tenant(tenant).await?;
        let rows = db(sqlx::query(
            "SELECT id, tenant_id, last4, created_at, revoked_at FROM api_keys WHERE tenant_id = $1 \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                db((|| {
                    Ok(ApiKey {
                        id: id_col(r, "id", ApiKeyId::from_db)?,
                        tenant_id: id_col(r, "tenant_id", TenantId::from_db)?,
                        last4: r.try_get("last4")?,
                        created_at: ts_col(r, "created_at")?,
                        revoked_at: opt_ts_col(r, "revoked_at")?,
                    })
                })())
            })
            .collect()
    }
}

async fn insert_key(tx: &mut crate::Tx<'_>, tenant: &TenantId) -> Result<IssuedKey> {
    let id = ApiKeyId::generate();
    let secret = mint_key("tg_sk_");
    db(sqlx::query("INSERT INTO api_keys (id, tenant_id, secret_hash, last4, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(hash_secret(&secret))
        .bind(&secret[secret.len() - 4..])
        .bind(Timestamp::now().secs())
        .execute(&mut **tx)
        .await)?;
    Ok(IssuedKey { id, secret })
}

fn portal_json(p: &PortalSettings) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| "{}".into())
}
