//! Disputes: Stripe's disputes of a payment decide whether its purchases grant access.

use tollgate_domain::StripePaymentIntentId;
use tollgate_store::{InboxEvent, Purchase, Tenant};

use crate::error::Result;
use crate::state::AppState;

/// Reads the payment's disputes from Stripe and freezes its purchases while any dispute
/// is open or was lost; `mark_event` is marked processed with the write.
pub async fn sync_disputes(
    state: &AppState,
    tenant: &Tenant,
    payment_intent: &StripePaymentIntentId,
    mark_event: Option<&InboxEvent>,
) -> Result<Vec<Purchase>> {
    let disputes = state.stripe.list_disputes(payment_intent).await?;
    let disputed = disputes.iter().any(|d| !d.status.settled_for_merchant());
    let (purchases, changes) = state
        .store
        .set_disputed(&tenant.id, payment_intent, disputed, mark_event)
        .await?;
    state.apply(changes).await;
    Ok(purchases)
}
