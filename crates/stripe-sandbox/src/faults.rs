//! Injected faults: what a production Stripe sometimes does and tests must survive.
//! Off by default; set in `Config::faults` or at run time with `POST /_sandbox/faults`.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The knobs. Rates are shares in `0.0..=1.0` (1.0 means every time, which makes tests
/// deterministic).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API answer, in milliseconds (the least delay when `latency_max_ms` is set).
    pub latency_ms: u64,
    /// With jitter: each API request waits a delay drawn uniformly from
    /// `latency_ms..=latency_max_ms`, drawn afresh per request. 0 (or equal to `latency_ms`)
    /// means no jitter. Stripe's own answers take roughly 100 to 300 ms, so
    /// `{"latency_ms": 100, "latency_max_ms": 300}` shows a client real-world timing. The wait
    /// holds no lock: requests in flight wait side by side, as they would on Stripe.
    pub latency_max_ms: u64,
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
    /// Validates that every rate is a share and that the latency range is a range.
    pub fn check(&self) -> Result<(), String> {
        if self.latency_max_ms != 0 && self.latency_max_ms < self.latency_ms {
            return Err(format!(
                "latency_max_ms ({}) must be 0 or at least latency_ms ({})",
                self.latency_max_ms, self.latency_ms
            ));
        }
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

impl Faults {
    /// The delay for one request: `latency_ms`, or a uniform draw up to `latency_max_ms`.
    pub fn latency(&self) -> std::time::Duration {
        let ms = if self.latency_max_ms > self.latency_ms {
            rand::rng().random_range(self.latency_ms..=self.latency_max_ms)
        } else {
            self.latency_ms
        };
        std::time::Duration::from_millis(ms)
    }
}

/// True with probability `rate`.
pub fn roll(rate: f64) -> bool {
    rate >= 1.0 || (rate > 0.0 && rand::rng().random::<f64>() < rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_with_jitter_stays_within_its_range_and_varies() {
        let faults = Faults {
            latency_ms: 100,
            latency_max_ms: 300,
            ..Faults::default()
        };
        let draws: Vec<u128> = (0..200).map(|_| faults.latency().as_millis()).collect();
        assert!(draws.iter().all(|d| (100..=300).contains(d)), "{draws:?}");
        assert!(draws.iter().any(|d| *d != draws[0]), "the delay varies");
    }

    #[test]
    fn latency_without_jitter_is_fixed_and_a_reversed_range_is_refused() {
        let fixed = Faults {
            latency_ms: 40,
            ..Faults::default()
        };
        assert_eq!(fixed.latency().as_millis(), 40);
        let reversed = Faults {
            latency_ms: 300,
            latency_max_ms: 100,
            ..Faults::default()
        };
        assert!(reversed.check().is_err());
    }
}
