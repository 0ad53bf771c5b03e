//! The ledger: purchases with their revenue split, refunds, disputes, and the grants that
//! access checks are answered from.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::{InboxStatus, OrderStatus, PurchaseStatus, RefundReason};
use tollgate_domain::{
    Amount, Currency, CustomerId, Email, FeeSchedule, OrderId, OrderItemId, ProductId, PurchaseId,
    RefundId, RefundRequestId, Split, StripeCheckoutSessionId, StripePaymentIntentId,
    StripeRefundId, SubscriptionId, TenantId, Timestamp,
};

use crate::inbox::Claimed;
use crate::orders::NO_PAYMENT;
use crate::{
    AccessChanges, Engine, Result, Store, StoreError, db, enum_col, flag_col, id_col, opt_enum_col,
    opt_id_col, opt_ts_col, ts_col,
};

#[derive(Debug, Clone)]
pub struct Purchase {
    pub id: PurchaseId,
    pub tenant_id: TenantId,
    pub order_id: OrderId,
    pub customer_id: Option<CustomerId>,
    pub email: Option<Email>,
    pub product_id: ProductId,
    pub creator_id: Option<String>,
    pub currency: Currency,
    pub amount: Amount,
    pub split: Split,
    pub status: PurchaseStatus,
    /// `None` for a purchase nothing was paid for (a 100%-off order).
    pub stripe_payment_intent_id: Option<StripePaymentIntentId>,
    pub stripe_checkout_session_id: Option<StripeCheckoutSessionId>,
    pub purchased_at: Option<Timestamp>,
    pub refunded: Split,
    pub refunded_at: Option<Timestamp>,
    pub refund_reason: Option<RefundReason>,
    pub disputed: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Purchase {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        let amount = |c: &str| row.try_get::<i64, _>(c).map(Amount::from_db);
        Ok(Self {
            id: id_col(row, "id", PurchaseId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            order_id: id_col(row, "order_id", OrderId::from_db)?,
            customer_id: opt_id_col(row, "customer_id", CustomerId::from_db)?,
            email: opt_id_col(row, "email", Email::from_db)?,
            product_id: id_col(row, "product_id", ProductId::from_db)?,
            creator_id: row.try_get("creator_id")?,
            currency: Currency::from_db(row.try_get("currency")?),
            amount: amount("amount")?,
            split: Split {
                platform: amount("platform_fee")?,
                organization: amount("organization_fee")?,
                creator: amount("creator_payout")?,
            },
            status: enum_col(row, "status", PurchaseStatus::parse)?,
            stripe_payment_intent_id: Some(row.try_get::<String, _>("stripe_payment_intent_id")?)
                .filter(|p| !p.starts_with(NO_PAYMENT))
                .map(StripePaymentIntentId::from_db),
            stripe_checkout_session_id: opt_id_col(
                row,
                "stripe_checkout_session_id",
                StripeCheckoutSessionId::from_db,
            )?,
            purchased_at: opt_ts_col(row, "purchased_at")?,
            refunded: Split {
                platform: amount("refunded_platform_fee")?,
                organization: amount("refunded_organization_fee")?,
                creator: amount("refunded_creator_payout")?,
            },
            refunded_at: opt_ts_col(row, "refunded_at")?,
            refund_reason: opt_enum_col(row, "refund_reason", RefundReason::parse)?,
            disputed: flag_col(row, "disputed")?,
            created_at: ts_col(row, "created_at")?,
            updated_at: ts_col(row, "updated_at")?,
        })
    }

    /// What has been refunded of the amount.
    pub fn refunded_amount(&self) -> Amount {
        self.refunded.total()
    }

    /// What is left to refund.
    pub fn refundable_amount(&self) -> Amount {
        self.amount
            .checked_sub(self.refunded_amount())
            .unwrap_or(Amount::ZERO)
    }

    /// The split still standing after refunds (the database's CHECKs keep every part of
    /// it non-negative).
    pub fn remaining_split(&self) -> Result<Split> {
        self.split
            .minus(&self.refunded)
            .ok_or_else(|| StoreError::Refused("refunds exceed the split".into()))
    }

    /// Whether this purchase grants access now.
    pub fn grants_access(&self) -> bool {
        self.status.is_owned() && !self.disputed
    }
}

/// What a completed order item becomes.
#[derive(Debug, Clone)]
pub struct NewPurchase {
    pub order_item_id: OrderItemId,
    pub product_id: ProductId,
    pub creator_id: Option<String>,
    pub amount: Amount,
    /// The customer may own the product once (anything but event tickets).
    pub exclusive: bool,
}

/// One refund as recorded.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub id: RefundId,
    pub purchase_id: PurchaseId,
    pub amount: Amount,
    pub split: Split,
    pub reason: Option<RefundReason>,
    pub stripe_refund_id: Option<StripeRefundId>,
    /// When a lost dispute took the money back, the dispute.
    pub stripe_dispute_id: Option<tollgate_domain::StripeDisputeId>,
    pub created_at: Timestamp,
    /// When Stripe reported the refund failed: its money is the merchant's again.
    pub reversed_at: Option<Timestamp>,
}

/// A refund Stripe reports for a payment, to be recorded if it is not yet.
#[derive(Debug, Clone)]
pub struct StripeRefund {
    pub id: StripeRefundId,
    pub amount: Amount,
    /// The purchase it was made for, when Tollgate made it (its metadata says so).
    pub purchase: Option<PurchaseId>,
    /// The refund request it carried out, when Tollgate made it through the API: recording
    /// the refund settles the request, so its amount is not held twice.
    pub request: Option<RefundRequestId>,
    /// It took, or is on its way (`false`: failed or canceled, and undone if recorded).
    pub counts: bool,
}

/// What a grant opens: a product, or a named feature of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GrantTarget {
    Product(ProductId),
    Feature(String),
}

/// What a grant comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSource {
    Purchase(PurchaseId),
    Subscription(SubscriptionId),
}

/// Access held by a customer: what the in-memory index holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub tenant_id: TenantId,
    pub customer_id: CustomerId,
    pub target: GrantTarget,
    pub source: GrantSource,
    /// The moment the grant no longer holds; `None` for no end.
    pub expires_at: Option<Timestamp>,
}

/// Filters for listing purchases (each narrows the list).
#[derive(Debug, Clone, Default)]
pub struct PurchaseFilter {
    pub customer_id: Option<CustomerId>,
    pub product_id: Option<ProductId>,
    pub status: Option<PurchaseStatus>,
    pub creator_id: Option<String>,
    pub disputed: Option<bool>,
}

const COLUMNS: &str = "id, tenant_id, order_id, customer_id, email, product_id, creator_id, currency, amount, platform_fee, \
    organization_fee, creator_payout, status, stripe_payment_intent_id, stripe_checkout_session_id, purchased_at, \
    refunded_amount, refunded_platform_fee, refunded_organization_fee, refunded_creator_payout, refunded_at, \
    refund_reason, disputed, created_at, updated_at";

pub(crate) use crate::Tx;

/// The payment column's value for a purchase: the payment intent, or the stand-in for a
/// session that took no payment.
fn payment_key(
    payment: Option<&StripePaymentIntentId>,
    session: Option<&StripeCheckoutSessionId>,
) -> String {
    match (payment, session) {
        (Some(pi), _) => pi.to_string(),
        (None, Some(s)) => format!("{NO_PAYMENT}{s}"),
        (None, None) => format!("{NO_PAYMENT}{}", tollgate_domain::random_token()),
    }
}

impl Store {
    pub(crate) fn for_update(&self) -> &'static str {
        if self.engine == Engine::Postgres {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// Completes a paid order exactly once: the order turns `completed`, each item becomes
    /// a purchase with the split of the fee schedule the order was placed under, bookings
    /// are confirmed, and `marks` (the inbox events that caused it, if any) are marked
    /// processed, all in one transaction. Returns the purchases of the order and whose
    /// access changed. Completing a completed order changes nothing.
    ///
    /// An item the customer owns already (two checkouts of one product were both paid)
    /// is recorded as a `failed` purchase with reason `duplicate_purchase`: the money
    /// moved, so the ledger shows it, and the caller refunds it.
    pub async fn complete_order(
        &self,
        tenant: &TenantId,
        order_id: &OrderId,
        payment: Option<&StripePaymentIntentId>,
        items: &[NewPurchase],
        marks: &[Claimed],
    ) -> Result<(Vec<Purchase>, AccessChanges)> {
        let mut changes = AccessChanges::none();
        let mut tx = self.begin().await?;
        let order = db(sqlx::query(&format!(
            "SELECT status, customer_id, email, currency, stripe_checkout_session_id, platform_fee_bps, organization_fee_bps \
             FROM orders WHERE tenant_id = $1 AND id = $2{}",
            self.for_update()
        ))
        .bind(tenant.as_str())
        .bind(order_id.as_str())
        .fetch_optional(&mut *tx)
        .await)?
        .ok_or(StoreError::NotFound)?;
        let status = db(enum_col(&order, "status", OrderStatus::parse))?;
        let customer = db(opt_id_col(&order, "customer_id", CustomerId::from_db))?;
        let email: Option<String> = db(order.try_get("email"))?;
        let currency: String = db(order.try_get("currency"))?;
        let session = db(opt_id_col(
            &order,
            "stripe_checkout_session_id",
            StripeCheckoutSessionId::from_db,
        ))?;
        let bps = |column: &str| -> Result<u32> {
            let v: i64 = db(order.try_get(column))?;
            u32::try_from(v).map_err(|_| StoreError::Refused("fee schedule".into()))
        };
        let fees = FeeSchedule::new(bps("platform_fee_bps")?, bps("organization_fee_bps")?)
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        let now = Timestamp::now().secs();
        let payment = payment_key(payment, session.as_ref());
        if status != OrderStatus::Completed {
            if let Some(c) = &customer {
                // Completions of one customer's orders take turns, so that of two paid
                // orders for one product exactly one sees the other's purchase and records
                // a duplicate (rather than both inserting and one failing on the index).
                db(sqlx::query(&format!(
                    "SELECT id FROM customers WHERE tenant_id = $1 AND id = $2{}",
                    self.for_update()
                ))
                .bind(tenant.as_str())
                .bind(c.as_str())
                .fetch_optional(&mut *tx)
                .await)?;
            }
            // A payment may arrive for an order we had given up on (expired, failed): the
            // money moved, so the ledger records it.
            db(sqlx::query(
                "UPDATE orders SET status = $5, stripe_payment_intent_id = $3, completed_at = $4, updated_at = $4, failure_reason = NULL \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_str())
            .bind(order_id.as_str())
            .bind(&payment)
            .bind(now)
            .bind(OrderStatus::Completed.as_str())
            .execute(&mut *tx)
            .await)?;
            for item in items {
                let split = fees.split(item.amount);
                let owned = match &customer {
                    Some(c) if item.exclusive => db(sqlx::query(&format!(
                        "SELECT id FROM purchases WHERE tenant_id = $1 AND customer_id = $2 AND product_id = $3 \
                         AND status IN ({}) AND exclusive = 1",
                        PurchaseStatus::owned_sql()
                    ))
                    .bind(tenant.as_str())
                    .bind(c.as_str())
                    .bind(item.product_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await)?
                    .is_some(),
                    _ => false,
                };
                let status = if owned {
                    PurchaseStatus::Failed
                } else {
                    PurchaseStatus::Completed
                };
                db(sqlx::query(
                    "INSERT INTO purchases (id, tenant_id, order_id, order_item_id, customer_id, email, product_id, creator_id, currency, \
                     amount, platform_fee, organization_fee, creator_payout, status, stripe_payment_intent_id, stripe_checkout_session_id, \
                     purchased_at, refund_reason, exclusive, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $17, $17) \
                     ON CONFLICT (order_item_id) DO NOTHING",
                )
                .bind(PurchaseId::generate().as_str())
                .bind(tenant.as_str())
                .bind(order_id.as_str())
                .bind(item.order_item_id.as_str())
                .bind(customer.as_ref().map(|c| c.as_str()))
                .bind(&email)
                .bind(item.product_id.as_str())
                .bind(&item.creator_id)
                .bind(&currency)
                .bind(item.amount.get())
                .bind(split.platform.get())
                .bind(split.organization.get())
                .bind(split.creator.get())
                .bind(status.as_str())
                .bind(&payment)
                .bind(session.as_ref().map(|s| s.as_str()))
                .bind(now)
                .bind(owned.then_some(RefundReason::DuplicatePurchase.as_str()))
                .bind(i64::from(item.exclusive))
                .execute(&mut *tx)
                .await)?;
            }
            db(sqlx::query(
                "UPDATE bookings SET status = 'confirmed', updated_at = $2 WHERE order_id = $1 AND status IN ('pending', 'canceled')",
            )
            .bind(order_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await)?;
            if let Some(c) = &customer {
                self.notify_access_in(&mut tx, tenant, c).await?;
                changes.add(tenant, c);
            }
        }
        self.mark_in(&mut tx, marks, InboxStatus::Processed).await?;
        db(tx.commit().await)?;
        Ok((self.purchases_for_order(tenant, order_id).await?, changes))
    }

    /// Purchases recorded for a duplicate payment and owed their refund (see
    /// [`OWED_DUPLICATE`]), in the order they were recorded.
    pub async fn unrefunded_duplicates(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Vec<Purchase>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM purchases p WHERE p.tenant_id = $3 AND p.order_id = $4 AND {OWED_DUPLICATE} \
             ORDER BY p.created_at, p.id"
        ))
        .bind(PurchaseStatus::Failed.as_str())
        .bind(RefundReason::DuplicatePurchase.as_str())
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Purchase::from_row(r))).collect()
    }

    /// Orders holding a duplicate payment owed its refund (see [`OWED_DUPLICATE`]), for
    /// the sweep that retries those refunds; at most `limit`.
    pub async fn orders_with_unrefunded_duplicates(
        &self,
        limit: i64,
    ) -> Result<Vec<(TenantId, OrderId)>> {
        let rows = db(sqlx::query(&format!(
            "SELECT DISTINCT p.tenant_id, p.order_id FROM purchases p WHERE {OWED_DUPLICATE} LIMIT $3"
        ))
        .bind(PurchaseStatus::Failed.as_str())
        .bind(RefundReason::DuplicatePurchase.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                Ok((
                    db(id_col(r, "tenant_id", TenantId::from_db))?,
                    db(id_col(r, "order_id", OrderId::from_db))?,
                ))
            })
            .collect()
    }

    /// On PostgreSQL, tells every instance (on commit) that a customer's access changed;
    /// the announcement names this instance, which has applied the change already.
    pub(crate) async fn notify_access_in(
        &self,
        tx: &mut Tx<'_>,
        tenant: &TenantId,
        customer: &CustomerId,
    ) -> Result<()> {
        if self.engine == Engine::Postgres {
            db(sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::ACCESS_CHANNEL)
                .bind(format!("{tenant} {customer} {}", self.instance_id()))
                .execute(&mut **tx)
                .await)?;
        }
        Ok(())
    }

    /// Takes the refund lease of a purchase for `lease`; `false` while another refund of
    /// it runs. The lease runs out on its own if its holder dies.
    pub async fn refund_lock(
        &self,
        tenant: &TenantId,
        purchase: &PurchaseId,
        lease: Duration,
    ) -> Result<bool> {
        let now = Timestamp::now();
        Ok(db(sqlx::query(
            "UPDATE purchases SET refund_lock_until = $3 WHERE tenant_id = $1 AND id = $2 \
             AND (refund_lock_until IS NULL OR refund_lock_until < $4)",
        )
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .bind(now.plus(lease).secs())
        .bind(now.secs())
        .execute(&self.pool)
        .await)?
        .rows_affected()
            == 1)
    }

    pub async fn refund_unlock(&self, tenant: &TenantId, purchase: &PurchaseId) -> Result<()> {
        db(sqlx::query(
            "UPDATE purchases SET refund_lock_until = NULL WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .execute(&self.pool)
        .await)?;
        Ok(())
    }

    pub async fn purchases_for_order(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Vec<Purchase>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM purchases WHERE tenant_id = $1 AND order_id = $2 ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Purchase::from_row(r))).collect()
    }

    /// Purchases paid by one payment intent (a cart has several), in order-item order.
    pub async fn purchases_for_payment_intent(
        &self,
        tenant: &TenantId,
        payment_intent: &StripePaymentIntentId,
    ) -> Result<Vec<Purchase>> {
        let rows = db(sqlx::query(&format!(
            "SELECT p.{} FROM purchases p JOIN order_items i ON i.id = p.order_item_id \
             WHERE p.tenant_id = $1 AND p.stripe_payment_intent_id = $2 ORDER BY i.position",
            COLUMNS.replace(", ", ", p.")
        ))
        .bind(tenant.as_str())
        .bind(payment_intent.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Purchase::from_row(r))).collect()
    }

    /// The purchases each of `payment_intents` paid for, in the order of their items (a
    /// payment intent paid for one order): one query for a page of disputes, not one per
    /// dispute. A payment intent that paid for none of the tenant's purchases is absent.
    pub async fn purchase_ids_for_payment_intents(
        &self,
        tenant: &TenantId,
        payment_intents: &[&StripePaymentIntentId],
    ) -> Result<std::collections::HashMap<String, Vec<PurchaseId>>> {
        let mut found = std::collections::HashMap::<String, Vec<PurchaseId>>::new();
        if payment_intents.is_empty() {
            return Ok(found);
        }
        let sql = format!(
            "SELECT p.id, p.stripe_payment_intent_id FROM purchases p JOIN order_items i ON i.id = p.order_item_id \
             WHERE p.tenant_id = $1 AND p.stripe_payment_intent_id IN ({}) ORDER BY i.position",
            crate::numbered(2, payment_intents.len())
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str());
        for pi in payment_intents {
            q = q.bind(pi.as_str());
        }
        for row in db(q.fetch_all(&self.pool).await)? {
            let id = db(id_col(&row, "id", PurchaseId::from_db))?;
            let pi: String = db(row.try_get("stripe_payment_intent_id"))?;
            found.entry(pi).or_default().push(id);
        }
        Ok(found)
    }

    /// The tenant whose purchases a payment intent paid for (events about charges and
    /// disputes name the payment intent, not the tenant).
    pub async fn tenant_for_payment_intent(
        &self,
        payment_intent: &StripePaymentIntentId,
    ) -> Result<Option<TenantId>> {
        let row = db(sqlx::query(
            "SELECT tenant_id FROM purchases WHERE stripe_payment_intent_id = $1 LIMIT 1",
        )
        .bind(payment_intent.as_str())
        .fetch_optional(&self.pool)
        .await)?;
        row.map(|r| db(id_col(&r, "tenant_id", TenantId::from_db)))
            .transpose()
    }

    pub async fn purchase(&self, tenant: &TenantId, id: &PurchaseId) -> Result<Purchase> {
        self.one(
            &format!("SELECT {COLUMNS} FROM purchases WHERE tenant_id = $1 AND id = $2"),
            tenant,
            id.as_str(),
            Purchase::from_row,
        )
        .await
    }

    /// True when the customer owns the product (a completed, not wholly refunded purchase).
    pub async fn has_active_purchase(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
        product: &ProductId,
    ) -> Result<bool> {
        Ok(db(sqlx::query(&format!(
            "SELECT id FROM purchases WHERE tenant_id = $1 AND customer_id = $2 AND product_id = $3 \
             AND status IN ({})",
            PurchaseStatus::owned_sql()
        ))
        .bind(tenant.as_str())
        .bind(customer.as_str())
        .bind(product.as_str())
        .fetch_optional(&self.pool)
        .await)?
        .is_some())
    }

    /// Records a refund of a purchase: reverses the split in proportion, updates the
    /// status, and is idempotent on the Stripe refund id (the API and the webhook worker
    /// may both record one refund: the purchase is locked before the check, so the second
    /// finds the first's row). Returns the purchase after it.
    pub async fn record_refund(
        &self,
        tenant: &TenantId,
        purchase: &PurchaseId,
        amount: Amount,
        reason: Option<RefundReason>,
        stripe_refund_id: &StripeRefundId,
        marks: &[Claimed],
    ) -> Result<(Purchase, AccessChanges)> {
        let mut tx = self.begin().await?;
        let changes = self
            .record_refund_in(&mut tx, tenant, purchase, amount, reason, stripe_refund_id)
            .await?;
        self.mark_in(&mut tx, marks, InboxStatus::Processed).await?;
        db(tx.commit().await)?;
        Ok((self.purchase(tenant, purchase).await?, changes))
    }

    /// [`Store::record_refund`]'s work inside `tx`: locks the purchase, and records the
    /// refund unless its Stripe id is recorded already.
    pub(crate) async fn record_refund_in(
        &self,
        tx: &mut Tx<'_>,
        tenant: &TenantId,
        purchase: &PurchaseId,
        amount: Amount,
        reason: Option<RefundReason>,
        stripe_refund_id: &StripeRefundId,
    ) -> Result<AccessChanges> {
        let mut changes = AccessChanges::none();
        let p = self.lock_purchase(tx, tenant, purchase).await?;
        if !refund_recorded(tx, stripe_refund_id.as_str()).await? {
            apply_refund(tx, &p, amount, reason, stripe_refund_id.as_str()).await?;
            if let Some(c) = &p.customer_id {
                self.notify_access_in(tx, tenant, c).await?;
                changes.add(tenant, c);
            }
        }
        Ok(changes)
    }

    pub(crate) async fn lock_purchase(
        &self,
        tx: &mut Tx<'_>,
        tenant: &TenantId,
        purchase: &PurchaseId,
    ) -> Result<Purchase> {
        let row = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM purchases WHERE tenant_id = $1 AND id = $2{}",
            self.for_update()
        ))
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .fetch_optional(&mut **tx)
        .await)?
        .ok_or(StoreError::NotFound)?;
        db(Purchase::from_row(&row))
    }

    /// Records refunds Stripe reports that are not recorded yet: a refund Tollgate made
    /// (its metadata names the purchase) goes to that purchase; one made elsewhere (the
    /// Dashboard, say) is spread over the payment intent's purchases in item order, each
    /// taking what it has left. Known refund ids are skipped. The payment's purchases are
    /// locked first, so that the API recording the same refund waits and then skips it.
    pub async fn record_external_refunds(
        &self,
        tenant: &TenantId,
        payment_intent: &StripePaymentIntentId,
        refunds: &[StripeRefund],
        marks: &[Claimed],
    ) -> Result<(Vec<Purchase>, AccessChanges)> {
        let mut changes = AccessChanges::none();
        let mut tx = self.begin().await?;
        let rows = db(sqlx::query(&format!(
            "SELECT p.{} FROM purchases p JOIN order_items i ON i.id = p.order_item_id \
             WHERE p.tenant_id = $1 AND p.stripe_payment_intent_id = $2 ORDER BY i.position{}",
            COLUMNS.replace(", ", ", p."),
            if self.engine == Engine::Postgres {
                " FOR UPDATE OF p"
            } else {
                ""
            }
        ))
        .bind(tenant.as_str())
        .bind(payment_intent.as_str())
        .fetch_all(&mut *tx)
        .await)?;
        let mut purchases = rows
            .iter()
            .map(|r| db(Purchase::from_row(r)))
            .collect::<Result<Vec<_>>>()?;
        let mut touched = false;
        let mut undone = Vec::new();
        for refund in refunds {
            let refund_id = refund.id.as_str();
            // The purchase the refund names, when it is one of this payment's.
            let named = refund
                .purchase
                .as_ref()
                .and_then(|id| purchases.iter().position(|p| &p.id == id));
            if !refund.counts {
                // One of ours (it names its purchase) that Stripe gave up on before its
                // caller recorded Stripe's first answer ("succeeded") is recorded here, to
                // be undone just below, and its request, if any, failed: the answer,
                // recorded later, finds it and counts it no more. (A duplicate payment's
                // refund has no request, and no other event might come to undo it.)
                if let Some(i) = named
                    && !refund_recorded(&mut tx, refund_id).await?
                {
                    let amount = refund.amount.min(purchases[i].refundable_amount());
                    if !amount.is_zero() {
                        apply_refund(&mut tx, &purchases[i], amount, None, refund_id).await?;
                    }
                    if let Some(request) = &refund.request {
                        crate::refund_requests::conclude_request_in(
                            &mut tx,
                            tenant,
                            request,
                            refund_id,
                            Some(crate::refund_requests::FAILED_AT_STRIPE),
                        )
                        .await?;
                    }
                }
                // Stripe gave up on it: what was recorded of it is undone.
                if reverse_refund(&mut tx, tenant, refund_id).await? {
                    undone.push(refund_id);
                    crate::refund_requests::fail_requests_of_refund(&mut tx, tenant, refund_id)
                        .await?;
                    for slot in purchases.iter_mut() {
                        *slot = self
                            .lock_purchase(&mut tx, tenant, &slot.id.clone())
                            .await?;
                    }
                    touched = true;
                }
                continue;
            }
            if let Some(request) = &refund.request {
                crate::refund_requests::conclude_request_in(
                    &mut tx, tenant, request, refund_id, None,
                )
                .await?;
            }
            if refund_recorded(&mut tx, refund_id).await? {
                continue;
            }
            if let Some(i) = named {
                let amount = refund.amount.min(purchases[i].refundable_amount());
                if !amount.is_zero() {
                    apply_refund(&mut tx, &purchases[i], amount, None, refund_id).await?;
                    purchases[i] = self
                        .lock_purchase(&mut tx, tenant, &purchases[i].id.clone())
                        .await?;
                    touched = true;
                }
                continue;
            }
            let mut left = refund.amount;
            for (n, slot) in purchases.iter_mut().enumerate() {
                let take = left.min(slot.refundable_amount());
                if take.is_zero() {
                    continue;
                }
                // One Stripe refund may touch several purchases; each record gets its own key.
                let key = if n == 0 {
                    refund_id.to_owned()
                } else {
                    format!("{refund_id}#{n}")
                };
                apply_refund(
                    &mut tx,
                    slot,
                    take,
                    Some(RefundReason::RefundedInStripe),
                    &key,
                )
                .await?;
                *slot = self
                    .lock_purchase(&mut tx, tenant, &slot.id.clone())
                    .await?;
                touched = true;
                left = left.checked_sub(take).unwrap_or(Amount::ZERO);
            }
        }
        if touched {
            for p in &purchases {
                if let Some(c) = &p.customer_id {
                    changes.add(tenant, c);
                }
            }
            for (_, c) in changes.clone().into_inner() {
                self.notify_access_in(&mut tx, tenant, &c).await?;
            }
        }
        self.mark_in(&mut tx, marks, InboxStatus::Processed).await?;
        db(tx.commit().await)?;
        for refund in undone {
            // Said once: a refund is undone once. The money stayed with the platform, and
            // the customer may be owed it by other means (a refund to a closed card fails).
            tracing::warn!(tenant = %tenant, payment_intent = %payment_intent, refund, "Stripe failed a refund that was recorded; it is undone");
        }
        Ok((
            self.purchases_for_payment_intent(tenant, payment_intent)
                .await?,
            changes,
        ))
    }

    /// Links the tenant's guest purchases made with `email` (any case) to a customer, with
    /// their orders and bookings: the tenant vouches that the customer owns the address.
    /// A guest purchase of a product the customer owns already stays a guest's (the unique
    /// rule of one owned purchase per customer and product holds). Answers the purchases
    /// linked.
    pub async fn link_guest_purchases(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
        email: &Email,
    ) -> Result<(Vec<Purchase>, AccessChanges)> {
        let mut tx = self.begin().await?;
        // Completions of the customer's orders take turns with this (see complete_order).
        db(sqlx::query(&format!(
            "SELECT id FROM customers WHERE tenant_id = $1 AND id = $2{}",
            self.for_update()
        ))
        .bind(tenant.as_str())
        .bind(customer.as_str())
        .fetch_optional(&mut *tx)
        .await)?
        .ok_or(StoreError::NotFound)?;
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS}, exclusive FROM purchases WHERE tenant_id = $1 AND customer_id IS NULL \
             AND lower(email) = lower($2) ORDER BY created_at, id{}",
            self.for_update()
        ))
        .bind(tenant.as_str())
        .bind(email.as_str())
        .fetch_all(&mut *tx)
        .await)?;
        let now = Timestamp::now().secs();
        let mut linked = Vec::new();
        for row in &rows {
            let p = db(Purchase::from_row(row))?;
            let exclusive = db(crate::flag_col(row, "exclusive"))?;
            if exclusive && p.status.is_owned() {
                let owned = db(sqlx::query(&format!(
                    "SELECT id FROM purchases WHERE tenant_id = $1 AND customer_id = $2 AND product_id = $3 \
                     AND status IN ({}) AND exclusive = 1",
                    PurchaseStatus::owned_sql()
                ))
                .bind(tenant.as_str())
                .bind(customer.as_str())
                .bind(p.product_id.as_str())
                .fetch_optional(&mut *tx)
                .await)?
                .is_some();
                if owned {
                    continue;
                }
            }
            db(sqlx::query(
                "UPDATE purchases SET customer_id = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_str())
            .bind(p.id.as_str())
            .bind(customer.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await)?;
            for table in ["orders", "bookings"] {
                let column = if table == "orders" { "id" } else { "order_id" };
                db(sqlx::query(&format!(
                    "UPDATE {table} SET customer_id = $3, updated_at = $4 WHERE tenant_id = $1 AND {column} = $2 AND customer_id IS NULL"
                ))
                .bind(tenant.as_str())
                .bind(p.order_id.as_str())
                .bind(customer.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await)?;
            }
            linked.push(p.id);
        }
        let mut changes = AccessChanges::none();
        if !linked.is_empty() {
            self.notify_access_in(&mut tx, tenant, customer).await?;
            changes.add(tenant, customer);
        }
        db(tx.commit().await)?;
        let mut out = Vec::with_capacity(linked.len());
        for id in &linked {
            out.push(self.purchase(tenant, id).await?);
        }
        Ok((out, changes))
    }

    /// Freezes (`disputed = true`) or thaws the purchases paid by a payment intent.
    pub async fn set_disputed(
        &self,
        tenant: &TenantId,
        payment_intent: &StripePaymentIntentId,
        disputed: bool,
        marks: &[Claimed],
    ) -> Result<(Vec<Purchase>, AccessChanges)> {
        let mut changes = AccessChanges::none();
        let mut tx = self.begin().await?;
        let customers = db(sqlx::query(
            "UPDATE purchases SET disputed = $3, updated_at = $4 WHERE tenant_id = $1 AND stripe_payment_intent_id = $2 \
             AND disputed <> $3 RETURNING customer_id",
        )
        .bind(tenant.as_str())
        .bind(payment_intent.as_str())
        .bind(i64::from(disputed))
        .bind(Timestamp::now().secs())
        .fetch_all(&mut *tx)
        .await)?;
        for row in &customers {
            if let Some(c) = db(opt_id_col(row, "customer_id", CustomerId::from_db))? {
                self.notify_access_in(&mut tx, tenant, &c).await?;
                changes.add(tenant, &c);
            }
        }
        self.mark_in(&mut tx, marks, InboxStatus::Processed).await?;
        db(tx.commit().await)?;
        Ok((
            self.purchases_for_payment_intent(tenant, payment_intent)
                .await?,
            changes,
        ))
    }

    pub async fn refunds_for_purchase(
        &self,
        tenant: &TenantId,
        purchase: &PurchaseId,
    ) -> Result<Vec<RefundRecord>> {
        let rows = db(sqlx::query(
            "SELECT id, purchase_id, amount, platform_fee, organization_fee, creator_payout, reason, stripe_refund_id, \
             stripe_dispute_id, created_at, reversed_at FROM refunds WHERE tenant_id = $1 AND purchase_id = $2 ORDER BY created_at, id",
        )
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                db((|| {
                    let amount = |c: &str| r.try_get::<i64, _>(c).map(Amount::from_db);
                    Ok(RefundRecord {
                        id: id_col(r, "id", RefundId::from_db)?,
                        purchase_id: id_col(r, "purchase_id", PurchaseId::from_db)?,
                        amount: amount("amount")?,
                        split: Split {
                            platform: amount("platform_fee")?,
                            organization: amount("organization_fee")?,
                            creator: amount("creator_payout")?,
                        },
                        reason: opt_enum_col(r, "reason", RefundReason::parse)?,
                        // A Stripe refund spread over several purchases is recorded as
                        // `re_...#n` for all but the first; each shows Stripe's id.
                        stripe_refund_id: r
                            .try_get::<Option<String>, _>("stripe_refund_id")?
                            .map(|s| match s.split_once('#') {
                                Some((id, _)) => id.to_owned(),
                                None => s,
                            })
                            .map(StripeRefundId::from_db),
                        stripe_dispute_id: opt_id_col(
                            r,
                            "stripe_dispute_id",
                            tollgate_domain::StripeDisputeId::from_db,
                        )?,
                        created_at: ts_col(r, "created_at")?,
                        reversed_at: opt_ts_col(r, "reversed_at")?,
                    })
                })())
            })
            .collect()
    }

    /// Purchases newest first with a cursor, and the total matching count.
    pub async fn list_purchases(
        &self,
        tenant: &TenantId,
        f: &PurchaseFilter,
        limit: i64,
        offset: i64,
        starting_after: Option<&PurchaseId>,
    ) -> Result<(Vec<Purchase>, i64)> {
        let (after_created, after_id) = match starting_after {
            Some(id) => {
                let p = self.purchase(tenant, id).await?;
                (p.created_at.secs(), p.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let filter = "tenant_id = $1 AND ($2 = '' OR customer_id = $2) AND ($3 = '' OR product_id = $3) \
            AND ($4 = '' OR status = $4) AND ($5 = '' OR creator_id = $5) AND ($6 < 0 OR disputed = $6)";
        let customer = f.customer_id.as_ref().map(|c| c.as_str()).unwrap_or("");
        let product = f.product_id.as_ref().map(|c| c.as_str()).unwrap_or("");
        let status = f.status.map(|s| s.as_str()).unwrap_or("");
        let creator = f.creator_id.as_deref().unwrap_or("");
        let disputed: i64 = f.disputed.map_or(-1, i64::from);
        let total: i64 = db(sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM purchases WHERE {filter}"
        ))
        .bind(tenant.as_str())
        .bind(customer)
        .bind(product)
        .bind(status)
        .bind(creator)
        .bind(disputed)
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get("n")))?;
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM purchases WHERE {filter} AND ($8 = '' OR created_at < $7 OR (created_at = $7 AND id < $8)) \
             ORDER BY created_at DESC, id DESC LIMIT $9 OFFSET $10"
        ))
        .bind(tenant.as_str())
        .bind(customer)
        .bind(product)
        .bind(status)
        .bind(creator)
        .bind(disputed)
        .bind(after_created)
        .bind(&after_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await)?;
        let list = rows
            .iter()
            .map(|r| db(Purchase::from_row(r)))
            .collect::<Result<Vec<_>>>()?;
        Ok((list, total))
    }

    /// Every purchase grant, for building the access index.
    pub async fn all_purchase_grants(&self) -> Result<Vec<Grant>> {
        self.purchase_grants_where("", &[]).await
    }

    /// One customer's purchase grants (to refresh the index after a change).
    pub async fn purchase_grants_for_customer(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
    ) -> Result<Vec<Grant>> {
        self.purchase_grants_where(
            " AND tenant_id = $1 AND customer_id = $2",
            &[tenant.as_str(), customer.as_str()],
        )
        .await
    }

    async fn purchase_grants_where(&self, extra: &str, binds: &[&str]) -> Result<Vec<Grant>> {
        let sql = format!(
            "SELECT tenant_id, customer_id, product_id, id FROM purchases WHERE status IN ({}) \
             AND disputed = 0 AND customer_id IS NOT NULL{extra}",
            PurchaseStatus::owned_sql()
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(*b);
        }
        let rows = db(q.fetch_all(&self.pool).await)?;
        rows.iter()
            .map(|r| {
                db((|| {
                    Ok(Grant {
                        tenant_id: id_col(r, "tenant_id", TenantId::from_db)?,
                        customer_id: id_col(r, "customer_id", CustomerId::from_db)?,
                        target: GrantTarget::Product(id_col(r, "product_id", ProductId::from_db)?),
                        source: GrantSource::Purchase(id_col(r, "id", PurchaseId::from_db)?),
                        expires_at: None,
                    })
                })())
            })
            .collect()
    }
}

/// A purchase `p` recorded for a duplicate payment and owed its refund (`$1` failed, `$2`
/// duplicate_purchase): not all refunded, and no refund of it failed at Stripe. A refund
/// fails when the card can take none (closed, lost); asking again would fail again, so
/// such a duplicate is left to the platform (its purchase shows the refund, reversed).
const OWED_DUPLICATE: &str = "p.status = $1 AND p.refund_reason = $2 AND p.refunded_amount < p.amount \
     AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.purchase_id = p.id AND r.reversed_at IS NOT NULL)";

/// True when a Stripe refund id is recorded already (call with the purchase locked).
pub(crate) async fn refund_recorded(tx: &mut Tx<'_>, stripe_refund_id: &str) -> Result<bool> {
    Ok(db(sqlx::query(
        "SELECT id FROM refunds WHERE stripe_refund_id = $1 OR stripe_refund_id LIKE $2",
    )
    .bind(stripe_refund_id)
    .bind(format!("{stripe_refund_id}#%"))
    .fetch_optional(&mut **tx)
    .await)?
    .is_some())
}

/// Undoes the records of a Stripe refund that failed (each purchase it touched gets its
/// share back, its split restored); `false` when there was nothing to undo. Call with the
/// purchases locked.
async fn reverse_refund(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    stripe_refund_id: &str,
) -> Result<bool> {
    let rows = db(sqlx::query(
        "SELECT id, purchase_id, amount, platform_fee, organization_fee, creator_payout FROM refunds \
         WHERE tenant_id = $1 AND (stripe_refund_id = $2 OR stripe_refund_id LIKE $3) AND reversed_at IS NULL",
    )
    .bind(tenant.as_str())
    .bind(stripe_refund_id)
    .bind(format!("{stripe_refund_id}#%"))
    .fetch_all(&mut **tx)
    .await)?;
    let now = Timestamp::now().secs();
    for r in &rows {
        let purchase = db(id_col(r, "purchase_id", PurchaseId::from_db))?;
        let amount: i64 = db(r.try_get("amount"))?;
        // Back to what it was before: owned if anything is left unrefunded. A duplicate
        // payment (marked so from the start) is failed again, even when this refund had
        // taken all of it: it never grants access (see OWED_DUPLICATE for its refund).
        db(sqlx::query(
            "UPDATE purchases SET refunded_amount = refunded_amount - $3, refunded_platform_fee = refunded_platform_fee - $4, \
             refunded_organization_fee = refunded_organization_fee - $5, refunded_creator_payout = refunded_creator_payout - $6, \
             status = CASE WHEN status = 'failed' OR refund_reason = $8 THEN 'failed' \
                           WHEN refunded_amount - $3 = 0 THEN 'completed' ELSE 'partially_refunded' END, \
             updated_at = $7 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .bind(amount)
        .bind(db(r.try_get::<i64, _>("platform_fee"))?)
        .bind(db(r.try_get::<i64, _>("organization_fee"))?)
        .bind(db(r.try_get::<i64, _>("creator_payout"))?)
        .bind(now)
        .bind(RefundReason::DuplicatePurchase.as_str())
        .execute(&mut **tx)
        .await)?;
        db(
            sqlx::query("UPDATE refunds SET reversed_at = $2 WHERE id = $1")
                .bind(db(r.try_get::<String, _>("id"))?)
                .bind(now)
                .execute(&mut **tx)
                .await,
        )?;
    }
    Ok(!rows.is_empty())
}

/// Applies one refund to a purchase read under lock.
pub(crate) async fn apply_refund(
    tx: &mut Tx<'_>,
    p: &Purchase,
    amount: Amount,
    reason: Option<RefundReason>,
    stripe_refund_id: &str,
) -> Result<()> {
    take_back(tx, p, amount, reason, Some(stripe_refund_id), None).await
}

/// Takes money back from a purchase read under lock (a refund, or a lost dispute): the
/// split reversed in proportion, the status updated, and a ledger row recorded.
pub(crate) async fn take_back(
    tx: &mut Tx<'_>,
    p: &Purchase,
    amount: Amount,
    reason: Option<RefundReason>,
    stripe_refund_id: Option<&str>,
    stripe_dispute_id: Option<&str>,
) -> Result<()> {
    let taken = p
        .remaining_split()?
        .reverse(amount)
        .map_err(|e| StoreError::Refused(e.to_string()))?;
    let refunded = p
        .refunded_amount()
        .checked_add(amount)
        .ok_or_else(|| StoreError::Refused("refund overflows".into()))?;
    let status = if refunded == p.amount {
        PurchaseStatus::Refunded
    } else if p.status == PurchaseStatus::Failed {
        // A duplicate payment refunded in part is still no purchase.
        PurchaseStatus::Failed
    } else {
        PurchaseStatus::PartiallyRefunded
    };
    let now = Timestamp::now().secs();
    db(sqlx::query(
        "UPDATE purchases SET refunded_amount = refunded_amount + $3, refunded_platform_fee = refunded_platform_fee + $4, \
         refunded_organization_fee = refunded_organization_fee + $5, refunded_creator_payout = refunded_creator_payout + $6, \
         status = $7, refunded_at = $8, refund_reason = COALESCE(refund_reason, $9), updated_at = $8 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(p.tenant_id.as_str())
    .bind(p.id.as_str())
    .bind(amount.get())
    .bind(taken.platform.get())
    .bind(taken.organization.get())
    .bind(taken.creator.get())
    .bind(status.as_str())
    .bind(now)
    .bind(reason.map(|r| r.as_str()))
    .execute(&mut **tx)
    .await)?;
    db(sqlx::query(
        "INSERT INTO refunds (id, tenant_id, purchase_id, amount, platform_fee, organization_fee, creator_payout, reason, \
         stripe_refund_id, created_at, stripe_dispute_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(RefundId::generate().as_str())
    .bind(p.tenant_id.as_str())
    .bind(p.id.as_str())
    .bind(amount.get())
    .bind(taken.platform.get())
    .bind(taken.organization.get())
    .bind(taken.creator.get())
    .bind(reason.map(|r| r.as_str()))
    .bind(stripe_refund_id)
    .bind(now)
    .bind(stripe_dispute_id)
    .execute(&mut **tx)
    .await)?;
    Ok(())
}
