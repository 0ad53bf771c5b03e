//! Applying subscription events end to end. Setup, with no Stripe latency: a tenant, a plan
//! with two monthly prices, and subscriptions made as Tollgate's tenants make them (a
//! customer, a Checkout Session with a trial, paid on the sandbox's page, completed with
//! `?sync=true`). Then, per phase: every subscription is changed in Stripe (price,
//! quantity, cancel at period end), events about them are signed and shuffled, the
//! sandbox's latency is set, and the clock runs from the first send until Tollgate lists
//! none of the tenant's events as pending. Last, the mirror is compared with Stripe.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::Common;
use crate::api::{Stripe, Tollgate};
use crate::events::{Rng, envelope};
use crate::procs::Stack;
use crate::report::{append_json, count, mb, per_unit, print_cpu};
use crate::send::{Sent, send_all, unix_now};

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    common: Common,
    /// Events sent in each phase, spread evenly over the subscriptions.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Subscriptions made in the setup.
    #[arg(long, default_value_t = 2_000)]
    subscriptions: usize,
    /// Stripe's latency in each phase, in milliseconds; several (`0,150`) run one after
    /// another on the same subscriptions.
    #[arg(long, value_delimiter = ',', default_value = "150")]
    latency_ms: Vec<u64>,
    /// Each Stripe answer waits the latency give or take up to this, drawn uniformly.
    #[arg(long, default_value_t = 50)]
    jitter_ms: u64,
    /// How long a phase is measured at most; what is left is then applied without latency
    /// before the mirror is checked.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    /// The shortest wait between two questions to Tollgate whether events are pending, in
    /// milliseconds. The wait grows with the phase (2% of the time so far, at most 2 s),
    /// since each question is an API request whose cost lands in what is measured.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// Concurrent requests during the setup.
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    /// Seed of the events' order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The event types sent about each subscription, in turn: Tollgate re-reads the
/// subscription from Stripe for each.
const KINDS: [&str; 5] = [
    "customer.subscription.updated",
    "customer.subscription.created",
    "invoice.paid",
    "customer.subscription.updated",
    "customer.subscription.updated",
];

/// A subscription made in the setup, with what its events carry.
struct Sub {
    stripe_id: String,
    item: String,
    /// Stripe's subscription before the phase's change, and after it.
    before: Value,
    after: Value,
    invoice: Option<Value>,
}

/// The plan's two prices, as Stripe knows them.
struct Plan {
    product: String,
    prices: [String; 2],
    stripe_prices: [String; 2],
}

pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    if args.subscriptions == 0 || args.events == 0 {
        bail!("--subscriptions and --events must be at least 1");
    }
    let common = args.common.clone();
    let mut stack = Stack::start(common.engine, &common.postgres_url, common.keep).await?;
    let outcome = measure(&mut stack, &args).await;
    let logs = stack.logs();
    if outcome.is_err() {
        stack.keep();
    }
    stack.stop().await?;
    outcome.map_err(|e| e.context(format!("see {logs}")))
}

async fn measure(stack: &mut Stack, args: &ApplyArgs) -> anyhow::Result<()> {
    let stripe = Stripe::new(&stack.sandbox_url)?;
    stripe.set_latency(0, 0).await?;
    let tenant = stack.cli(&[
        "tenant",
        "create",
        "--name",
        "Bench load",
        "--success-url",
        "https://shop.test/ok?session_id={CHECKOUT_SESSION_ID}",
    ])?;
    let tenant_id = tenant["tenant_id"]
        .as_str()
        .context("no tenant_id")?
        .to_owned();
    let key = tenant["api_key"].as_str().context("no api_key")?;
    let tollgate = Tollgate::new(&stack.tollgate_url, key)?;
    let plan = plan(&tollgate).await?;
    let started = Instant::now();
    let mut subs = subscribe(&tollgate, &stripe, &plan, args).await?;
    println!(
        "setup: {} subscriptions made through Tollgate in {:.1} s",
        count(subs.len() as f64),
        started.elapsed().as_secs_f64()
    );
    stack.analyze().await?;
    let run = format!("{}", std::process::id());
    for (phase, &latency) in args.latency_ms.iter().enumerate() {
        change(&stripe, &plan, &mut subs, phase, args.setup_concurrency).await?;
        let mut bodies = events(&run, phase, &subs, &tenant_id, args.events)?;
        Rng::new(args.seed + phase as u64).shuffle(&mut bodies);
        let result = phase_run(stack, &tollgate, &stripe, args, latency, bodies).await?;
        let check = verify(&tollgate, &stripe, &subs, args.setup_concurrency).await?;
        let deliveries = stripe.deliveries().await?;
        print_phase(stack, args, latency, &result, &check, deliveries)?;
    }
    Ok(())
}

/// A published plan with two monthly prices, both made in Stripe by Tollgate.
async fn plan(tollgate: &Tollgate) -> anyhow::Result<Plan> {
    let product = tollgate
        .post(
            "/v1/products",
            json!({ "kind": "plan", "title": "Bench plan", "status": "published", "creator_id": "creator_bench",
                    "price": { "unit_amount": 1500, "recurring_interval": "month" } }),
        )
        .await?;
    let id = str_of(&product["id"], "product id")?;
    let second = tollgate
        .post(
            &format!("/v1/products/{id}/prices"),
            json!({ "unit_amount": 2500, "recurring_interval": "month" }),
        )
        .await?;
    let first = &product["prices"][0];
    Ok(Plan {
        product: id.clone(),
        prices: [
            str_of(&first["id"], "price id")?,
            str_of(&second["id"], "price id")?,
        ],
        stripe_prices: [
            str_of(&first["stripe_price_id"], "the first price's Stripe id")?,
            str_of(&second["stripe_price_id"], "the second price's Stripe id")?,
        ],
    })
}

fn str_of(v: &Value, what: &str) -> anyhow::Result<String> {
    v.as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {what} in the answer"))
}

/// Each subscriber as a tenant's backend makes one: customer, Checkout with a trial, pay,
/// then the success page's `?sync=true`, which mirrors the subscription.
async fn subscribe(
    tollgate: &Tollgate,
    stripe: &Stripe,
    plan: &Plan,
    args: &ApplyArgs,
) -> anyhow::Result<Vec<Sub>> {
    let product = Arc::new(plan.product.clone());
    let price = Arc::new(plan.prices[0].clone());
    let done = Arc::new(AtomicUsize::new(0));
    let total = args.subscriptions;
    let (tollgate, stripe) = (tollgate.clone(), stripe.clone());
    in_parallel(args.setup_concurrency, total, move |i| {
        let (tollgate, stripe) = (tollgate.clone(), stripe.clone());
        let (product, price, done) = (product.clone(), price.clone(), done.clone());
        async move {
            let customer = tollgate
                .post(
                    "/v1/customers",
                    json!({ "external_user_id": format!("bench-{i}"), "email": format!("bench-{i}@example.com") }),
                )
                .await?;
            let session = tollgate
                .post(
                    "/v1/checkout_sessions",
                    json!({ "customer": customer["id"], "product": *product, "price": *price, "trial_period_days": 30 }),
                )
                .await?;
            stripe.pay(&str_of(&session["url"], "session url")?).await?;
            let sid = str_of(&session["stripe_checkout_session_id"], "session id")?;
            let synced = tollgate
                .get(&format!("/v1/checkout_sessions/{sid}?sync=true"))
                .await?;
            let stripe_id = str_of(
                &synced["subscription"]["stripe_subscription_id"],
                "mirrored subscription",
            )?;
            let sub = stripe.get(&format!("/v1/subscriptions/{stripe_id}")).await?;
            let invoice = match sub["latest_invoice"].as_str() {
                Some(inv) => Some(stripe.get(&format!("/v1/invoices/{inv}")).await?),
                None => None,
            };
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(500) || n == total {
                eprintln!("setup: {n} of {total} subscriptions");
            }
            Ok(Sub {
                stripe_id,
                item: str_of(&sub["items"]["data"][0]["id"], "subscription item")?,
                before: sub.clone(),
                after: sub,
                invoice,
            })
        }
    })
    .await
}

/// Changes every subscription in Stripe so that its state differs from what Tollgate holds:
/// the other price, another quantity, and cancel at period end switched.
async fn change(
    stripe: &Stripe,
    plan: &Plan,
    subs: &mut [Sub],
    phase: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let price = plan.stripe_prices[(phase + 1) % 2].clone();
    let quantity = (phase + 2).to_string();
    let cancel = if phase.is_multiple_of(2) {
        "true"
    } else {
        "false"
    };
    let targets: Arc<Vec<(String, String)>> = Arc::new(
        subs.iter()
            .map(|s| (s.stripe_id.clone(), s.item.clone()))
            .collect(),
    );
    let stripe = stripe.clone();
    let changed = in_parallel(concurrency, subs.len(), move |i| {
        let (stripe, targets, price, quantity) = (
            stripe.clone(),
            targets.clone(),
            price.clone(),
            quantity.clone(),
        );
        async move {
            let (id, item) = &targets[i];
            stripe
                .post(
                    &format!("/v1/subscriptions/{id}"),
                    &[
                        ("items[0][id]", item.as_str()),
                        ("items[0][price]", price.as_str()),
                        ("items[0][quantity]", quantity.as_str()),
                        ("proration_behavior", "none"),
                        ("cancel_at_period_end", cancel),
                    ],
                )
                .await
        }
    })
    .await?;
    for (sub, after) in subs.iter_mut().zip(changed) {
        sub.before = std::mem::replace(&mut sub.after, after);
    }
    Ok(())
}

/// The phase's signed-to-be bodies: event `j` is about subscription `j % n`, of the kind
/// its round names; `customer.subscription.*` carry the subscription (with
/// `metadata.tenant_id`), `invoice.*` its invoice (the subscription and its metadata under
/// `parent.subscription_details`), as Tollgate's envelope reader expects.
fn events(
    run: &str,
    phase: usize,
    subs: &[Sub],
    tenant: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let now = unix_now();
    let mut out = Vec::with_capacity(n);
    for j in 0..n {
        let sub = &subs[j % subs.len()];
        let id = format!("evt_bench{run}p{phase}x{j}");
        let mut kind = KINDS[(j / subs.len()) % KINDS.len()];
        if kind.starts_with("invoice.") && sub.invoice.is_none() {
            kind = "customer.subscription.updated";
        }
        let body = match (kind, &sub.invoice) {
            ("customer.subscription.created", _) => envelope(&id, kind, now, &sub.before, None),
            (k, Some(invoice)) if k.starts_with("invoice.") => {
                envelope(&id, kind, now, invoice, None)
            }
            _ => {
                let previous = json!({
                    "cancel_at_period_end": sub.before["cancel_at_period_end"],
                    "items": sub.before["items"],
                });
                envelope(&id, kind, now, &sub.after, Some(previous))
            }
        };
        out.push(body);
    }
    if let Some(first) = subs.first() {
        let names = |v: &Value| v["metadata"]["tenant_id"] == tenant;
        let invoice_names = first.invoice.as_ref().is_none_or(|i| {
            i["parent"]["subscription_details"]["metadata"]["tenant_id"] == tenant
                && i["parent"]["subscription_details"]["subscription"] == first.stripe_id.as_str()
        });
        if !names(&first.after) || !invoice_names {
            bail!(
                "Stripe's objects do not name the tenant where Tollgate reads it: {}",
                first.after["metadata"]
            );
        }
    }
    Ok(out)
}

/// What one measured phase came to.
struct PhaseResult {
    /// The events' mean size, in bytes.
    mean_bytes: f64,
    sent: Sent,
    /// Events applied within the measured window.
    applied: usize,
    complete: bool,
    /// From the first send until every event was applied (or the deadline).
    elapsed: Duration,
    cpu: crate::procs::CpuUsage,
    /// When the deadline cut the phase: how long the rest took without latency.
    drained_after: Option<Duration>,
    dead: usize,
    ignored: usize,
    rss: u64,
    polls: Polls,
    /// Tollgate's and the database's CPU for one poll, in milliseconds.
    poll_cost_ms: f64,
    /// The phase's CPU less what the polls cost.
    net: crate::procs::CpuUsage,
}

/// Polls asked after a phase to learn what one costs.
const CALIBRATION_POLLS: usize = 20;

/// The driver's questions to Tollgate while measuring. They cost Tollgate and its database
/// too (within the measured CPU), so they are counted and timed.
#[derive(Default)]
struct Polls {
    count: usize,
    total: Duration,
}

impl Polls {
    /// Whether none of the tenant's events is pending (`GET /v1/events?status=pending`,
    /// the only way the API tells that events are applied).
    async fn none_pending(&mut self, tollgate: &Tollgate) -> anyhow::Result<bool> {
        let asked = Instant::now();
        let none = tollgate.events("pending", 1).await?.is_empty();
        self.count += 1;
        self.total += asked.elapsed();
        Ok(none)
    }

    fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.total.as_secs_f64() * 1e3 / self.count as f64
    }
}

async fn phase_run(
    stack: &mut Stack,
    tollgate: &Tollgate,
    stripe: &Stripe,
    args: &ApplyArgs,
    latency: u64,
    bodies: Vec<String>,
) -> anyhow::Result<PhaseResult> {
    let n = bodies.len();
    let mean_bytes = bodies.iter().map(String::len).sum::<usize>() as f64 / n.max(1) as f64;
    stripe
        .set_latency(
            latency.saturating_sub(args.jitter_ms),
            if latency == 0 {
                0
            } else {
                latency + args.jitter_ms
            },
        )
        .await?;
    let target = format!("{}/webhooks/stripe", stack.tollgate_url);
    let before = stack.cpu().await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.deadline_secs);
    let mut sending = Some(tokio::spawn({
        let (target, bodies, senders) = (target.clone(), Arc::new(bodies), args.common.senders);
        async move { send_all(&target, bodies, senders).await }
    }));
    let mut sent = None;
    let mut polls = Polls::default();
    // Polled, not waited for a fixed time: done once every event is acknowledged and none
    // of the tenant's events is pending.
    let complete = loop {
        let floor = Duration::from_millis(args.poll_ms);
        let wait = started
            .elapsed()
            .mul_f64(0.02)
            .clamp(floor, floor.max(Duration::from_secs(2)));
        tokio::time::sleep(wait).await;
        if let Some(task) = sending.take_if(|t| t.is_finished()) {
            sent = Some(task.await??);
        }
        if sent.is_some() && polls.none_pending(tollgate).await? {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let elapsed = started.elapsed();
    let cpu = stack.cpu().await?.since(&before);
    let sent = match sent {
        Some(s) => s,
        None => bail!(
            "the events were not all acknowledged within {} s",
            args.deadline_secs
        ),
    };
    let acknowledged = n - sent.lost;
    let mut drained_after = None;
    let applied = if complete {
        acknowledged
    } else {
        let pending = tollgate.list_all("/v1/events?status=pending").await?.len();
        stripe.set_latency(0, 0).await?;
        let t = Instant::now();
        wait_until_applied(tollgate, Duration::from_secs(600)).await?;
        drained_after = Some(t.elapsed());
        acknowledged.saturating_sub(pending)
    };
    stripe.set_latency(0, 0).await?;
    let dead = tollgate.list_all("/v1/events?status=dead").await?.len();
    let ignored = tollgate.list_all("/v1/events?status=ignored").await?.len();
    // What one poll costs, asked again now that nothing is pending (the table as large as
    // during the phase): taken off the phase's CPU, the figure per event is the apply's.
    let calibration = stack.cpu().await?;
    let mut probe = Polls::default();
    for _ in 0..CALIBRATION_POLLS {
        probe.none_pending(tollgate).await?;
    }
    let poll_cost = stack.cpu().await?.since(&calibration);
    let per_poll = 1.0 / CALIBRATION_POLLS as f64;
    let net = cpu.less(&poll_cost, per_poll * polls.count as f64);
    Ok(PhaseResult {
        mean_bytes,
        sent,
        applied,
        complete,
        elapsed,
        cpu,
        drained_after,
        dead,
        ignored,
        rss: stack.tollgate_peak_rss()?,
        poll_cost_ms: 1e3 * poll_cost.tollgate_and_database_s() * per_poll,
        polls,
        net,
    })
}

async fn wait_until_applied(tollgate: &Tollgate, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !tollgate.events("pending", 1).await?.is_empty() {
        if Instant::now() > deadline {
            bail!("events still pending after {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How Tollgate's mirror compares with Stripe.
struct Check {
    compared: usize,
    mismatches: Vec<String>,
}

/// Compares the mirror of every subscription with Stripe's state: status, price,
/// quantity, cancel at period end, and the current period's end.
async fn verify(
    tollgate: &Tollgate,
    stripe: &Stripe,
    subs: &[Sub],
    concurrency: usize,
) -> anyhow::Result<Check> {
    let mirror: HashMap<String, Value> = tollgate
        .list_all("/v1/subscriptions")
        .await?
        .into_iter()
        .filter_map(|s| Some((s["stripe_subscription_id"].as_str()?.to_owned(), s)))
        .collect();
    let ids: Arc<Vec<String>> = Arc::new(subs.iter().map(|s| s.stripe_id.clone()).collect());
    let stripe = stripe.clone();
    let theirs = in_parallel(concurrency, subs.len(), move |i| {
        let (stripe, ids) = (stripe.clone(), ids.clone());
        async move { stripe.get(&format!("/v1/subscriptions/{}", ids[i])).await }
    })
    .await?;
    let mut mismatches = Vec::new();
    for s in &theirs {
        let id = s["id"].as_str().unwrap_or_default();
        let item = &s["items"]["data"][0];
        let Some(m) = mirror.get(id) else {
            mismatches.push(format!("{id}: not mirrored"));
            continue;
        };
        let pairs = [
            ("status", &m["status"], &s["status"]),
            (
                "stripe_price_id",
                &m["stripe_price_id"],
                &item["price"]["id"],
            ),
            ("quantity", &m["quantity"], &item["quantity"]),
            (
                "cancel_at_period_end",
                &m["cancel_at_period_end"],
                &s["cancel_at_period_end"],
            ),
            (
                "current_period_ends_at",
                &m["current_period_ends_at"],
                &item["current_period_end"],
            ),
        ];
        for (field, ours, stripes) in pairs {
            if ours != stripes {
                mismatches.push(format!(
                    "{id}: {field} is {ours} in Tollgate, {stripes} in Stripe"
                ));
            }
        }
    }
    Ok(Check {
        compared: theirs.len(),
        mismatches,
    })
}

fn print_phase(
    stack: &Stack,
    args: &ApplyArgs,
    latency: u64,
    r: &PhaseResult,
    check: &Check,
    deliveries: usize,
) -> anyhow::Result<()> {
    let engine = stack.engine.label();
    let n = args.events;
    let secs = r.elapsed.as_secs_f64();
    let rate = r.applied as f64 / secs;
    let spread = if latency == 0 {
        String::new()
    } else {
        format!(" ± {} ms", args.jitter_ms)
    };
    println!(
        "apply on {engine}, Stripe latency {latency} ms{spread}: {} events (mean {:.0} bytes) over {} subscriptions, {} senders",
        count(n as f64),
        r.mean_bytes,
        count(args.subscriptions as f64),
        args.common.senders
    );
    println!(
        "  acknowledged in {:.2} s (p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} failed attempts, {} never acknowledged)",
        r.sent.elapsed.as_secs_f64(),
        r.sent.latencies.ms(0.5),
        r.sent.latencies.ms(0.99),
        r.sent.latencies.max_ms(),
        r.sent.failed_attempts,
        r.sent.lost
    );
    if r.complete {
        println!(
            "  all applied {secs:.2} s after the first send: {} events/s end to end   (target ≥ 500 at ~150 ms)",
            count(rate)
        );
    } else {
        println!(
            "  INCOMPLETE: {} of {} applied in the {secs:.0} s allowed: {} events/s   (target ≥ 500 at ~150 ms)",
            count(r.applied as f64),
            count(n as f64),
            count(rate)
        );
        if let Some(d) = r.drained_after {
            println!(
                "  the rest applied {:.1} s after Stripe's latency was removed",
                d.as_secs_f64()
            );
        }
    }
    print_cpu(&r.cpu, Some((r.applied, "applied event")));
    println!(
        "  in these: the driver's {} polls of GET /v1/events?status=pending ({:.2} ms each, {:.2} ms of tollgate + database CPU each)",
        r.polls.count,
        r.polls.mean_ms(),
        r.poll_cost_ms
    );
    let per_event = |s: f64| {
        if r.applied == 0 {
            0.0
        } else {
            1e3 * s / r.applied as f64
        }
    };
    println!(
        "  tollgate + database: {:.3} ms CPU per applied event, {:.3} ms with the polls   (target ≤ 2 ms at latency 0)",
        per_event(r.net.tollgate_and_database_s()),
        per_event(r.cpu.tollgate_and_database_s())
    );
    println!(
        "  mirror vs Stripe: {} subscriptions compared, {} mismatches; so far dead letters {}, ignored {}, sandbox deliveries {}",
        count(check.compared as f64),
        check.mismatches.len(),
        r.dead,
        r.ignored,
        deliveries
    );
    for m in check.mismatches.iter().take(5) {
        println!("    {m}");
    }
    println!(
        "  tollgate peak RSS (VmHWM) {:.1} MB   (target < 100 MB)",
        mb(r.rss)
    );
    append_json(
        args.common.json_out.as_deref(),
        &json!({
            "scenario": "apply",
            "engine": stack.engine.name(),
            "latency_ms": latency,
            "jitter_ms": if latency == 0 { 0 } else { args.jitter_ms },
            "events": n,
            "subscriptions": args.subscriptions,
            "senders": args.common.senders,
            "mean_bytes": r.mean_bytes,
            "applied": r.applied,
            "complete": r.complete,
            "seconds": secs,
            "rate": rate,
            "drained_after_s": r.drained_after.map(|d| d.as_secs_f64()),
            "ack_p99_ms": r.sent.latencies.ms(0.99),
            "polls": r.polls.count,
            "poll_mean_ms": r.polls.mean_ms(),
            "failed_attempts": r.sent.failed_attempts,
            "lost": r.sent.lost,
            "cpu": r.cpu,
            "cpu_ms_per_event": per_unit(&r.net, r.applied),
            "cpu_ms_per_event_with_polls": per_unit(&r.cpu, r.applied),
            "poll_cost_ms": r.poll_cost_ms,
            "compared": check.compared,
            "mismatches": check.mismatches.len(),
            "dead": r.dead,
            "ignored": r.ignored,
            "sandbox_deliveries": deliveries,
            "tollgate_peak_rss_bytes": r.rss,
        }),
    )
}

/// Runs `f(0..count)` with at most `concurrency` at once; the answers in order.
async fn in_parallel<T, F, Fut>(concurrency: usize, count: usize, f: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (f, next) = (f.clone(), next.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(done);
                }
                done.push((i, f(i).await.with_context(|| format!("item {i}"))?));
            }
        });
    }
    let mut out: Vec<Option<T>> = (0..count).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        for (i, v) in done?? {
            out[i] = Some(v);
        }
    }
    out.into_iter()
        .map(|v| v.context("a task ended without its answer"))
        .collect()
}
