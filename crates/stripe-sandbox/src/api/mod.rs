//! Stripe's resources: one module per family, each a set of plain functions over the
//! [`World`]. [`route`] maps a method and a path below `/v1` to one of them.

pub mod billing;
pub mod catalog;
pub mod checkout;
pub mod customers;
pub mod events;
pub mod payments;
pub mod test_clocks;
pub mod validate;

use serde_json::{Map, Value, json};

use crate::Config;
use crate::error::{ApiError, ApiResult};
use crate::world::World;

/// What a handler may need besides the world and the parameters.
pub struct Ctx<'a> {
    /// Where the hosted pages live (`http://127.0.0.1:PORT`).
    pub base_url: &'a str,
    pub config: &'a Config,
}

/// Dispatches one validated API request. `segs` is the path below `/v1/`.
pub fn route(w: &mut World, ctx: &Ctx, method: &str, segs: &[&str], p: Value) -> ApiResult {
    use billing::{changes, invoices, meters, portal, subscriptions as subs};
    use catalog as cat;
    use checkout as co;
    use customers as cu;
    use events as ev;
    use payments as pay;
    use test_clocks as clocks;
    match (method, segs) {
        ("POST", ["customers"]) => cu::create(w, &p),
        ("GET", ["customers"]) => cu::list(w, &p),
        ("GET", ["customers", id]) => cu::retrieve(w, id),
        ("POST", ["customers", id]) => cu::update(w, id, &p),
        ("DELETE", ["customers", id]) => cu::delete(w, id),
        ("GET", ["customers", id, "payment_methods"]) => {
            pay::list_customer_payment_methods(w, id, &p)
        }

        ("POST", ["products"]) => cat::create_product(w, &p),
        ("GET", ["products"]) => cat::list_products(w, &p),
        ("GET", ["products", id]) => w.fetch("product", id, "product", "id"),
        ("POST", ["products", id]) => cat::update_product(w, id, &p),
        ("DELETE", ["products", id]) => cat::delete_product(w, id),
        ("POST", ["prices"]) => cat::create_price(w, &p),
        ("GET", ["prices"]) => cat::list_prices(w, &p),
        ("GET", ["prices", id]) => w.fetch("price", id, "price", "price"),
        ("POST", ["prices", id]) => cat::update_price(w, id, &p),
        ("POST", ["coupons"]) => cat::create_coupon(w, &p),
        ("GET", ["coupons"]) => list(w.all("coupon"), "/v1/coupons", &p),
        ("GET", ["coupons", id]) => w.fetch("coupon", id, "coupon", "coupon"),
        ("DELETE", ["coupons", id]) => cat::delete_coupon(w, id),
        ("POST", ["promotion_codes"]) => cat::create_promotion_code(w, &p),
        ("GET", ["promotion_codes"]) => cat::list_promotion_codes(w, &p),
        ("GET", ["promotion_codes", id]) => {
            w.fetch("promotion_code", id, "promotion code", "promotion_code")
        }
        ("POST", ["promotion_codes", id]) => cat::update_promotion_code(w, id, &p),

        ("POST", ["checkout", "sessions"]) => co::create(w, ctx, &p),
        ("GET", ["checkout", "sessions"]) => co::list(w, &p),
        ("GET", ["checkout", "sessions", id]) => {
            w.fetch("checkout.session", id, "checkout.session", "session")
        }
        ("POST", ["checkout", "sessions", id]) => co::update(w, id, &p),
        ("GET", ["checkout", "sessions", id, "line_items"]) => co::list_line_items(w, id, &p),
        ("POST", ["checkout", "sessions", id, "expire"]) => co::expire(w, id),

        ("GET", ["payment_intents"]) => pay::list_payment_intents(w, &p),
        ("GET", ["payment_intents", id]) => {
            w.fetch("payment_intent", id, "payment_intent", "intent")
        }
        ("GET", ["charges"]) => pay::list_charges(w, &p),
        ("GET", ["charges", id]) => w.fetch("charge", id, "charge", "charge"),
        ("GET", ["payment_methods", id]) => {
            w.fetch("payment_method", id, "PaymentMethod", "payment_method")
        }
        ("POST", ["refunds"]) => pay::refunds::create_refund(w, &p),
        ("GET", ["refunds"]) => pay::refunds::list_refunds(w, &p),
        ("GET", ["refunds", id]) => w.fetch("refund", id, "refund", "refund"),
        ("GET", ["disputes"]) => pay::disputes::list_disputes(w, &p),
        ("GET", ["disputes", id]) => w.fetch("dispute", id, "dispute", "dispute"),
        ("POST", ["disputes", id, "close"]) => pay::disputes::close_dispute(w, id, "lost"),

        ("GET", ["subscriptions"]) => subs::list_subscriptions(w, &p),
        ("GET", ["subscriptions", id]) => w.fetch(
            "subscription",
            id,
            "subscription",
            "subscription_exposed_id",
        ),
        ("POST", ["subscriptions", id]) => changes::update_subscription(w, ctx, id, &p),
        ("DELETE", ["subscriptions", id]) => subs::cancel_subscription_now(w, ctx, id, &p),
        ("POST", ["subscriptions", id, "resume"]) => changes::resume_subscription(w, ctx, id, &p),
        ("GET", ["invoices"]) => invoices::list_invoices(w, &p),
        ("GET", ["invoices", id]) => w.fetch("invoice", id, "invoice", "invoice"),
        ("POST", ["invoices", id, "pay"]) => subs::pay_invoice(w, ctx, id),
        ("POST", ["billing_portal", "sessions"]) => portal::create_portal_session(w, ctx, &p),
        ("POST", ["billing_portal", "configurations"]) => {
            portal::create_portal_configuration(w, &p)
        }
        ("GET", ["billing_portal", "configurations"]) => portal::list_portal_configurations(w, &p),
        ("GET", ["billing_portal", "configurations", id]) => w.fetch(
            "billing_portal.configuration",
            id,
            "configuration",
            "configuration",
        ),
        ("POST", ["billing_portal", "configurations", id]) => {
            portal::update_portal_configuration(w, id, &p)
        }
        ("POST", ["billing", "meters"]) => meters::create_meter(w, &p),
        ("GET", ["billing", "meters"]) => list(w.all("billing.meter"), "/v1/billing/meters", &p),
        ("GET", ["billing", "meters", id]) => w.fetch("billing.meter", id, "billing meter", "id"),
        ("GET", ["billing", "meters", id, "event_summaries"]) => {
            meters::meter_event_summaries(w, id, &p)
        }
        ("POST", ["billing", "meter_events"]) => meters::create_meter_event(w, &p),
        ("POST", ["test_helpers", "test_clocks"]) => clocks::create_test_clock(w, &p),
        ("GET", ["test_helpers", "test_clocks"]) => list(
            w.all("test_helpers.test_clock"),
            "/v1/test_helpers/test_clocks",
            &p,
        ),
        ("GET", ["test_helpers", "test_clocks", id]) => {
            w.fetch("test_helpers.test_clock", id, "test_clock", "test_clock")
        }
        ("DELETE", ["test_helpers", "test_clocks", id]) => clocks::delete_test_clock(w, id),
        ("POST", ["test_helpers", "test_clocks", id, "advance"]) => {
            clocks::advance_test_clock(w, id, &p)
        }

        ("GET", ["events"]) => ev::list_events(w, &p),
        ("GET", ["events", id]) => w.fetch("event", id, "event", "id"),
        ("POST", ["webhook_endpoints"]) => ev::create_endpoint(w, &p),
        ("GET", ["webhook_endpoints"]) => {
            list(w.all("webhook_endpoint"), "/v1/webhook_endpoints", &p)
        }
        ("GET", ["webhook_endpoints", id]) => w.fetch(
            "webhook_endpoint",
            id,
            "webhook endpoint",
            "webhook_endpoint",
        ),
        ("POST", ["webhook_endpoints", id]) => ev::update_endpoint(w, id, &p),
        ("DELETE", ["webhook_endpoints", id]) => ev::delete_endpoint(w, id),
        _ => Err(ApiError::unrecognized(
            method,
            &format!("/v1/{}", segs.join("/")),
        )),
    }
}

/// Fields that `expand[]` computes rather than looks up.
pub fn computed_expansion(w: &World, obj: &Map<String, Value>, field: &str) -> Option<Value> {
    match (obj.get("object")?.as_str()?, field) {
        ("checkout.session", "line_items") => {
            let id = obj.get("id")?.as_str()?;
            Some(checkout::line_items_list(w, id, 100))
        }
        ("coupon", "applies_to") => {
            let id = obj.get("id")?.as_str()?;
            Some(catalog::coupon_applies_to(w, id))
        }
        _ => None,
    }
}

/// A list object over `items` (newest first), paged with `limit`, `starting_after` and
/// `ending_before` as Stripe pages.
pub fn list<'a>(items: impl Iterator<Item = &'a Value>, url: &str, p: &Value) -> ApiResult {
    let items: Vec<&Value> = items.collect();
    page(items, url, p)
}

pub fn page(items: Vec<&Value>, url: &str, p: &Value) -> ApiResult {
    let limit = p["limit"].as_i64().unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::param(
            "limit",
            format!("Invalid limit: must be between 1 and 100 (you passed {limit})"),
        ));
    }
    let limit = usize::try_from(limit).unwrap_or(10);
    let position = |param: &str| -> ApiResult<Option<usize>> {
        match p[param].as_str() {
            None => Ok(None),
            Some(id) => items
                .iter()
                .position(|o| o["id"] == id)
                .map(Some)
                .ok_or_else(|| ApiError::missing("object", id, param)),
        }
    };
    let (window, has_more): (Vec<&Value>, bool) = if let Some(i) = position("starting_after")? {
        let rest = &items[i + 1..];
        (
            rest.iter().take(limit).copied().collect(),
            rest.len() > limit,
        )
    } else if let Some(i) = position("ending_before")? {
        let before = &items[..i];
        let start = before.len().saturating_sub(limit);
        (before[start..].to_vec(), start > 0)
    } else {
        (
            items.iter().take(limit).copied().collect(),
            items.len() > limit,
        )
    };
    Ok(json!({
        "object": "list",
        "data": window.into_iter().cloned().collect::<Vec<_>>(),
        "has_more": has_more,
        "url": url,
    }))
}

/// True when `obj[field]` satisfies a `created`-style filter: an integer (equal) or an
/// object with `gt`, `gte`, `lt`, `lte`.
pub fn matches_range(obj: &Value, field: &str, filter: &Value) -> bool {
    let Some(v) = obj[field].as_i64() else {
        return filter.is_null();
    };
    match filter {
        Value::Null => true,
        Value::Number(n) => n.as_i64() == Some(v),
        Value::Object(m) => m.iter().all(|(op, bound)| {
            let Some(b) = bound.as_i64() else { return true };
            match op.as_str() {
                "gt" => v > b,
                "gte" => v >= b,
                "lt" => v < b,
                "lte" => v <= b,
                _ => true,
            }
        }),
        _ => true,
    }
}

/// A required string parameter, or Stripe's "Missing required param" error.
pub fn required_str<'a>(p: &'a Value, name: &str) -> ApiResult<&'a str> {
    p[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::param(name, format!("Missing required param: {name}.")))
}

/// Currencies whose minor unit is the whole unit (Stripe's zero-decimal list).
pub const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// An amount in minor units as a person reads it: `12.50 USD`, `500 JPY`.
pub fn display_amount(amount: i64, currency: &str) -> String {
    let upper = currency.to_uppercase();
    if ZERO_DECIMAL.contains(&currency) {
        format!("{amount} {upper}")
    } else {
        let sign = if amount < 0 { "-" } else { "" };
        let a = amount.unsigned_abs();
        format!("{sign}{}.{:02} {upper}", a / 100, a % 100)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The `(method, path)` of every arm of [`route`], read from this file's source so that
    /// a new route cannot be added without the check below seeing it. Path parameters
    /// become `obj_123`.
    fn served_routes() -> Vec<(String, String)> {
        let src = include_str!("mod.rs");
        let start = src.find("pub fn route(").expect("route is defined here");
        let end = src[start..]
            .find("\n}\n")
            .map(|i| start + i)
            .expect("route ends");
        let mut routes = Vec::new();
        for line in src[start..end].lines() {
            let Some(rest) = line.trim_start().strip_prefix("(\"") else {
                continue;
            };
            let Some((method, rest)) = rest.split_once('"') else {
                continue;
            };
            let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
                continue;
            };
            let segments: Vec<String> = rest[open + 1..close]
                .split(',')
                .map(str::trim)
                .map(|seg| match seg.strip_prefix('"') {
                    Some(literal) => literal.trim_end_matches('"').to_owned(),
                    None => "obj_123".to_owned(),
                })
                .collect();
            routes.push((method.to_owned(), format!("/v1/{}", segments.join("/"))));
        }
        routes
    }

    #[test]
    fn every_route_the_sandbox_serves_is_in_the_vendored_openapi_subset() {
        let routes = served_routes();
        assert!(routes.len() > 60, "the route table was read: {routes:?}");
        let missing: Vec<&(String, String)> = routes
            .iter()
            .filter(|(method, path)| crate::params::find(method, path).is_none())
            .collect();
        assert!(missing.is_empty(), "served but not vendored: {missing:?}");
    }

    #[test]
    fn every_vendored_operation_has_a_route() {
        let config = Config::default();
        let ctx = Ctx {
            base_url: "http://127.0.0.1:1",
            config: &config,
        };
        for op in crate::params::operations() {
            let path: Vec<String> = op
                .path()
                .trim_start_matches("/v1/")
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "obj_123".to_owned()
                    } else {
                        seg.to_owned()
                    }
                })
                .collect();
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            let mut w = World::default();
            if let Err(e) = route(&mut w, &ctx, op.method(), &segs, json!({})) {
                assert!(
                    !e.message.starts_with("Unrecognized request URL"),
                    "{} {} is vendored but not routed",
                    op.method(),
                    op.path()
                );
            }
        }
    }
}
