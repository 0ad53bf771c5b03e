//! `Idempotency-Key` for Tollgate's own API: the first request with a key runs and its
//! answer is kept for 24 hours; the same key and body replays it; the same key with another
//! body, or while the first is still running, is a conflict. A request that died holding a
//! key (a crash, a dropped connection) gives it up when its lock runs out.

use std::time::Duration;

use sqlx::Row;
use tollgate_domain::Timestamp;

use crate::{Result, Store, db};

/// How long answers are kept, as Stripe keeps its own.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyOutcome {
    /// First use (or the first user died): run the request, then `idempotency_finish`.
    Proceed,
    /// Seen with this body: answer this.
    Replay { status: u16, body: String },
    /// Seen with another body.
    Mismatch,
    /// The first request with this key has not finished.
    InProgress,
}

impl Store {
    /// Claims `key` in `scope` (a tenant id, or `operator`) for a request with
    /// `request_hash`, holding it for `lock` while the request runs.
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        lock: Duration,
    ) -> Result<IdempotencyOutcome> {
        let now = Timestamp::now();
        let until = now.plus(lock).secs();
        let inserted = db(sqlx::query(
            "INSERT INTO idempotency_keys (scope, idempotency_key, request_hash, locked_until, created_at, locked_by) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, idempotency_key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(until)
        .bind(now.secs())
        .bind(self.instance_id())
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1;
        if inserted {
            return Ok(IdempotencyOutcome::Proceed);
        }
        let Some(row) = db(sqlx::query(
            "SELECT request_hash, status_code, response_body, locked_until, locked_by FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await)?
        else {
            // Released between our insert and this read: the key is free again.
            return Box::pin(self.idempotency_begin(scope, key, request_hash, lock)).await;
        };
        let hash: String = db(row.try_get("request_hash"))?;
        if hash != request_hash {
            return Ok(IdempotencyOutcome::Mismatch);
        }
        let status: Option<i64> = db(row.try_get("status_code"))?;
        let body: Option<String> = db(row.try_get("response_body"))?;
        if let (Some(s), Some(b)) = (status, body) {
            return Ok(IdempotencyOutcome::Replay {
                status: u16::try_from(s).unwrap_or(500),
                body: b,
            });
        }
        // Unfinished: take it over if its holder died (its instance is gone) or its lock ran
        // out; one taker wins the update.
        let holder: Option<String> = db(row.try_get("locked_by"))?;
        let dead_holder = match &holder {
            Some(h) if !self.instance_alive(h).await? => h.clone(),
            _ => String::new(),
        };
        let taken = db(sqlx::query(
            "UPDATE idempotency_keys SET locked_until = $3, locked_by = $6 WHERE scope = $1 AND idempotency_key = $2 \
             AND status_code IS NULL AND (locked_until < $4 OR ($5 <> '' AND locked_by = $5))",
        )
        .bind(scope)
        .bind(key)
        .bind(until)
        .bind(now.secs())
        .bind(&dead_holder)
        .bind(self.instance_id())
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1;
        Ok(if taken {
            IdempotencyOutcome::Proceed
        } else {
            IdempotencyOutcome::InProgress
        })
    }

    /// Keeps the answer for later replays.
    pub async fn idempotency_finish(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        db(sqlx::query("UPDATE idempotency_keys SET status_code = $3, response_body = $4, locked_until = NULL WHERE scope = $1 AND idempotency_key = $2")
            .bind(scope)
            .bind(key)
            .bind(i64::from(status))
            .bind(body)
            .execute(&self.pool)
            .await)?;
        Ok(())
    }

    /// Forgets a key whose request should run again on a retry (it failed on our side, or
    /// was turned away before it started).
    pub async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()> {
        db(sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND status_code IS NULL",
        )
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await)?;
        Ok(())
    }

    /// Deletes kept answers older than the retention; returns how many.
    pub async fn idempotency_prune(&self) -> Result<u64> {
        Ok(db(sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < $1 AND status_code IS NOT NULL",
        )
        .bind(Timestamp::now().minus(IDEMPOTENCY_RETENTION).secs())
        .execute(&self.pool)
        .await)?
        .rows_affected())
    }
}
