//! A subscription's discount: the `discount` object a coupon becomes when Checkout applies
//! it, which invoice it still applies to, and when it comes off.

use serde_json::{Value, json};

use super::periods::add_intervals;
use crate::ids::new_id;
use crate::world::World;

/// Where a new subscription's discount comes from.
pub(crate) struct DiscountOrigin<'a> {
    pub customer: &'a str,
    pub checkout_session: Option<&'a str>,
    pub subscription: &'a str,
}

/// A `discount` object for a coupon applied to a new subscription. A repeating coupon ends
/// `duration_in_months` after it starts; once and forever have no end (a once discount is
/// removed after the first invoice that charges something).
pub(crate) fn create_discount(
    w: &mut World,
    coupon: &Value,
    promo: Option<&Value>,
    origin: DiscountOrigin,
    now: i64,
) -> String {
    let end = match coupon["duration"].as_str() {
        Some("repeating") => Some(add_intervals(
            now,
            "month",
            coupon["duration_in_months"].as_i64().unwrap_or(1),
            1,
        )),
        _ => None,
    };
    let id = new_id("di");
    w.insert(json!({
        "id": id,
        "object": "discount",
        "checkout_session": origin.checkout_session,
        "customer": origin.customer,
        "end": end,
        "invoice": null,
        "invoice_item": null,
        "promotion_code": promo.map(|p| p["id"].clone()),
        "source": { "coupon": coupon["id"], "type": "coupon" },
        "start": now,
        "subscription": origin.subscription,
        "subscription_item": null,
    }));
    id
}

/// The subscription's discount that applies to an invoice made at `now`, with its coupon.
/// A repeating discount past its end is taken off the subscription instead.
pub(crate) fn current_discount(w: &mut World, sub: &Value, now: i64) -> Option<(String, Value)> {
    let id = sub["discounts"][0].as_str()?.to_owned();
    let discount = w.get(&id)?.clone();
    if discount["end"].as_i64().is_some_and(|end| end <= now) {
        remove_discount(w, sub, &id);
        return None;
    }
    let coupon = w.get(discount["source"]["coupon"].as_str()?)?.clone();
    Some((id, coupon))
}

/// Takes a discount off a subscription (its update shows in the next subscription event).
pub(crate) fn remove_discount(w: &mut World, sub: &Value, discount: &str) {
    let sub_id = sub["id"].as_str().unwrap_or_default().to_owned();
    w.update(&sub_id, |s| {
        if let Some(list) = s["discounts"].as_array_mut() {
            list.retain(|d| d != discount);
        }
    });
}
