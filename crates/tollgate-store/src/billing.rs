//! Coupons and promotion codes made through Tollgate (and synced to Stripe), and price
//! migrations: a new price in an old one's place for new sign-ups, with existing
//! subscriptions optionally moved onto it at a set time.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::{CouponDuration, MigrationStatus};
use tollgate_domain::{
    Amount, CouponId, Currency, PriceId, PriceMigrationId, PromotionCodeId, StripeCouponId,
    StripePromotionCodeId, TenantId, Timestamp,
};

use crate::{
    Result, Store, StoreError, db, enum_col, flag_col, id_col, opt_id_col, opt_ts_col, ts_col,
};

/// What a coupon takes off: a share in basis points (2000 = 20%), or an amount in a
/// currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discount {
    PercentOffBps(i64),
    AmountOff(Amount, Currency),
}

#[derive(Debug, Clone)]
pub struct Coupon {
    pub id: CouponId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub discount: Discount,
    pub duration: CouponDuration,
    pub duration_in_months: Option<i64>,
    pub max_redemptions: Option<i64>,
    /// The moment after which it cannot be redeemed.
    pub redeem_by: Option<Timestamp>,
    pub stripe_coupon_id: Option<StripeCouponId>,
    pub created_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

impl Coupon {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        let percent: Option<i64> = row.try_get("percent_off_bps")?;
        let amount: Option<i64> = row.try_get("amount_off")?;
        let currency: Option<String> = row.try_get("currency")?;
        // The schema's CHECKs allow exactly one of the two, and a currency with an amount.
        let discount = match (percent, amount, currency) {
            (Some(bps), _, _) => Discount::PercentOffBps(bps),
            (None, Some(a), Some(c)) => {
                Discount::AmountOff(Amount::from_db(a), Currency::from_db(c))
            }
            _ => {
                return Err(sqlx::Error::ColumnDecode {
                    index: "percent_off_bps".into(),
                    source: "a coupon without a discount".into(),
                });
            }
        };
        Ok(Self {
            id: id_col(row, "id", CouponId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            name: row.try_get("name")?,
            discount,
            duration: enum_col(row, "duration", CouponDuration::parse)?,
            duration_in_months: row.try_get("duration_in_months")?,
            max_redemptions: row.try_get("max_redemptions")?,
            redeem_by: opt_ts_col(row, "redeem_by")?,
            stripe_coupon_id: opt_id_col(row, "stripe_coupon_id", StripeCouponId::from_db)?,
            created_at: ts_col(row, "created_at")?,
            deleted_at: opt_ts_col(row, "deleted_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub name: Option<String>,
    pub discount: Discount,
    pub duration: CouponDuration,
    pub duration_in_months: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub redeem_by: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct PromotionCode {
    pub id: PromotionCodeId,
    pub tenant_id: TenantId,
    pub coupon_id: CouponId,
    pub code: String,
    pub active: bool,
    pub max_redemptions: Option<i64>,
    pub expires_at: Option<Timestamp>,
    pub stripe_promotion_code_id: Option<StripePromotionCodeId>,
    pub created_at: Timestamp,
}

impl PromotionCode {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: id_col(row, "id", PromotionCodeId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            coupon_id: id_col(row, "coupon_id", CouponId::from_db)?,
            code: row.try_get("code")?,
            active: flag_col(row, "active")?,
            max_redemptions: row.try_get("max_redemptions")?,
            expires_at: opt_ts_col(row, "expires_at")?,
            stripe_promotion_code_id: opt_id_col(
                row,
                "stripe_promotion_code_id",
                StripePromotionCodeId::from_db,
            )?,
            created_at: ts_col(row, "created_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewPromotionCode {
    pub coupon_id: CouponId,
    pub code: String,
    pub max_redemptions: Option<i64>,
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct PriceMigration {
    pub id: PriceMigrationId,
    pub tenant_id: TenantId,
    pub from_price_id: PriceId,
    pub to_price_id: PriceId,
    /// When existing subscriptions move; `None`: they keep their price.
    pub move_existing_at: Option<Timestamp>,
    pub status: MigrationStatus,
    pub moved: i64,
    pub failed: i64,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

impl PriceMigration {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: id_col(row, "id", PriceMigrationId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            from_price_id: id_col(row, "from_price_id", PriceId::from_db)?,
            to_price_id: id_col(row, "to_price_id", PriceId::from_db)?,
            move_existing_at: opt_ts_col(row, "move_existing_at")?,
            status: enum_col(row, "status", MigrationStatus::parse)?,
            moved: row.try_get("moved")?,
            failed: row.try_get("failed")?,
            created_at: ts_col(row, "created_at")?,
            completed_at: opt_ts_col(row, "completed_at")?,
        })
    }
}

const COUPON_COLUMNS: &str = "id, tenant_id, name, percent_off_bps, amount_off, currency, duration, duration_in_months, \
    max_redemptions, redeem_by, stripe_coupon_id, created_at, deleted_at";
const CODE_COLUMNS: &str = "id, tenant_id, coupon_id, code, active, max_redemptions, expires_at, stripe_promotion_code_id, created_at";
const MIGRATION_COLUMNS: &str = "id, tenant_id, from_price_id, to_price_id, move_existing_at, status, moved, failed, created_at, completed_at";

impl Store {
    /// Records a coupon under `id` (the id it was created with in Stripe).
    pub async fn create_coupon(
        &self,
        tenant: &TenantId,
        id: &CouponId,
        c: &NewCoupon,
    ) -> Result<Coupon> {
        db(sqlx::query(
            "INSERT INTO coupons (id, tenant_id, name, percent_off_bps, amount_off, currency, duration, duration_in_months, \
             max_redemptions, redeem_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(&c.name)
        .bind(match &c.discount {
            Discount::PercentOffBps(bps) => Some(*bps),
            Discount::AmountOff(..) => None,
        })
        .bind(match &c.discount {
            Discount::AmountOff(a, _) => Some(a.get()),
            Discount::PercentOffBps(_) => None,
        })
        .bind(match &c.discount {
            Discount::AmountOff(_, currency) => Some(currency.as_str()),
            Discount::PercentOffBps(_) => None,
        })
        .bind(c.duration.as_str())
        .bind(c.duration_in_months)
        .bind(c.max_redemptions)
        .bind(c.redeem_by.map(Timestamp::secs))
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        self.coupon(tenant, id).await
    }

    pub async fn coupon(&self, tenant: &TenantId, id: &CouponId) -> Result<Coupon> {
        self.one(
            &format!("SELECT {COUPON_COLUMNS} FROM coupons WHERE tenant_id = $1 AND id = $2"),
            tenant,
            id.as_str(),
            Coupon::from_row,
        )
        .await
    }

    /// Live coupons, newest first.
    pub async fn list_coupons(
        &self,
        tenant: &TenantId,
        limit: i64,
        starting_after: Option<&CouponId>,
    ) -> Result<Vec<Coupon>> {
        let (after_created, after_id) = match starting_after {
            Some(id) => {
                let c = self.coupon(tenant, id).await?;
                (c.created_at.secs(), c.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let rows = db(sqlx::query(&format!(
            "SELECT {COUPON_COLUMNS} FROM coupons WHERE tenant_id = $1 AND deleted_at IS NULL \
             AND ($3 = '' OR created_at < $2 OR (created_at = $2 AND id < $3)) ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(tenant.as_str())
        .bind(after_created)
        .bind(&after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Coupon::from_row(r))).collect()
    }

    pub async fn set_stripe_coupon(
        &self,
        tenant: &TenantId,
        id: &CouponId,
        stripe_id: &StripeCouponId,
    ) -> Result<()> {
        self.set_stripe_id(
            "coupons",
            "stripe_coupon_id",
            tenant,
            id.as_str(),
            stripe_id.as_str(),
        )
        .await
    }

    /// Soft delete: no new redemptions; discounts already given stay.
    pub async fn delete_coupon(&self, tenant: &TenantId, id: &CouponId) -> Result<Coupon> {
        let mut tx = self.begin().await?;
        let done = db(sqlx::query(
            "UPDATE coupons SET deleted_at = $3 WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(Timestamp::now().secs())
        .execute(&mut *tx)
        .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        db(sqlx::query(
            "UPDATE promotion_codes SET active = 0 WHERE tenant_id = $1 AND coupon_id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await)?;
        db(tx.commit().await)?;
        self.coupon(tenant, id).await
    }

    /// A code unique within the tenant, regardless of case (`Conflict` otherwise).
    pub async fn create_promotion_code(
        &self,
        tenant: &TenantId,
        p: &NewPromotionCode,
    ) -> Result<PromotionCode> {
        let id = PromotionCodeId::generate();
        db(sqlx::query(
            "INSERT INTO promotion_codes (id, tenant_id, coupon_id, code, max_redemptions, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(p.coupon_id.as_str())
        .bind(&p.code)
        .bind(p.max_redemptions)
        .bind(p.expires_at.map(Timestamp::secs))
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        self.promotion_code(tenant, &id).await
    }

    pub async fn promotion_code(
        &self,
        tenant: &TenantId,
        id: &PromotionCodeId,
    ) -> Result<PromotionCode> {
        self.one_code("id = $2", tenant, id.as_str()).await
    }

    /// The tenant's promotion code spelled `code`, in any case.
    pub async fn promotion_code_by_code(
        &self,
        tenant: &TenantId,
        code: &str,
    ) -> Result<PromotionCode> {
        self.one_code("lower(code) = lower($2)", tenant, code).await
    }

    async fn one_code(&self, cond: &str, tenant: &TenantId, value: &str) -> Result<PromotionCode> {
        self.one(
            &format!("SELECT {CODE_COLUMNS} FROM promotion_codes WHERE tenant_id = $1 AND {cond}"),
            tenant,
            value,
            PromotionCode::from_row,
        )
        .await
    }

    pub async fn list_promotion_codes(
        &self,
        tenant: &TenantId,
        coupon: Option<&CouponId>,
        limit: i64,
    ) -> Result<Vec<PromotionCode>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {CODE_COLUMNS} FROM promotion_codes WHERE tenant_id = $1 AND ($2 = '' OR coupon_id = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(tenant.as_str())
        .bind(coupon.map(|c| c.as_str()).unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| db(PromotionCode::from_row(r)))
            .collect()
    }

    pub async fn set_stripe_promotion_code(
        &self,
        tenant: &TenantId,
        id: &PromotionCodeId,
        stripe_id: &StripePromotionCodeId,
    ) -> Result<()> {
        self.set_stripe_id(
            "promotion_codes",
            "stripe_promotion_code_id",
            tenant,
            id.as_str(),
            stripe_id.as_str(),
        )
        .await
    }

    pub async fn set_promotion_code_active(
        &self,
        tenant: &TenantId,
        id: &PromotionCodeId,
        active: bool,
    ) -> Result<PromotionCode> {
        let done = db(sqlx::query(
            "UPDATE promotion_codes SET active = $3 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(i64::from(active))
        .execute(&self.pool)
        .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.promotion_code(tenant, id).await
    }

    /// Records a price migration; with `move_existing_at` it waits to move subscriptions.
    pub async fn create_price_migration(
        &self,
        tenant: &TenantId,
        from: &PriceId,
        to: &PriceId,
        move_existing_at: Option<Timestamp>,
    ) -> Result<PriceMigration> {
        let id = PriceMigrationId::generate();
        let status = if move_existing_at.is_some() {
            MigrationStatus::Scheduled
        } else {
            MigrationStatus::NewSignupsOnly
        };
        db(sqlx::query(
            "INSERT INTO price_migrations (id, tenant_id, from_price_id, to_price_id, move_existing_at, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(move_existing_at.map(Timestamp::secs))
        .bind(status.as_str())
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        self.price_migration(tenant, &id).await
    }

    pub async fn price_migration(
        &self,
        tenant: &TenantId,
        id: &PriceMigrationId,
    ) -> Result<PriceMigration> {
        self.one(
            &format!(
                "SELECT {MIGRATION_COLUMNS} FROM price_migrations WHERE tenant_id = $1 AND id = $2"
            ),
            tenant,
            id.as_str(),
            PriceMigration::from_row,
        )
        .await
    }

    /// Scheduled migrations whose time has come, oldest first.
    pub async fn due_price_migrations(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<PriceMigration>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {MIGRATION_COLUMNS} FROM price_migrations WHERE status = 'scheduled' AND move_existing_at <= $1 \
             ORDER BY move_existing_at, id LIMIT $2"
        ))
        .bind(now.secs())
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| db(PriceMigration::from_row(r)))
            .collect()
    }

    /// Takes a scheduled migration for `lease` to move its subscriptions; `false` when
    /// another instance holds it or it is not due.
    pub async fn claim_price_migration(
        &self,
        tenant: &TenantId,
        id: &PriceMigrationId,
        lease: Duration,
    ) -> Result<bool> {
        let now = Timestamp::now();
        Ok(db(sqlx::query(
            "UPDATE price_migrations SET lease_until = $3 WHERE tenant_id = $1 AND id = $2 AND status = 'scheduled' \
             AND move_existing_at <= $4 AND (lease_until IS NULL OR lease_until < $4)",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(now.plus(lease).secs())
        .bind(now.secs())
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1)
    }

    /// Adds to a migration's counts; `done` when nothing is left to move.
    pub async fn record_price_migration(
        &self,
        tenant: &TenantId,
        id: &PriceMigrationId,
        moved: i64,
        failed: i64,
        done: bool,
    ) -> Result<PriceMigration> {
        db(sqlx::query(
            "UPDATE price_migrations SET moved = moved + $3, failed = $4, \
             status = CASE WHEN $5 = 1 THEN 'done' ELSE status END, \
             completed_at = CASE WHEN $5 = 1 THEN $6 ELSE completed_at END, lease_until = NULL WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(moved)
        .bind(failed)
        .bind(i64::from(done))
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        self.price_migration(tenant, id).await
    }
}
