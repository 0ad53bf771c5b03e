//! Applying a stored Stripe event. Whatever an event says, the state Stripe has now
//! decides: each handler re-reads the object the event is about and applies it, so events
//! in any order, duplicated or replayed, end on Stripe's current state.

use tollgate_domain::{StripeEventId, StripePaymentIntentId, StripeSubscriptionId, TenantId};
use tollgate_store::{InboxEvent, StoreError, Tenant};
use tollgate_stripe::WebhookEnvelope;

use super::completion::complete_from_stripe;
use super::subscriptions::{Synced, sync_subscription};
use super::{disputes, refunds};
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied; mark it processed.
    Processed,
    /// Not Tollgate's concern (another kind, another account's object); mark it ignored.
    Ignored,
    /// Applied, and marked in the same transaction as its effects.
    Marked,
}

/// The event types Tollgate acts on (the webhook endpoint subscribes to these).
pub const HANDLED: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
    "charge.refund.updated",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
];

/// An event the worker must wait with: what it refers to is not recorded yet (a refund
/// of a payment whose completion is on its way). Transient: Stripe's order is not ours.
fn not_yet(what: String) -> Error {
    let mut e = Error::new(Code::Conflict, what);
    e.transient = true;
    e
}

/// Applies one stored event.
pub async fn apply(state: &AppState, event: &InboxEvent) -> Result<Applied> {
    let Some(envelope) = tollgate_stripe::parse_envelope(&event.payload) else {
        return Err(Error::new(
            Code::InvalidEvent,
            "The stored event is not readable.",
        ));
    };
    match event.event_type.as_str() {
        "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.expired"
        | "checkout.session.async_payment_failed" => session_event(state, event, &envelope).await,
        "charge.refunded"
        | "charge.refund.updated"
        | "refund.created"
        | "refund.updated"
        | "refund.failed" => {
            let Some((tenant, pi)) = payment_tenant(state, event, &envelope).await? else {
                return Ok(Applied::Ignored);
            };
            refunds::sync_refunds(state, &tenant, &pi, Some(event)).await?;
            Ok(Applied::Marked)
        }
        "charge.dispute.created"
        | "charge.dispute.updated"
        | "charge.dispute.closed"
        | "charge.dispute.funds_withdrawn"
        | "charge.dispute.funds_reinstated" => {
            let Some((tenant, pi)) = payment_tenant(state, event, &envelope).await? else {
                return Ok(Applied::Ignored);
            };
            disputes::sync_disputes(state, &tenant, &pi, Some(event)).await?;
            Ok(Applied::Marked)
        }
        kind if HANDLED.contains(&kind) => {
            // The subscription's events, and its invoices'.
            let Some(stripe_sub) = &envelope.subscription else {
                return Ok(Applied::Ignored);
            };
            let Some(tenant) = subscription_tenant(state, event, stripe_sub).await? else {
                return Ok(Applied::Ignored);
            };
            match sync_subscription(state, &tenant, stripe_sub, Some(event)).await? {
                Synced::Mirrored(_) => Ok(Applied::Marked),
                Synced::NotOurs => Ok(Applied::Ignored),
            }
        }
        // Completion follows the session; these carry nothing it needs.
        "payment_intent.succeeded"
        | "payment_intent.payment_failed"
        | "payment_intent.created"
        | "charge.succeeded"
        | "charge.failed" => Ok(Applied::Processed),
        _ => Ok(Applied::Ignored),
    }
}

/// A Checkout Session's events: Stripe's current state of the session decides (a failed
/// asynchronous payment leaves the session unpaid, which fails nothing by itself; the
/// session's expiry closes the order).
async fn session_event(
    state: &AppState,
    event: &InboxEvent,
    envelope: &WebhookEnvelope,
) -> Result<Applied> {
    let Some(tenant) = tenant(state, event.tenant_id.as_ref()).await? else {
        return Ok(Applied::Ignored);
    };
    let Some(session) = envelope
        .object_id
        .as_deref()
        .and_then(|id| tollgate_domain::StripeCheckoutSessionId::parse(id).ok())
    else {
        return Err(Error::new(
            Code::InvalidEvent,
            "The event names no Checkout Session.",
        ));
    };
    match complete_from_stripe(state, &tenant, &session, Some(event)).await? {
        None => Ok(Applied::Ignored),
        Some((_, super::completion::Completion::NotPaid { .. })) => Ok(Applied::Processed),
        Some(_) => Ok(Applied::Marked),
    }
}

async fn tenant(state: &AppState, id: Option<&TenantId>) -> Result<Option<Tenant>> {
    let Some(id) = id else {
        return Ok(None);
    };
    match state.store.tenant(id).await {
        Ok(t) => Ok(Some(t)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The tenant whose purchases an event about a payment concerns, and the payment (the
/// event is listed for that tenant from then on). If the purchases are not recorded yet
/// but the event names a tenant, the completion is on its way: wait for it.
async fn payment_tenant(
    state: &AppState,
    event: &InboxEvent,
    envelope: &WebhookEnvelope,
) -> Result<Option<(Tenant, StripePaymentIntentId)>> {
    let Some(pi) = &envelope.payment_intent else {
        return Ok(None);
    };
    if let Some(id) = state.store.tenant_for_payment_intent(pi).await? {
        return Ok(adopt_tenant(state, event, &id)
            .await?
            .map(|t| (t, pi.clone())));
    }
    if event.tenant_id.is_some() {
        return Err(not_yet(format!("no purchase recorded yet for {pi}")));
    }
    Ok(None)
}

/// The tenant a subscription event concerns: named in the subscription's metadata, or the
/// one whose mirror holds the subscription.
async fn subscription_tenant(
    state: &AppState,
    event: &InboxEvent,
    stripe_sub: &StripeSubscriptionId,
) -> Result<Option<Tenant>> {
    if event.tenant_id.is_some() {
        return tenant(state, event.tenant_id.as_ref()).await;
    }
    match state
        .store
        .tenant_for_stripe_subscription(stripe_sub)
        .await?
    {
        Some(id) => adopt_tenant(state, event, &id).await,
        None => Ok(None),
    }
}

/// The tenant found through the objects an event refers to; the event is listed for that
/// tenant from then on.
async fn adopt_tenant(
    state: &AppState,
    event: &InboxEvent,
    id: &TenantId,
) -> Result<Option<Tenant>> {
    if event.tenant_id.is_none() {
        state.store.inbox_set_tenant(&event.event_id, id).await?;
    }
    tenant(state, Some(id)).await
}

/// Puts one of the tenant's stored events back in the queue; `None` for no such event.
pub async fn replay(
    state: &AppState,
    tenant: Option<&TenantId>,
    id: &StripeEventId,
) -> Result<Option<InboxEvent>> {
    match state.store.inbox_event(id).await? {
        Some(e) if tenant.is_none() || e.tenant_id.as_ref() == tenant => {
            state.store.inbox_replay(id).await?;
            state.inbox_signal.notify_waiters();
            Ok(state.store.inbox_event(id).await?)
        }
        _ => Ok(None),
    }
}
