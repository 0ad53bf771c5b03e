//! The ledger: purchases with their revenue split, refunds, disputes, and the grants that
//! access checks are answered from.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{
    CustomerId, FeeSchedule, OrderId, ProductId, PurchaseId, RefundId, Split, TenantId,
};

use crate::inbox::{InboxEvent, inbox_mark_in};
use crate::{Engine, Result, Store, StoreError, db, now_ms};

#[derive(Debug, Clone, Serialize)]
pub struct Purchase {
    pub id: PurchaseId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub order_id: OrderId,
    pub customer_id: Option<CustomerId>,
    pub email: Option<String>,
    pub product_id: ProductId,
    pub creator_id: Option<String>,
    pub currency: String,
    pub amount: i64,
    pub platform_fee: i64,
    pub organization_fee: i64,
    pub creator_payout: i64,
    pub status: String,
    pub stripe_payment_intent_id: String,
    pub stripe_checkout_session_id: Option<String>,
    pub purchased_at: Option<i64>,
    pub refunded_amount: i64,
    pub refunded_platform_fee: i64,
    pub refunded_organization_fee: i64,
    pub refunded_creator_payout: i64,
    pub refunded_at: Option<i64>,
    pub refund_reason: Option<String>,
    pub disputed: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Purchase {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self {
            id: PurchaseId::from_db(row.try_get("id")?),
            tenant_id: TenantId::from_db(row.try_get("tenant_id")?),
            order_id: OrderId::from_db(row.try_get("order_id")?),
            customer_id: row
                .try_get::<Option<String>, _>("customer_id")?
                .map(CustomerId::from_db),
            email: row.try_get("email")?,
            product_id: ProductId::from_db(row.try_get("product_id")?),
            creator_id: row.try_get("creator_id")?,
            currency: row.try_get("currency")?,
            amount: row.try_get("amount")?,
            platform_fee: row.try_get("platform_fee")?,
            organization_fee: row.try_get("organization_fee")?,
            creator_payout: row.try_get("creator_payout")?,
            status: row.try_get("status")?,
            stripe_payment_intent_id: row.try_get("stripe_payment_intent_id")?,
            stripe_checkout_session_id: row.try_get("stripe_checkout_session_id")?,
            purchased_at: row.try_get("purchased_at")?,
            refunded_amount: row.try_get("refunded_amount")?,
            refunded_platform_fee: row.try_get("refunded_platform_fee")?,
            refunded_organization_fee: row.try_get("refunded_organization_fee")?,
            refunded_creator_payout: row.try_get("refunded_creator_payout")?,
            refunded_at: row.try_get("refunded_at")?,
            refund_reason: row.try_get("refund_reason")?,
            disputed: row.try_get::<i64, _>("disputed")? != 0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// The split still standing after refunds.
    pub fn remaining_split(&self) -> Split {
        Split {
            platform: self.platform_fee - self.refunded_platform_fee,
            organization: self.organization_fee - self.refunded_organization_fee,
            creator: self.creator_payout - self.refunded_creator_payout,
        }
    }

    /// Whether this purchase grants access now.
    pub fn grants_access(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "partially_refunded") && !self.disputed
    }
}

/// What a completed order item becomes.
#[derive(Debug, Clone)]
pub struct NewPurchase {
    pub order_item_id: String,
    pub product_id: ProductId,
    pub creator_id: Option<String>,
    pub amount: i64,
    /// The customer may own the product once (anything but event tickets).
    pub exclusive: bool,
}

/// Why a purchase recorded for money that moved grants nothing: the customer owned the
/// product already (two checkouts were paid). The payment is refunded.
pub const DUPLICATE_PURCHASE: &str = "duplicate_purchase";

/// One refund as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RefundRecord {
    pub id: RefundId,
    pub purchase_id: PurchaseId,
    pub amount: i64,
    pub platform_fee: i64,
    pub organization_fee: i64,
    pub creator_payout: i64,
    pub reason: Option<String>,
    pub stripe_refund_id: Option<String>,
    pub created_at: i64,
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
    Subscription(tollgate_domain::SubscriptionId),
}

/// Access held by a customer: what the in-memory index holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub tenant_id: TenantId,
    pub customer_id: CustomerId,
    pub target: GrantTarget,
    pub source: GrantSource,
    /// Unix milliseconds after which the grant no longer holds; `None` for no end.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct PurchaseFilter {
    pub customer_id: Option<CustomerId>,
    pub product_id: Option<ProductId>,
    pub status: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, order_id, customer_id, email, product_id, creator_id, currency, amount, platform_fee, \
    organization_fee, creator_payout, status, stripe_payment_intent_id, stripe_checkout_session_id, purchased_at, \
    refunded_amount, refunded_platform_fee, refunded_organization_fee, refunded_creator_payout, refunded_at, \
    refund_reason, disputed, created_at, updated_at";

pub(crate) type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Store {
    fn for_update(&self) -> &'static str {
        if self.engine == Engine::Postgres {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// Completes a paid order exactly once: the order turns `completed`, each item becomes
    /// a purchase with the split of the fee schedule the order was placed under, bookings
    /// are confirmed, and `mark_event` (the inbox event that caused it, if any) is marked
    /// processed, all in one transaction. Returns the purchases of the order. Completing a
    /// completed order changes nothing.
    ///
    /// An item the customer owns already (two checkouts of one product were both paid)
    /// is recorded as a `failed` purchase with reason [`DUPLICATE_PURCHASE`]: the money
    /// moved, so the ledger shows it, and the caller refunds it.
    pub async fn complete_order(
        &self,
        tenant: &TenantId,
        order_id: &OrderId,
        payment_intent: &str,
        items: &[NewPurchase],
        mark_event: Option<&InboxEvent>,
    ) -> Result<Vec<Purchase>> {
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
        let status: String = db(order.try_get("status"))?;
        let customer: Option<String> = db(order.try_get("customer_id"))?;
        let email: Option<String> = db(order.try_get("email"))?;
        let currency: String = db(order.try_get("currency"))?;
        let session: Option<String> = db(order.try_get("stripe_checkout_session_id"))?;
        let bps = |column: &str| -> Result<u32> {
            let v: i64 = db(order.try_get(column))?;
            u32::try_from(v).map_err(|_| StoreError::Conflict("fee_schedule".into()))
        };
        let fees = FeeSchedule::new(bps("platform_fee_bps")?, bps("organization_fee_bps")?)
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        let now = now_ms();
        if status != "completed"
            && let Some(c) = &customer
        {
            // Completions of one customer's orders take turns, so that of two paid orders
            // for one product exactly one sees the other's purchase and records a duplicate
            // (rather than both inserting and one failing on the unique index).
            db(sqlx::query(&format!(
                "SELECT id FROM customers WHERE tenant_id = $1 AND id = $2{}",
                self.for_update()
            ))
            .bind(tenant.as_str())
            .bind(c)
            .fetch_optional(&mut *tx)
            .await)?;
        }
        if status != "completed" {
            // A payment may arrive for an order we had given up on (expired, failed): the
            // money moved, so the ledger records it.
            db(sqlx::query(
                "UPDATE orders SET status = 'completed', stripe_payment_intent_id = $3, completed_at = $4, updated_at = $4, failure_reason = NULL \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_str())
            .bind(order_id.as_str())
            .bind(payment_intent)
            .bind(now)
            .execute(&mut *tx)
            .await)?;
            for item in items {
                let split = fees
                    .split(item.amount)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
                let owned = match &customer {
                    Some(c) if item.exclusive => db(sqlx::query(
                        "SELECT id FROM purchases WHERE tenant_id = $1 AND customer_id = $2 AND product_id = $3 \
                         AND status IN ('completed', 'partially_refunded') AND exclusive = 1",
                    )
                    .bind(tenant.as_str())
                    .bind(c)
                    .bind(item.product_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await)?
                    .is_some(),
                    _ => false,
                };
                let status = if owned { "failed" } else { "completed" };
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
                .bind(&item.order_item_id)
                .bind(&customer)
                .bind(&email)
                .bind(item.product_id.as_str())
                .bind(&item.creator_id)
                .bind(&currency)
                .bind(item.amount)
                .bind(split.platform)
                .bind(split.organization)
                .bind(split.creator)
                .bind(status)
                .bind(payment_intent)
                .bind(&session)
                .bind(now)
                .bind(owned.then_some(DUPLICATE_PURCHASE))
                .bind(i64::from(item.exclusive))
                .execute(&mut *tx)
                .await)?;
            }
            db(sqlx::query("UPDATE bookings SET status = 'confirmed', updated_at = $2 WHERE order_id = $1 AND status IN ('pending', 'canceled')")
                .bind(order_id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await)?;
            if let Some(c) = &customer {
                self.notify_access_in(&mut tx, tenant, c).await?;
            }
        }
        if let Some(event) = mark_event {
            inbox_mark_in(&mut tx, event, "processed").await?;
        }
        db(tx.commit().await)?;
        self.purchases_for_order(tenant, order_id).await
    }

    /// Purchases recorded for a duplicate payment and not refunded yet.
    pub async fn unrefunded_duplicates(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Vec<Purchase>> {
        Ok(self
            .purchases_for_order(tenant, order)
            .await?
            .into_iter()
            .filter(|p| {
                p.status == "failed"
                    && p.refund_reason.as_deref() == Some(DUPLICATE_PURCHASE)
                    && p.refunded_amount < p.amount
            })
            .collect())
    }

    /// Orders holding a duplicate payment not refunded yet (for the sweep that retries
    /// those refunds), at most `limit`.
    pub async fn orders_with_unrefunded_duplicates(
        &self,
        limit: i64,
    ) -> Result<Vec<(TenantId, OrderId)>> {
        let rows = db(sqlx::query(
            "SELECT DISTINCT tenant_id, order_id FROM purchases WHERE status = 'failed' AND refund_reason = $1 \
             AND refunded_amount < amount LIMIT $2",
        )
        .bind(DUPLICATE_PURCHASE)
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                Ok((
                    TenantId::from_db(db(r.try_get("tenant_id"))?),
                    OrderId::from_db(db(r.try_get("order_id"))?),
                ))
            })
            .collect()
    }

    /// On PostgreSQL, tells every instance (on commit) that a customer's access changed.
    pub(crate) async fn notify_access_in(
        &self,
        tx: &mut Tx<'_>,
        tenant: &TenantId,
        customer: &str,
    ) -> Result<()> {
        if self.engine == Engine::Postgres {
            db(sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::ACCESS_CHANNEL)
                .bind(format!("{tenant} {customer}"))
                .execute(&mut **tx)
                .await)?;
        }
        Ok(())
    }

    /// Takes the refund lease of a purchase for `ms`; `false` while another refund of it
    /// runs. The lease runs out on its own if its holder dies.
    pub async fn refund_lock(
        &self,
        tenant: &TenantId,
        purchase: &PurchaseId,
        ms: i64,
    ) -> Result<bool> {
        let now = now_ms();
        Ok(db(sqlx::query(
            "UPDATE purchases SET refund_lock_until = $3 WHERE tenant_id = $1 AND id = $2 \
             AND (refund_lock_until IS NULL OR refund_lock_until < $4)",
        )
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .bind(now + ms)
        .bind(now)
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
        payment_intent: &str,
    ) -> Result<Vec<Purchase>> {
        let rows = db(sqlx::query(&format!(
            "SELECT p.{} FROM purchases p JOIN order_items i ON i.id = p.order_item_id \
             WHERE p.tenant_id = $1 AND p.stripe_payment_intent_id = $2 ORDER BY i.position",
            COLUMNS.replace(", ", ", p.")
        ))
        .bind(tenant.as_str())
        .bind(payment_intent)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Purchase::from_row(r))).collect()
    }

    /// The tenant whose purchases a payment intent paid for (events about charges and
    /// disputes name the payment intent, not the tenant).
    pub async fn tenant_for_payment_intent(
        &self,
        payment_intent: &str,
    ) -> Result<Option<TenantId>> {
        let row = db(sqlx::query(
            "SELECT tenant_id FROM purchases WHERE stripe_payment_intent_id = $1 LIMIT 1",
        )
        .bind(payment_intent)
        .fetch_optional(&self.pool)
        .await)?;
        row.map(|r| db(r.try_get::<String, _>("tenant_id")).map(TenantId::from_db))
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

    /// True when the customer holds a completed, unrefunded purchase of the product.
    pub async fn has_active_purchase(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
        product: &ProductId,
    ) -> Result<bool> {
        Ok(db(sqlx::query(
            "SELECT id FROM purchases WHERE tenant_id = $1 AND customer_id = $2 AND product_id = $3 \
             AND status IN ('completed', 'partially_refunded')",
        )
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
        amount: i64,
        reason: Option<&str>,
        stripe_refund_id: &str,
        mark_event: Option<&InboxEvent>,
    ) -> Result<Purchase> {
        let mut tx = self.begin().await?;
        let p = self.lock_purchase(&mut tx, tenant, purchase).await?;
        if !refund_recorded(&mut tx, stripe_refund_id).await? {
            apply_refund(&mut tx, &p, amount, reason, stripe_refund_id).await?;
            if let Some(c) = &p.customer_id {
                self.notify_access_in(&mut tx, tenant, c.as_str()).await?;
            }
        }
        if let Some(event) = mark_event {
            inbox_mark_in(&mut tx, event, "processed").await?;
        }
        db(tx.commit().await)?;
        self.purchase(tenant, purchase).await
    }

    async fn lock_purchase(
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
        payment_intent: &str,
        refunds: &[(String, i64, Option<PurchaseId>)],
        mark_event: Option<&InboxEvent>,
    ) -> Result<Vec<Purchase>> {
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
        .bind(payment_intent)
        .fetch_all(&mut *tx)
        .await)?;
        let mut purchases = rows
            .iter()
            .map(|r| db(Purchase::from_row(r)))
            .collect::<Result<Vec<_>>>()?;
        let mut touched = false;
        for (refund_id, amount, target) in refunds {
            if refund_recorded(&mut tx, refund_id).await? {
                continue;
            }
            let position = |id: &PurchaseId| purchases.iter().position(|p| &p.id == id);
            if let Some(i) = target.as_ref().and_then(position) {
                apply_refund(&mut tx, &purchases[i], *amount, None, refund_id).await?;
                purchases[i] = self
                    .lock_purchase(&mut tx, tenant, &purchases[i].id.clone())
                    .await?;
                touched = true;
                continue;
            }
            let mut left = *amount;
            for (n, slot) in purchases.iter_mut().enumerate() {
                let take = left.min(slot.amount - slot.refunded_amount);
                if take <= 0 {
                    continue;
                }
                // One Stripe refund may touch several purchases; each record gets its own key.
                let key = if n == 0 {
                    refund_id.clone()
                } else {
                    format!("{refund_id}#{n}")
                };
                apply_refund(&mut tx, slot, take, Some("refunded_in_stripe"), &key).await?;
                *slot = self
                    .lock_purchase(&mut tx, tenant, &slot.id.clone())
                    .await?;
                touched = true;
                left -= take;
            }
        }
        if touched {
            let mut customers: Vec<&CustomerId> = purchases
                .iter()
                .filter_map(|p| p.customer_id.as_ref())
                .collect();
            customers.dedup();
            for c in customers {
                self.notify_access_in(&mut tx, tenant, c.as_str()).await?;
            }
        }
        if let Some(event) = mark_event {
            inbox_mark_in(&mut tx, event, "processed").await?;
        }
        db(tx.commit().await)?;
        self.purchases_for_payment_intent(tenant, payment_intent)
            .await
    }

    /// Freezes (`disputed = true`) or thaws the purchases paid by a payment intent.
    pub async fn set_disputed(
        &self,
        tenant: &TenantId,
        payment_intent: &str,
        disputed: bool,
        mark_event: Option<&InboxEvent>,
    ) -> Result<Vec<Purchase>> {
        let mut tx = self.begin().await?;
        let customers = db(sqlx::query(
            "UPDATE purchases SET disputed = $3, updated_at = $4 WHERE tenant_id = $1 AND stripe_payment_intent_id = $2 \
             AND disputed <> $3 RETURNING customer_id",
        )
        .bind(tenant.as_str())
        .bind(payment_intent)
        .bind(i64::from(disputed))
        .bind(now_ms())
        .fetch_all(&mut *tx)
        .await)?;
        for row in &customers {
            if let Some(c) = db(row.try_get::<Option<String>, _>("customer_id"))? {
                self.notify_access_in(&mut tx, tenant, &c).await?;
            }
        }
        if let Some(event) = mark_event {
            inbox_mark_in(&mut tx, event, "processed").await?;
        }
        db(tx.commit().await)?;
        self.purchases_for_payment_intent(tenant, payment_intent)
            .await
    }

    pub async fn refunds_for_purchase(
        &self,
        tenant: &TenantId,
        purchase: &PurchaseId,
    ) -> Result<Vec<RefundRecord>> {
        let rows = db(sqlx::query(
            "SELECT id, purchase_id, amount, platform_fee, organization_fee, creator_payout, reason, stripe_refund_id, created_at \
             FROM refunds WHERE tenant_id = $1 AND purchase_id = $2 ORDER BY created_at, id",
        )
        .bind(tenant.as_str())
        .bind(purchase.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                db((|| {
                    Ok(RefundRecord {
                        id: RefundId::from_db(r.try_get("id")?),
                        purchase_id: PurchaseId::from_db(r.try_get("purchase_id")?),
                        amount: r.try_get("amount")?,
                        platform_fee: r.try_get("platform_fee")?,
                        organization_fee: r.try_get("organization_fee")?,
                        creator_payout: r.try_get("creator_payout")?,
                        reason: r.try_get("reason")?,
                        stripe_refund_id: r.try_get("stripe_refund_id")?,
                        created_at: r.try_get("created_at")?,
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
                (p.created_at, p.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let filter = "tenant_id = $1 AND ($2 = '' OR customer_id = $2) AND ($3 = '' OR product_id = $3) AND ($4 = '' OR status = $4)";
        let customer = f.customer_id.as_ref().map(|c| c.as_str()).unwrap_or("");
        let product = f.product_id.as_ref().map(|c| c.as_str()).unwrap_or("");
        let status = f.status.as_deref().unwrap_or("");
        let total: i64 = db(sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM purchases WHERE {filter}"
        ))
        .bind(tenant.as_str())
        .bind(customer)
        .bind(product)
        .bind(status)
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get("n")))?;
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM purchases WHERE {filter} AND ($6 = '' OR created_at < $5 OR (created_at = $5 AND id < $6)) \
             ORDER BY created_at DESC, id DESC LIMIT $7 OFFSET $8"
        ))
        .bind(tenant.as_str())
        .bind(customer)
        .bind(product)
        .bind(status)
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
            "SELECT tenant_id, customer_id, product_id, id FROM purchases WHERE status IN ('completed', 'partially_refunded') \
             AND disputed = 0 AND customer_id IS NOT NULL{extra}"
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
                        tenant_id: TenantId::from_db(r.try_get("tenant_id")?),
                        customer_id: CustomerId::from_db(r.try_get("customer_id")?),
                        target: GrantTarget::Product(ProductId::from_db(r.try_get("product_id")?)),
                        source: GrantSource::Purchase(PurchaseId::from_db(r.try_get("id")?)),
                        expires_at: None,
                    })
                })())
            })
            .collect()
    }
}

/// True when a Stripe refund id is recorded already (call with the purchase locked).
async fn refund_recorded(tx: &mut Tx<'_>, stripe_refund_id: &str) -> Result<bool> {
    Ok(db(sqlx::query(
        "SELECT id FROM refunds WHERE stripe_refund_id = $1 OR stripe_refund_id LIKE $2",
    )
    .bind(stripe_refund_id)
    .bind(format!("{stripe_refund_id}#%"))
    .fetch_optional(&mut **tx)
    .await)?
    .is_some())
}

/// Applies one refund to a purchase read under lock.
async fn apply_refund(
    tx: &mut Tx<'_>,
    p: &Purchase,
    amount: i64,
    reason: Option<&str>,
    stripe_refund_id: &str,
) -> Result<()> {
    let taken = p
        .remaining_split()
        .reverse(amount)
        .map_err(|e| StoreError::Conflict(e.to_string()))?;
    let refunded = p
        .refunded_amount
        .checked_add(amount)
        .ok_or_else(|| StoreError::Conflict("refund_overflow".into()))?;
    let status = if refunded == p.amount {
        "refunded"
    } else if p.status == "failed" {
        // A duplicate payment refunded in part is still no purchase.
        "failed"
    } else {
        "partially_refunded"
    };
    let now = now_ms();
    db(sqlx::query(
        "UPDATE purchases SET refunded_amount = refunded_amount + $3, refunded_platform_fee = refunded_platform_fee + $4, \
         refunded_organization_fee = refunded_organization_fee + $5, refunded_creator_payout = refunded_creator_payout + $6, \
         status = $7, refunded_at = $8, refund_reason = COALESCE(refund_reason, $9), updated_at = $8 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(p.tenant_id.as_str())
    .bind(p.id.as_str())
    .bind(amount)
    .bind(taken.platform)
    .bind(taken.organization)
    .bind(taken.creator)
    .bind(status)
    .bind(now)
    .bind(reason)
    .execute(&mut **tx)
    .await)?;
    db(sqlx::query(
        "INSERT INTO refunds (id, tenant_id, purchase_id, amount, platform_fee, organization_fee, creator_payout, reason, stripe_refund_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(RefundId::generate().as_str())
    .bind(p.tenant_id.as_str())
    .bind(p.id.as_str())
    .bind(amount)
    .bind(taken.platform)
    .bind(taken.organization)
    .bind(taken.creator)
    .bind(reason)
    .bind(stripe_refund_id)
    .bind(now)
    .execute(&mut **tx)
    .await)?;
    Ok(())
}
