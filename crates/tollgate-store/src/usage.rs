//! Metered usage: recorded once per caller's idempotency key, then reported to Stripe's
//! billing meter by a worker that claims due records in batches with a lease. The record's
//! id is the meter event's identifier, which Stripe deduplicates, so a report retried after
//! a timeout counts once.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{CustomerId, MeterId, TenantId, UsageRecordId};

use crate::{Engine, Result, Store, StoreError, db, now_ms};

#[derive(Debug, Clone, Serialize)]
pub struct UsageRecord {
    pub id: UsageRecordId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub customer_id: CustomerId,
    pub meter_id: MeterId,
    pub value: i64,
    /// When the usage happened (Unix seconds).
    pub occurred_at: i64,
    /// `pending` (not reported yet), `reported`, or `failed` (Stripe refused it for good).
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub reported_at: Option<i64>,
    pub created_at: i64,
    #[serde(skip)]
    pub idempotency_key: String,
    #[serde(skip)]
    pub lease_token: Option<String>,
}

impl UsageRecord {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: UsageRecordId::from_db(row.try_get("id")?),
            tenant_id: TenantId::from_db(row.try_get("tenant_id")?),
            customer_id: CustomerId::from_db(row.try_get("customer_id")?),
            meter_id: MeterId::from_db(row.try_get("meter_id")?),
            value: row.try_get("value")?,
            occurred_at: row.try_get("occurred_at")?,
            status: row.try_get("status")?,
            attempts: row.try_get("attempts")?,
            last_error: row.try_get("last_error")?,
            reported_at: row.try_get("reported_at")?,
            created_at: row.try_get("created_at")?,
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
    pub occurred_at: i64,
    pub idempotency_key: String,
}

/// A claimed record with what reporting it needs.
#[derive(Debug, Clone)]
pub struct UsageToReport {
    pub record: UsageRecord,
    pub stripe_event_name: String,
    pub stripe_customer_id: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, customer_id, meter_id, value, occurred_at, status, attempts, last_error, \
    reported_at, created_at, idempotency_key, lease_token";

impl Store {
    /// Records usage once per idempotency key: the same key again returns the first record
    /// (`false`: nothing new); the same key with other usage is a `Conflict`.
    pub async fn record_usage(
        &self,
        tenant: &TenantId,
        u: &NewUsage,
    ) -> Result<(UsageRecord, bool)> {
        let now = now_ms();
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
        .bind(u.occurred_at)
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
            return Err(StoreError::Conflict("usage_idempotency_key_reused".into()));
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

    /// Claims up to `limit` due records for `lease_ms`, with what reporting them needs.
    pub async fn claim_usage(&self, limit: i64, lease_ms: i64) -> Result<Vec<UsageToReport>> {
        let now = now_ms();
        let token = tollgate_domain::ids::random_token();
        let due = "status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1)";
        let set = "lease_until = $2, lease_token = $3, attempts = attempts + 1";
        let sql = match self.engine {
            // Materialized so the limit holds (see `Store::inbox_claim_many`).
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
            .bind(now)
            .bind(now + lease_ms)
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
                    stripe_customer_id: db(r.try_get("stripe_customer_id"))?,
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
        .bind(now_ms())
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
        retry_at: Option<i64>,
    ) -> Result<bool> {
        let (status, next) = match retry_at {
            Some(t) => ("pending", t),
            None => ("failed", now_ms()),
        };
        Ok(db(sqlx::query(
            "UPDATE usage_records SET status = $2, next_attempt_at = $3, last_error = $4, lease_until = NULL, lease_token = NULL \
             WHERE id = $1 AND lease_token = $5",
        )
        .bind(r.id.as_str())
        .bind(status)
        .bind(next)
        .bind(error)
        .bind(&r.lease_token)
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1)
    }
}
