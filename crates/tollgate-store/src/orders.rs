//! Orders, their items and event bookings. An order is written whole (pending, with its
//! items and bookings) before Stripe is called, so a failure leaves nothing half-written.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::{BookingStatus, CheckoutMode, OrderStatus};
use tollgate_domain::{
    Amount, BookingId, Currency, CustomerId, Email, FeeSchedule, OrderId, OrderItemId, PriceId,
    ProductId, StripeCheckoutSessionId, StripePaymentIntentId, TenantId, Timestamp,
};

use crate::inbox::Claimed;
use crate::{
    Engine, Result, Store, StoreError, db, enum_col, id_col, opt_id_col, opt_ts_col, ts_col,
};

#[derive(Debug, Clone)]
pub struct Order {
    pub id: OrderId,
    pub tenant_id: TenantId,
    pub customer_id: Option<CustomerId>,
    pub email: Option<Email>,
    pub status: OrderStatus,
    pub mode: CheckoutMode,
    pub currency: Currency,
    pub amount_total: Amount,
    pub stripe_checkout_session_id: Option<StripeCheckoutSessionId>,
    pub stripe_payment_intent_id: Option<StripePaymentIntentId>,
    pub checkout_url: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub failure_reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub items: Vec<OrderItem>,
}

#[derive(Debug, Clone)]
pub struct OrderItem {
    pub id: OrderItemId,
    pub product_id: ProductId,
    pub price_id: PriceId,
    pub title: String,
    pub quantity: i64,
    pub unit_amount: Amount,
    pub amount: Amount,
}

#[derive(Debug, Clone)]
pub struct Booking {
    pub id: BookingId,
    pub order_id: OrderId,
    pub product_id: ProductId,
    pub customer_id: Option<CustomerId>,
    pub quantity: i64,
    pub status: BookingStatus,
}

#[derive(Debug, Clone)]
pub struct NewOrderItem {
    pub product_id: ProductId,
    pub price_id: PriceId,
    pub title: String,
    pub quantity: i64,
    pub unit_amount: Amount,
    /// Seats to book against this capacity, for event products.
    pub event_capacity: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewOrder {
    pub customer_id: Option<CustomerId>,
    pub email: Option<Email>,
    pub currency: Currency,
    pub items: Vec<NewOrderItem>,
    /// The tenant's fee schedule now: the split follows it when the order is paid.
    pub fees: FeeSchedule,
    pub mode: CheckoutMode,
}

/// A pending order that has waited too long (see [`Store::stale_pending_orders`]).
#[derive(Debug, Clone)]
pub struct StaleOrder {
    pub tenant_id: TenantId,
    pub order_id: OrderId,
    pub stripe_checkout_session_id: Option<StripeCheckoutSessionId>,
}

const ORDER_COLUMNS: &str = "id, tenant_id, customer_id, email, status, mode, currency, amount_total, stripe_checkout_session_id, \
    stripe_payment_intent_id, checkout_url, expires_at, failure_reason, created_at, updated_at, completed_at";

/// The stand-in a purchase's payment intent column holds when its session had no payment
/// (a 100%-off order): `no_payment:<session>`. It keeps the column's uniqueness per payment
/// without inventing a Stripe id; readers see `None`.
pub(crate) const NO_PAYMENT: &str = "no_payment:";

fn order_from_row(row: &AnyRow) -> std::result::Result<Order, sqlx::Error> {
    Ok(Order {
        id: id_col(row, "id", OrderId::from_db)?,
        tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
        customer_id: opt_id_col(row, "customer_id", CustomerId::from_db)?,
        email: opt_id_col(row, "email", Email::from_db)?,
        status: enum_col(row, "status", OrderStatus::parse)?,
        mode: enum_col(row, "mode", CheckoutMode::parse)?,
        currency: Currency::from_db(row.try_get("currency")?),
        amount_total: Amount::from_db(row.try_get("amount_total")?),
        stripe_checkout_session_id: opt_id_col(
            row,
            "stripe_checkout_session_id",
            StripeCheckoutSessionId::from_db,
        )?,
        stripe_payment_intent_id: row
            .try_get::<Option<String>, _>("stripe_payment_intent_id")?
            .filter(|p| !p.starts_with(NO_PAYMENT))
            .map(StripePaymentIntentId::from_db),
        checkout_url: row.try_get("checkout_url")?,
        expires_at: opt_ts_col(row, "expires_at")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
        completed_at: opt_ts_col(row, "completed_at")?,
        items: vec![],
    })
}

fn item_from_row(row: &AnyRow) -> std::result::Result<OrderItem, sqlx::Error> {
    Ok(OrderItem {
        id: id_col(row, "id", OrderItemId::from_db)?,
        product_id: id_col(row, "product_id", ProductId::from_db)?,
        price_id: id_col(row, "price_id", PriceId::from_db)?,
        title: row.try_get("title")?,
        quantity: row.try_get("quantity")?,
        unit_amount: Amount::from_db(row.try_get("unit_amount")?),
        amount: Amount::from_db(row.try_get("amount")?),
    })
}

impl Store {
    /// Writes a pending order with its items and, for events, pending bookings. An event
    /// without seats left fails the whole order with [`StoreError::SoldOut`]. The caller
    /// checks amounts first; an overflow here is refused all the same.
    pub async fn create_order(&self, tenant: &TenantId, o: &NewOrder) -> Result<Order> {
        let id = OrderId::generate();
        let now = Timestamp::now().secs();
        let mut total = Amount::ZERO;
        let mut lines = Vec::with_capacity(o.items.len());
        for item in &o.items {
            let line = item
                .unit_amount
                .checked_mul(item.quantity)
                .ok_or_else(|| StoreError::Refused("order amount overflows".into()))?;
            total = total
                .checked_add(line)
                .ok_or_else(|| StoreError::Refused("order amount overflows".into()))?;
            lines.push(line);
        }
        let mut tx = self.begin().await?;
        // Seat counting is serialised per event, and every lock is taken before any row
        // is written, in product-id order: inserting items takes key-share locks on the
        // products (their foreign keys), and `FOR NO KEY UPDATE` does not conflict with
        // those, so two buyers of one event queue here instead of deadlocking. (On SQLite
        // the transaction holds the single write lock already.)
        if self.engine == Engine::Postgres {
            let mut events: Vec<&str> = o
                .items
                .iter()
                .filter(|i| i.event_capacity.is_some())
                .map(|i| i.product_id.as_str())
                .collect();
            events.sort_unstable();
            events.dedup();
            for product in events {
                db(
                    sqlx::query("SELECT id FROM products WHERE id = $1 FOR NO KEY UPDATE")
                        .bind(product)
                        .fetch_one(&mut *tx)
                        .await,
                )?;
            }
        }
        db(sqlx::query(
            "INSERT INTO orders (id, tenant_id, customer_id, email, status, currency, amount_total, platform_fee_bps, organization_fee_bps, \
             mode, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(o.customer_id.as_ref().map(|c| c.as_str()))
        .bind(o.email.as_ref().map(Email::as_str))
        .bind(OrderStatus::Pending.as_str())
        .bind(o.currency.as_str())
        .bind(total.get())
        .bind(i64::from(o.fees.platform_bps()))
        .bind(i64::from(o.fees.organization_bps()))
        .bind(o.mode.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await)?;
        for (position, (item, line)) in o.items.iter().zip(lines).enumerate() {
            db(sqlx::query(
                "INSERT INTO order_items (id, tenant_id, order_id, position, product_id, price_id, title, quantity, unit_amount, amount) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(OrderItemId::generate().as_str())
            .bind(tenant.as_str())
            .bind(id.as_str())
            .bind(position as i64)
            .bind(item.product_id.as_str())
            .bind(item.price_id.as_str())
            .bind(&item.title)
            .bind(item.quantity)
            .bind(item.unit_amount.get())
            .bind(line.get())
            .execute(&mut *tx)
            .await)?;
            let Some(capacity) = item.event_capacity else {
                continue;
            };
            db(sqlx::query(
                "INSERT INTO bookings (id, tenant_id, order_id, product_id, customer_id, quantity, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(BookingId::generate().as_str())
            .bind(tenant.as_str())
            .bind(id.as_str())
            .bind(item.product_id.as_str())
            .bind(o.customer_id.as_ref().map(|c| c.as_str()))
            .bind(item.quantity)
            .bind(BookingStatus::Pending.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await)?;
            let taken: i64 = db(sqlx::query(&format!(
                "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS taken FROM bookings WHERE product_id = $1 AND status IN ({})",
                BookingStatus::holding_sql()
            ))
            .bind(item.product_id.as_str())
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get("taken")))?;
            if taken > capacity {
                // Dropping the transaction rolls every row of this order back.
                return Err(StoreError::SoldOut(item.product_id.clone()));
            }
        }
        db(tx.commit().await)?;
        self.order(tenant, &id).await
    }

    /// Seats booked (pending or confirmed) for an event product.
    pub async fn seats_taken(&self, tenant: &TenantId, product: &ProductId) -> Result<i64> {
        db(sqlx::query(&format!(
            "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS taken FROM bookings WHERE tenant_id = $1 AND product_id = $2 AND status IN ({})",
            BookingStatus::holding_sql()
        ))
        .bind(tenant.as_str())
        .bind(product.as_str())
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get("taken")))
    }

    pub async fn order(&self, tenant: &TenantId, id: &OrderId) -> Result<Order> {
        let row = db(sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await)?
        .ok_or(StoreError::NotFound)?;
        let mut order = db(order_from_row(&row))?;
        order.items = self.order_items(&order.id).await?;
        Ok(order)
    }

    async fn order_items(&self, order: &OrderId) -> Result<Vec<OrderItem>> {
        let rows = db(sqlx::query(
            "SELECT id, product_id, price_id, title, quantity, unit_amount, amount FROM order_items WHERE order_id = $1 ORDER BY position",
        )
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(item_from_row(r))).collect()
    }

    /// The order a Checkout Session belongs to, within a tenant.
    pub async fn order_by_session(
        &self,
        tenant: &TenantId,
        session: &StripeCheckoutSessionId,
    ) -> Result<Order> {
        let row = db(sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND stripe_checkout_session_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(session.as_str())
        .fetch_optional(&self.pool)
        .await)?
        .ok_or(StoreError::NotFound)?;
        let mut order = db(order_from_row(&row))?;
        order.items = self.order_items(&order.id).await?;
        Ok(order)
    }

    pub async fn attach_checkout_session(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        session: &StripeCheckoutSessionId,
        url: Option<&str>,
        expires_at: Option<Timestamp>,
    ) -> Result<Order> {
        db(sqlx::query(
            "UPDATE orders SET stripe_checkout_session_id = $3, checkout_url = $4, expires_at = $5, updated_at = $6 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .bind(session.as_str())
        .bind(url)
        .bind(expires_at.map(Timestamp::secs))
        .bind(Timestamp::now().secs())
        .execute(&self.pool)
        .await)?;
        self.order(tenant, order).await
    }

    /// Marks a subscription checkout's order completed (its subscription is mirrored on
    /// its own). Completing a completed order changes nothing.
    pub async fn complete_subscription_order(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        marks: &[Claimed],
    ) -> Result<()> {
        let now = Timestamp::now().secs();
        let mut tx = self.begin().await?;
        db(sqlx::query(
            "UPDATE orders SET status = $4, completed_at = $3, updated_at = $3, failure_reason = NULL \
             WHERE tenant_id = $1 AND id = $2 AND status <> $4",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .bind(now)
        .bind(OrderStatus::Completed.as_str())
        .execute(&mut *tx)
        .await)?;
        self.mark_in(
            &mut tx,
            marks,
            tollgate_domain::status::InboxStatus::Processed,
        )
        .await?;
        db(tx.commit().await)?;
        Ok(())
    }

    /// Pending subscription orders of a customer for a plan whose Checkout Session may
    /// still be paid.
    pub async fn open_subscription_orders(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
        product: &ProductId,
    ) -> Result<Vec<Order>> {
        let rows = db(sqlx::query(
            "SELECT o.id FROM orders o WHERE o.tenant_id = $1 AND o.customer_id = $2 AND o.mode = $4 \
             AND o.status = $5 AND o.stripe_checkout_session_id IS NOT NULL \
             AND EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id AND i.product_id = $3) ORDER BY o.created_at",
        )
        .bind(tenant.as_str())
        .bind(customer.as_str())
        .bind(product.as_str())
        .bind(CheckoutMode::Subscription.as_str())
        .bind(OrderStatus::Pending.as_str())
        .fetch_all(&self.pool)
        .await)?;
        let mut orders = Vec::with_capacity(rows.len());
        for r in &rows {
            let id = db(id_col(r, "id", OrderId::from_db))?;
            orders.push(self.order(tenant, &id).await?);
        }
        Ok(orders)
    }

    /// Ends a pending order without payment (`failed` or `expired`) and frees its seats.
    /// A completed order is left alone: an older event never undoes a newer state.
    pub async fn close_order(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        status: OrderStatus,
        reason: Option<&str>,
    ) -> Result<bool> {
        let now = Timestamp::now().secs();
        let mut tx = self.begin().await?;
        let changed = db(sqlx::query(
            "UPDATE orders SET status = $3, failure_reason = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2 AND status = $6",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .bind(status.as_str())
        .bind(reason)
        .bind(now)
        .bind(OrderStatus::Pending.as_str())
        .execute(&mut *tx)
        .await)?
        .rows_affected()
            == 1;
        if changed {
            db(sqlx::query(
                "UPDATE bookings SET status = $3, updated_at = $2 WHERE order_id = $1 AND status = $4",
            )
            .bind(order.as_str())
            .bind(now)
            .bind(BookingStatus::Canceled.as_str())
            .bind(BookingStatus::Pending.as_str())
            .execute(&mut *tx)
            .await)?;
        }
        db(tx.commit().await)?;
        Ok(changed)
    }

    /// Pending orders nobody will finish on their own: never given a Checkout Session and
    /// created before `no_session_before` (the request that made them died), or whose
    /// session expired before `expired_before` without the expiry event arriving. Oldest
    /// first, at most `limit`.
    pub async fn stale_pending_orders(
        &self,
        no_session_before: Timestamp,
        expired_before: Timestamp,
        limit: i64,
    ) -> Result<Vec<StaleOrder>> {
        let rows = db(sqlx::query(
            "SELECT tenant_id, id, stripe_checkout_session_id FROM orders WHERE status = $4 \
             AND ((stripe_checkout_session_id IS NULL AND created_at < $1) OR (expires_at IS NOT NULL AND expires_at < $2)) \
             ORDER BY created_at LIMIT $3",
        )
        .bind(no_session_before.secs())
        .bind(expired_before.secs())
        .bind(limit)
        .bind(OrderStatus::Pending.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                db((|| {
                    Ok(StaleOrder {
                        tenant_id: id_col(r, "tenant_id", TenantId::from_db)?,
                        order_id: id_col(r, "id", OrderId::from_db)?,
                        stripe_checkout_session_id: opt_id_col(
                            r,
                            "stripe_checkout_session_id",
                            StripeCheckoutSessionId::from_db,
                        )?,
                    })
                })())
            })
            .collect()
    }

    /// Orders newest first.
    pub async fn list_orders(
        &self,
        tenant: &TenantId,
        customer: Option<&CustomerId>,
        limit: i64,
        starting_after: Option<&OrderId>,
    ) -> Result<Vec<Order>> {
        let (after_created, after_id) = match starting_after {
            Some(id) => {
                let o = self.order(tenant, id).await?;
                (o.created_at.secs(), o.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let rows = db(sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND ($2 = '' OR customer_id = $2) \
             AND ($4 = '' OR created_at < $3 OR (created_at = $3 AND id < $4)) ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(tenant.as_str())
        .bind(customer.map(|c| c.as_str()).unwrap_or(""))
        .bind(after_created)
        .bind(&after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut o = db(order_from_row(row))?;
            o.items = self.order_items(&o.id).await?;
            out.push(o);
        }
        Ok(out)
    }

    pub async fn bookings_for_order(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Vec<Booking>> {
        let rows = db(sqlx::query(
            "SELECT id, order_id, product_id, customer_id, quantity, status FROM bookings WHERE tenant_id = $1 AND order_id = $2 ORDER BY created_at, id",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                db((|| {
                    Ok(Booking {
                        id: id_col(r, "id", BookingId::from_db)?,
                        order_id: id_col(r, "order_id", OrderId::from_db)?,
                        product_id: id_col(r, "product_id", ProductId::from_db)?,
                        customer_id: opt_id_col(r, "customer_id", CustomerId::from_db)?,
                        quantity: r.try_get("quantity")?,
                        status: enum_col(r, "status", BookingStatus::parse)?,
                    })
                })())
            })
            .collect()
    }
}
