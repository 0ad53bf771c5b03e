//! Disputes: Stripe's disputes of a payment decide whether its purchases grant access
//! (frozen while one is open), and a lost one takes the money back in the ledger.

use tollgate_domain::{DisputeId, StripePaymentIntentId};
use tollgate_store::{Claimed, Dispute, DisputeRecord, Purchase, StoreError, Tenant};

use crate::error::{Error, Result};
use crate::state::AppState;

/// Reads the payment's disputes from Stripe and stores them; freezes its purchases while
/// any dispute is open or was lost; writes each lost one into the ledger (once).
/// `marks` are marked processed with the write.
pub async fn sync_disputes(
    state: &AppState,
    tenant: &Tenant,
    payment_intent: &StripePaymentIntentId,
    marks: &[Claimed],
) -> Result<Vec<Purchase>> {
    let t = &tenant.id;
    let disputes = state.stripe.list_disputes(payment_intent).await?;
    let mut lost = Vec::new();
    for d in &disputes {
        let stored = state
            .store
            .upsert_dispute(
                t,
                &DisputeRecord {
                    stripe_dispute_id: d.id.clone(),
                    stripe_payment_intent_id: payment_intent.clone(),
                    status: d.status,
                    reason: d.reason.clone(),
                    amount: d.amount,
                    currency: d.currency.clone(),
                    fee: d.fee,
                    evidence_due_at: d.evidence_due_by,
                    stripe_created_at: d.created,
                },
            )
            .await?;
        if d.status.is_lost() && stored.loss_recorded_at.is_none() {
            lost.push(stored.id);
        }
    }
    for id in &lost {
        let (_, changes) = state.store.record_dispute_loss(t, id).await?;
        state.apply(changes).await;
        tracing::warn!(tenant = %t, dispute = %id, payment = %payment_intent, "a dispute was lost: its amount is taken back");
    }
    let disputed = disputes.iter().any(|d| !d.status.settled_for_merchant());
    let (purchases, changes) = state
        .store
        .set_disputed(t, payment_intent, disputed, marks)
        .await?;
    state.apply(changes).await;
    Ok(purchases)
}

/// One of the tenant's disputes; 404 when there is none.
pub async fn find(state: &AppState, tenant: &Tenant, id: &DisputeId) -> Result<Dispute> {
    match state.store.dispute(&tenant.id, id).await {
        Ok(d) => Ok(d),
        Err(StoreError::NotFound) => Err(Error::not_found("dispute", id.as_str())),
        Err(e) => Err(e.into()),
    }
}
