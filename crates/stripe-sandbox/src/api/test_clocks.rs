//! Test clocks: create, delete (with their customers) and advance, which runs the clock
//! engine over the clock's subscriptions and expires the Checkout Sessions whose time came.

use serde_json::{Value, json};

use super::Ctx;
use super::billing::engine::run_until;
use super::billing::periods::DAY;
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::{World, wall_clock};

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

/// Moves a test clock forward, running every renewal, trial end, retry and cancellation
/// that falls due on the way, in time order, each at its own time.
pub fn advance_test_clock(w: &mut World, ctx: &Ctx, id: &str, p: &Value) -> ApiResult {
    let clock = w.fetch("test_helpers.test_clock", id, "test_clock", "test_clock")?;
    let target = p["frozen_time"]
        .as_i64()
        .ok_or_else(|| ApiError::param("frozen_time", "Missing required param: frozen_time."))?;
    let current = clock["frozen_time"].as_i64().unwrap_or(0);
    if target <= current {
        return Err(ApiError::param(
            "frozen_time",
            "The frozen time must be later than the test clock's current frozen time.",
        ));
    }
    let (c, prev) = w.update(id, |c| c["status"] = json!("advancing"));
    w.emit("test_helpers.test_clock.advancing", &c, Some(prev), current);
    // What happens while the clock moves is Stripe's own doing, not the advance request's:
    // those events are automatic (`request.id: null`).
    let request = w.request.take();
    let result = run_until(w, ctx, id, current, target);
    if result.is_ok() {
        crate::api::checkout::expire_due(w);
    }
    let (c, prev) = w.update(id, |c| {
        c["frozen_time"] = json!(target);
        c["status"] = json!("ready");
    });
    w.emit("test_helpers.test_clock.ready", &c, Some(prev), target);
    w.request = request;
    result.map(|()| c)
}
