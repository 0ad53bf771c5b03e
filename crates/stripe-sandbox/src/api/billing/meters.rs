//! Billing meters: meters, the usage events reported to them, and their summaries.

use serde_json::{Value, json};

use super::periods::DAY;
use crate::api::{list, required_str};
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, random_chars};
use crate::world::{World, wall_clock};

/// `POST /v1/billing/meters`: one active meter per event name.
pub fn create_meter(w: &mut World, p: &Value) -> ApiResult {
    let display_name = required_str(p, "display_name")?.to_owned();
    let event_name = required_str(p, "event_name")?.to_owned();
    if w.all("billing.meter")
        .any(|m| m["event_name"] == event_name.as_str() && m["status"] == "active")
    {
        return Err(ApiError::param(
            "event_name",
            format!("An active meter with event_name `{event_name}` already exists."),
        ));
    }
    let formula = p["default_aggregation"]["formula"]
        .as_str()
        .ok_or_else(|| {
            ApiError::param(
                "default_aggregation[formula]",
                "Missing required param: default_aggregation[formula].",
            )
        })?;
    let now = wall_clock();
    let meter = json!({
        "id": new_id("mtr"),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {
            "event_payload_key": p["customer_mapping"]["event_payload_key"].as_str().unwrap_or("stripe_customer_id"),
            "type": "by_id",
        },
        "default_aggregation": { "formula": formula },
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": p.get("event_time_window").cloned().unwrap_or(Value::Null),
        "livemode": false,
        "status": "active",
        "status_transitions": { "deactivated_at": null },
        "updated": now,
        "value_settings": { "event_payload_key": p["value_settings"]["event_payload_key"].as_str().unwrap_or("value") },
    });
    Ok(w.insert(meter))
}

/// How far back a meter event's `timestamp` may be.
pub(crate) const METER_EVENT_MAX_AGE: i64 = 35 * DAY;
/// How far ahead a meter event's `timestamp` may be.
pub(crate) const METER_EVENT_MAX_AHEAD: i64 = 5 * 60;

/// Records a meter event. Stripe deduplicates on `identifier` over a rolling 24 hours: a
/// repeat within them is rejected.
pub fn create_meter_event(w: &mut World, p: &Value) -> ApiResult {
    let event_name = required_str(p, "event_name")?.to_owned();
    let meter = w
        .all("billing.meter")
        .find(|m| m["event_name"] == event_name.as_str() && m["status"] == "active")
        .cloned()
        .ok_or_else(|| {
            ApiError::param(
                "event_name",
                format!("No active meter was found for event_name `{event_name}`."),
            )
        })?;
    let customer_key = meter["customer_mapping"]["event_payload_key"]
        .as_str()
        .unwrap_or("stripe_customer_id");
    let value_key = meter["value_settings"]["event_payload_key"]
        .as_str()
        .unwrap_or("value");
    let customer = p["payload"][customer_key].as_str().ok_or_else(|| {
        ApiError::param(
            format!("payload[{customer_key}]"),
            format!("Missing required param: payload[{customer_key}]."),
        )
    })?;
    w.fetch(
        "customer",
        customer,
        "customer",
        &format!("payload[{customer_key}]"),
    )?;
    let value = match p["payload"][value_key].as_str() {
        Some(v) => v.parse::<i64>().map_err(|_| {
            ApiError::param(
                format!("payload[{value_key}]"),
                format!("Invalid integer: {v}"),
            )
        })?,
        None if meter["default_aggregation"]["formula"] == "count" => 1,
        None => {
            return Err(ApiError::param(
                format!("payload[{value_key}]"),
                format!("Missing required param: payload[{value_key}]."),
            ));
        }
    };
    let now = w.now_for_customer(Some(customer));
    let identifier = p["identifier"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| random_chars(24));
    // Stripe enforces uniqueness of `identifier` within a rolling 24 hours.
    if w.meter_identifiers
        .get(&identifier)
        .is_some_and(|&seen| now - seen < DAY)
    {
        return Err(ApiError::param(
            "identifier",
            format!("An event with identifier `{identifier}` already exists."),
        )
        .with_code("duplicate_meter_event"));
    }
    // "Must be within the past 35 calendar days or up to 5 minutes in the future."
    let timestamp = p["timestamp"].as_i64().unwrap_or(now);
    if timestamp < now - METER_EVENT_MAX_AGE || timestamp > now + METER_EVENT_MAX_AHEAD {
        return Err(ApiError::param(
            "timestamp",
            "The timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
        ));
    }
    w.meter_identifiers.insert(identifier.clone(), now);
    let record = json!({ "event_name": event_name, "customer": customer, "value": value, "timestamp": timestamp, "identifier": identifier });
    let events = w
        .hidden
        .entry("meter_events".into())
        .or_insert_with(|| json!([]));
    if let Some(list) = events.as_array_mut() {
        list.push(record);
    }
    Ok(json!({
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": false,
        "payload": p["payload"],
        "timestamp": timestamp,
    }))
}

/// One summary over `[start_time, end_time)` (the sandbox does not split by
/// `value_grouping_window`).
pub fn meter_event_summaries(w: &World, id: &str, p: &Value) -> ApiResult {
    let customer = required_str(p, "customer")?;
    let start = p["start_time"].as_i64().unwrap_or(0);
    let end = p["end_time"].as_i64().unwrap_or(0);
    if end <= start {
        return Err(ApiError::param(
            "end_time",
            "end_time must be after start_time.",
        ));
    }
    let total = meter_usage(w, id, customer, start, end)?;
    let summary = json!({
        "id": format!("mtrusg_{}", random_chars(24)),
        "object": "billing.meter_event_summary",
        "aggregated_value": total as f64,
        "end_time": end,
        "livemode": false,
        "meter": id,
        "start_time": start,
    });
    list(
        std::iter::once(&summary),
        &format!("/v1/billing/meters/{id}/event_summaries"),
        p,
    )
}

/// Sum of a meter's events for a customer in `[from, to)` (the sandbox's view of usage).
pub(crate) fn meter_usage(
    w: &World,
    meter_id: &str,
    customer: &str,
    from: i64,
    to: i64,
) -> ApiResult<i64> {
    let meter = w.fetch("billing.meter", meter_id, "billing meter", "id")?;
    let name = meter["event_name"].clone();
    Ok(w.hidden
        .get("meter_events")
        .and_then(Value::as_array)
        .map(|events| {
            events
                .iter()
                .filter(|e| e["event_name"] == name && e["customer"] == customer)
                .filter(|e| e["timestamp"].as_i64().is_some_and(|t| t >= from && t < to))
                .filter_map(|e| e["value"].as_i64())
                .sum()
        })
        .unwrap_or(0))
}
