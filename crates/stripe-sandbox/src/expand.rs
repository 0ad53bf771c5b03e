//! `expand[]`: replaces an id by the object it names, along a dotted path
//! (`customer`, `data.customer`, `latest_invoice.payment_intent`), as Stripe does.

use serde_json::Value;

use crate::api;
use crate::error::{ApiError, ApiResult};
use crate::world::World;

/// How deep Stripe lets expansions go.
const MAX_DEPTH: usize = 4;

pub fn apply(world: &World, mut value: Value, paths: &[String]) -> ApiResult {
    for path in paths {
        let parts: Vec<&str> = path.split('.').collect();
        if parts.len() > MAX_DEPTH {
            return Err(ApiError::param(
                "expand",
                format!(
                    "You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}"
                ),
            ));
        }
        expand_one(world, &mut value, &parts, path)?;
    }
    Ok(value)
}

fn expand_one(world: &World, value: &mut Value, parts: &[&str], full: &str) -> ApiResult<()> {
    let Some((&first, rest)) = parts.split_first() else {
        return Ok(());
    };
    if let Value::Array(items) = value {
        for item in items {
            expand_one(world, item, parts, full)?;
        }
        return Ok(());
    }
    let not_expandable = || {
        ApiError::param(
            "expand",
            format!("This property cannot be expanded ({full})."),
        )
    };
    let Some(obj) = value.as_object_mut() else {
        return Err(not_expandable());
    };
    // Fields that Stripe computes on expansion rather than storing as an id.
    if let Some(computed) = api::computed_expansion(world, obj, first) {
        obj.insert(first.to_owned(), computed);
    }
    let Some(field) = obj.get_mut(first) else {
        return Err(not_expandable());
    };
    if let Value::String(id) = field {
        match world.get(id) {
            Some(found) => *field = found.clone(),
            None => return Err(not_expandable()),
        }
    }
    // A list of ids (a subscription's or an invoice's `discounts`) expands element-wise.
    if let Value::Array(items) = field {
        for item in items.iter_mut() {
            if let Value::String(id) = item {
                match world.get(id) {
                    Some(found) => *item = found.clone(),
                    None => return Err(not_expandable()),
                }
            }
        }
    }
    if field.is_null() {
        return Ok(());
    }
    expand_one(world, field, rest, full)
}
