//! Refunds through Stripe, one at a time per purchase.

use axum::http::StatusCode;
use tollgate_domain::PurchaseId;
use tollgate_store::{Purchase, Tenant};

use super::metadata;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long a refund holds its purchase's lease while it talks to Stripe.
const REFUND_LEASE_MS: i64 = 60_000;

/// Refunds a purchase in full or in part through Stripe, then records it. Refunds of one
/// purchase run one at a time (a lease on the purchase), and each first records whatever
/// Stripe already refunded on the payment, so the amount left is never overstated.
pub async fn refund_purchase(
    state: &AppState,
    tenant: &Tenant,
    id: &PurchaseId,
    amount: Option<i64>,
    reason: Option<&str>,
) -> ApiResult<Purchase> {
    let t = &tenant.id;
    // Checks that need no lease, so that a bad request is answered as such.
    let purchase = state.store.purchase(t, id).await?;
    if amount.is_some_and(|a| a <= 0) {
        return Err(ApiError::invalid(
            "amount",
            "invalid_amount",
            "amount must be a positive number of minor units.",
        ));
    }
    if let Some(r) = reason
        && !matches!(r, "duplicate" | "fraudulent" | "requested_by_customer")
    {
        return Err(ApiError::invalid(
            "reason",
            "invalid_reason",
            "reason must be duplicate, fraudulent or requested_by_customer.",
        ));
    }
    if !state
        .store
        .refund_lock(t, &purchase.id, REFUND_LEASE_MS)
        .await?
    {
        return Err(ApiError::conflict(
            "refund_in_progress",
            "Another refund of this purchase is running; try again when it has finished.",
        ));
    }
    let result = refund_locked(state, tenant, &purchase, amount, reason).await;
    if let Err(e) = state.store.refund_unlock(t, &purchase.id).await {
        tracing::warn!(error = %e, purchase = %purchase.id, "releasing a refund lease failed; it runs out on its own");
    }
    result
}

async fn refund_locked(
    state: &AppState,
    tenant: &Tenant,
    purchase: &Purchase,
    amount: Option<i64>,
    reason: Option<&str>,
) -> ApiResult<Purchase> {
    let t = &tenant.id;
    let pi = &purchase.stripe_payment_intent_id;
    // Record what Stripe refunded already (an earlier attempt that died before recording,
    // a refund made in the Dashboard) before deciding what is left.
    let known = state.stripe.list_refunds(pi).await?;
    let counted = counted_refunds(known);
    if !counted.is_empty() {
        state
            .store
            .record_external_refunds(t, pi, &counted, None)
            .await?;
    }
    let purchase = state.store.purchase(t, &purchase.id).await?;
    if !matches!(purchase.status.as_str(), "completed" | "partially_refunded") {
        return Err(ApiError::conflict(
            "not_refundable",
            format!("A {} purchase cannot be refunded.", purchase.status),
        ));
    }
    if purchase.disputed {
        return Err(ApiError::conflict(
            "disputed",
            "A disputed purchase cannot be refunded; the dispute decides.",
        ));
    }
    let remaining = purchase.amount - purchase.refunded_amount;
    let amount = amount.unwrap_or(remaining);
    if amount > remaining {
        return Err(ApiError::invalid(
            "amount",
            "amount_too_large",
            format!("amount {amount} exceeds the {remaining} left to refund."),
        ));
    }
    // The key names this refund: the purchase, what was refunded before it, and its amount.
    let key = format!(
        "tg-refund-{}-{}-{}",
        purchase.id, purchase.refunded_amount, amount
    );
    let refund = state
        .stripe
        .create_refund(
            pi,
            amount,
            reason,
            metadata(&[
                ("tenant_id", t.as_str()),
                ("purchase_id", purchase.id.as_str()),
            ]),
            &key,
        )
        .await?;
    if matches!(refund.status.as_str(), "failed" | "canceled") {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "refund_failed",
            format!("Stripe reports the refund as {}.", refund.status),
        ));
    }
    let after = state
        .store
        .record_refund(t, &purchase.id, refund.amount, reason, &refund.id, None)
        .await?;
    if let Some(c) = &after.customer_id {
        state.access_changed(t, c).await;
    }
    tracing::info!(tenant = %t, purchase = %after.id, amount, refund = %refund.id, "purchase refunded");
    Ok(after)
}

/// The refunds that count against a payment (succeeded or on their way), as the store
/// records them.
pub fn counted_refunds(
    refunds: Vec<tollgate_stripe::RefundInfo>,
) -> Vec<(String, i64, Option<PurchaseId>)> {
    refunds
        .into_iter()
        .filter(|r| matches!(r.status.as_str(), "succeeded" | "pending"))
        .map(|r| {
            (
                r.id,
                r.amount,
                r.purchase_id.as_deref().and_then(PurchaseId::parse),
            )
        })
        .collect()
}
