//! Refunds: asked for through the API (recorded as a request before Stripe is asked, so
//! money moves once), or made in Stripe and learnt of from its events; either way recorded
//! once per Stripe refund, and undone if Stripe later reports it failed.

use std::time::Duration;

use serde::Deserialize;
use tollgate_domain::status::{RefundReason, RefundRequestStatus};
use tollgate_domain::{Amount, PurchaseId, StripePaymentIntentId, Timestamp};
use tollgate_store::{
    Claimed, Opened, Purchase, RefundRefusal, RefundRequest, StoreError, StripeRefund, Tenant,
};
use utoipa::ToSchema;

use super::metadata;
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// A pending request untouched this long is asked again by the sweep (its request died,
/// or Stripe was unavailable).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

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

/// Refunds a purchase in full or in part, moving money once whatever crashes, timeouts
/// and retries happen: the refund is recorded as a pending request first (holding its
/// amount), and Stripe is asked with the request's id as the idempotency key. The same
/// `idempotency_key` again finds the same request: a retry after a lost answer or a crash
/// resumes it rather than asking for a second refund, and a refund that went through
/// answers with the purchase as it is now.
pub async fn refund_purchase(
    state: &AppState,
    tenant: &Tenant,
    id: &PurchaseId,
    input: RefundInput,
    idempotency_key: Option<&str>,
) -> Result<Purchase> {
    let t = &tenant.id;
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
    if let Some(pi) = &purchase.stripe_payment_intent_id {
        // What Stripe refunded already (a refund made in the Dashboard) counts before the
        // amount left is decided.
        sync_refunds(state, tenant, pi, &[]).await?;
    }
    let request = match state
        .store
        .open_refund_request(t, &purchase.id, input.amount, input.reason, idempotency_key)
        .await?
    {
        Opened::New(r) => r,
        Opened::Existing(r) => match r.status {
            RefundRequestStatus::Succeeded => return Ok(state.store.purchase(t, id).await?),
            RefundRequestStatus::Failed => {
                return Err(Error::new(
                    Code::RefundFailed,
                    "This refund failed at Stripe; ask for a new one with another Idempotency-Key.",
                ));
            }
            RefundRequestStatus::Pending => r,
        },
        Opened::Refused(refusal) => return Err(refused(refusal)),
    };
    carry_out(state, tenant, &request).await
}

fn refused(r: RefundRefusal) -> Error {
    match r {
        RefundRefusal::NotRefundable(status) => Error::conflict(
            Code::NotRefundable,
            format!("A {status} purchase cannot be refunded."),
        ),
        RefundRefusal::Disputed => Error::conflict(
            Code::Disputed,
            "A disputed purchase cannot be refunded; the dispute decides.",
        ),
        RefundRefusal::NothingPaid => {
            Error::conflict(Code::NotRefundable, "Nothing was paid for this purchase.")
        }
        RefundRefusal::TooLarge {
            requested,
            available,
        } => Error::invalid(
            "amount",
            Code::AmountTooLarge,
            format!(
                "amount {requested} exceeds the {available} left to refund (refunds under way included)."
            ),
        ),
    }
}

/// Asks Stripe for a pending request's refund (again: the key is the request's id, so a
/// repeat is Stripe's replay, not a second refund) and settles the request.
pub async fn carry_out(
    state: &AppState,
    tenant: &Tenant,
    request: &RefundRequest,
) -> Result<Purchase> {
    let t = &tenant.id;
    let purchase = state.store.purchase(t, &request.purchase_id).await?;
    let pi = purchase
        .stripe_payment_intent_id
        .clone()
        .ok_or_else(|| refused(RefundRefusal::NothingPaid))?;
    state.store.touch_refund_request(t, &request.id).await?;
    let answer = state
        .stripe
        .create_refund(
            &pi,
            request.amount,
            request.reason,
            metadata(&[
                ("tenant_id", t.as_str()),
                ("purchase_id", purchase.id.as_str()),
                ("refund_request_id", request.id.as_str()),
            ]),
            &format!("tg-refund-{}", request.id),
        )
        .await;
    let refund = match answer {
        Ok(r) => r,
        Err(e) if e.is_transient() => {
            // The refund may or may not have been made: the request stays pending, and a
            // retry (or the sweep) asks again with the same key.
            return Err(e.into());
        }
        Err(e) => {
            let error = Error::from(e);
            state
                .store
                .fail_refund_request(t, &request.id, &error.message)
                .await?;
            return Err(error);
        }
    };
    if !refund.status.counts() {
        state
            .store
            .fail_refund_request(
                t,
                &request.id,
                &format!("Stripe reports the refund as {}", refund.status),
            )
            .await?;
        return Err(Error::new(
            Code::RefundFailed,
            format!("Stripe reports the refund as {}.", refund.status),
        ));
    }
    let Some((after, changes)) = state
        .store
        .complete_refund_request(t, &request.id, &refund.id, refund.amount)
        .await?
    else {
        return Err(Error::new(
            Code::RefundFailed,
            "Stripe made the refund and then reported it failed; nothing was refunded.",
        ));
    };
    state.apply(changes).await;
    tracing::info!(tenant = %t, purchase = %after.id, amount = %refund.amount, refund = %refund.id, "purchase refunded");
    Ok(after)
}

/// Asks Stripe again for the requests left pending (their request died, or Stripe was
/// unavailable), so that reserved amounts settle either way.
pub async fn resume_stale_requests(state: &AppState, limit: i64) -> Result<usize> {
    let before = Timestamp::now().minus(STALE_AFTER);
    let stale = state.store.stale_refund_requests(before, limit).await?;
    let n = stale.len();
    for r in stale {
        let tenant = match state.store.tenant(&r.tenant_id).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = carry_out(state, &tenant, &r).await {
            tracing::warn!(error = %e, request = %r.id, "a pending refund could not be settled yet");
        }
    }
    Ok(n)
}

/// Brings the ledger in line with Stripe's refunds of a payment: records each that counts
/// and is not recorded yet, and undoes each recorded one Stripe since reported failed;
/// `marks` are marked processed with it. Answers the payment's purchases after.
pub async fn sync_refunds(
    state: &AppState,
    tenant: &Tenant,
    payment_intent: &StripePaymentIntentId,
    marks: &[Claimed],
) -> Result<Vec<Purchase>> {
    let refunds: Vec<StripeRefund> = state
        .stripe
        .list_refunds(payment_intent)
        .await?
        .into_iter()
        .map(|r| StripeRefund {
            counts: r.status.counts(),
            id: r.id,
            amount: r.amount,
            purchase: r.purchase_id,
            request: r.request_id,
        })
        .collect();
    let (purchases, changes) = state
        .store
        .record_external_refunds(&tenant.id, payment_intent, &refunds, marks)
        .await?;
    state.apply(changes).await;
    Ok(purchases)
}
