//! Applying a stored Stripe event. Whatever an event says, the state Stripe has now
//! decides: each handler re-reads the object the event is about and applies it, so events
//! in any order, duplicated or replayed, end on Stripe's current state.

use std::sync::Arc;

use tollgate_domain::{
    StripeCheckoutSessionId, StripeEventId, StripePaymentIntentId, StripeSubscriptionId, TenantId,
};
use tollgate_store::{Claimed, InboxEvent, Tenant};
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

/// The object whose state applying an event reads. Events about one object are applied
/// one at a time, and one read of it serves all that wait.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventObject {
    /// A Checkout Session: its completion.
    Session(StripeCheckoutSessionId),
    /// A payment's refunds.
    Refunds(StripePaymentIntentId),
    /// A payment's disputes.
    Disputes(StripePaymentIntentId),
    /// A subscription (its own events and its invoices').
    Subscription(StripeSubscriptionId),
    /// Nothing to read: the event alone (a kind Tollgate does not act on, or one that
    /// names no object it could act on).
    Event(StripeEventId),
}

impl EventObject {
    /// What an event is about, from its envelope.
    pub fn of(e: &WebhookEnvelope) -> Self {
        let object = match e.event_type.as_str() {
            "checkout.session.completed"
            | "checkout.session.async_payment_succeeded"
            | "checkout.session.expired"
            | "checkout.session.async_payment_failed" => e
                .object_id
                .as_deref()
                .and_then(|id| StripeCheckoutSessionId::parse(id).ok())
                .map(Self::Session),
            "charge.refunded"
            | "charge.refund.updated"
            | "refund.created"
            | "refund.updated"
            | "refund.failed" => e.payment_intent.clone().map(Self::Refunds),
            "charge.dispute.created"
            | "charge.dispute.updated"
            | "charge.dispute.closed"
            | "charge.dispute.funds_withdrawn"
            | "charge.dispute.funds_reinstated" => e.payment_intent.clone().map(Self::Disputes),
            kind if HANDLED.contains(&kind) => e.subscription.clone().map(Self::Subscription),
            _ => None,
        };
        object.unwrap_or_else(|| Self::Event(e.id.clone()))
    }

    /// The key stored with the event (`subscription:sub_...`).
    pub fn key(&self) -> String {
        match self {
            Self::Session(id) => format!("session:{id}"),
            Self::Refunds(id) => format!("refunds:{id}"),
            Self::Disputes(id) => format!("disputes:{id}"),
            Self::Subscription(id) => format!("subscription:{id}"),
            Self::Event(id) => format!("event:{id}"),
        }
    }

    /// Reads a stored key back; `None` for a key this version does not know.
    pub fn parse(key: &str) -> Option<Self> {
        let (kind, id) = key.split_once(':')?;
        Some(match kind {
            "session" => Self::Session(StripeCheckoutSessionId::parse(id).ok()?),
            "refunds" => Self::Refunds(StripePaymentIntentId::from_stripe(id)),
            "disputes" => Self::Disputes(StripePaymentIntentId::from_stripe(id)),
            "subscription" => Self::Subscription(StripeSubscriptionId::from_stripe(id)),
            "event" => Self::Event(StripeEventId::from_stripe(id)),
            _ => return None,
        })
    }

    /// What a claimed event is about: its stored key, or for an event stored before keys
    /// were, its body read again.
    pub fn of_claimed(e: &Claimed) -> Result<Self> {
        if let Some(object) = e.object_key.as_deref().and_then(Self::parse) {
            return Ok(object);
        }
        match e
            .payload
            .as_deref()
            .and_then(tollgate_stripe::parse_envelope)
        {
            Some(envelope) => Ok(Self::of(&envelope)),
            None => Err(Error::new(
                Code::InvalidEvent,
                "The stored event is not readable.",
            )),
        }
    }
}

/// An event the worker must wait with: what it refers to is not recorded yet (a refund
/// of a payment whose completion is on its way). Transient: Stripe's order is not ours.
fn not_yet(what: String) -> Error {
    let mut e = Error::new(Code::Conflict, what);
    e.transient = true;
    e
}

/// Applies events about one object, all stored before this call: Stripe's current state
/// of the object is read once and serves every one of them. The events name the same
/// tenant, or none (events about disputes name none).
pub async fn apply(state: &AppState, object: &EventObject, events: &[Claimed]) -> Result<Applied> {
    let named = events.iter().find_map(|e| e.tenant_id.as_ref());
    match object {
        EventObject::Session(session) => {
            let Some(tenant) = tenant(state, named).await? else {
                return Ok(Applied::Ignored);
            };
            match complete_from_stripe(state, &tenant, session, events).await? {
                None => Ok(Applied::Ignored),
                Some((_, super::completion::Completion::NotPaid { .. })) => Ok(Applied::Processed),
                Some(_) => Ok(Applied::Marked),
            }
        }
        EventObject::Refunds(pi) => {
            let Some(tenant) = payment_tenant(state, events, named, pi).await? else {
                return Ok(Applied::Ignored);
            };
            refunds::sync_refunds(state, &tenant, pi, events).await?;
            Ok(Applied::Marked)
        }
        EventObject::Disputes(pi) => {
            let Some(tenant) = payment_tenant(state, events, named, pi).await? else {
                return Ok(Applied::Ignored);
            };
            disputes::sync_disputes(state, &tenant, pi, events).await?;
            Ok(Applied::Marked)
        }
        EventObject::Subscription(stripe_sub) => {
            let Some(tenant) = subscription_tenant(state, events, named, stripe_sub).await? else {
                return Ok(Applied::Ignored);
            };
            match sync_subscription(state, &tenant, stripe_sub, events).await? {
                Synced::Mirrored(_) => Ok(Applied::Marked),
                Synced::NotOurs => Ok(Applied::Ignored),
            }
        }
        EventObject::Event(_) => {
            let kind = events
                .first()
                .map(|e| e.event_type.as_str())
                .unwrap_or_default();
            match kind {
                k if k.starts_with("checkout.session.") && HANDLED.contains(&k) => Err(Error::new(
                    Code::InvalidEvent,
                    "The event names no Checkout Session.",
                )),
                // Completion follows the session; these carry nothing it needs.
                "payment_intent.succeeded"
                | "payment_intent.payment_failed"
                | "payment_intent.created"
                | "charge.succeeded"
                | "charge.failed" => Ok(Applied::Processed),
                _ => Ok(Applied::Ignored),
            }
        }
    }
}

async fn tenant(state: &AppState, id: Option<&TenantId>) -> Result<Option<Arc<Tenant>>> {
    let Some(id) = id else {
        return Ok(None);
    };
    Ok(state.tenant(id).await?)
}

/// The tenant whose purchases events about a payment concern (the events are listed for
/// that tenant from then on). If the purchases are not recorded yet but an event names a
/// tenant, the completion is on its way: wait for it.
async fn payment_tenant(
    state: &AppState,
    events: &[Claimed],
    named: Option<&TenantId>,
    pi: &StripePaymentIntentId,
) -> Result<Option<Arc<Tenant>>> {
    if let Some(id) = state.store.tenant_for_payment_intent(pi).await? {
        return adopt_tenant(state, events, &id).await;
    }
    if named.is_some() {
        return Err(not_yet(format!("no purchase recorded yet for {pi}")));
    }
    Ok(None)
}

/// The tenant subscription events concern: named in the subscription's metadata, or the
/// one whose mirror holds the subscription.
async fn subscription_tenant(
    state: &AppState,
    events: &[Claimed],
    named: Option<&TenantId>,
    stripe_sub: &StripeSubscriptionId,
) -> Result<Option<Arc<Tenant>>> {
    if named.is_some() {
        return tenant(state, named).await;
    }
    match state
        .store
        .tenant_for_stripe_subscription(stripe_sub)
        .await?
    {
        Some(id) => adopt_tenant(state, events, &id).await,
        None => Ok(None),
    }
}

/// The tenant found through the objects events refer to; the events are listed for that
/// tenant from then on.
async fn adopt_tenant(
    state: &AppState,
    events: &[Claimed],
    id: &TenantId,
) -> Result<Option<Arc<Tenant>>> {
    for e in events.iter().filter(|e| e.tenant_id.is_none()) {
        state.store.inbox_set_tenant(&e.event_id, id).await?;
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
