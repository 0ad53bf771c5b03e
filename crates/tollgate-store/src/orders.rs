//! Orders, their items and event bookings. An order is written whole (pending, with its
//! items and bookings) before Stripe is called, so a failure leaves nothing half-written.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::{
    BookingId, CustomerId, FeeSchedule, OrderId, OrderItemId, PriceId, ProductId, TenantId,
};

use crate::inbox::{InboxEvent, inbox_mark_in};
use crate::{Engine, Result, Store, StoreError, db, now_ms};

#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub id: OrderId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub customer_id: Option<CustomerId>,
    pub email: Option<String>,
    pub status: String,
    /// `payment` or `subscription`.
    pub mode: String,
    pub currency: String,
    pub amount_total: i64,
    pub stripe_checkout_session_id: Option<String>,
    pub stripe_payment_intent_id: Option<String>,
    pub checkout_url: Option<String>,
    pub expires_at: Option<i64>,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub items: Vec<OrderItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderItem {
    pub id: OrderItemId,
    pub product_id: ProductId,
    pub price_id: PriceId,
    pub title: String,
    pub quantity: i64,
    pub unit_amount: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Booking {
    pub id: BookingId,
    pub order_id: OrderId,
    pub product_id: ProductId,
    pub customer_id: Option<CustomerId>,
    pub quantity: i64,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct NewOrderItem {
    pub product_id: ProductId,
    pub price_id: PriceId,
    pub title: String,
    pub quantity: i64,
    pub unit_amount: i64,
    /// Seats to book against this capacity, for event products.
    pub event_capacity: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewOrder {
    pub customer_id: Option<CustomerId>,
    pub email: Option<String>,
    pub currency: String,
    pub items: Vec<NewOrderItem>,
    /// The tenant's fee schedule now: the split follows it when the order is paid.
    pub fees: FeeSchedule,
    /// A subscription checkout (its first invoice is the payment) rather than a purchase.
    pub subscription: bool,
}

/// A pending order that has waited too long (see [`Store::stale_pending_orders`]).
#[derive(Debug, Clone)]
pub struct StaleOrder {
    pub tenant_id: TenantId,
    pub order_id: OrderId,
    pub stripe_checkout_session_id: Option<String>,
}

const ORDER_COLUMNS: &str = "id, tenant_id, customer_id, email, status, mode, currency, amount_total, stripe_checkout_session_id, \
    stripe_payment_intent_id, checkout_url, expires_at, failure_reason, created_at, updated_at, completed_at";

fn order_from_row(row: &AnyRow) -> std::result::Result<Order, sqlx::Error> {
    Ok(Order {
        id: OrderId::from_db(row.try_get("id")?),
        tenant_id: TenantId::from_db(row.try_get("tenant_id")?),
        customer_id: row
            .try_get::<Option<String>, _>("customer_id")?
            .map(CustomerId::from_db),
        email: row.try_get("email")?,
        status: row.try_get("status")?,
        mode: row.try_get("mode")?,
        currency: row.try_get("currency")?,
        amount_total: row.try_get("amount_total")?,
        stripe_checkout_session_id: row.try_get("stripe_checkout_session_id")?,
        stripe_payment_intent_id: row.try_get("stripe_payment_intent_id")?,
        checkout_url: row.try_get("checkout_url")?,
        expires_at: row.try_get("expires_at")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        completed_at: row.try_get("completed_at")?,
        items: vec![],
    })
}

fn item_from_row(row: &AnyRow) -> std::result::Result<OrderItem, sqlx::Error> {
    Ok(OrderItem {
        id: OrderItemId::from_db(row.try_get("id")?),
        product_id: ProductId::from_db(row.try_get("product_id")?),
        price_id: PriceId::from_db(row.try_get("price_id")?),
        title: row.try_get("title")?,
        quantity: row.try_get("quantity")?,
        unit_amount: row.try_get("unit_amount")?,
        amount: row.try_get("amount")?,
    })
}

impl Store {
    /// Writes a pending order with its items and, for events, pending bookings. An event
    /// without seats left fails the whole order with `Conflict("sold_out:<product>")`.
    pub async fn create_order(&self, tenant: &TenantId, o: &NewOrder) -> Result<Order> {
        let id = OrderId::generate();
        let now = now_ms();
        let mut total: i64 = 0;
        for item in &o.items {
            let line = item
                .unit_amount
                .checked_mul(item.quantity)
                .ok_or_else(|| StoreError::Conflict("amount_overflow".into()))?;
            total = total
                .checked_add(line)
                .ok_or_else(|| StoreError::Conflict("amount_overflow".into()))?;
        }
        let mut tx = self.begin().await?;
        db(sqlx::query(
            "INSERT INTO orders (id, tenant_id, customer_id, email, status, currency, amount_total, platform_fee_bps, organization_fee_bps, \
             mode, created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $10, $9, $9)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(o.customer_id.as_ref().map(|c| c.as_str()))
        .bind(&o.email)
        .bind(&o.currency)
        .bind(total)
        .bind(i64::from(o.fees.platform_bps()))
        .bind(i64::from(o.fees.organization_bps()))
        .bind(now)
        .bind(if o.subscription { "subscription" } else { "payment" })
        .execute(&mut *tx)
        .await)?;
        for (position, item) in o.items.iter().enumerate() {
            let item_id = OrderItemId::generate();
            db(sqlx::query(
                "INSERT INTO order_items (id, tenant_id, order_id, position, product_id, price_id, title, quantity, unit_amount, amount) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(item_id.as_str())
            .bind(tenant.as_str())
            .bind(id.as_str())
            .bind(position as i64)
            .bind(item.product_id.as_str())
            .bind(item.price_id.as_str())
            .bind(&item.title)
            .bind(item.quantity)
            .bind(item.unit_amount)
            .bind(item.unit_amount * item.quantity)
            .execute(&mut *tx)
            .await)?;
            if let Some(capacity) = item.event_capacity {
                // Serialise seat counting per event: a row lock on Postgres; on SQLite the
                // booking insert below already holds the single write lock.
                if self.engine == Engine::Postgres {
                    db(
                        sqlx::query("SELECT id FROM products WHERE id = $1 FOR UPDATE")
                            .bind(item.product_id.as_str())
                            .fetch_one(&mut *tx)
                            .await,
                    )?;
                }
                db(sqlx::query(
                    "INSERT INTO bookings (id, tenant_id, order_id, product_id, customer_id, quantity, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
                )
                .bind(BookingId::generate().as_str())
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(item.product_id.as_str())
                .bind(o.customer_id.as_ref().map(|c| c.as_str()))
                .bind(item.quantity)
                .bind(now)
                .execute(&mut *tx)
                .await)?;
                let taken: i64 = db(sqlx::query(
                    "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS taken FROM bookings WHERE product_id = $1 AND status IN ('pending', 'confirmed')",
                )
                .bind(item.product_id.as_str())
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get("taken")))?;
                if taken > capacity {
                    // Dropping the transaction rolls every row of this order back.
                    return Err(StoreError::Conflict(format!(
                        "sold_out:{}",
                        item.product_id
                    )));
                }
            }
        }
        db(tx.commit().await)?;
        self.order(tenant, &id).await
    }

    /// Seats booked (pending or confirmed) for an event product.
    pub async fn seats_taken(&self, tenant: &TenantId, product: &ProductId) -> Result<i64> {
        db(sqlx::query(
            "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS taken FROM bookings WHERE tenant_id = $1 AND product_id = $2 AND status IN ('pending', 'confirmed')",
        )
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
    pub async fn order_by_session(&self, tenant: &TenantId, session_id: &str) -> Result<Order> {
        let row = db(sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND stripe_checkout_session_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(session_id)
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
        session_id: &str,
        url: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<Order> {
        db(sqlx::query(
            "UPDATE orders SET stripe_checkout_session_id = $3, checkout_url = $4, expires_at = $5, updated_at = $6 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .bind(session_id)
        .bind(url)
        .bind(expires_at)
        .bind(now_ms())
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
        mark_event: Option<&InboxEvent>,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        db(sqlx::query(
            "UPDATE orders SET status = 'completed', completed_at = $3, updated_at = $3, failure_reason = NULL \
             WHERE tenant_id = $1 AND id = $2 AND status <> 'completed'",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await)?;
        if let Some(event) = mark_event {
            inbox_mark_in(&mut tx, event, "processed").await?;
        }
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
            "SELECT o.id FROM orders o WHERE o.tenant_id = $1 AND o.customer_id = $2 AND o.mode = 'subscription' \
             AND o.status = 'pending' AND o.stripe_checkout_session_id IS NOT NULL \
             AND EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id AND i.product_id = $3) ORDER BY o.created_at",
        )
        .bind(tenant.as_str())
        .bind(customer.as_str())
        .bind(product.as_str())
        .fetch_all(&self.pool)
        .await)?;
        let mut orders = Vec::with_capacity(rows.len());
        for r in &rows {
            let id = OrderId::from_db(db(r.try_get("id"))?);
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
        status: &str,
        reason: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = db(sqlx::query(
            "UPDATE orders SET status = $3, failure_reason = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .bind(status)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await)?
        .rows_affected()
            == 1;
        if changed {
            db(sqlx::query("UPDATE bookings SET status = 'canceled', updated_at = $2 WHERE order_id = $1 AND status = 'pending'")
                .bind(order.as_str())
                .bind(now_ms())
                .execute(&mut *tx)
                .await)?;
        }
        db(tx.commit().await)?;
        Ok(changed)
    }

    /// Pending orders nobody will finish on their own: never given a Checkout Session and
    /// created before `no_session_before` (the request that made them died), or whose
    /// session expired (Stripe time, seconds) before `expired_before` without the expiry
    /// event arriving. Oldest first, at most `limit`.
    pub async fn stale_pending_orders(
        &self,
        no_session_before: i64,
        expired_before: i64,
        limit: i64,
    ) -> Result<Vec<StaleOrder>> {
        let rows = db(sqlx::query(
            "SELECT tenant_id, id, stripe_checkout_session_id FROM orders WHERE status = 'pending' \
             AND ((stripe_checkout_session_id IS NULL AND created_at < $1) OR (expires_at IS NOT NULL AND expires_at < $2)) \
             ORDER BY created_at LIMIT $3",
        )
        .bind(no_session_before)
        .bind(expired_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter()
            .map(|r| {
                db((|| {
                    Ok(StaleOrder {
                        tenant_id: TenantId::from_db(r.try_get("tenant_id")?),
                        order_id: OrderId::from_db(r.try_get("id")?),
                        stripe_checkout_session_id: r.try_get("stripe_checkout_session_id")?,
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
                (o.created_at, o.id.to_string())
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
                        id: BookingId::from_db(r.try_get("id")?),
                        order_id: OrderId::from_db(r.try_get("order_id")?),
                        product_id: ProductId::from_db(r.try_get("product_id")?),
                        customer_id: r
                            .try_get::<Option<String>, _>("customer_id")?
                            .map(CustomerId::from_db),
                        quantity: r.try_get("quantity")?,
                        status: r.try_get("status")?,
                    })
                })())
            })
            .collect()
    }
}
