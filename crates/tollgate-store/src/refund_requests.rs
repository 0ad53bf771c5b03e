//! Refunds asked for through the API, recorded before Stripe is asked. The request's id is
//! the idempotency key of Stripe's refund, so a retry after a lost answer, a timeout or a
//! crash asks Stripe again with the same key and money moves once. A pending request holds
//! its amount: requests of one purchase never together exceed what is left to refund.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::{PurchaseStatus, RefundReason, RefundRequestStatus};
use tollgate_domain::{Amount, PurchaseId, RefundRequestId, StripeRefundId, TenantId, Timestamp};

use crate::purchases::Tx;
use crate::{
    AccessChanges, Purchase, Result, Store, StoreError, db, enum_col, id_col, opt_enum_col,
    opt_id_col, ts_col,
};

#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub id: RefundRequestId,
    pub tenant_id: TenantId,
    pub purchase_id: PurchaseId,
    pub amount: Amount,
    pub reason: Option<RefundReason>,
    pub idempotency_key: Option<String>,
    pub status: RefundRequestStatus,
    pub stripe_refund_id: Option<StripeRefundId>,
    pub failure: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl RefundRequest {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: id_col(row, "id", RefundRequestId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            purchase_id: id_col(row, "purchase_id", PurchaseId::from_db)?,
            amount: Amount::from_db(row.try_get("amount")?),
            reason: opt_enum_col(row, "reason", RefundReason::parse)?,
            idempotency_key: row.try_get("idempotency_key")?,
            status: enum_col(row, "status", RefundRequestStatus::parse)?,
            stripe_refund_id: opt_id_col(row, "stripe_refund_id", StripeRefundId::from_db)?,
            failure: row.try_get("failure")?,
            created_at: ts_col(row, "created_at")?,
            updated_at: ts_col(row, "updated_at")?,
        })
    }
}

/// Why a refund cannot be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRefusal {
    /// The purchase is not in a refundable state.
    NotRefundable(PurchaseStatus),
    /// A dispute is open or was lost: the dispute decides.
    Disputed,
    /// Nothing was paid (a 100%-off order).
    NothingPaid,
    /// More than is left, counting refunds under way.
    TooLarge {
        requested: Amount,
        available: Amount,
    },
}

/// What asking for a refund came to.
#[derive(Debug, Clone)]
pub enum Opened {
    /// A new pending request: ask Stripe now.
    New(RefundRequest),
    /// The request made earlier with the same idempotency key, in whatever state it is.
    Existing(RefundRequest),
    Refused(RefundRefusal),
}

const COLUMNS: &str = "id, tenant_id, purchase_id, amount, reason, idempotency_key, status, stripe_refund_id, \
    failure, created_at, updated_at";

impl Store {
    /// Opens a refund request for `amount` of a purchase (`None`: all that is left), or,
    /// when `idempotency_key` was used for this purchase before, answers that request.
    /// The purchase is locked while the amount left is counted, so concurrent requests
    /// never together exceed it.
    pub async fn open_refund_request(
        &self,
        tenant: &TenantId,
        purchase: &PurchaseId,
        amount: Option<Amount>,
        reason: Option<RefundReason>,
        idempotency_key: Option<&str>,
    ) -> Result<Opened> {
        let mut tx = self.begin().await?;
        let p = self.lock_purchase(&mut tx, tenant, purchase).await?;
        if let Some(key) = idempotency_key
            && let Some(existing) = request_by_key(&mut tx, tenant, purchase, key).await?
        {
            db(tx.commit().await)?;
            return Ok(Opened::Existing(existing));
        }
        if p.stripe_payment_intent_id.is_none() {
            return Ok(Opened::Refused(RefundRefusal::NothingPaid));
        }
        if !p.status.is_refundable() {
            return Ok(Opened::Refused(RefundRefusal::NotRefundable(p.status)));
        }
        if p.disputed {
            return Ok(Opened::Refused(RefundRefusal::Disputed));
        }
        let held: i64 = db(sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS held FROM refund_requests \
             WHERE purchase_id = $1 AND status = 'pending'",
        )
        .bind(purchase.as_str())
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get("held")))?;
        let available = p
            .refundable_amount()
            .checked_sub(Amount::from_db(held))
            .unwrap_or(Amount::ZERO);
        let requested = amount.unwrap_or(available);
        if requested.is_zero() || requested > available {
            return Ok(Opened::Refused(RefundRefusal::TooLarge {
                requested,
                available,
            }));
        }
        let id = RefundRequestId::generate();
        let now = Timestamp::now().secs();
        db(sqlx::query(
            "INSERT INTO refund_requests (id, tenant_id, purchase_id, amount, reason, idempotency_key, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .bind(requested.get())
        .bind(reason.map(|r| r.as_str()))
        .bind(idempotency_key)
        .bind(now)
        .execute(&mut *tx)
        .await)?;
        let request = one_request(&mut tx, tenant, &id).await?;
        db(tx.commit().await)?;
        Ok(Opened::New(request))
    }

    /// Settles a request Stripe carried out: records its refund (once, whoever records
    /// it first: the API or the webhook worker) and marks the request succeeded, in one
    /// transaction; a request failed for another reason (an overlapping call refused, say)
    /// whose refund went through is succeeded too. `None` when the worker read first that
    /// Stripe failed this very refund (it recorded and undid it, and failed the request):
    /// nothing is counted, and the request stays failed.
    pub async fn complete_refund_request(
        &self,
        tenant: &TenantId,
        request: &RefundRequestId,
        stripe_refund_id: &StripeRefundId,
        amount: Amount,
    ) -> Result<Option<(Purchase, AccessChanges)>> {
        let mut tx = self.begin().await?;
        let r = one_request(&mut tx, tenant, request).await?;
        if r.status == RefundRequestStatus::Failed
            && r.stripe_refund_id.as_ref() == Some(stripe_refund_id)
        {
            return Ok(None);
        }
        let changes = self
            .record_refund_in(
                &mut tx,
                tenant,
                &r.purchase_id,
                amount,
                r.reason,
                stripe_refund_id,
            )
            .await?;
        db(sqlx::query(
            "UPDATE refund_requests SET status = 'succeeded', stripe_refund_id = $3, failure = NULL, updated_at = $4 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(request.as_str())
        .bind(stripe_refund_id.as_str())
        .bind(Timestamp::now().secs())
        .execute(&mut *tx)
        .await)?;
        db(tx.commit().await)?;
        Ok(Some((
            self.purchase(tenant, &r.purchase_id).await?,
            changes,
        )))
    }

    /// Marks a request Stripe refused: its amount is free again.
    pub async fn fail_refund_request(
        &self,
        tenant: &TenantId,
        request: &RefundRequestId,
        failure: &str,
    ) -> Result<()> {
        db(sqlx::query(
            "UPDATE refund_requests SET status = 'failed', failure = $3, updated_at = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant.as_str())
        .bind(request.as_str())
        .bind(failure)
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        Ok(())
    }

    /// Pending requests last touched before `before` (their request died, or Stripe was
    /// unavailable): the sweep asks Stripe again with the same key. Oldest first.
    pub async fn stale_refund_requests(
        &self,
        before: Timestamp,
        limit: i64,
    ) -> Result<Vec<RefundRequest>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM refund_requests WHERE status = 'pending' AND updated_at < $1 \
             ORDER BY updated_at, id LIMIT $2"
        ))
        .bind(before.secs())
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| db(RefundRequest::from_row(r)))
            .collect()
    }

    /// Notes an attempt at a pending request (so the sweep leaves it alone a while).
    pub async fn touch_refund_request(
        &self,
        tenant: &TenantId,
        request: &RefundRequestId,
    ) -> Result<()> {
        db(sqlx::query(
            "UPDATE refund_requests SET updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant.as_str())
        .bind(request.as_str())
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        Ok(())
    }

    /// The requests of a purchase, oldest first.
    pub async fn refund_requests_for_purchase(
        &self,
        tenant: &TenantId,
        purchase: &PurchaseId,
    ) -> Result<Vec<RefundRequest>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM refund_requests WHERE tenant_id = $1 AND purchase_id = $2 ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| db(RefundRequest::from_row(r)))
            .collect()
    }
}

async fn request_by_key(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    purchase: &PurchaseId,
    key: &str,
) -> Result<Option<RefundRequest>> {
    let row = db(sqlx::query(&format!(
        "SELECT {COLUMNS} FROM refund_requests WHERE tenant_id = $1 AND purchase_id = $2 AND idempotency_key = $3"
    ))
    .bind(tenant.as_str())
    .bind(purchase.as_str())
    .bind(key)
    .fetch_optional(&mut **tx)
    .await)?;
    row.map(|r| db(RefundRequest::from_row(&r))).transpose()
}

async fn one_request(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    id: &RefundRequestId,
) -> Result<RefundRequest> {
    let row = db(sqlx::query(&format!(
        "SELECT {COLUMNS} FROM refund_requests WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut **tx)
    .await)?
    .ok_or(StoreError::NotFound)?;
    db(RefundRequest::from_row(&row))
}

/// Concludes a pending request by the Stripe refund that carried it out, found by the
/// webhook worker before the request's own call came back: succeeded, or failed with
/// `failure` when Stripe has failed that refund since (its amount is free again).
pub(crate) async fn conclude_request_in(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    request: &RefundRequestId,
    stripe_refund_id: &str,
    failure: Option<&str>,
) -> Result<()> {
    // The request's id comes from the refund's metadata: only the tenant's own is touched.
    db(sqlx::query(
        "UPDATE refund_requests SET status = $4, stripe_refund_id = $2, failure = $5, updated_at = $3 \
         WHERE id = $1 AND tenant_id = $6 AND status = 'pending'",
    )
    .bind(request.as_str())
    .bind(stripe_refund_id)
    .bind(Timestamp::now().secs())
    .bind(if failure.is_some() { "failed" } else { "succeeded" })
    .bind(failure)
    .bind(tenant.as_str())
    .execute(&mut **tx)
    .await)?;
    Ok(())
}

/// Why a request failed whose refund Stripe made and then failed.
pub(crate) const FAILED_AT_STRIPE: &str = "the refund failed at Stripe";

/// Marks the requests whose Stripe refund later failed.
pub(crate) async fn fail_requests_of_refund(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    stripe_refund_id: &str,
) -> Result<()> {
    db(sqlx::query(
        "UPDATE refund_requests SET status = 'failed', failure = $3, updated_at = $2 \
         WHERE stripe_refund_id = $1 AND tenant_id = $4",
    )
    .bind(stripe_refund_id)
    .bind(Timestamp::now().secs())
    .bind(FAILED_AT_STRIPE)
    .bind(tenant.as_str())
    .execute(&mut **tx)
    .await)?;
    Ok(())
}
