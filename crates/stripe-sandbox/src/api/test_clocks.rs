//! Test clocks: create, delete (with their customers) and advance, which runs the clock
//! engine over the clock's subscriptions and expires the Checkout Sessions whose time came.

use serde_json::{Value, json};

use super::Ctx;
use super::billing::engine::run_until;
use super::billing::periods::{DAY, add_intervals, interval_of};
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::{Pending, World, wall_clock};

/// `POST /v1/test_helpers/test_clocks`.
pub fn create_test_clock(w: &mut World, p: &Value) -> ApiResult {
    let frozen = p["frozen_time"]
        .as_i64()
        .ok_or_else(|| ApiError::param("frozen_time", "Missing required param: frozen_time."))?;
    let now = wall_clock();
    let clock = json!({
        "id": new_id("clock"),
        "object": "test_helpers.test_clock",
        "created": now,
        "deletes_after": now + 30 * DAY,
        "frozen_time": frozen,
        "livemode": false,
        "name": p.get("name").cloned().unwrap_or(Value::Null),
        "status": "ready",
        "status_details": {},
    });
    let clock = w.insert(clock);
    w.emit("test_helpers.test_clock.created", &clock, None, now);
    Ok(clock)
}

/// `DELETE /v1/test_helpers/test_clocks/{id}`: its customers (and their subscriptions) go
/// with it.
pub fn delete_test_clock(w: &mut World, id: &str) -> ApiResult {
    let clock = w.fetch("test_helpers.test_clock", id, "test_clock", "test_clock")?;
    let customers: Vec<String> = w
        .all("customer")
        .filter(|c| c["test_clock"] == id)
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    for c in customers {
        super::customers::delete(w, &c)?;
    }
    let out = w.delete(id);
    w.emit(
        "test_helpers.test_clock.deleted",
        &clock,
        None,
        wall_clock(),
    );
    Ok(out)
}

/// Starts moving a test clock forward, as Stripe's advance does: the answer says
/// `advancing` (with the old `frozen_time`) and the work runs afterwards, in the background
/// (see [`finish_advance`]). Stripe: "Starts advancing a test clock to a specified time in the
/// future. Advancement is done when status changes to `Ready`." (API reference, Advance a test
/// clock), so a client polls the clock until it is `ready`.
pub fn advance_test_clock(w: &mut World, id: &str, p: &Value) -> ApiResult {
    let clock = w.fetch("test_helpers.test_clock", id, "test_clock", "test_clock")?;
    if clock["status"] == "advancing" {
        // One advance at a time: the clock's time is in flux until it is `ready`.
        return Err(ApiError::invalid(format!(
            "The test clock {id} is already advancing. Wait until its status is `ready` before advancing it again."
        )));
    }
    let target = p["frozen_time"]
        .as_i64()
        .ok_or_else(|| ApiError::param("frozen_time", "Missing required param: frozen_time."))?;
    let current = clock["frozen_time"].as_i64().unwrap_or(0);
    // "Must be after the test clock’s current frozen time." (API reference, frozen_time)
    if target <= current {
        return Err(ApiError::param(
            "frozen_time",
            "The frozen time must be later than the test clock's current frozen time.",
        ));
    }
    // "Cannot be more than two intervals in the future from the shortest subscription in this
    // test clock. If there are no subscriptions in this test clock, it cannot be more than two
    // years in the future." (API reference, Advance a test clock, frozen_time)
    let limit = advance_limit(w, id, current);
    if target > limit {
        return Err(ApiError::param(
            "frozen_time",
            format!(
                "The test clock can be advanced at most two intervals of the shortest subscription on it (or two years without subscriptions): to {limit} at the latest. Advance it in smaller steps."
            ),
        ));
    }
    let (c, prev) = w.update(id, |c| {
        c["status"] = json!("advancing");
        c["status_details"] = json!({ "advancing": { "target_frozen_time": target } });
    });
    w.emit("test_helpers.test_clock.advancing", &c, Some(prev), current);
    w.hidden.entry(id.to_owned()).or_insert_with(|| json!({}))["advance_to"] = json!(target);
    w.pending.push(Pending::AdvanceClock(id.to_owned()));
    Ok(c)
}

/// The latest time a clock at `current` may be advanced to.
fn advance_limit(w: &World, clock: &str, current: i64) -> i64 {
    w.all("subscription")
        .filter(|s| s["test_clock"] == clock)
        .filter(|s| {
            !matches!(
                s["status"].as_str(),
                Some("canceled" | "incomplete_expired")
            )
        })
        .map(|s| {
            let (interval, count) = interval_of(s);
            add_intervals(current, &interval, count, 2)
        })
        .min()
        .unwrap_or_else(|| add_intervals(current, "year", 1, 2))
}

/// Runs an accepted advance: every renewal, trial end, retry and cancellation that falls
/// due on the way, in time order, each at its own time; then the clock is `ready` at its
/// target (`test_helpers.test_clock.ready`). What happens while the clock moves is Stripe's
/// own doing, so its events are automatic (`request.id: null`).
pub fn finish_advance(w: &mut World, ctx: &Ctx, id: &str) -> ApiResult<()> {
    let clock = w.fetch("test_helpers.test_clock", id, "test_clock", "test_clock")?;
    if clock["status"] != "advancing" {
        return Ok(());
    }
    let current = clock["frozen_time"].as_i64().unwrap_or(0);
    let target = w
        .hidden
        .get_mut(id)
        .and_then(|h| h.as_object_mut())
        .and_then(|h| h.remove("advance_to"))
        .and_then(|t| t.as_i64())
        .or_else(|| clock["status_details"]["advancing"]["target_frozen_time"].as_i64())
        .unwrap_or(current);
    w.request = None;
    let result = run_until(w, ctx, id, current, target);
    if result.is_ok() {
        crate::api::checkout::expire_due(w);
    }
    let (c, prev) = w.update(id, |c| {
        c["frozen_time"] = json!(target);
        c["status"] = json!("ready");
        c["status_details"] = json!({});
    });
    w.emit("test_helpers.test_clock.ready", &c, Some(prev), target);
    result
}
