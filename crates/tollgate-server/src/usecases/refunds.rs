//! Refunds: asked for through the API (one at a time per purchase), or made in Stripe and
//! learnt of from its events; either way recorded once per Stripe refund.

use std::time::Duration;

use serde::Deserialize;
use tollgate_domain::status::RefundReason;
use tollgate_domain::{Amount, PurchaseId, StripePaymentIntentId};
use tollgate_store::{InboxEvent, Purchase, StoreError, StripeRefund, Tenant};
use utoipa::ToSchema;

use super::metadata;
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// How long a refund holds its purchase's lease while it talks to Stripe.
const REFUND_LEASE: Duration = Duration::from_secs(60);

/// A refund as the API takes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    /// In minor units; default: all that is left.
    pub amount: Option<Amount>,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<RefundReason>,
}

/// One of the tenant's purchases; 404 when there is none.
pub async fn find(state: &AppState, tenant: &Tenant, id: &PurchaseId) -> Result<Purchase> {
    match state.store.purchase(&tenant.id, id).await {
        Ok(p) => Ok(p),
        Err(StoreError::NotFound) => Err(Error::not_found("purchase", id.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// Refunds a purchase in full or in part through Stripe, then records it. Refunds of one
/// purchase run one at a time (a lease on the purchase), and each first records whatever
/// Stripe already refunded on the payment, so the amount left is never overstated.
pub async fn refund_purchase(
    state: &AppState,
    tenant: &Tenant,
    id: &PurchaseId,
    input: RefundInput,
) -> Result<Purchase> {
    let t = &tenant.id;
    // Checks that need no lease, so that a bad request is answered as such.
    let purchase = find(state, tenant, id).await?;
    if input.amount.is_some_and(Amount::is_zero) {
        return Err(Error::param(
            "amount",
            "amount must be a positive number of minor units.",
        ));
    }
    if let Some(r) = input.reason
        && !r.is_stripe_reason()
    {
        return Err(Error::param(
            "reason",
            "reason must be duplicate, fraudulent or requested_by_customer.",
        ));
    }
    if !state
        .store
        .refund_lock(t, &purchase.id, REFUND_LEASE)
        .await?
    {
        return Err(Error::conflict(
            Code::RefundInProgress,
            "Another refund of this purchase is running; try again when it has finished.",
        ));
    }
    let result = refund_locked(state, tenant, &purchase, input).await;
    if let Err(e) = state.store.refund_unlock(t, &purchase.id).await {
        tracing::warn!(error = %e, purchase = %purchase.id, "releasing a refund lease failed; it runs out on its own");
    }
    result
}

async fn refund_locked(
    state: &AppState,
    tenant: &Tenant,
    purchase: &Purchase,
    input: RefundInput,
) -> Result<Purchase> {
    let t = &tenant.id;
    let Some(pi) = purchase.stripe_payment_intent_id.clone() else {
        return Err(Error::conflict(
            Code::NotRefundable,
            "Nothing was paid for this purchase.",
        ));
    };
    // Record what Stripe refunded already (an earlier attempt that died before recording,
    // a refund made in the Dashboard) before deciding what is left.
    sync_refunds(state, tenant, &pi, None).await?;
    let purchase = state.store.purchase(t, &purchase.id).await?;
    if !purchase.status.is_refundable() {
        return Err(Error::conflict(
            Code::NotRefundable,
            format!("A {} purchase cannot be refunded.", purchase.status),
        ));
    }
    if purchase.disputed {
        return Err(Error::conflict(
            Code::Disputed,
            "A disputed purchase cannot be refunded; the dispute decides.",
        ));
    }
    let remaining = purchase.refundable_amount();
    let amount = input.amount.unwrap_or(remaining);
    if amount > remaining {
        return Err(Error::invalid(
            "amount",
            Code::AmountTooLarge,
            format!("amount {amount} exceeds the {remaining} left to refund."),
        ));
    }
    // The key names this refund: the purchase, what was refunded before it, and its amount.
    let key = format!(
        "tg-refund-{}-{}-{}",
        purchase.id,
        purchase.refunded_amount(),
        amount
    );
    let refund = state
        .stripe
        .create_refund(
            &pi,
            amount,
            input.reason,
            metadata(&[
                ("tenant_id", t.as_str()),
                ("purchase_id", purchase.id.as_str()),
            ]),
            &key,
        )
        .await?;
    if !refund.status.counts() {
        return Err(Error::new(
            Code::RefundFailed,
            format!("Stripe reports the refund as {}.", refund.status),
        ));
    }
    let (after, changes) = state
        .store
        .record_refund(
            t,
            &purchase.id,
            refund.amount,
            input.reason,
            &refund.id,
            None,
        )
        .await?;
    state.apply(changes).await;
    tracing::info!(tenant = %t, purchase = %after.id, amount = %amount, refund = %refund.id, "purchase refunded");
    Ok(after)
}

/// Records every refund Stripe has for a payment that counts and is not recorded yet;
/// `mark_event` is marked processed with it. Answers the payment's purchases after.
pub async fn sync_refunds(
    state: &AppState,
    tenant: &Tenant,
    payment_intent: &StripePaymentIntentId,
    mark_event: Option<&InboxEvent>,
) -> Result<Vec<Purchase>> {
    let refunds: Vec<StripeRefund> = state
        .stripe
        .list_refunds(payment_intent)
        .await?
        .into_iter()
        .filter(|r| r.status.counts())
        .map(|r| StripeRefund {
            id: r.id,
            amount: r.amount,
            purchase: r.purchase_id,
        })
        .collect();
    let (purchases, changes) = state
        .store
        .record_external_refunds(&tenant.id, payment_intent, &refunds, mark_event)
        .await?;
    state.apply(changes).await;
    Ok(purchases)
}
