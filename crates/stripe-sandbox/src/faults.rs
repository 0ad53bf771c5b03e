//! Injected faults: what a production Stripe sometimes does and tests must survive.
//! Off by default; set in `Config::faults` or at run time with `POST /_sandbox/faults`.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The knobs. Rates are shares in `0.0..=1.0` (1.0 means every time, which makes tests
/// deterministic).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API answer.
    pub latency_ms: u64,
    /// Share of API requests answered `500 api_error` (with `Stripe-Should-Retry: true`).
    pub error_rate: f64,
    /// Share of API requests answered `429` rate limited.
    pub rate_limit_rate: f64,
    /// Share of POST requests carried out but answered `500 api_error`, as when Stripe's
    /// answer is lost on the way back: a retry with the same `Idempotency-Key` replays the
    /// real answer.
    pub lost_answer_rate: f64,
    /// Share of webhook deliveries sent twice.
    pub duplicate_rate: f64,
    /// Share of webhook deliveries held back and sent after the next one.
    pub reorder_rate: f64,
    /// Share of webhook deliveries never sent.
    pub drop_rate: f64,
}

impl Faults {
    /// Validates that every rate is a share.
    pub fn check(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("lost_answer_rate", self.lost_answer_rate),
            ("duplicate_rate", self.duplicate_rate),
            ("reorder_rate", self.reorder_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        Ok(())
    }
}

/// True with probability `rate`.
pub fn roll(rate: f64) -> bool {
    rate >= 1.0 || (rate > 0.0 && rand::rng().random::<f64>() < rate)
}
