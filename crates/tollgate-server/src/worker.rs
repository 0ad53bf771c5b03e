//! The inbox worker: claims stored Stripe events one at a time and applies them. Effects and
//! the "processed" mark commit together; failures retry with backoff and end as dead letters
//! that can be replayed. For the transitions that matter the worker re-fetches the object
//! from Stripe and applies its current state, so the order events arrive in does not matter.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::watch;
use tollgate_domain::TenantId;
use tollgate_store::{InboxEvent, StoreError, Tenant};

use crate::error::ApiError;
use crate::state::AppState;
use crate::usecases::{Completion, complete_from_stripe, counted_refunds, sync_subscription};

/// How long a claimed event is ours before another worker may take it.
const LEASE_MS: i64 = 60_000;
/// Events one worker claims at once (under one lease).
const BATCH: i64 = 16;
/// Attempts before an event becomes a dead letter.
const MAX_ATTEMPTS: i64 = 8;

/// Why an event could not be applied.
#[derive(Debug)]
enum Failure {
    /// Worth another try later (Stripe or the database was unavailable, or the event came
    /// before what it refers to).
    Retry(String),
    /// Will not get better by waiting.
    Dead(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        if e.transient {
            Failure::Retry(format!("{}: {}", e.code, e.message))
        } else {
            Failure::Dead(format!("{}: {}", e.code, e.message))
        }
    }
}

impl From<tollgate_stripe::GatewayError> for Failure {
    fn from(e: tollgate_stripe::GatewayError) -> Self {
        Failure::from(ApiError::from(e))
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => {
                Failure::Dead("an object the event refers to does not exist".into())
            }
            other => Failure::Retry(other.to_string()),
        }
    }
}

/// Runs until `stop` turns true.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        match run_once(&state).await {
            Ok(true) => continue,
            Ok(false) => {
                tokio::select! {
                    _ = state.inbox_signal.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "inbox worker: claiming failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Claims a batch of due events and applies them one after another; `false` when none was
/// due. Marks of events whose handlers commit nothing are written together at the end.
/// Tests drain with it.
pub async fn run_once(state: &AppState) -> Result<bool, StoreError> {
    let events = state.store.inbox_claim_many(LEASE_MS, BATCH).await?;
    if events.is_empty() {
        return Ok(false);
    }
    let mut marks: Vec<(&InboxEvent, &'static str)> = Vec::with_capacity(events.len());
    for event in &events {
        let started = std::time::Instant::now();
        match apply(state, event).await {
            Ok(status) => {
                // Handlers that commit effects mark the event in that transaction; the rest
                // are marked with the batch.
                if let Some(status) = status {
                    marks.push((event, status));
                }
                tracing::info!(event = %event.event_id, kind = %event.event_type, tenant = event.tenant_id.as_deref().unwrap_or("-"), ms = started.elapsed().as_millis() as u64, "event applied");
            }
            Err(Failure::Retry(reason)) if event.attempts < MAX_ATTEMPTS => {
                tracing::warn!(event = %event.event_id, kind = %event.event_type, attempt = event.attempts, %reason, "event failed; will retry");
                state
                    .store
                    .inbox_fail(event, &reason, Some(retry_at(event.attempts)))
                    .await?;
            }
            Err(Failure::Retry(reason) | Failure::Dead(reason)) => {
                tracing::error!(event = %event.event_id, kind = %event.event_type, attempt = event.attempts, %reason, "event dead-lettered");
                state.store.inbox_fail(event, &reason, None).await?;
            }
        }
    }
    let marked = state.store.inbox_mark_many(&marks).await?;
    if marked < marks.len() {
        tracing::warn!(
            lost = marks.len() - marked,
            "leases lost before marking; other workers have those events"
        );
    }
    Ok(true)
}

/// When to try again after `attempts` tries: exponential backoff from one second, at most
/// about eight and a half minutes.
pub(crate) fn retry_at(attempts: i64) -> i64 {
    tollgate_store::now_ms() + 1000i64.saturating_mul(1 << attempts.clamp(0, 9))
}

async fn tenant(state: &AppState, id: Option<&str>) -> Result<Option<Tenant>, Failure> {
    let Some(id) = id.and_then(TenantId::parse) else {
        return Ok(None);
    };
    match state.store.tenant(&id).await {
        Ok(t) => Ok(Some(t)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The tenant whose purchases an event about a payment intent concerns (and the event is
/// listed for that tenant from then on). If the purchases are not recorded yet but the
/// event names a tenant, the completion is still on its way: retry.
async fn tenant_by_payment_intent(
    state: &AppState,
    event: &InboxEvent,
    pi: Option<&str>,
) -> Result<Option<Tenant>, Failure> {
    let Some(pi) = pi else { return Ok(None) };
    if let Some(id) = state.store.tenant_for_payment_intent(pi).await? {
        return adopt_tenant(state, event, &id).await;
    }
    if event.tenant_id.is_some() {
        return Err(Failure::Retry(format!("no purchase recorded yet for {pi}")));
    }
    Ok(None)
}

/// The tenant a subscription event concerns: named in the subscription's metadata, or the
/// one whose mirror holds the subscription.
async fn tenant_by_subscription(
    state: &AppState,
    event: &InboxEvent,
    stripe_sub: &str,
) -> Result<Option<Tenant>, Failure> {
    if event.tenant_id.is_some() {
        return tenant(state, event.tenant_id.as_deref()).await;
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
) -> Result<Option<Tenant>, Failure> {
    if event.tenant_id.is_none() {
        state
            .store
            .inbox_set_tenant(&event.event_id, id.as_str())
            .await?;
    }
    tenant(state, Some(id.as_str())).await
}

/// Applies one event. `Ok(Some(status))` asks the caller to mark it; `Ok(None)` means the
/// handler marked it in its own transaction.
async fn apply(state: &AppState, event: &InboxEvent) -> Result<Option<&'static str>, Failure> {
    let envelope = tollgate_stripe::parse_envelope(&event.payload)
        .ok_or_else(|| Failure::Dead("unreadable event".into()))?;
    match event.event_type.as_str() {
        "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.expired"
        | "checkout.session.async_payment_failed" => {
            let Some(tenant) = tenant(state, event.tenant_id.as_deref()).await? else {
                return Ok(Some("ignored"));
            };
            let session = envelope
                .object_id
                .ok_or_else(|| Failure::Dead("event without a session id".into()))?;
            if event.event_type == "checkout.session.async_payment_failed" {
                let order = match state.store.order_by_session(&tenant.id, &session).await {
                    Ok(o) => o,
                    Err(StoreError::NotFound) => return Ok(Some("ignored")),
                    Err(e) => return Err(e.into()),
                };
                state
                    .store
                    .close_order(
                        &tenant.id,
                        &order.id,
                        "failed",
                        Some("async payment failed"),
                    )
                    .await?;
                return Ok(Some("processed"));
            }
            // Whatever the event says, Stripe's current state of the session decides.
            match complete_from_stripe(state, &tenant, &session, Some(event)).await {
                Ok((_, Completion::Completed(_) | Completion::Subscribed(_))) => Ok(None),
                Ok((_, Completion::NotPaid { .. })) => Ok(Some("processed")),
                Err(e) if e.status == StatusCode::NOT_FOUND => Ok(Some("ignored")),
                Err(e) => Err(e.into()),
            }
        }
        "charge.refunded" | "charge.refund.updated" | "refund.created" | "refund.updated" => {
            let Some(tenant) =
                tenant_by_payment_intent(state, event, envelope.payment_intent.as_deref()).await?
            else {
                return Ok(Some("ignored"));
            };
            let pi = envelope.payment_intent.unwrap_or_default();
            let refunds = state.stripe.list_refunds(&pi).await?;
            let purchases = state
                .store
                .record_external_refunds(&tenant.id, &pi, &counted_refunds(refunds), Some(event))
                .await?;
            for c in customers_of(&purchases) {
                state.access_changed(&tenant.id, c).await;
            }
            Ok(None)
        }
        "charge.dispute.created"
        | "charge.dispute.updated"
        | "charge.dispute.closed"
        | "charge.dispute.funds_withdrawn"
        | "charge.dispute.funds_reinstated" => {
            let Some(tenant) =
                tenant_by_payment_intent(state, event, envelope.payment_intent.as_deref()).await?
            else {
                return Ok(Some("ignored"));
            };
            let pi = envelope.payment_intent.unwrap_or_default();
            // Whatever this event says, Stripe's disputes as they are now decide: access
            // stays frozen while any dispute is open or was lost.
            let disputes = state.stripe.list_disputes(&pi).await?;
            let disputed = disputes.iter().any(|d| !d.settled_for_merchant());
            let purchases = state
                .store
                .set_disputed(&tenant.id, &pi, disputed, Some(event))
                .await?;
            for c in customers_of(&purchases) {
                state.access_changed(&tenant.id, c).await;
            }
            Ok(None)
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed"
        | "customer.subscription.trial_will_end"
        | "customer.subscription.pending_update_applied"
        | "customer.subscription.pending_update_expired"
        | "invoice.paid"
        | "invoice.payment_succeeded"
        | "invoice.payment_failed"
        | "invoice.payment_action_required" => {
            let Some(stripe_sub) = envelope.subscription.as_deref() else {
                return Ok(Some("ignored"));
            };
            let Some(tenant) = tenant_by_subscription(state, event, stripe_sub).await? else {
                return Ok(Some("ignored"));
            };
            // Whatever the event says, the subscription as Stripe has it now is stored; a
            // read older than the stored one changes nothing.
            match sync_subscription(state, &tenant, stripe_sub, Some(event)).await {
                Ok(_) => Ok(None),
                // Not one of the tenant's customers (made outside Tollgate): nothing to mirror.
                Err(e) if e.status == StatusCode::NOT_FOUND => Ok(Some("ignored")),
                Err(e) => Err(e.into()),
            }
        }
        // Completion follows the session; these carry nothing it needs.
        "payment_intent.succeeded"
        | "payment_intent.payment_failed"
        | "payment_intent.created"
        | "charge.succeeded"
        | "charge.failed" => Ok(Some("processed")),
        _ => Ok(Some("ignored")),
    }
}

/// The distinct customers of some purchases.
fn customers_of(purchases: &[tollgate_store::Purchase]) -> Vec<&tollgate_domain::CustomerId> {
    let mut customers: Vec<_> = purchases
        .iter()
        .filter_map(|p| p.customer_id.as_ref())
        .collect();
    customers.sort();
    customers.dedup();
    customers
}
