//! Disputes as Stripe reports them, per tenant; and what a lost one does to the ledger:
//! the disputed amount is taken back like a refund, the split reversed in proportion,
//! once.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::{DisputeStatus, RefundReason};
use tollgate_domain::{
    Amount, Currency, DisputeId, StripeDisputeId, StripePaymentIntentId, TenantId, Timestamp,
};

use crate::purchases::take_back;
use crate::{
    AccessChanges, Engine, Purchase, Result, Store, StoreError, db, enum_col, id_col, opt_ts_col,
    ts_col,
};

/// A dispute as Tollgate records it.
#[derive(Debug, Clone)]
pub struct Dispute {
    pub id: DisputeId,
    pub tenant_id: TenantId,
    pub stripe_dispute_id: StripeDisputeId,
    pub stripe_payment_intent_id: StripePaymentIntentId,
    pub status: DisputeStatus,
    /// Stripe's code for why the cardholder disputed (`fraudulent`, ...).
    pub reason: String,
    pub amount: Amount,
    pub currency: Currency,
    /// Stripe's dispute fee.
    pub fee: Amount,
    pub evidence_due_at: Option<Timestamp>,
    /// When the loss was written into the ledger.
    pub loss_recorded_at: Option<Timestamp>,
    pub stripe_created_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Dispute {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: id_col(row, "id", DisputeId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            stripe_dispute_id: id_col(row, "stripe_dispute_id", StripeDisputeId::from_db)?,
            stripe_payment_intent_id: id_col(
                row,
                "stripe_payment_intent_id",
                StripePaymentIntentId::from_db,
            )?,
            status: enum_col(row, "status", DisputeStatus::parse)?,
            reason: row.try_get("reason")?,
            amount: Amount::from_db(row.try_get("amount")?),
            currency: Currency::from_db(row.try_get("currency")?),
            fee: Amount::from_db(row.try_get("fee")?),
            evidence_due_at: opt_ts_col(row, "evidence_due_at")?,
            loss_recorded_at: opt_ts_col(row, "loss_recorded_at")?,
            stripe_created_at: ts_col(row, "stripe_created_at")?,
            created_at: ts_col(row, "created_at")?,
            updated_at: ts_col(row, "updated_at")?,
        })
    }
}

/// Stripe's state of a dispute, to store.
#[derive(Debug, Clone)]
pub struct DisputeRecord {
    pub stripe_dispute_id: StripeDisputeId,
    pub stripe_payment_intent_id: StripePaymentIntentId,
    pub status: DisputeStatus,
    pub reason: String,
    pub amount: Amount,
    pub currency: Currency,
    pub fee: Amount,
    pub evidence_due_at: Option<Timestamp>,
    pub stripe_created_at: Timestamp,
}

const COLUMNS: &str = "id, tenant_id, stripe_dispute_id, stripe_payment_intent_id, status, reason, amount, currency, \
    fee, evidence_due_at, loss_recorded_at, stripe_created_at, created_at, updated_at";

impl Store {
    /// Stores Stripe's state of a dispute of one of the tenant's payments.
    pub async fn upsert_dispute(&self, tenant: &TenantId, d: &DisputeRecord) -> Result<Dispute> {
        let now = Timestamp::now().secs();
        db(sqlx::query(
            "INSERT INTO disputes (id, tenant_id, stripe_dispute_id, stripe_payment_intent_id, status, reason, amount, currency, \
             fee, evidence_due_at, stripe_created_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
             ON CONFLICT (stripe_dispute_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
             amount = excluded.amount, fee = excluded.fee, evidence_due_at = excluded.evidence_due_at, \
             updated_at = excluded.updated_at WHERE disputes.tenant_id = excluded.tenant_id",
        )
        .bind(DisputeId::generate().as_str())
        .bind(tenant.as_str())
        .bind(d.stripe_dispute_id.as_str())
        .bind(d.stripe_payment_intent_id.as_str())
        .bind(d.status.as_str())
        .bind(&d.reason)
        .bind(d.amount.get())
        .bind(d.currency.as_str())
        .bind(d.fee.get())
        .bind(d.evidence_due_at.map(Timestamp::secs))
        .bind(d.stripe_created_at.secs())
        .bind(now)
        .execute(&self.pool)
        .await)?;
        let row = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM disputes WHERE tenant_id = $1 AND stripe_dispute_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(d.stripe_dispute_id.as_str())
        .fetch_optional(&self.pool)
        .await)?
        .ok_or(StoreError::NotFound)?;
        db(Dispute::from_row(&row))
    }

    /// Writes a lost dispute into the ledger, once: the disputed amount is taken back from
    /// the payment's purchases in item order, each giving what it has left, with its split
    /// reversed in proportion. Answers the payment's purchases after.
    pub async fn record_dispute_loss(
        &self,
        tenant: &TenantId,
        dispute: &DisputeId,
    ) -> Result<(Vec<Purchase>, AccessChanges)> {
        let mut changes = AccessChanges::none();
        let mut tx = self.begin().await?;
        let row = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM disputes WHERE tenant_id = $1 AND id = $2{}",
            self.for_update()
        ))
        .bind(tenant.as_str())
        .bind(dispute.as_str())
        .fetch_optional(&mut *tx)
        .await)?
        .ok_or(StoreError::NotFound)?;
        let d = db(Dispute::from_row(&row))?;
        let pi = d.stripe_payment_intent_id.clone();
        if d.loss_recorded_at.is_none() {
            let ids = db(sqlx::query(&format!(
                "SELECT p.id FROM purchases p JOIN order_items i ON i.id = p.order_item_id \
                 WHERE p.tenant_id = $1 AND p.stripe_payment_intent_id = $2 ORDER BY i.position{}",
                if self.engine == Engine::Postgres {
                    " FOR UPDATE OF p"
                } else {
                    ""
                }
            ))
            .bind(tenant.as_str())
            .bind(pi.as_str())
            .fetch_all(&mut *tx)
            .await)?;
            let mut left = d.amount;
            for r in &ids {
                let id = db(id_col(r, "id", tollgate_domain::PurchaseId::from_db))?;
                let p = self.lock_purchase(&mut tx, tenant, &id).await?;
                let take = left.min(p.refundable_amount());
                if take.is_zero() {
                    continue;
                }
                take_back(
                    &mut tx,
                    &p,
                    take,
                    Some(RefundReason::DisputeLost),
                    None,
                    Some(d.stripe_dispute_id.as_str()),
                )
                .await?;
                if let Some(c) = &p.customer_id {
                    self.notify_access_in(&mut tx, tenant, c).await?;
                    changes.add(tenant, c);
                }
                left = left.checked_sub(take).unwrap_or(Amount::ZERO);
            }
            db(sqlx::query(
                "UPDATE disputes SET loss_recorded_at = $3, updated_at = $3 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_str())
            .bind(dispute.as_str())
            .bind(Timestamp::now().secs())
            .execute(&mut *tx)
            .await)?;
        }
        db(tx.commit().await)?;
        Ok((
            self.purchases_for_payment_intent(tenant, &pi).await?,
            changes,
        ))
    }

    pub async fn dispute(&self, tenant: &TenantId, id: &DisputeId) -> Result<Dispute> {
        self.one(
            &format!("SELECT {COLUMNS} FROM disputes WHERE tenant_id = $1 AND id = $2"),
            tenant,
            id.as_str(),
            Dispute::from_row,
        )
        .await
    }

    /// The tenant's disputes, newest first, optionally of one status.
    pub async fn list_disputes(
        &self,
        tenant: &TenantId,
        status: Option<DisputeStatus>,
        limit: i64,
        starting_after: Option<&DisputeId>,
    ) -> Result<Vec<Dispute>> {
        let (after_created, after_id) = match starting_after {
            Some(id) => {
                let d = self.dispute(tenant, id).await?;
                (d.stripe_created_at.secs(), d.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM disputes WHERE tenant_id = $1 AND ($2 = '' OR status = $2) \
             AND ($4 = '' OR stripe_created_at < $3 OR (stripe_created_at = $3 AND id < $4)) \
             ORDER BY stripe_created_at DESC, id DESC LIMIT $5"
        ))
        .bind(tenant.as_str())
        .bind(status.map(|s| s.as_str()).unwrap_or(""))
        .bind(after_created)
        .bind(&after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Dispute::from_row(r))).collect()
    }
}
