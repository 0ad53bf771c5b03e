//! Completing an order from Stripe's state of its session, exactly once, whoever asks
//! (the webhook worker, `?sync=true`, the sweep); and refunding payments for products the
//! customer owned already.

use tollgate_domain::OrderId;
use tollgate_store::{InboxEvent, NewPurchase, Order, Purchase, StoreError, Subscription, Tenant};

use super::metadata;
use super::subscriptions::sync_subscription;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// What completing from Stripe came to.
#[derive(Debug)]
pub enum Completion {
    Completed(Vec<Purchase>),
    /// A subscription checkout: its subscription as mirrored.
    Subscribed(Box<Subscription>),
    /// Stripe does not call it paid (yet): nothing changed.
    NotPaid {
        status: String,
        payment_status: String,
    },
}

/// The order a session belongs to: by the session id recorded on it, or, when the request
/// that created the session died before recording it, by the order id in the session's
/// metadata (and the session is recorded then).
async fn order_for_session(
    state: &AppState,
    tenant: &Tenant,
    session_id: &str,
    session: &tollgate_stripe::SessionState,
) -> ApiResult<Order> {
    let t = &tenant.id;
    match state.store.order_by_session(t, session_id).await {
        Ok(order) => return Ok(order),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let order_id = session
        .metadata
        .get("order_id")
        .and_then(|id| OrderId::parse(id))
        .ok_or_else(|| ApiError::not_found("order for session", session_id))?;
    let order = state.store.order(t, &order_id).await?;
    match &order.stripe_checkout_session_id {
        None => {
            tracing::warn!(tenant = %t, order = %order.id, session = %session_id, "recording a session its order never heard of");
            Ok(state
                .store
                .attach_checkout_session(t, &order.id, session_id, None, None)
                .await?)
        }
        Some(other) if other == session_id => Ok(order),
        Some(_) => Err(ApiError::conflict(
            "session_mismatch",
            "The Checkout Session does not belong to this order.",
        )),
    }
}

/// Re-fetches the session from Stripe and, if it is paid, completes its order exactly once.
/// The webhook worker and `?sync=true` both come here; `mark_event` is the inbox event to
/// mark processed in the same transaction.
pub async fn complete_from_stripe(
    state: &AppState,
    tenant: &Tenant,
    session_id: &str,
    mark_event: Option<&InboxEvent>,
) -> ApiResult<(Order, Completion)> {
    let t = &tenant.id;
    let session = state.stripe.retrieve_session(session_id).await?;
    let order = order_for_session(state, tenant, session_id, &session).await?;
    if session.metadata.get("order_id").map(String::as_str) != Some(order.id.as_str()) {
        tracing::error!(tenant = %t, order = %order.id, session = %session_id, "session metadata does not name this order");
        return Err(ApiError::conflict(
            "session_mismatch",
            "The Checkout Session does not belong to this order.",
        ));
    }
    if !session.is_paid() {
        if session.status == "expired" {
            state
                .store
                .close_order(t, &order.id, "expired", None)
                .await?;
        }
        let order = state.store.order(t, &order.id).await?;
        return Ok((
            order,
            Completion::NotPaid {
                status: session.status,
                payment_status: session.payment_status,
            },
        ));
    }
    if session.mode == "subscription" {
        // The subscription is the purchase: mirror it, then close the order. Stripe sends
        // the subscription's own events too; whichever arrives first stores it.
        let stripe_sub = session.subscription.as_deref().ok_or_else(|| {
            ApiError::conflict(
                "no_subscription",
                "The completed Checkout Session has no subscription.",
            )
        })?;
        let sub = sync_subscription(state, tenant, stripe_sub, None).await?;
        state
            .store
            .complete_subscription_order(t, &order.id, mark_event)
            .await?;
        tracing::info!(tenant = %t, order = %order.id, subscription = %sub.id, "subscription order completed");
        let order = state.store.order(t, &order.id).await?;
        return Ok((order, Completion::Subscribed(Box::new(sub))));
    }
    let payment_intent = session
        .payment_intent
        .clone()
        .unwrap_or_else(|| format!("no_payment:{}", session.id));
    // What was paid for each item: Stripe's total for the line of the item's price (after
    // any discount). Each price appears once in a cart.
    let mut purchases_in = Vec::with_capacity(order.items.len());
    for item in &order.items {
        let product = state.store.product(t, &item.product_id).await?;
        let price = state.store.price(t, &item.price_id).await?;
        let line = session
            .lines
            .iter()
            .find(|l| l.stripe_price_id.is_some() && l.stripe_price_id == price.stripe_price_id);
        let amount = match line {
            Some(l) => l.amount_total,
            None => {
                tracing::warn!(tenant = %t, order = %order.id, item = %item.id, "no Stripe line for an order item; recording its list amount");
                item.amount
            }
        };
        purchases_in.push(NewPurchase {
            order_item_id: item.id.to_string(),
            product_id: item.product_id.clone(),
            creator_id: product.creator_id,
            amount,
            exclusive: product.kind != "event",
        });
    }
    let recorded: i64 = purchases_in.iter().map(|p| p.amount).sum();
    if session.amount_total.is_some_and(|total| total != recorded) {
        tracing::warn!(tenant = %t, order = %order.id, recorded, stripe_total = session.amount_total, "purchases do not add up to what Stripe charged");
    }
    let purchases = state
        .store
        .complete_order(t, &order.id, &payment_intent, &purchases_in, mark_event)
        .await?;
    if let Some(c) = &order.customer_id {
        state.access_changed(t, c).await;
    }
    refund_duplicates(state, tenant, &order).await;
    tracing::info!(tenant = %t, order = %order.id, purchases = purchases.len(), "order completed");
    let order = state.store.order(t, &order.id).await?;
    Ok((order, Completion::Completed(purchases)))
}

/// Gives back the money of items the customer owned already (two checkouts of one
/// product were both paid). A failure here is retried by the next sync of the order or
/// by the maintenance sweep; the refund's idempotency key makes retries safe.
pub async fn refund_duplicates(state: &AppState, tenant: &Tenant, order: &Order) {
    let duplicates = match state
        .store
        .unrefunded_duplicates(&tenant.id, &order.id)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, order = %order.id, "listing duplicate payments failed");
            return;
        }
    };
    for p in duplicates {
        let amount = p.amount - p.refunded_amount;
        let result = state
            .stripe
            .create_refund(
                &p.stripe_payment_intent_id,
                amount,
                Some("duplicate"),
                metadata(&[
                    ("tenant_id", tenant.id.as_str()),
                    ("purchase_id", p.id.as_str()),
                ]),
                &format!("tg-duplicate-refund-{}", p.id),
            )
            .await;
        match result {
            Ok(refund) => {
                if let Err(e) = state
                    .store
                    .record_refund(
                        &tenant.id,
                        &p.id,
                        refund.amount,
                        Some("duplicate"),
                        &refund.id,
                        None,
                    )
                    .await
                {
                    tracing::error!(error = %e, purchase = %p.id, "recording a duplicate's refund failed");
                }
                tracing::warn!(tenant = %tenant.id, purchase = %p.id, amount, "a product the customer owned was paid again; refunded");
            }
            Err(e) => {
                tracing::error!(error = %e, purchase = %p.id, "refunding a duplicate payment failed; will retry")
            }
        }
    }
}
