//! Housekeeping that nobody's request triggers, once a minute on every instance (each step
//! is idempotent, so instances running it side by side do no harm):
//! - answers kept for `Idempotency-Key` are dropped after 24 hours;
//! - a pending order whose request died before it got a Checkout Session is failed, freeing
//!   its seats; one whose session expired without the expiry event arriving is settled from
//!   Stripe's state of the session;
//! - refunds of duplicate payments that failed earlier are tried again;
//! - refunds asked for through the API and left pending (their request died, Stripe was
//!   unavailable) are asked of Stripe again with the same key, and settle either way;
//! - price migrations whose time has come move their subscriptions.

use std::time::Duration;

use tokio::sync::watch;
use tollgate_domain::Timestamp;
use tollgate_domain::status::OrderStatus;
use tollgate_store::StoreError;

use crate::state::AppState;
use crate::usecases::completion::{complete_from_stripe, refund_duplicates};
use crate::usecases::migrations::run_price_migration;

/// How often the sweep runs.
const EVERY: Duration = Duration::from_secs(60);
/// A pending order without a session after this long belongs to a request that died.
const NO_SESSION_AFTER: Duration = Duration::from_secs(15 * 60);
/// An expired session's event gets this long to arrive before the sweep asks Stripe.
const EXPIRED_GRACE: Duration = Duration::from_secs(10 * 60);
/// Orders one sweep looks at.
const BATCH: i64 = 100;

pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                if let Err(e) = sweep(&state).await {
                    tracing::warn!(error = %e, "maintenance sweep failed; trying again next time");
                }
            }
        }
    }
}

/// One pass of every step.
pub async fn sweep(state: &AppState) -> Result<(), StoreError> {
    let pruned = state.store.idempotency_prune().await?;
    if pruned > 0 {
        tracing::debug!(pruned, "old idempotency keys dropped");
    }
    let now = Timestamp::now();
    for stale in state
        .store
        .stale_pending_orders(now.minus(NO_SESSION_AFTER), now.minus(EXPIRED_GRACE), BATCH)
        .await?
    {
        let tenant = match state.store.tenant(&stale.tenant_id).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        match &stale.stripe_checkout_session_id {
            None => {
                state
                    .store
                    .close_order(
                        &tenant.id,
                        &stale.order_id,
                        OrderStatus::Failed,
                        Some("checkout was not created"),
                    )
                    .await?;
                tracing::info!(tenant = %tenant.id, order = %stale.order_id, "pending order without a session failed");
            }
            Some(session) => {
                if let Err(e) = complete_from_stripe(state, &tenant, session, &[]).await {
                    tracing::warn!(error = %e.message, order = %stale.order_id, "settling an expired session failed");
                }
            }
        }
    }
    if let Err(e) = crate::usecases::refunds::resume_stale_requests(state, BATCH).await {
        tracing::warn!(error = %e, "settling pending refunds failed; trying again next sweep");
    }
    for (tenant, order) in state.store.orders_with_unrefunded_duplicates(BATCH).await? {
        let tenant = state.store.tenant(&tenant).await?;
        let order = state.store.order(&tenant.id, &order).await?;
        refund_duplicates(state, &tenant, &order).await;
    }
    for m in state.store.due_price_migrations(now, BATCH).await? {
        let tenant = match state.store.tenant(&m.tenant_id).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        match run_price_migration(state, &tenant, &m).await {
            Ok(done) => {
                tracing::info!(tenant = %tenant.id, migration = %m.id, moved = done.moved, failed = done.failed, "price migration ran")
            }
            Err(e) => {
                tracing::warn!(error = %e.message, migration = %m.id, "price migration failed; trying again next sweep")
            }
        }
    }
    Ok(())
}
