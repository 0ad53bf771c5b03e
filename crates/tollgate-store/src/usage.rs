//! Metered usage: recorded once per caller's idempotency key, then reported to Stripe's
//! billing meter by a worker that claims due records in batches with a lease. The record's
//! id is the meter event's identifier, which Stripe deduplicates, so a report retried after
//! a timeout counts once.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::UsageStatus;
use tollgate_domain::{CustomerId, MeterId, StripeCustomerId, TenantId, Timestamp, UsageRecordId};

use crate::{
    Constraint, Engine, Result, Store, StoreError, db, enum_col, id_col, opt_id_col, opt_ts_col,
    ts_col,
};

#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub id: UsageRecordId,
    pub tenant_id: TenantId,
    pub customer_id: CustomerId,
    pub meter_id: MeterId,
    pub value: i64,
    /// When the usage happened.
    pub occurred_at: Timestamp,
    pub status: UsageStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub reported_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub idempotency_key: String,
    pub lease_token: Option<String>,
}

impl UsageRecord {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: id_col(row, "id", UsageRecordId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            customer_id: id_col(row, "customer_id", CustomerId::from_db)?,
            meter_id: id_col(row, "meter_id", MeterId::from_db)?,
            value: row.try_get("value")?,
            occurred_at: ts_col(row, "occurred_at")?,
            status: enum_col(row, "status", UsageStatus::parse)?,
            attempts: row.try_get("attempts")?,
            last_error: row.try_get("last_error")?,
            reported_at: opt_ts_col(row, "reported_at")?,
            created_at: ts_col(row, "created_at")?,
            idempotency_key: row.try_get("idempotency_key")?,
            lease_token: row.try_get("lease_token")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewUsage {
    pub customer_id: CustomerId,
    pub meter_id: MeterId,
    pub value: i64,
    pub occurred_at: Timestamp,
    pub idempotency_key: String,
}

/// A claimed record with what reporting it needs.
#[derive(Debug, Clone)]
pub struct UsageToReport {
    pub record: UsageRecord,
    pub stripe_event_name: String,
    pub stripe_customer_id: Option<StripeCustomerId>,
}

const COLUMNS: &str = "id, tenant_id, customer_id, meter_id, value, occurred_at, status, attempts, last_error, \
    reported_at, created_at, idempotency_key, lease_token";

impl Store {
    /// Records usage once per idempotency key: the same key again returns the first record
    /// (`false`: nothing new); the same key with other usage is a `Conflict` on
    /// [`Constraint::UsageRecordsTenantKey`].
    pub async fn record_usage(
        &self,
        tenant: &TenantId,
        u: &NewUsage,
    ) -> Result<(UsageRecord, bool)> {
        let now = Timestamp::now().secs();
        let inserted = db(sqlx::query(
            "INSERT INTO usage_records (id, tenant_id, customer_id, meter_id, value, occurred_at, idempotency_key, status, \
             next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8) \
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        )
        .bind(UsageRecordId::generate().as_str())
        .bind(tenant.as_str())
        .bind(u.customer_id.as_str())
        .bind(u.meter_id.as_str())
        .bind(u.value)
        .bind(u.occurred_at.secs())
        .bind(&u.idempotency_key)
        .bind(now)
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1;
        let row = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM usage_records WHERE tenant_id = $1 AND idempotency_key = $2"
        ))
        .bind(tenant.as_str())
        .bind(&u.idempotency_key)
        .fetch_one(&self.pool)
        .await)?;
        let record = db(UsageRecord::from_row(&row))?;
        if !inserted
            && (record.customer_id != u.customer_id
                || record.meter_id != u.meter_id
                || record.value != u.value
                || record.occurred_at != u.occurred_at)
        {
            return Err(StoreError::Conflict(Constraint::UsageRecordsTenantKey));
        }
        Ok((record, inserted))
    }

    /// Usage of a customer, newest first.
    pub async fn list_usage(
        &self,
        tenant: &TenantId,
        customer: Option<&CustomerId>,
        limit: i64,
    ) -> Result<Vec<UsageRecord>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM usage_records WHERE tenant_id = $1 AND ($2 = '' OR customer_id = $2) \
             ORDER BY occurred_at DESC, id DESC LIMIT $3"
        ))
        .bind(tenant.as_str())
        .bind(customer.map(|c| c.as_str()).unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(UsageRecord::from_row(r))).collect()
    }

    /// Claims up to `limit` due records for `lease`, with what reporting them needs.
    pub async fn claim_usage(&self, limit: i64, lease: Duration) -> Result<Vec<UsageToReport>> {
        let now = Timestamp::now();
        let token = tollgate_domain::ids::random_token();
        let due = "status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1)";
        let set = "lease_until = $2, lease_token = $3, attempts = attempts + 1";
        let sql = match self.engine {
            // Materialized so the limit holds (see `Store::inbox_claim`).
            Engine::Postgres => format!(
                "WITH picked AS MATERIALIZED (SELECT id AS picked_id FROM usage_records WHERE {due} \
                 ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 UPDATE usage_records SET {set} FROM picked WHERE id = picked.picked_id AND {due}"
            ),
            Engine::Sqlite => format!(
                "UPDATE usage_records SET {set} WHERE id IN (SELECT id FROM usage_records WHERE {due} \
                 ORDER BY next_attempt_at, id LIMIT $4) AND {due}"
            ),
        };
        db(sqlx::query(&sql)
            .bind(now.secs())
            .bind(now.plus(lease).secs())
            .bind(&token)
            .bind(limit)
            .execute(&self.pool)
            .await)?;
        let rows = db(sqlx::query(&format!(
            "SELECT u.{}, m.stripe_event_name, c.stripe_customer_id FROM usage_records u \
             JOIN meters m ON m.id = u.meter_id JOIN customers c ON c.id = u.customer_id \
             WHERE u.lease_token = $1 ORDER BY u.next_attempt_at, u.id",
            COLUMNS.replace(", ", ", u.")
        ))
        .bind(&token)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                Ok(UsageToReport {
                    record: db(UsageRecord::from_row(r))?,
                    stripe_event_name: db(r.try_get("stripe_event_name"))?,
                    stripe_customer_id: db(opt_id_col(
                        r,
                        "stripe_customer_id",
                        StripeCustomerId::from_db,
                    ))?,
                })
            })
            .collect()
    }

    /// Marks a claimed record reported (Stripe accepted its meter event).
    pub async fn usage_reported(&self, r: &UsageRecord) -> Result<bool> {
        Ok(db(sqlx::query(
            "UPDATE usage_records SET status = 'reported', reported_at = $2, lease_until = NULL, lease_token = NULL, last_error = NULL \
             WHERE id = $1 AND lease_token = $3",
        )
        .bind(r.id.as_str())
        .bind(Timestamp::now().secs())
        .bind(&r.lease_token)
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1)
    }

    /// Records a failed report of a claimed record: tried again at `retry_at`, or `failed`
    /// for good when `None`.
    pub async fn usage_failed(
        &self,
        r: &UsageRecord,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<bool> {
        let (status, next) = match retry_at {
            Some(t) => (UsageStatus::Pending, t),
            None => (UsageStatus::Failed, Timestamp::now()),
        };
        Ok(db(sqlx::query(
            "UPDATE usage_records SET status = $2, next_attempt_at = $3, last_error = $4, lease_until = NULL, lease_token = NULL \
             WHERE id = $1 AND lease_token = $5",
        )
        .bind(r.id.as_str())
        .bind(status.as_str())
        .bind(next.secs())
        .bind(error)
        .bind(&r.lease_token)
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1)
    }
}
