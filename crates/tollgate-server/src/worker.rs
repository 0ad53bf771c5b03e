//! The inbox worker: claims stored Stripe events and applies them through the use cases.
//! Effects and the "processed" mark commit together; a failure that may pass (Stripe or
//! the database unavailable, an event ahead of what it refers to) is retried with backoff
//! for as long as Stripe itself keeps retrying a delivery (three days); one that will not
//! pass becomes a dead letter that can be replayed.

use std::time::Duration;

use tokio::sync::watch;
use tollgate_domain::Timestamp;
use tollgate_domain::status::InboxStatus;
use tollgate_store::{InboxEvent, StoreError};

use crate::state::AppState;
use crate::usecases::events::{self, Applied};

/// How long a claimed event is ours before another worker may take it.
const LEASE: Duration = Duration::from_secs(60);
/// Events one worker claims at once (under one lease).
const BATCH: i64 = 16;
/// How long a transient failure is retried, from the event's arrival: Stripe retries a
/// delivery for up to three days, and an event may wait as long for what it refers to.
const RETRY_FOR: Duration = Duration::from_secs(3 * 24 * 60 * 60);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);

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
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Claims a batch of due events and applies them one after another; `false` when none was
/// due. Marks of events whose handlers commit nothing are written together at the end.
/// Tests drain with it.
pub async fn run_once(state: &AppState) -> Result<bool, StoreError> {
    let batch = state.store.inbox_claim_many(LEASE, BATCH).await?;
    if batch.is_empty() {
        return Ok(false);
    }
    let mut marks: Vec<(&InboxEvent, InboxStatus)> = Vec::with_capacity(batch.len());
    for event in &batch {
        let started = std::time::Instant::now();
        match events::apply(state, event).await {
            Ok(applied) => {
                match applied {
                    Applied::Processed => marks.push((event, InboxStatus::Processed)),
                    Applied::Ignored => marks.push((event, InboxStatus::Ignored)),
                    Applied::Marked => {}
                }
                tracing::info!(event = %event.event_id, kind = %event.event_type, tenant = event.tenant_id.as_ref().map(|t| t.as_str()).unwrap_or("-"), ms = started.elapsed().as_millis() as u64, "event applied");
            }
            Err(e) => {
                let reason = format!("{}: {}", e.code.as_str(), e.message);
                match retry_at(
                    event.received_at,
                    event.attempts,
                    e.is_transient(),
                    Timestamp::now(),
                ) {
                    Some(at) => {
                        tracing::warn!(event = %event.event_id, kind = %event.event_type, attempt = event.attempts, %reason, retry_at = %at, "event failed; will retry");
                        state.store.inbox_fail(event, &reason, Some(at)).await?;
                    }
                    None => {
                        tracing::error!(event = %event.event_id, kind = %event.event_type, attempt = event.attempts, %reason, "event dead-lettered");
                        state.store.inbox_fail(event, &reason, None).await?;
                    }
                }
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

/// When to try a failed event again: `None` makes it a dead letter. A permanent failure
/// is dead at once; a transient one is retried with exponential backoff (from a second,
/// capped at an hour) until three days after the event arrived.
fn retry_at(
    received_at: Timestamp,
    attempts: i64,
    transient: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    if !transient || now > received_at.plus(RETRY_FOR) {
        return None;
    }
    Some(now.plus(backoff(attempts)))
}

/// The wait after `attempts` tries: one second doubled each time, at most an hour.
pub(crate) fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_and_stops_at_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(12), MAX_BACKOFF);
        assert_eq!(backoff(i64::MAX), MAX_BACKOFF);
        assert_eq!(backoff(-5), Duration::from_secs(1));
    }

    #[test]
    fn transient_failures_retry_for_three_days_and_permanent_ones_die_at_once() {
        let received = Timestamp::from_secs(1_000_000);
        let day = 24 * 60 * 60;
        // Early on: retried after the backoff for its attempts.
        let soon = received.plus(Duration::from_secs(10));
        assert_eq!(
            retry_at(received, 3, true, soon),
            Some(soon.plus(backoff(3)))
        );
        // Many attempts and hours later (a long outage, kill -9s): still retried.
        let later = received.plus(Duration::from_secs(2 * day + 23 * 3600));
        assert_eq!(
            retry_at(received, 500, true, later),
            Some(later.plus(MAX_BACKOFF))
        );
        // Past three days: a dead letter.
        let after = received.plus(Duration::from_secs(3 * day + 1));
        assert_eq!(retry_at(received, 4, true, after), None);
        // A permanent failure never waits.
        assert_eq!(retry_at(received, 0, false, soon), None);
    }
}
