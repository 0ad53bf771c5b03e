//! Sends recorded usage to Stripe's billing meters. Records are claimed in batches under a
//! lease and each is sent as one meter event whose `identifier` is the record's id, so a
//! record sent twice (a lost answer, a lease that ran out, two instances) is counted once:
//! Stripe refuses the repeat, which counts as sent. Failures Stripe may get over are
//! retried with backoff; refusals fail the record for good, visible in `GET /v1/usage`.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tollgate_domain::Timestamp;
use tollgate_store::{StoreError, UsageToReport};

use crate::state::AppState;
use crate::usecases::stripe_objects::ensure_stripe_customer;
use crate::worker::backoff;

/// Records claimed at once; they are sent side by side.
const BATCH: i64 = 50;
/// How long a claimed batch is ours.
const LEASE: Duration = Duration::from_secs(60);
/// Attempts before a record fails for good.
const MAX_ATTEMPTS: i64 = 10;

/// Runs until `stop` turns true.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        match report_batch(&state).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {
                tokio::select! {
                    _ = state.usage_signal.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "usage reporter: claiming failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Claims and sends one batch of due records; answers how many were claimed.
pub async fn report_batch(state: &AppState) -> Result<usize, StoreError> {
    let batch = state.store.claim_usage(BATCH, LEASE).await?;
    let claimed = batch.len();
    let mut sends = JoinSet::new();
    for u in batch {
        let state = state.clone();
        sends.spawn(async move { report_one(&state, u).await });
    }
    while let Some(done) = sends.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "usage reporter: storing an outcome failed"),
            Err(e) => tracing::error!(error = %e, "usage reporter: a send panicked"),
        }
    }
    Ok(claimed)
}

async fn report_one(state: &AppState, u: UsageToReport) -> Result<(), StoreError> {
    let r = &u.record;
    let stripe_customer = match &u.stripe_customer_id {
        Some(c) => c.clone(),
        None => {
            let customer = state.store.customer(&r.tenant_id, &r.customer_id).await?;
            match ensure_stripe_customer(state, &r.tenant_id, customer, None).await {
                Ok(c) => match c.stripe_customer_id {
                    Some(id) => id,
                    None => return Ok(()),
                },
                Err(e) => {
                    let retry = e.transient.then(|| retry_at(r.attempts));
                    state.store.usage_failed(r, &e.message, retry).await?;
                    return Ok(());
                }
            }
        }
    };
    let sent = state
        .stripe
        .report_meter_event(
            &u.stripe_event_name,
            &stripe_customer,
            r.value,
            r.occurred_at,
            r.id.as_str(),
        )
        .await;
    match sent {
        Ok(()) => {
            if !state.store.usage_reported(r).await? {
                tracing::warn!(usage = %r.id, "lease lost before marking usage reported");
            }
        }
        Err(e) if e.is_transient() && r.attempts < MAX_ATTEMPTS => {
            tracing::warn!(usage = %r.id, attempt = r.attempts, error = %e, "reporting usage failed; will retry");
            state
                .store
                .usage_failed(r, &e.to_string(), Some(retry_at(r.attempts)))
                .await?;
        }
        Err(e) => {
            tracing::error!(usage = %r.id, attempt = r.attempts, error = %e, "Stripe refused usage; not retrying");
            state.store.usage_failed(r, &e.to_string(), None).await?;
        }
    }
    Ok(())
}

fn retry_at(attempts: i64) -> Timestamp {
    Timestamp::now().plus(backoff(attempts))
}
