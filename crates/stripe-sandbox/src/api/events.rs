//! Events (retrieve, list by type and time) and webhook endpoints.

use serde_json::{Value, json};

use super::{list, matches_range, required_str};
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, random_chars};
use crate::world::{World, merge_metadata, metadata_of, wall_clock};

/// Stripe's `type` filter: an exact type, or a prefix ending in `*` (`customer.subscription.*`).
fn type_matches(kind: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => kind == pattern,
    }
}

pub fn list_events(w: &World, p: &Value) -> ApiResult {
    let types: Option<Vec<&str>> = p["types"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    if p["type"].is_string() && types.is_some() {
        return Err(ApiError::invalid(
            "You may only specify one of these parameters: type, types.",
        ));
    }
    list(
        w.all("event")
            .filter(|e| {
                let kind = e["type"].as_str().unwrap_or_default();
                p["type"].as_str().is_none_or(|t| type_matches(kind, t))
                    && types
                        .as_ref()
                        .is_none_or(|ts| ts.iter().any(|t| type_matches(kind, t)))
            })
            .filter(|e| matches_range(e, "created", &p["created"])),
        "/v1/events",
        p,
    )
}

pub fn create_endpoint(w: &mut World, p: &Value) -> ApiResult {
    let url = required_str(p, "url")?.to_owned();
    if url::Url::parse(&url).is_err() {
        return Err(ApiError::param("url", "Invalid URL: must be a valid URL."));
    }
    let events = p["enabled_events"]
        .as_array()
        .filter(|a| !a.is_empty())
        .cloned()
        .ok_or_else(|| {
            ApiError::param("enabled_events", "Missing required param: enabled_events.")
        })?;
    let id = new_id("we");
    let secret = format!("whsec_{}", random_chars(32));
    let endpoint = json!({
        "id": id,
        "object": "webhook_endpoint",
        "api_version": p.get("api_version").cloned().unwrap_or(Value::Null),
        "application": null,
        "created": wall_clock(),
        "description": p.get("description").cloned().unwrap_or(Value::Null),
        "enabled_events": events,
        "livemode": false,
        "metadata": metadata_of(p),
        "status": "enabled",
        "url": url,
    });
    let mut endpoint = w.insert(endpoint);
    w.hidden.insert(id, json!({ "secret": secret }));
    // The secret is shown on creation only, as Stripe does.
    endpoint["secret"] = json!(secret);
    Ok(endpoint)
}

pub fn update_endpoint(w: &mut World, id: &str, p: &Value) -> ApiResult {
    w.fetch(
        "webhook_endpoint",
        id,
        "webhook endpoint",
        "webhook_endpoint",
    )?;
    if let Some(url) = p["url"].as_str()
        && url::Url::parse(url).is_err()
    {
        return Err(ApiError::param("url", "Invalid URL: must be a valid URL."));
    }
    let (endpoint, _) = w.update(id, |e| {
        for field in ["url", "enabled_events", "description"] {
            if let Some(v) = p.get(field) {
                e[field] = v.clone();
            }
        }
        if let Some(disabled) = p["disabled"].as_bool() {
            e["status"] = json!(if disabled { "disabled" } else { "enabled" });
        }
        merge_metadata(e, p.get("metadata"));
    });
    Ok(endpoint)
}

pub fn delete_endpoint(w: &mut World, id: &str) -> ApiResult {
    w.fetch(
        "webhook_endpoint",
        id,
        "webhook endpoint",
        "webhook_endpoint",
    )?;
    Ok(w.delete(id))
}
