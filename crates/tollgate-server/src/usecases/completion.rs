//! Completing an order from Stripe's state of its session, exactly once, whoever asks
//! (the webhook worker, `?sync=true`, the sweep); and refunding payments for products the
//! customer owned already.

use tollgate_domain::status::{
    CheckoutMode, OrderStatus, PaymentStatus, RefundReason, SessionStatus,
};
use tollgate_domain::{OrderId, StripeCheckoutSessionId};
use tollgate_store::{Claimed, NewPurchase, Order, Purchase, StoreError, Subscription, Tenant};
use tollgate_stripe::PaymentOutcome;

use super::subscriptions::{Synced, sync_subscription};
use super::{disputes, metadata, refunds};
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// What completing from Stripe came to.
#[derive(Debug)]
pub enum Completion {
    Completed(Vec<Purchase>),
    /// A subscription checkout: its subscription as mirrored.
    Subscribed(Box<Subscription>),
    /// Stripe does not call it paid (yet): nothing changed.
    NotPaid {
        status: SessionStatus,
        payment_status: PaymentStatus,
    },
}

/// The order a session belongs to: by the session id recorded on it, or, when the request
/// that created the session died before recording it, by the order id in the session's
/// metadata (and the session is recorded then). `None`: no order of this tenant's.
async fn order_for_session(
    state: &AppState,
    tenant: &Tenant,
    session: &tollgate_stripe::SessionState,
) -> Result<Option<Order>> {
    let t = &tenant.id;
    match state.store.order_by_session(t, &session.id).await {
        Ok(order) => return Ok(Some(order)),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(order_id) = session
        .metadata
        .get("order_id")
        .and_then(|id| OrderId::parse(id).ok())
    else {
        return Ok(None);
    };
    let order = match state.store.order(t, &order_id).await {
        Ok(o) => o,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match &order.stripe_checkout_session_id {
        None => {
            tracing::warn!(tenant = %t, order = %order.id, session = %session.id, "recording a session its order never heard of");
            Ok(Some(
                state
                    .store
                    .attach_checkout_session(t, &order.id, &session.id, None, None)
                    .await?,
            ))
        }
        Some(other) if *other == session.id => Ok(Some(order)),
        Some(_) => Err(Error::conflict(
            Code::SessionMismatch,
            "The Checkout Session does not belong to this order.",
        )),
    }
}

/// Re-fetches the session from Stripe and, if it is paid, completes its order exactly once.
/// The webhook worker and `?sync=true` both come here; `marks` are the inbox events to
/// mark processed in the same transaction. `None`: the session is no order of this
/// tenant's.
pub async fn complete_from_stripe(
    state: &AppState,
    tenant: &Tenant,
    session_id: &StripeCheckoutSessionId,
    marks: &[Claimed],
) -> Result<Option<(Order, Completion)>> {
    let t = &tenant.id;
    let session = state.stripe.retrieve_session(session_id).await?;
    let Some(order) = order_for_session(state, tenant, &session).await? else {
        return Ok(None);
    };
    if session.metadata.get("order_id").map(String::as_str) != Some(order.id.as_str()) {
        tracing::error!(tenant = %t, order = %order.id, session = %session_id, "session metadata does not name this order");
        return Err(Error::conflict(
            Code::SessionMismatch,
            "The Checkout Session does not belong to this order.",
        ));
    }
    if !session.is_paid() {
        if session.status == SessionStatus::Expired {
            state
                .store
                .close_order(t, &order.id, OrderStatus::Expired, None)
                .await?;
        } else if session.status == SessionStatus::Complete
            && let Some(pi) = &session.payment_intent
            && state.stripe.payment_outcome(pi).await? == PaymentOutcome::Failed
        {
            // A completed session left unpaid: an asynchronous payment that failed, as its
            // payment intent (not an event's word) says.
            state
                .store
                .close_order(
                    t,
                    &order.id,
                    OrderStatus::Failed,
                    Some("the payment failed"),
                )
                .await?;
        }
        let order = state.store.order(t, &order.id).await?;
        return Ok(Some((
            order,
            Completion::NotPaid {
                status: session.status,
                payment_status: session.payment_status,
            },
        )));
    }
    if session.mode == CheckoutMode::Subscription {
        // The subscription is the purchase: mirror it, then close the order. Stripe sends
        // the subscription's own events too; whichever arrives first stores it.
        let stripe_sub = session.subscription.as_ref().ok_or_else(|| {
            Error::conflict(
                Code::Conflict,
                "The completed Checkout Session has no subscription.",
            )
        })?;
        let sub = match sync_subscription(state, tenant, stripe_sub, &[]).await? {
            Synced::Mirrored(s) => *s,
            Synced::NotOurs => {
                return Err(Error::conflict(
                    Code::Conflict,
                    "The session's subscription belongs to no customer of this tenant.",
                ));
            }
        };
        state
            .store
            .complete_subscription_order(t, &order.id, marks)
            .await?;
        tracing::info!(tenant = %t, order = %order.id, subscription = %sub.id, "subscription order completed");
        let order = state.store.order(t, &order.id).await?;
        return Ok(Some((order, Completion::Subscribed(Box::new(sub)))));
    }
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
            order_item_id: item.id.clone(),
            product_id: item.product_id.clone(),
            creator_id: product.creator_id,
            amount,
            exclusive: product.kind.owned_once(),
        });
    }
    let recorded = purchases_in
        .iter()
        .try_fold(tollgate_domain::Amount::ZERO, |sum, p| {
            sum.checked_add(p.amount)
        });
    if session.amount_total.is_some() && recorded != session.amount_total {
        tracing::warn!(tenant = %t, order = %order.id, recorded = ?recorded, stripe_total = ?session.amount_total, "purchases do not add up to what Stripe charged");
    }
    let (purchases, changes) = state
        .store
        .complete_order(
            t,
            &order.id,
            session.payment_intent.as_ref(),
            &purchases_in,
            marks,
        )
        .await?;
    state.apply(changes).await;
    refund_duplicates(state, tenant, &order).await;
    // A refund or a dispute may have come before the purchase was recorded (events can
    // arrive in any order): what Stripe has now counts from the start.
    if let Some(pi) = &session.payment_intent {
        refunds::sync_refunds(state, tenant, pi, &[]).await?;
        disputes::sync_disputes(state, tenant, pi, &[]).await?;
    }
    let products: Vec<&str> = purchases.iter().map(|p| p.product_id.as_str()).collect();
    tracing::info!(tenant = %t, order = %order.id, purchases = purchases.len(), amount = %order.amount_total, currency = %order.currency, customer = order.customer_id.as_ref().map(|c| c.as_str()).unwrap_or("guest"), products = %products.join(","), "order completed");
    let order = state.store.order(t, &order.id).await?;
    let purchases = state.store.purchases_for_order(t, &order.id).await?;
    Ok(Some((order, Completion::Completed(purchases))))
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
        let Some(pi) = &p.stripe_payment_intent_id else {
            continue;
        };
        let amount = p.refundable_amount();
        let result = state
            .stripe
            .create_refund(
                pi,
                amount,
                Some(RefundReason::DuplicatePurchase),
                metadata(&[
                    ("tenant_id", tenant.id.as_str()),
                    ("purchase_id", p.id.as_str()),
                ]),
                &format!("tg-duplicate-refund-{}", p.id),
            )
            .await;
        match result {
            Ok(refund) => {
                match state
                    .store
                    .record_refund(
                        &tenant.id,
                        &p.id,
                        refund.amount,
                        Some(RefundReason::DuplicatePurchase),
                        &refund.id,
                        &[],
                    )
                    .await
                {
                    Ok((_, changes)) => state.apply(changes).await,
                    Err(e) => {
                        tracing::error!(error = %e, purchase = %p.id, "recording a duplicate's refund failed")
                    }
                }
                tracing::warn!(tenant = %tenant.id, purchase = %p.id, amount = %amount, "a product the customer owned was paid again; refunded");
            }
            Err(e) => {
                tracing::error!(error = %e, purchase = %p.id, "refunding a duplicate payment failed; will retry")
            }
        }
    }
}
