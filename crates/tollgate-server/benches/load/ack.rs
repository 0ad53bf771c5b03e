//! Acknowledgement: signed, real-sized events from many senders, each answered 2xx once
//! it is stored. The worker goes on in the background (the events name a tenant that does
//! not exist, so it only sets them aside); nothing waits for it.

use std::sync::Arc;

use clap::Args;
use serde_json::json;

use crate::Common;
use crate::events::{Rng, ack_event};
use crate::procs::Stack;
use crate::report::{append_json, count, mb, per_unit, print_cpu};
use crate::send::{send_all, unix_now};

#[derive(Args)]
pub struct AckArgs {
    #[command(flatten)]
    common: Common,
    /// Events measured.
    #[arg(long, default_value_t = 50_000)]
    events: usize,
    /// Events sent first and not measured (connections opened, caches warm).
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    /// Smallest body, in bytes (a subscription event of Stripe's shape is never smaller
    /// than about 3.1 kB).
    #[arg(long, default_value_t = 2_048)]
    min_bytes: usize,
    /// Largest body, in bytes.
    #[arg(long, default_value_t = 4_096)]
    max_bytes: usize,
    /// Seed of the body sizes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub async fn run(args: AckArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let now = unix_now();
    let run = format!("{}", std::process::id());
    let mut rng = Rng::new(args.seed);
    let total = args.warmup + args.events;
    // A subscription event of Stripe's shape is about 3.1 kB before any metadata: sizes are
    // drawn evenly from there (or --min-bytes, if larger) up to --max-bytes.
    let bare = ack_event(&run, 0, now, 0).len();
    let lo = args.min_bytes.max(bare);
    let hi = args.max_bytes.max(lo);
    let bodies: Vec<String> = (0..total)
        .map(|i| ack_event(&run, i, now, rng.between(lo, hi)))
        .collect();
    let (warmup, measured) = bodies.split_at(args.warmup);
    let sizes = measured.iter().map(String::len);
    let mean = sizes.clone().sum::<usize>() as f64 / measured.len().max(1) as f64;
    let (smallest, largest) = (sizes.clone().min().unwrap_or(0), sizes.max().unwrap_or(0));

    let mut stack = Stack::start(common.engine, &common.postgres_url, common.keep).await?;
    let target = format!("{}/webhooks/stripe", stack.tollgate_url);
    let outcome = async {
        send_all(&target, Arc::new(warmup.to_vec()), common.senders).await?;
        stack.analyze().await?;
        let before = stack.cpu().await?;
        let sent = send_all(&target, Arc::new(measured.to_vec()), common.senders).await?;
        let cpu = stack.cpu().await?.since(&before);
        let rss = stack.tollgate_peak_rss()?;
        anyhow::Ok((sent, cpu, rss))
    }
    .await;
    let logs = stack.logs();
    if outcome.is_err() {
        stack.keep();
    }
    stack.stop().await?;
    let (sent, cpu, rss) = outcome.map_err(|e| e.context(format!("see {logs}")))?;

    let acknowledged = args.events - sent.lost;
    let rate = acknowledged as f64 / sent.elapsed.as_secs_f64();
    let engine = common.engine.label();
    println!(
        "ack on {engine}: {} events of {smallest}–{largest} bytes (mean {:.0}), {} senders, after {} not measured",
        count(args.events as f64),
        mean,
        common.senders,
        count(args.warmup as f64)
    );
    println!(
        "  acknowledged {} in {:.2} s: {} events/s   (target ≥ 10,000)",
        count(acknowledged as f64),
        sent.elapsed.as_secs_f64(),
        count(rate)
    );
    println!(
        "  latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms   (target p99 ≤ 10 ms)",
        sent.latencies.ms(0.5),
        sent.latencies.ms(0.9),
        sent.latencies.ms(0.99),
        sent.latencies.max_ms()
    );
    println!(
        "  refused or failed attempts {}, never acknowledged {}",
        sent.failed_attempts, sent.lost
    );
    print_cpu(&cpu, Some((acknowledged, "event")));
    println!(
        "  tollgate peak RSS (VmHWM) {:.1} MB   (target < 100 MB)",
        mb(rss)
    );
    append_json(
        common.json_out.as_deref(),
        &json!({
            "scenario": "ack",
            "engine": common.engine.name(),
            "events": args.events,
            "senders": common.senders,
            "mean_bytes": mean,
            "acknowledged": acknowledged,
            "seconds": sent.elapsed.as_secs_f64(),
            "rate": rate,
            "p50_ms": sent.latencies.ms(0.5),
            "p99_ms": sent.latencies.ms(0.99),
            "max_ms": sent.latencies.max_ms(),
            "failed_attempts": sent.failed_attempts,
            "lost": sent.lost,
            "cpu": cpu,
            "cpu_ms_per_event": per_unit(&cpu, acknowledged),
            "tollgate_peak_rss_bytes": rss,
        }),
    )
}
