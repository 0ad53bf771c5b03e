//! The webhook inbox: every verified Stripe event is stored by id before Stripe gets its
//! 2xx; an instance holds the events it applies under a lease, so an instance that dies
//! mid-event only delays them until its lease runs out (or until it is found dead).
//!
//! A lease is written into the row as `lease_token` (the holder's instance id) and
//! `next_attempt_at` (the lease's end): a held event is simply not due, so the claim
//! query walks only the due part of its index. Events stored by an instance that will
//! apply them itself are leased as they are stored, saving the claim's write.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::InboxStatus;
use tollgate_domain::{StripeEventId, TenantId, Timestamp};

use crate::{
    Engine, Result, Store, db, enum_col, id_col, numbered, opt_id_col, opt_ts_col, ts_col,
};

/// A stored event, as listed.
#[derive(Debug, Clone)]
pub struct InboxEvent {
    pub event_id: StripeEventId,
    pub event_type: String,
    pub tenant_id: Option<TenantId>,
    /// What the event is about, as the worker groups events (see [`NewInboxEvent`]).
    pub object_key: Option<String>,
    /// When Stripe created the event.
    pub event_created: Timestamp,
    pub received_at: Timestamp,
    pub status: InboxStatus,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub processed_at: Option<Timestamp>,
}

impl InboxEvent {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            event_id: id_col(row, "event_id", StripeEventId::from_db)?,
            event_type: row.try_get("event_type")?,
            tenant_id: opt_id_col(row, "tenant_id", TenantId::from_db)?,
            object_key: row.try_get("object_key")?,
            event_created: ts_col(row, "event_created")?,
            received_at: ts_col(row, "received_at")?,
            status: enum_col(row, "status", InboxStatus::parse)?,
            attempts: row.try_get("attempts")?,
            next_attempt_at: ts_col(row, "next_attempt_at")?,
            last_error: row.try_get("last_error")?,
            processed_at: opt_ts_col(row, "processed_at")?,
        })
    }
}

/// An event this instance holds under its lease: what applying it needs, without its
/// body (kept small: many wait in memory at once).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub event_id: StripeEventId,
    pub event_type: String,
    pub tenant_id: Option<TenantId>,
    pub object_key: Option<String>,
    /// The body, only for an event stored without an object key (before the column
    /// existed): the worker reads the key from it.
    pub payload: Option<String>,
    pub received_at: Timestamp,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

impl Claimed {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            event_id: id_col(row, "event_id", StripeEventId::from_db)?,
            event_type: row.try_get("event_type")?,
            tenant_id: opt_id_col(row, "tenant_id", TenantId::from_db)?,
            object_key: row.try_get("object_key")?,
            payload: row.try_get("payload")?,
            received_at: ts_col(row, "received_at")?,
            attempts: row.try_get("attempts")?,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NewInboxEvent<'a> {
    pub event_id: &'a StripeEventId,
    pub event_type: &'a str,
    pub tenant_id: Option<&'a TenantId>,
    pub payload: &'a str,
    pub event_created: Timestamp,
    /// The object whose state applying the event reads ("subscription:sub_..."): events
    /// with the same key are applied one at a time and may share one read.
    pub object_key: Option<&'a str>,
}

#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    pub tenant_id: Option<TenantId>,
    pub status: Option<InboxStatus>,
    /// Stripe's event type (`checkout.session.completed`, ...).
    pub event_type: Option<String>,
}

const COLUMNS: &str = "event_id, event_type, tenant_id, object_key, event_created, received_at, status, \
    attempts, next_attempt_at, last_error, processed_at";

/// What a claim returns: the body only where the key must be read from it.
const CLAIMED: &str = "event_id, event_type, tenant_id, object_key, \
    (SELECT p.payload FROM webhook_payloads p WHERE p.event_id = webhook_inbox.event_id AND webhook_inbox.object_key IS NULL) AS payload, \
    received_at, attempts";

/// Events stored in one transaction at most (a webhook batch holds no more), and the
/// parameters of each inbox row: 256 × (9 + 2) parameters, far below both engines' limits.
const INSERT_CHUNK: usize = 256;
const PER_ROW: usize = 9;

/// `(p, ..., p)` for each of `rows` rows of `per_row` parameters numbered after `offset`,
/// each row followed by `tail`. PostgreSQL's parameters are numbered (`$1`); SQLite's are
/// plain `?`, taken in order across the statements of one string: sqlx binds a numbered
/// one by asking SQLite its name, which SQLite finds by walking the list of names, so
/// numbered parameters cost a batch of n rows n² steps.
fn placeholders(engine: Engine, rows: usize, per_row: usize, offset: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(rows * per_row * 6);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..per_row {
            if c > 0 {
                sql.push_str(", ");
            }
            match engine {
                Engine::Postgres => {
                    sql.push('$');
                    sql.push_str(&(offset + r * per_row + c + 1).to_string());
                }
                Engine::Sqlite => sql.push('?'),
            }
        }
        sql.push_str(tail);
        sql.push(')');
    }
    sql
}

/// A value bound into a statement built at run time ([`Store::update_held`]'s `SET`).
enum Value<'a> {
    Text(&'a str),
    Int(i64),
}

/// A pooled SQLite connection running a transaction that sqlx does not know of (begun
/// by the SQL it runs): unless `finished` says the transaction committed, the connection
/// is closed when this is dropped (sqlx's `close_on_drop`), not given back to the pool,
/// and closing rolls back whatever it began. That covers both a failed statement and a
/// future dropped midway (a timeout, an aborted task), which would otherwise leave the
/// next user of the connection inside the transaction, holding SQLite's write lock.
struct OwnTransaction {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    finished: bool,
}

impl OwnTransaction {
    /// The transaction committed: the connection goes back to the pool.
    fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for OwnTransaction {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

impl Store {
    /// Stores an event once; a duplicate delivery returns `false` and changes nothing.
    pub async fn inbox_insert(&self, e: &NewInboxEvent<'_>) -> Result<bool> {
        self.inbox_insert_many(std::slice::from_ref(e), None)
            .await
            .pop()
            .unwrap_or(Ok(false))
    }

    /// Stores events in one transaction per [`INSERT_CHUNK`] of them, so that they share
    /// one flush to disk (group commit); each is stored once, and a duplicate delivery
    /// changes nothing. With `lease`, the stored events are claimed by this instance as
    /// they are stored (it applies them itself). Answers, per event, whether it was new;
    /// if a chunk fails, each of its events is stored on its own, so one that cannot be
    /// stored fails alone.
    pub async fn inbox_insert_many(
        &self,
        events: &[NewInboxEvent<'_>],
        lease: Option<Duration>,
    ) -> Vec<Result<bool>> {
        let mut answers = Vec::with_capacity(events.len());
        for chunk in events.chunks(INSERT_CHUNK) {
            match self.insert_chunk(chunk, lease).await {
                // A delivery repeated within the chunk is stored once: the first copy is new.
                Ok(mut new) => {
                    answers.extend(chunk.iter().map(|e| Ok(new.remove(e.event_id.as_str()))))
                }
                Err(e) if chunk.len() == 1 => answers.push(Err(e)),
                Err(_) => {
                    for e in chunk {
                        let stored = self.insert_chunk(std::slice::from_ref(e), lease).await;
                        answers.push(stored.map(|new| !new.is_empty()));
                    }
                }
            }
        }
        answers
    }

    /// Stores up to [`INSERT_CHUNK`] events in one transaction and one call to the
    /// database (each call is a wait for another thread or process, and a batch is
    /// acknowledged only when all of them are done); answers the ids that were new.
    ///
    /// Every body is inserted, `ON CONFLICT DO NOTHING`: an event already stored has its
    /// body stored with it (both are written in one transaction and bodies are never
    /// deleted alone), so only the new events' bodies are written, and the second insert
    /// need not wait for the first one's answer.
    async fn insert_chunk(
        &self,
        chunk: &[NewInboxEvent<'_>],
        lease: Option<Duration>,
    ) -> Result<HashSet<String>> {
        let now = Timestamp::now();
        // A leased event counts its first attempt as a claim would.
        let (next_attempt, token, attempts) = match lease {
            Some(l) => (now.plus(l), Some(self.instance_id()), 1_i64),
            None => (now, None, 0),
        };
        let rows = placeholders(self.engine, chunk.len(), PER_ROW, 0, ", 'pending'");
        let bodies = placeholders(self.engine, chunk.len(), 2, chunk.len() * PER_ROW, "");
        let inbox = format!(
            "INSERT INTO webhook_inbox (event_id, event_type, tenant_id, object_key, event_created, \
             received_at, next_attempt_at, lease_token, attempts, status) VALUES {rows} \
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        );
        let payloads = format!(
            "INSERT INTO webhook_payloads (event_id, payload) VALUES {bodies} ON CONFLICT (event_id) DO NOTHING"
        );
        let sql = match self.engine {
            // One statement, in a transaction of its own: the bodies' foreign key is
            // checked at its end, when the new inbox rows are there.
            Engine::Postgres => {
                format!("WITH new AS ({inbox}), bodies AS ({payloads}) SELECT event_id FROM new")
            }
            // SQLite runs the statements of one string one after the other on its thread.
            Engine::Sqlite => format!("BEGIN IMMEDIATE; {inbox}; {payloads}; COMMIT"),
        };
        let query = || {
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(e.event_id.as_str())
                    .bind(e.event_type)
                    .bind(e.tenant_id.map(|t| t.as_str()))
                    .bind(e.object_key)
                    .bind(e.event_created.secs())
                    .bind(now.secs())
                    .bind(next_attempt.secs())
                    .bind(token)
                    .bind(attempts);
            }
            for e in chunk {
                q = q.bind(e.event_id.as_str()).bind(e.payload);
            }
            q
        };
        let new_ids = |rows: Vec<AnyRow>| -> Result<HashSet<String>> {
            rows.iter()
                .map(|row| db(row.try_get::<String, _>("event_id")))
                .collect()
        };
        if self.engine == Engine::Sqlite {
            let _turn = self.instance.writer.clone().lock_owned().await;
            let mut own = OwnTransaction {
                conn: db(self.pool.acquire().await)?,
                finished: false,
            };
            let rows = db(query().fetch_all(&mut *own.conn).await)?;
            own.finished();
            return new_ids(rows);
        }
        // PostgreSQL: on a connection kept for these writes, out of the pool. sqlx tests a
        // pooled connection with a round trip to the server when it hands it out and again
        // when it is given back: two round trips per batch on the writer's path (the
        // ingest writer writes one batch at a time). It is kept only after a write that
        // succeeded: one that failed or was abandoned midway closes it. The kept one may
        // have died since its last write (the server restarted or ended it), so a write
        // that fails on it is made again on a fresh one from the pool, tested: the
        // statement is atomic and stores each event once, so a second run changes nothing
        // the first one stored.
        let mut kept = self.instance.inbox_conn.lock().await;
        if let Some(mut conn) = kept.take() {
            match query().fetch_all(&mut conn).await {
                Ok(rows) => {
                    *kept = Some(conn);
                    return new_ids(rows);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a webhook batch failed on its kept connection; written again on a fresh one")
                }
            }
        }
        let mut conn = self.inbox_connection().await?;
        let rows = db(query().fetch_all(&mut conn).await)?;
        *kept = Some(conn);
        new_ids(rows)
    }

    /// A PostgreSQL connection for webhook batches, taken out of the pool (see
    /// `insert_chunk`).
    async fn inbox_connection(&self) -> Result<sqlx::AnyConnection> {
        let mut conn = db(self.pool.acquire().await)?.detach();
        // This connection only inserts by primary key and checks each body's row by primary
        // key (the foreign key): index lookups at any size. PostgreSQL plans that check once
        // per connection and keeps the plan; planned while the inbox was empty (a new
        // database, or after ANALYZE of an empty one), it was a scan of the whole table for
        // every event stored from then on (measured: one sequential scan per event, 45
        // million rows read for 10,000 events).
        db(sqlx::query("SET enable_seqscan = off")
            .execute(&mut conn)
            .await)?;
        Ok(conn)
    }

    /// Claims up to `limit` due events, oldest first, for `lease`. Two instances never
    /// hold the same event: the claim re-checks in the row it updates that the event is
    /// due, and on PostgreSQL skips rows another instance is claiming instead of waiting.
    pub async fn inbox_claim(&self, lease: Duration, limit: i64) -> Result<Vec<Claimed>> {
        let now = Timestamp::now();
        let due = "status = 'pending' AND next_attempt_at <= $1";
        let set = "next_attempt_at = $2, lease_token = $3, attempts = attempts + 1";
        let sql = match self.engine {
            // The picked rows are materialized once: as a plain `IN (... LIMIT)` PostgreSQL
            // may evaluate the subquery again and take more than the limit.
            Engine::Postgres => format!(
                "WITH picked AS MATERIALIZED (SELECT event_id AS picked_id FROM webhook_inbox WHERE {due} \
                 ORDER BY next_attempt_at, received_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 UPDATE webhook_inbox SET {set} FROM picked WHERE event_id = picked.picked_id AND {due} RETURNING {CLAIMED}"
            ),
            // One writer at a time: the subquery sees a settled table.
            Engine::Sqlite => format!(
                "UPDATE webhook_inbox SET {set} WHERE event_id IN (SELECT event_id FROM webhook_inbox WHERE {due} \
                 ORDER BY next_attempt_at, received_at LIMIT $4) AND {due} RETURNING {CLAIMED}"
            ),
        };
        let mut tx = self.begin().await?;
        self.commit_without_waiting(&mut tx).await?;
        let rows = db(sqlx::query(&sql)
            .bind(now.secs())
            .bind(now.plus(lease).secs())
            .bind(self.instance_id())
            .bind(limit)
            .fetch_all(&mut *tx)
            .await)?;
        db(tx.commit().await)?;
        let mut events = rows
            .iter()
            .map(|r| db(Claimed::from_row(r)))
            .collect::<Result<Vec<_>>>()?;
        events.sort_by_key(|e| e.received_at);
        Ok(events)
    }

    /// Extends to `lease` from now the leases this instance has on the events named: those
    /// its worker has in memory. An event leased to this instance that the worker does not
    /// have (stored and leased in a write whose answer was lost, or left by a group that
    /// panicked) is not named, so its lease runs out and it is claimed again, rather than
    /// waiting for this instance to stop. Answers how many leases were extended.
    pub async fn inbox_renew_leases(&self, held: &[StripeEventId], lease: Duration) -> Result<u64> {
        if held.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        self.commit_without_waiting(&mut tx).await?;
        let until = Timestamp::now().plus(lease).secs();
        let ids: Vec<&str> = held.iter().map(|id| id.as_str()).collect();
        let renewed = self
            .update_held(&mut tx, "next_attempt_at = $1", &[Value::Int(until)], &ids)
            .await?;
        db(tx.commit().await)?;
        Ok(renewed)
    }

    /// Makes the events held by instances that have died due now, rather than when their
    /// leases would have run out. Answers how many were released.
    pub async fn inbox_release_dead_leases(&self) -> Result<u64> {
        let holders: Vec<String> = db(sqlx::query_scalar(
            "SELECT DISTINCT lease_token FROM webhook_inbox WHERE lease_token IS NOT NULL AND status = 'pending'",
        )
        .fetch_all(&self.pool)
        .await)?;
        let mut released = 0;
        for holder in holders {
            if self.instance_alive(&holder).await? {
                continue;
            }
            released += db(sqlx::query(
                "UPDATE webhook_inbox SET next_attempt_at = $2, lease_token = NULL WHERE lease_token = $1 AND status = 'pending'",
            )
            .bind(&holder)
            .bind(Timestamp::now().secs())
            .execute(&self.pool)
            .await)?
            .rows_affected();
        }
        Ok(released)
    }

    /// Marks held events `processed` or `ignored` (with no effects to commit alongside),
    /// in one transaction; answers how many were still held by this instance.
    pub async fn inbox_mark_many(&self, marks: &[(&Claimed, InboxStatus)]) -> Result<usize> {
        if marks.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        self.commit_without_waiting(&mut tx).await?;
        let mut marked = 0;
        for status in [InboxStatus::Processed, InboxStatus::Ignored] {
            let these: Vec<&Claimed> = marks
                .iter()
                .filter(|(_, s)| *s == status)
                .map(|(e, _)| *e)
                .collect();
            marked += self.mark_in(&mut tx, &these, status).await?;
        }
        db(tx.commit().await)?;
        Ok(marked)
    }

    /// Marks held events with `status` inside the transaction that committed their
    /// effects; answers how many were still held by this instance (an event whose lease
    /// was lost to another instance is left to it).
    pub(crate) async fn mark_in<E: std::borrow::Borrow<Claimed>>(
        &self,
        tx: &mut crate::Tx<'_>,
        events: &[E],
        status: InboxStatus,
    ) -> Result<usize> {
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e.borrow().event_id.as_str())
            .collect();
        let marked = self
            .update_held(
                tx,
                "status = $1, processed_at = $2, lease_token = NULL, last_error = NULL",
                &[
                    Value::Text(status.as_str()),
                    Value::Int(Timestamp::now().secs()),
                ],
                &ids,
            )
            .await?;
        Ok(marked as usize)
    }

    /// `UPDATE webhook_inbox SET {set}` for those of the events named that this instance
    /// holds (pending and leased to it), in chunks; `set` refers to `values` as `$1`,
    /// `$2`, ... Answers how many rows changed.
    ///
    /// The lease is tested through `coalesce`, which no index serves: the event ids find
    /// the rows. Tested plainly, PostgreSQL ANDs in the index of leases, which holds every
    /// event this instance has in hand, and reads all of it per statement.
    async fn update_held(
        &self,
        tx: &mut crate::Tx<'_>,
        set: &str,
        values: &[Value<'_>],
        ids: &[&str],
    ) -> Result<u64> {
        let holder = values.len() + 1;
        let mut changed = 0;
        for chunk in ids.chunks(INSERT_CHUNK) {
            let sql = format!(
                "UPDATE webhook_inbox SET {set} \
                 WHERE coalesce(lease_token, '') = ${holder} AND status = 'pending' AND event_id IN ({})",
                numbered(holder + 1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for v in values {
                q = match v {
                    Value::Text(t) => q.bind(*t),
                    Value::Int(n) => q.bind(*n),
                };
            }
            q = q.bind(self.instance_id());
            for id in chunk {
                q = q.bind(*id);
            }
            changed += db(q.execute(&mut **tx).await)?.rows_affected();
        }
        Ok(changed)
    }

    /// On PostgreSQL, lets this transaction commit without waiting for its WAL to reach
    /// disk. Only for claims, leases and marks that carry no effects: if the server
    /// crashes and loses one, the event is claimed or applied again, and applying is
    /// idempotent. (An event is stored durably before it is acknowledged, and effects
    /// commit durably.)
    async fn commit_without_waiting(&self, tx: &mut crate::purchases::Tx<'_>) -> Result<()> {
        if self.engine == Engine::Postgres {
            db(sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut **tx)
                .await)?;
        }
        Ok(())
    }

    /// Records a failed attempt of a held event: retried at `retry_at`, or dead-lettered
    /// when `None`. `false` when the event is no longer this instance's.
    pub async fn inbox_fail(
        &self,
        event: &Claimed,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<bool> {
        let (status, next) = match retry_at {
            Some(t) => (InboxStatus::Pending, t),
            None => (InboxStatus::Dead, Timestamp::now()),
        };
        Ok(db(sqlx::query(
            "UPDATE webhook_inbox SET status = $2, next_attempt_at = $3, last_error = $4, lease_token = NULL \
             WHERE event_id = $1 AND lease_token = $5 AND status = 'pending'",
        )
        .bind(event.event_id.as_str())
        .bind(status.as_str())
        .bind(next.secs())
        .bind(error)
        .bind(self.instance_id())
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
            "UPDATE webhook_inbox SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_token = NULL, last_error = NULL \
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
            // Every event was received before the end of time: no cursor, no bound.
            None => (i64::MAX, String::new()),
        };
        // Only the filters given, each a plain condition, so that the indexes on
        // (tenant, received) and (status, tenant, received) serve every list; the status
        // is one of a closed set and written into the query (a partial-index-friendly
        // literal), the rest are parameters.
        let mut conditions = Vec::new();
        let mut n = 3;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if let Some(status) = f.status {
            conditions.push(format!("status = '{}'", status.as_str()));
        }
        if f.tenant_id.is_some() {
            conditions.push(format!("tenant_id = {}", param()));
        }
        if f.event_type.is_some() {
            conditions.push(format!("event_type = {}", param()));
        }
        conditions.push("(received_at < $2 OR (received_at = $2 AND event_id < $3))".into());
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_inbox WHERE {} ORDER BY received_at DESC, event_id DESC LIMIT $1",
            conditions.join(" AND ")
        );
        let mut q = sqlx::query(&sql)
            .bind(limit)
            .bind(after_received)
            .bind(&after_id);
        if let Some(t) = &f.tenant_id {
            q = q.bind(t.as_str());
        }
        if let Some(kind) = &f.event_type {
            q = q.bind(kind.as_str());
        }
        let rows = db(q.fetch_all(&self.pool).await)?;
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
