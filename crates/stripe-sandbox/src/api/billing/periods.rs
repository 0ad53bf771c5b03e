//! Billing periods: the calendar arithmetic of recurring intervals, proration, and the
//! small readers every billing module shares (a subscription's interval and period, an item's
//! plan).

use chrono::{DateTime, Days, Months};
use serde_json::{Value, json};

use crate::world::World;

pub(crate) const DAY: i64 = 86_400;

/// `start` moved on by `n` recurring intervals, on the calendar (a month after 31 January is
/// the last day of February), as Stripe bills.
pub fn add_intervals(start: i64, interval: &str, count: i64, n: i64) -> i64 {
    let Some(t) = DateTime::from_timestamp(start, 0) else {
        return start;
    };
    let steps = u32::try_from(count.saturating_mul(n).max(0)).unwrap_or(u32::MAX);
    let moved = match interval {
        "day" => t.checked_add_days(Days::new(u64::from(steps))),
        "week" => t.checked_add_days(Days::new(u64::from(steps) * 7)),
        "month" => t.checked_add_months(Months::new(steps)),
        "year" => t.checked_add_months(Months::new(steps.saturating_mul(12))),
        _ => None,
    };
    moved.map_or(start, |m| m.timestamp())
}

/// The legacy `plan` a subscription item still carries for its price.
pub(crate) fn plan_of(price: &Value) -> Value {
    let r = &price["recurring"];
    json!({
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price["created"],
        "currency": price["currency"],
        "interval": r["interval"],
        "interval_count": r["interval_count"],
        "livemode": false,
        "metadata": price["metadata"],
        "meter": r["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": r["usage_type"],
    })
}

/// The recurring interval the subscription bills on (its first recurring price's).
pub(crate) fn interval_of(sub: &Value) -> (String, i64) {
    sub["items"]["data"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["price"]["type"] == "recurring"))
        .map(|i| {
            (
                i["price"]["recurring"]["interval"]
                    .as_str()
                    .unwrap_or("month")
                    .to_owned(),
                i["price"]["recurring"]["interval_count"]
                    .as_i64()
                    .unwrap_or(1),
            )
        })
        .unwrap_or(("month".into(), 1))
}

/// Sets the current period on every item of a subscription.
pub(crate) fn set_periods(sub: &mut Value, start: i64, end: i64) {
    if let Some(items) = sub["items"]["data"].as_array_mut() {
        for item in items {
            item["current_period_start"] = json!(start);
            item["current_period_end"] = json!(end);
        }
    }
}

/// The current period of a subscription (its first item's).
pub(crate) fn period_of(sub: &Value) -> (i64, i64) {
    let item = &sub["items"]["data"][0];
    (
        item["current_period_start"].as_i64().unwrap_or(0),
        item["current_period_end"].as_i64().unwrap_or(0),
    )
}

/// Whether a price bills metered usage.
pub(crate) fn is_metered(price: &Value) -> bool {
    price["recurring"]["usage_type"] == "metered"
}

/// What the sandbox keeps out of sight about an object, created empty on first use.
pub(crate) fn hidden_of<'w>(w: &'w mut World, id: &str) -> &'w mut Value {
    w.hidden.entry(id.to_owned()).or_insert_with(|| json!({}))
}

/// Amount for `fraction` (remaining / total seconds) of `amount`, rounded half away from zero.
pub(crate) fn prorate(amount: i64, remaining: i64, total: i64) -> i64 {
    if total <= 0 {
        return 0;
    }
    let num = i128::from(amount) * i128::from(remaining.clamp(0, total));
    let den = i128::from(total);
    let q = (num.abs() * 2 + den) / (den * 2);
    (if num < 0 { -q } else { q }) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_after_the_31st_of_january_is_the_last_day_of_february() {
        let jan31 = 1_769_817_600; // 2026-01-31T00:00:00Z
        let feb28 = 1_772_236_800; // 2026-02-28T00:00:00Z
        assert_eq!(add_intervals(jan31, "month", 1, 1), feb28);
        // The next period counts from the anchor, so March gets its 31st back.
        assert_eq!(add_intervals(jan31, "month", 1, 2), 1_774_915_200); // 2026-03-31
    }

    #[test]
    fn proration_rounds_half_away_from_zero() {
        assert_eq!(prorate(1000, 1, 2), 500);
        assert_eq!(prorate(1001, 1, 2), 501);
        assert_eq!(prorate(-1001, 1, 2), -501);
        assert_eq!(prorate(1000, 5, 0), 0);
    }
}
