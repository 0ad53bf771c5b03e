//! The webhook inbox: every verified Stripe event is stored by id before Stripe gets its
//! 2xx; workers claim due events with a lease, so an instance that dies mid-event only
//! delays it until the lease runs out.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::InboxStatus;
use tollgate_domain::{StripeEventId, TenantId, Timestamp};

use crate::{Engine, Result, Store, db, enum_col, id_col, opt_id_col, opt_ts_col, ts_col};

#[derive(Debug, Clone)]
pub struct InboxEvent {
    pub event_id: StripeEventId,
    pub event_type: String,
    pub tenant_id: Option<TenantId>,
    pub payload: String,
    /// When Stripe created the event.
    pub event_created: Timestamp,
    pub received_at: Timestamp,
    pub status: InboxStatus,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub processed_at: Option<Timestamp>,
    /// The claim this copy was read under; marking the event needs it.
    pub lease_token: Option<String>,
}

impl InboxEvent {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            event_id: id_col(row, "event_id", StripeEventId::from_db)?,
            event_type: row.try_get("event_type")?,
            tenant_id: opt_id_col(row, "tenant_id", TenantId::from_db)?,
            payload: row.try_get("payload")?,
            event_created: ts_col(row, "event_created")?,
            received_at: ts_col(row, "received_at")?,
            status: enum_col(row, "status", InboxStatus::parse)?,
            attempts: row.try_get("attempts")?,
            next_attempt_at: ts_col(row, "next_attempt_at")?,
            last_error: row.try_get("last_error")?,
            processed_at: opt_ts_col(row, "processed_at")?,
            lease_token: row.try_get("lease_token")?,
        })
    }
}

pub struct NewInboxEvent<'a> {
    pub event_id: &'a StripeEventId,
    pub event_type: &'a str,
    pub tenant_id: Option<&'a TenantId>,
    pub payload: &'a str,
    pub event_created: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    pub tenant_id: Option<TenantId>,
    pub status: Option<InboxStatus>,
    /// Stripe's event type (`checkout.session.completed`, ...).
    pub event_type: Option<String>,
}

const COLUMNS: &str = "event_id, event_type, tenant_id, payload, event_created, received_at, status, attempts, \
    next_attempt_at, last_error, processed_at, lease_token";

impl Store {
    /// Stores an event once; a duplicate delivery returns `false` and changes nothing.
    pub async fn inbox_insert(&self, e: &NewInboxEvent<'_>) -> Result<bool> {
        let now = Timestamp::now().secs();
        Ok(db(sqlx::query(
            "INSERT INTO webhook_inbox (event_id, event_type, tenant_id, payload, event_created, received_at, status, attempts, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $6) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(e.event_id.as_str())
        .bind(e.event_type)
        .bind(e.tenant_id.map(|t| t.as_str()))
        .bind(e.payload)
        .bind(e.event_created.secs())
        .bind(now)
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1)
    }

    /// Claims one due event for `lease`; `None` when nothing is due. Two workers never
    /// hold the same event: the claim re-checks the lease in the row it updates, and on
    /// PostgreSQL skips rows another worker is claiming instead of waiting for them.
    pub async fn inbox_claim(&self, lease: Duration) -> Result<Option<InboxEvent>> {
        Ok(self.inbox_claim_many(lease, 1).await?.pop())
    }

    /// Claims up to `limit` due events, oldest first, under one lease.
    pub async fn inbox_claim_many(&self, lease: Duration, limit: i64) -> Result<Vec<InboxEvent>> {
        let now = Timestamp::now();
        let token = tollgate_domain::ids::random_token();
        let due = "status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1)";
        let set = "lease_until = $2, lease_token = $3, attempts = attempts + 1";
        let sql = match self.engine {
            // The picked rows are materialized once: as a plain `IN (... LIMIT)` PostgreSQL
            // may evaluate the subquery again and take more than the limit.
            Engine::Postgres => format!(
                "WITH picked AS MATERIALIZED (SELECT event_id AS picked_id FROM webhook_inbox WHERE {due} \
                 ORDER BY next_attempt_at, received_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 UPDATE webhook_inbox SET {set} FROM picked WHERE event_id = picked.picked_id AND {due} RETURNING {COLUMNS}"
            ),
            // One writer at a time: the subquery sees a settled table.
            Engine::Sqlite => format!(
                "UPDATE webhook_inbox SET {set} WHERE event_id IN (SELECT event_id FROM webhook_inbox WHERE {due} \
                 ORDER BY next_attempt_at, received_at LIMIT $4) AND {due} RETURNING {COLUMNS}"
            ),
        };
        let mut tx = self.begin().await?;
        self.commit_without_waiting(&mut tx).await?;
        let rows = db(sqlx::query(&sql)
            .bind(now.secs())
            .bind(now.plus(lease).secs())
            .bind(&token)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await)?;
        db(tx.commit().await)?;
        let mut events = rows
            .iter()
            .map(|r| db(InboxEvent::from_row(r)))
            .collect::<Result<Vec<_>>>()?;
        events.sort_by_key(|e| (e.next_attempt_at, e.received_at));
        Ok(events)
    }

    /// Marks a claimed event `processed` or `ignored` (with no effects to commit alongside).
    /// `false` when the claim was lost (its lease ran out and another worker took it).
    pub async fn inbox_mark(&self, event: &InboxEvent, status: InboxStatus) -> Result<bool> {
        Ok(self.inbox_mark_many(&[(event, status)]).await? == 1)
    }

    /// Marks several claimed events in one transaction; answers how many were still ours.
    pub async fn inbox_mark_many(&self, marks: &[(&InboxEvent, InboxStatus)]) -> Result<usize> {
        if marks.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        self.commit_without_waiting(&mut tx).await?;
        let mut marked = 0;
        for (event, status) in marks {
            if inbox_mark_in(&mut tx, event, *status).await? {
                marked += 1;
            }
        }
        db(tx.commit().await)?;
        Ok(marked)
    }

    /// On PostgreSQL, lets this transaction commit without waiting for its WAL to reach
    /// disk. Only for claims and marks that carry no effects: if the server crashes and
    /// loses one, the event is claimed or applied again, and applying is idempotent. (An
    /// event is stored durably before it is acknowledged, and effects commit durably.)
    async fn commit_without_waiting(&self, tx: &mut crate::purchases::Tx<'_>) -> Result<()> {
        if self.engine == Engine::Postgres {
            db(sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut **tx)
                .await)?;
        }
        Ok(())
    }

    /// Records a failed attempt of a claimed event: retried at `retry_at`, or
    /// dead-lettered when `None`. `false` when the claim was lost.
    pub async fn inbox_fail(
        &self,
        event: &InboxEvent,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<bool> {
        let (status, next) = match retry_at {
            Some(t) => (InboxStatus::Pending, t),
            None => (InboxStatus::Dead, Timestamp::now()),
        };
        Ok(db(sqlx::query(
            "UPDATE webhook_inbox SET status = $2, next_attempt_at = $3, last_error = $4, lease_until = NULL, lease_token = NULL \
             WHERE event_id = $1 AND lease_token = $5",
        )
        .bind(event.event_id.as_str())
        .bind(status.as_str())
        .bind(next.secs())
        .bind(error)
        .bind(&event.lease_token)
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1)
    }

    /// Records the tenant an event turned out to concern (events about disputes name no
    /// tenant; the worker finds it through the payment), so the tenant sees it listed.
    pub async fn inbox_set_tenant(
        &self,
        event_id: &StripeEventId,
        tenant: &TenantId,
    ) -> Result<()> {
        db(sqlx::query(
            "UPDATE webhook_inbox SET tenant_id = $2 WHERE event_id = $1 AND tenant_id IS NULL",
        )
        .bind(event_id.as_str())
        .bind(tenant.as_str())
        .execute(&self.pool)
        .await)?;
        Ok(())
    }

    /// Puts an event back in the queue (a dead letter, or any event to re-run).
    pub async fn inbox_replay(&self, event_id: &StripeEventId) -> Result<bool> {
        Ok(db(sqlx::query(
            "UPDATE webhook_inbox SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_until = NULL, lease_token = NULL, last_error = NULL \
             WHERE event_id = $1",
        )
        .bind(event_id.as_str())
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1)
    }

    pub async fn inbox_event(&self, event_id: &StripeEventId) -> Result<Option<InboxEvent>> {
        let row = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM webhook_inbox WHERE event_id = $1"
        ))
        .bind(event_id.as_str())
        .fetch_optional(&self.pool)
        .await)?;
        row.map(|r| db(InboxEvent::from_row(&r))).transpose()
    }

    /// Events newest first, `limit` after the cursor.
    pub async fn inbox_list(
        &self,
        f: &InboxFilter,
        limit: i64,
        starting_after: Option<&StripeEventId>,
    ) -> Result<Vec<InboxEvent>> {
        let (after_received, after_id) = match starting_after {
            Some(id) => match self.inbox_event(id).await? {
                Some(e) if f.tenant_id.is_none() || e.tenant_id == f.tenant_id => {
                    (e.received_at.secs(), e.event_id.to_string())
                }
                _ => return Err(crate::StoreError::NotFound),
            },
            None => (i64::MAX, String::new()),
        };
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM webhook_inbox WHERE ($1 = '' OR tenant_id = $1) AND ($2 = '' OR status = $2) \
             AND ($6 = '' OR event_type = $6) \
             AND ($5 = '' OR received_at < $4 OR (received_at = $4 AND event_id < $5)) \
             ORDER BY received_at DESC, event_id DESC LIMIT $3"
        ))
        .bind(f.tenant_id.as_ref().map(|t| t.as_str()).unwrap_or(""))
        .bind(f.status.map(|s| s.as_str()).unwrap_or(""))
        .bind(limit)
        .bind(after_received)
        .bind(&after_id)
        .bind(f.event_type.as_deref().unwrap_or(""))
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(InboxEvent::from_row(r))).collect()
    }

    /// How many events wait (pending), for readiness and metrics.
    pub async fn inbox_pending(&self) -> Result<i64> {
        db(
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_inbox WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await
                .and_then(|r| r.try_get("n")),
        )
    }
}

/// Marks a claimed inbox event within the transaction that applied its effects; `false`
/// (and nothing marked) when the claim was lost to another worker.
pub(crate) async fn inbox_mark_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &InboxEvent,
    status: InboxStatus,
) -> Result<bool> {
    Ok(db(sqlx::query(
        "UPDATE webhook_inbox SET status = $2, processed_at = $3, lease_until = NULL, lease_token = NULL, last_error = NULL \
         WHERE event_id = $1 AND lease_token = $4",
    )
    .bind(event.event_id.as_str())
    .bind(status.as_str())
    .bind(Timestamp::now().secs())
    .bind(&event.lease_token)
    .execute(&mut **tx)
    .await)?
    .rows_affected()
        == 1)
}
