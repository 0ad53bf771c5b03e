//! Stripe-shaped identifiers: a type prefix and random alphanumerics (`cus_...`, `cs_test_...`).

use rand::Rng;
use rand::distr::Alphanumeric;

/// A fresh id with Stripe's prefix for the object type, e.g. `new_id("cus")`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_chars(24))
}

/// Random letters and digits, for ids, secrets and promotion codes.
pub fn random_chars(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}
