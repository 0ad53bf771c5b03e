//! The inbox worker: applies stored Stripe events, many at once, while events about one
//! object (a subscription, a Checkout Session, a payment's refunds or disputes) are
//! applied one at a time in order of arrival. Events that wait for the same object are
//! applied together: one read of Stripe serves them all, and an event stored before the
//! read under way began needs no read of its own.
//!
//! Events reach the dispatcher from the webhook endpoint as they are stored (leased to
//! this instance in the same write) and from a claimer that takes what is due in the
//! inbox: retries, events stored while this instance was busy, events of instances that
//! died. Effects and the "processed" mark commit together; events whose handlers commit
//! nothing are marked in batches. A failure that may pass (Stripe or the database
//! unavailable, an event ahead of what it refers to) is retried with backoff for as long
//! as Stripe itself keeps retrying a delivery (three days); one that will not pass becomes
//! a dead letter that can be replayed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tollgate_domain::status::InboxStatus;
use tollgate_domain::{StripeEventId, TenantId, Timestamp};
use tollgate_store::Claimed;

use crate::state::AppState;
use crate::usecases::events::{self, Applied, EventObject};

/// How long an event held by an instance stays its own without a renewal.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often the leases of held events are renewed (and dead instances' released).
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// Events one instance holds in memory at most (queued and being applied).
const MAX_HELD: usize = 10_000;
/// Marks written in one transaction at most, and how long they are gathered.
const MARK_BATCH: usize = 1000;
const MARK_GATHER: Duration = Duration::from_millis(50);
/// Events claimed from the inbox at once.
const CLAIM_BATCH: usize = 500;
/// How long a transient failure is retried, from the event's arrival: Stripe retries a
/// delivery for up to three days, and an event may wait as long for what it refers to.
const RETRY_FOR: Duration = Duration::from_secs(3 * 24 * 60 * 60);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);

/// An event this instance holds, on its way to being applied.
#[derive(Debug)]
pub struct Queued {
    pub event: Claimed,
    pub object: EventObject,
    /// When it was stored, if this process stored it: a read of its object begun after
    /// that serves it.
    pub stored: Option<Instant>,
}

/// Hands events to the dispatcher.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Queued>,
    held: Arc<AtomicUsize>,
    holding: Holding,
}

/// The events the dispatcher has in hand (waiting in a lane or being applied), by id.
type Holding = Arc<Mutex<HashSet<StripeEventId>>>;

fn lock(holding: &Holding) -> std::sync::MutexGuard<'_, HashSet<StripeEventId>> {
    holding.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handle {
    /// How many more events the dispatcher takes now.
    pub fn room(&self) -> usize {
        MAX_HELD.saturating_sub(self.held.load(Ordering::Relaxed))
    }

    /// The events the dispatcher has in hand: the leases to renew.
    fn holding(&self) -> Vec<StripeEventId> {
        lock(&self.holding).iter().cloned().collect()
    }

    /// Gives the dispatcher events leased to this instance.
    pub fn hand_over(&self, events: impl IntoIterator<Item = Queued>) {
        for e in events {
            self.held.fetch_add(1, Ordering::Relaxed);
            if self.tx.send(e).is_err() {
                // Stopping: the event stays leased in the inbox and is taken up again.
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Starts the dispatcher (applying up to `concurrency` groups of events at once) and the
/// claimer; both run until `stop` turns true.
pub fn start(
    state: &AppState,
    stop: watch::Receiver<bool>,
    concurrency: usize,
) -> (Handle, Vec<JoinHandle<()>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = Handle {
        tx,
        held: Arc::new(AtomicUsize::new(0)),
        holding: Holding::default(),
    };
    let (marks_tx, marks_rx) = mpsc::unbounded_channel();
    let apply: ApplyGroup = {
        let (state, marks) = (state.clone(), marks_tx.clone());
        Arc::new(move |key, started, group| {
            Box::pin(apply_group(
                state.clone(),
                key,
                started,
                group,
                marks.clone(),
            ))
        })
    };
    let tasks = vec![
        tokio::spawn(dispatch(
            rx,
            handle.held.clone(),
            handle.holding.clone(),
            apply,
            marks_tx,
            concurrency.max(1),
            stop.clone(),
        )),
        tokio::spawn(write_marks(state.clone(), marks_rx)),
        tokio::spawn(claim(state.clone(), handle.clone(), stop)),
    ];
    (handle, tasks)
}

/// Events about one object for one tenant: applied one group at a time.
type LaneKey = (EventObject, Option<TenantId>);

#[derive(Default)]
struct Lane {
    /// Whether a group of this lane is being applied.
    running: bool,
    waiting: Vec<Queued>,
}

/// What became of a group, for the events that waited behind it.
struct Done {
    key: LaneKey,
    started: Instant,
    ids: Vec<StripeEventId>,
    /// The status a waiting event stored before `started` takes without a read of its
    /// own; `None` when the group failed.
    covers: Option<InboxStatus>,
}

/// Applies one group of events about one object and says what became of it.
type ApplyGroup = Arc<
    dyn Fn(LaneKey, Instant, Vec<Queued>) -> std::pin::Pin<Box<dyn Future<Output = Done> + Send>>
        + Send
        + Sync,
>;

/// Runs groups of held events through `apply`, one group per object at a time and at
/// most `concurrency` at once; events that waited behind a group and were stored before
/// it began are marked with its outcome, without a group of their own.
async fn dispatch(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    held: Arc<AtomicUsize>,
    holding: Holding,
    apply: ApplyGroup,
    marks: mpsc::UnboundedSender<(Claimed, InboxStatus)>,
    concurrency: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut lanes: HashMap<LaneKey, Lane> = HashMap::new();
    let mut ready: VecDeque<LaneKey> = VecDeque::new();
    let mut running: JoinSet<Done> = JoinSet::new();
    // Which lane and events each running group has, for a group that panics (and so
    // says nothing of itself).
    let mut groups: HashMap<tokio::task::Id, (LaneKey, Instant, Vec<StripeEventId>)> =
        HashMap::new();
    let mut stopping = false;
    loop {
        while !stopping && running.len() < concurrency {
            let Some(key) = ready.pop_front() else { break };
            let Some(lane) = lanes.get_mut(&key) else {
                continue;
            };
            let started = Instant::now();
            lane.running = true;
            let group = std::mem::take(&mut lane.waiting);
            let ids = group.iter().map(|e| e.event.event_id.clone()).collect();
            let task = running.spawn(apply(key.clone(), started, group));
            groups.insert(task.id(), (key, started, ids));
        }
        if stopping && running.is_empty() {
            return;
        }
        tokio::select! {
            Some(e) = rx.recv(), if !stopping => {
                if !lock(&holding).insert(e.event.event_id.clone()) {
                    // Claimed again while still held here (its lease was renewed late).
                    held.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                let key = (e.object.clone(), e.event.tenant_id.clone());
                let lane = lanes.entry(key.clone()).or_default();
                if !lane.running && lane.waiting.is_empty() {
                    ready.push_back(key);
                }
                lane.waiting.push(e);
            }
            Some(joined) = running.join_next_with_id() => {
                let done = match joined {
                    Ok((id, done)) => {
                        groups.remove(&id);
                        done
                    }
                    Err(e) => {
                        let Some((key, started, ids)) = groups.remove(&e.id()) else { continue };
                        // The lane goes on (later events read Stripe afresh); the
                        // group's own events are no longer held, so their leases run
                        // out and they are claimed and applied again.
                        tracing::error!(events = ids.len(), "applying a group of events panicked");
                        Done { key, started, ids, covers: None }
                    }
                };
                let mut in_hand = lock(&holding);
                for id in &done.ids {
                    in_hand.remove(id);
                }
                held.fetch_sub(done.ids.len(), Ordering::Relaxed);
                let Some(lane) = lanes.get_mut(&done.key) else { continue };
                lane.running = false;
                if let Some(status) = done.covers {
                    let (covered, rest): (Vec<Queued>, Vec<Queued>) = std::mem::take(&mut lane.waiting)
                        .into_iter()
                        .partition(|e| e.stored.is_some_and(|at| at < done.started));
                    lane.waiting = rest;
                    for e in covered {
                        in_hand.remove(&e.event.event_id);
                        held.fetch_sub(1, Ordering::Relaxed);
                        let _ = marks.send((e.event, status));
                    }
                }
                if lane.waiting.is_empty() {
                    lanes.remove(&done.key);
                } else {
                    ready.push_back(done.key);
                }
            }
            _ = stop.changed(), if !stopping => {
                // Finish what is under way; what waits stays leased and is taken up again.
                stopping = true;
            }
        }
    }
}

/// Applies a group of events about one object; marks or fails them.
async fn apply_group(
    state: AppState,
    key: LaneKey,
    started: Instant,
    group: Vec<Queued>,
    marks: mpsc::UnboundedSender<(Claimed, InboxStatus)>,
) -> Done {
    let events: Vec<Claimed> = group.into_iter().map(|q| q.event).collect();
    let ids = events.iter().map(|e| e.event_id.clone()).collect();
    let result = events::apply(&state, &key.0, &events).await;
    let ms = started.elapsed().as_millis() as u64;
    let covers = match result {
        Ok(applied) => {
            let status = match applied {
                Applied::Ignored => InboxStatus::Ignored,
                Applied::Processed | Applied::Marked => InboxStatus::Processed,
            };
            if applied != Applied::Marked {
                for e in &events {
                    let _ = marks.send((e.clone(), status));
                }
            }
            for e in &events {
                tracing::debug!(event = %e.event_id, kind = %e.event_type, tenant = e.tenant_id.as_ref().map(|t| t.as_str()).unwrap_or("-"), group = events.len(), ms, "event applied");
            }
            Some(status)
        }
        Err(e) => {
            let reason = format!("{}: {}", e.code.as_str(), e.message);
            for event in &events {
                let at = retry_at(
                    event.received_at,
                    event.attempts,
                    e.is_transient(),
                    Timestamp::now(),
                );
                match at {
                    Some(at) => {
                        tracing::warn!(event = %event.event_id, kind = %event.event_type, attempt = event.attempts, %reason, retry_at = %at, "event failed; will retry")
                    }
                    None => {
                        tracing::error!(event = %event.event_id, kind = %event.event_type, attempt = event.attempts, %reason, "event dead-lettered")
                    }
                }
                if let Err(e) = state.store.inbox_fail(event, &reason, at).await {
                    tracing::error!(event = %event.event_id, error = %e, "recording a failed attempt failed; the event is retried when its lease runs out");
                }
            }
            None
        }
    };
    Done {
        key,
        started,
        ids,
        covers,
    }
}

/// Writes the marks of events applied without a write of their own, in batches: a lost
/// mark costs only a second, idempotent application.
async fn write_marks(state: AppState, mut rx: mpsc::UnboundedReceiver<(Claimed, InboxStatus)>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MARK_BATCH).await > 0 {
        // Nothing waits for a mark: gather for a moment, so that marks take the database's
        // write turn seldom and in bulk rather than between every two webhook batches.
        let gather = tokio::time::sleep(MARK_GATHER);
        tokio::pin!(gather);
        while batch.len() < MARK_BATCH {
            let room = MARK_BATCH - batch.len();
            tokio::select! {
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                _ = &mut gather => break,
            }
        }
        let marks: Vec<(&Claimed, InboxStatus)> = batch.iter().map(|(e, s)| (e, *s)).collect();
        match state.store.inbox_mark_many(&marks).await {
            Ok(marked) if marked < marks.len() => tracing::warn!(
                lost = marks.len() - marked,
                "leases lost before marking; other instances have those events"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, events = marks.len(), "marking applied events failed; they are applied again when their lease runs out")
            }
        }
        batch.clear();
    }
}

/// Claims due events from the inbox while the dispatcher has room; renews this
/// instance's leases and releases those of dead instances now and then (first of all at
/// start, so that what a previous process held is taken up at once).
async fn claim(state: AppState, handle: Handle, mut stop: watch::Receiver<bool>) {
    let mut renewed: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        if renewed.is_none_or(|at| at.elapsed() >= RENEW_EVERY) {
            renew_leases(&state, &handle.holding()).await;
            renewed = Some(Instant::now());
        }
        let mut full = false;
        if handle.room() >= CLAIM_BATCH {
            let limit = CLAIM_BATCH;
            match state.store.inbox_claim(LEASE, limit as i64).await {
                Ok(events) => {
                    full = events.len() == limit;
                    let mut queued = Vec::with_capacity(events.len());
                    for event in events {
                        match EventObject::of_claimed(&event) {
                            Ok(object) => queued.push(Queued {
                                event: Claimed {
                                    payload: None,
                                    ..event
                                },
                                object,
                                stored: None,
                            }),
                            Err(e) => {
                                tracing::error!(event = %event.event_id, "stored event unreadable; dead-lettered");
                                let reason = format!("{}: {}", e.code.as_str(), e.message);
                                let _ = state.store.inbox_fail(&event, &reason, None).await;
                            }
                        }
                    }
                    handle.hand_over(queued);
                }
                Err(e) => tracing::error!(error = %e, "claiming events failed"),
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = state.inbox_signal.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Renews the leases of the events held (only those: an event leased to this instance but
/// not in hand is left to be claimed again once its lease runs out), and releases those
/// of dead instances.
async fn renew_leases(state: &AppState, holding: &[StripeEventId]) {
    if let Err(e) = state.store.inbox_renew_leases(holding, LEASE).await {
        tracing::warn!(error = %e, "renewing leases failed");
    }
    match state.store.inbox_release_dead_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "took up the events of instances that ended"),
        Err(e) => tracing::warn!(error = %e, "releasing the leases of ended instances failed"),
    }
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
    use std::sync::Mutex;
    use tokio::sync::Semaphore;
    use tollgate_domain::StripeSubscriptionId;

    /// An object's key and the ids of the events applied together.
    type Group = (String, Vec<String>);

    /// A stand-in for applying: records each group, counts how many run at once (in all
    /// and per object), and holds each group until the test lets one finish.
    #[derive(Clone)]
    struct Recorder {
        groups: Arc<Mutex<Vec<Group>>>,
        running: Arc<Mutex<HashMap<String, usize>>>,
        most_at_once: Arc<AtomicUsize>,
        most_per_object: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
        fail_next: Arc<AtomicUsize>,
        panic_next: Arc<AtomicUsize>,
    }

    impl Default for Recorder {
        fn default() -> Self {
            Self {
                groups: Arc::default(),
                running: Arc::default(),
                most_at_once: Arc::default(),
                most_per_object: Arc::default(),
                gate: Arc::new(Semaphore::new(0)),
                fail_next: Arc::default(),
                panic_next: Arc::default(),
            }
        }
    }

    impl Recorder {
        fn apply(&self) -> ApplyGroup {
            let r = self.clone();
            Arc::new(move |key: LaneKey, started, group: Vec<Queued>| {
                let r = r.clone();
                Box::pin(async move {
                    let object = key.0.key();
                    let ids: Vec<String> =
                        group.iter().map(|q| q.event.event_id.to_string()).collect();
                    {
                        let mut running = r.running.lock().unwrap();
                        let n = running.entry(object.clone()).or_default();
                        *n += 1;
                        r.most_per_object.fetch_max(*n, Ordering::SeqCst);
                        let total = running.values().sum::<usize>();
                        r.most_at_once.fetch_max(total, Ordering::SeqCst);
                        r.groups.lock().unwrap().push((object.clone(), ids.clone()));
                    }
                    r.gate.acquire().await.unwrap().forget();
                    *r.running.lock().unwrap().get_mut(&object).unwrap() -= 1;
                    let take = |n: &AtomicUsize| {
                        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    };
                    if take(&r.panic_next) {
                        panic!("a group that panics");
                    }
                    let failed = r
                        .fail_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    Done {
                        key,
                        started,
                        ids: group.into_iter().map(|q| q.event.event_id).collect(),
                        covers: (!failed).then_some(InboxStatus::Processed),
                    }
                })
            })
        }

        fn groups(&self) -> Vec<Group> {
            self.groups.lock().unwrap().clone()
        }
    }

    fn event(id: &str, sub: &str, stored: Option<Instant>) -> Queued {
        Queued {
            event: Claimed {
                event_id: StripeEventId::from_stripe(id),
                event_type: "customer.subscription.updated".into(),
                tenant_id: None,
                object_key: None,
                payload: None,
                received_at: Timestamp::now(),
                attempts: 1,
            },
            object: EventObject::Subscription(StripeSubscriptionId::from_stripe(sub)),
            stored,
        }
    }

    struct Running {
        events: mpsc::UnboundedSender<Queued>,
        marks: mpsc::UnboundedReceiver<(Claimed, InboxStatus)>,
        held: Arc<AtomicUsize>,
        holding: Holding,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    }

    fn run(recorder: &Recorder, concurrency: usize) -> Running {
        let (events, rx) = mpsc::unbounded_channel();
        let (marks_tx, marks) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let holding = Holding::default();
        let task = tokio::spawn(dispatch(
            rx,
            held.clone(),
            holding.clone(),
            recorder.apply(),
            marks_tx,
            concurrency,
            stopped,
        ));
        Running {
            events,
            marks,
            held,
            holding,
            stop,
            task,
        }
    }

    impl Running {
        fn send(&self, e: Queued) {
            self.held.fetch_add(1, Ordering::SeqCst);
            self.events.send(e).unwrap();
        }
    }

    /// Waits (with a deadline) until `check` holds.
    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn events_about_one_object_wait_for_each_other_and_share_one_group() {
        let r = Recorder::default();
        let d = run(&r, 8);
        let before = Instant::now() - Duration::from_secs(1);
        d.send(event("evt_a1", "sub_a", Some(before)));
        until("the first group", || r.groups().len() == 1).await;
        // While sub_a's first group runs: more about sub_a, and others about sub_b.
        d.send(event("evt_a2", "sub_a", None));
        d.send(event("evt_a3", "sub_a", None));
        d.send(event("evt_b1", "sub_b", None));
        d.send(event("evt_b2", "sub_b", None));
        until("sub_b's group", || r.groups().len() >= 2).await;
        assert_eq!(
            r.most_at_once.load(Ordering::SeqCst),
            2,
            "another object's events do not wait"
        );
        r.gate.add_permits(10);
        until("all released", || d.held.load(Ordering::SeqCst) == 0).await;
        let of = |object: &str| -> Vec<Vec<String>> {
            r.groups()
                .into_iter()
                .filter(|(o, _)| o == object)
                .map(|(_, ids)| ids)
                .collect()
        };
        assert_eq!(
            of("subscription:sub_a"),
            vec![
                vec!["evt_a1".to_owned()],
                vec!["evt_a2".to_owned(), "evt_a3".to_owned()]
            ],
            "what waited behind a group is applied together, in order of arrival"
        );
        assert_eq!(of("subscription:sub_b").concat(), vec!["evt_b1", "evt_b2"]);
        assert_eq!(
            r.most_per_object.load(Ordering::SeqCst),
            1,
            "one group per object at a time"
        );
        d.stop.send(true).unwrap();
        d.task.await.unwrap();
    }

    #[tokio::test]
    async fn the_leases_renewed_are_those_of_the_events_in_hand() {
        let r = Recorder::default();
        let d = run(&r, 8);
        let in_hand = || {
            let mut ids: Vec<String> = lock(&d.holding).iter().map(|id| id.to_string()).collect();
            ids.sort();
            ids
        };
        d.send(event("evt_h1", "sub_h", None));
        d.send(event("evt_h2", "sub_h", None));
        d.send(event("evt_i1", "sub_i", None));
        until("both objects' groups", || r.groups().len() == 2).await;
        assert_eq!(
            in_hand(),
            ["evt_h1", "evt_h2", "evt_i1"],
            "events being applied and waiting are in hand"
        );
        // The first two groups end; what waited behind sub_h's is applied next.
        r.gate.add_permits(2);
        until("only evt_h2 in hand", || in_hand() == ["evt_h2"]).await;
        r.gate.add_permits(1);
        until("all released", || d.held.load(Ordering::SeqCst) == 0).await;
        assert!(in_hand().is_empty(), "nothing applied stays in hand");
    }

    #[tokio::test]
    async fn an_event_stored_before_the_read_under_way_began_needs_no_read_of_its_own() {
        let r = Recorder::default();
        let mut d = run(&r, 8);
        d.send(event("evt_1", "sub_c", None));
        until("the first group", || r.groups().len() == 1).await;
        // Stored before the group began (a read begun after it covers it) ...
        d.send(event(
            "evt_2",
            "sub_c",
            Some(Instant::now() - Duration::from_secs(10)),
        ));
        // ... and stored after it began (its change may be newer than that read).
        d.send(event(
            "evt_3",
            "sub_c",
            Some(Instant::now() + Duration::from_secs(3600)),
        ));
        r.gate.add_permits(1);
        let (covered, status) = d.marks.recv().await.unwrap();
        assert_eq!(
            (covered.event_id.as_str(), status),
            ("evt_2", InboxStatus::Processed)
        );
        until("a group for the newer event", || r.groups().len() == 2).await;
        assert_eq!(r.groups()[1].1, vec!["evt_3".to_owned()]);
        r.gate.add_permits(1);
        until("all released", || d.held.load(Ordering::SeqCst) == 0).await;
        assert!(
            d.marks.try_recv().is_err(),
            "nothing else marked without a read"
        );
    }

    #[tokio::test]
    async fn a_failed_group_covers_nothing_and_the_concurrency_bound_holds() {
        let r = Recorder::default();
        r.fail_next.store(1, Ordering::SeqCst);
        let mut d = run(&r, 3);
        d.send(event("evt_f1", "sub_f", None));
        until("the first group", || r.groups().len() == 1).await;
        d.send(event(
            "evt_f2",
            "sub_f",
            Some(Instant::now() - Duration::from_secs(10)),
        ));
        for n in 0..10 {
            d.send(event(&format!("evt_{n}"), &format!("sub_{n}"), None));
        }
        until("three groups at once", || r.groups().len() == 3).await;
        r.gate.add_permits(100);
        until("all released", || d.held.load(Ordering::SeqCst) == 0).await;
        assert!(
            d.marks.try_recv().is_err(),
            "a failed read serves no other event"
        );
        let f: Vec<_> = r
            .groups()
            .into_iter()
            .filter(|(o, _)| o == "subscription:sub_f")
            .collect();
        assert_eq!(
            f.len(),
            2,
            "the event behind a failed group gets its own read"
        );
        assert_eq!(r.most_at_once.load(Ordering::SeqCst), 3);
        assert_eq!(r.groups().len(), 12);
    }

    #[tokio::test]
    async fn a_group_that_panics_frees_its_lane_for_the_events_behind_it() {
        let r = Recorder::default();
        r.panic_next.store(1, Ordering::SeqCst);
        let d = run(&r, 2);
        d.send(event("evt_p1", "sub_p", None));
        until("the first group", || r.groups().len() == 1).await;
        d.send(event("evt_p2", "sub_p", None));
        r.gate.add_permits(5);
        until("all released", || d.held.load(Ordering::SeqCst) == 0).await;
        assert_eq!(
            r.groups(),
            vec![
                ("subscription:sub_p".to_owned(), vec!["evt_p1".to_owned()]),
                ("subscription:sub_p".to_owned(), vec!["evt_p2".to_owned()]),
            ]
        );
    }

    #[tokio::test]
    async fn an_event_claimed_again_while_held_is_applied_once() {
        let r = Recorder::default();
        let d = run(&r, 2);
        d.send(event("evt_twice", "sub_t", None));
        until("the first group", || r.groups().len() == 1).await;
        d.send(event("evt_twice", "sub_t", None));
        r.gate.add_permits(5);
        until("all released", || d.held.load(Ordering::SeqCst) == 0).await;
        assert_eq!(r.groups().len(), 1);
    }

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
