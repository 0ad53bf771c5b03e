//! Printing results for people, and as one JSON line per result for `scripts/bench.sh`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::procs::CpuUsage;

/// Appends `value` as one line to `path`.
pub fn append_json(path: Option<&Path>, value: &Value) -> anyhow::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{value}")?;
    Ok(())
}

/// `12345.6` as `12,346`.
pub fn count(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// CPU per process over a phase: seconds, share of one core, and milliseconds per unit of
/// work when `per` names how many units there were.
pub fn print_cpu(cpu: &CpuUsage, per: Option<(usize, &str)>) {
    println!(
        "  CPU over {:.1} s of wall time (1.0 core = 100%):",
        cpu.wall_s
    );
    let rows = [
        ("tollgate", Some(cpu.tollgate_s)),
        (
            "postgresql backends (this database)",
            cpu.postgres_backends_s,
        ),
        (
            "postgresql background (shared by all databases)",
            cpu.postgres_background_s,
        ),
        ("sandbox", Some(cpu.sandbox_s)),
        ("load driver", Some(cpu.driver_s)),
    ];
    for (name, secs) in rows {
        let Some(s) = secs else { continue };
        let share = 100.0 * s / cpu.wall_s.max(1e-9);
        match per {
            Some((n, unit)) if n > 0 => println!(
                "    {name:<50} {s:>7.2} s  {share:>5.0}%  {:>7.3} ms/{unit}",
                1e3 * s / n as f64
            ),
            _ => println!("    {name:<50} {s:>7.2} s  {share:>5.0}%"),
        }
    }
}

/// Milliseconds of CPU per unit of work, per process, for the JSON line.
pub fn per_unit(cpu: &CpuUsage, n: usize) -> Value {
    let per = |s: f64| if n == 0 { 0.0 } else { 1e3 * s / n as f64 };
    serde_json::json!({
        "tollgate": per(cpu.tollgate_s),
        "postgres_backends": cpu.postgres_backends_s.map(per),
        "postgres_background": cpu.postgres_background_s.map(per),
        "sandbox": per(cpu.sandbox_s),
        "driver": per(cpu.driver_s),
        "tollgate_and_database": per(cpu.tollgate_and_database_s()),
    })
}
