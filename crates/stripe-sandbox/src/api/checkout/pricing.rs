//! Pricing a Checkout Session: its line items resolved to prices, its discount resolved
//! to a coupon (and promotion code), and the amounts both come to.

use serde_json::{Value, json};

use super::only_one;
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::World;

/// A line item resolved to a price: `(price object, quantity)`.
pub(crate) fn resolve_line_items(
    w: &mut World,
    p: &Value,
    mode: &str,
) -> ApiResult<Vec<(Value, i64)>> {
    let items = p["line_items"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::param("line_items", "Missing required param: line_items."))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("line_items[{i}][{f}]");
        let price = match (item["price"].as_str(), item["price_data"].is_object()) {
            (Some(_), true) => {
                return Err(only_one(&format!("{}, {}", at("price"), at("price_data"))));
            }
            (Some(id), false) => {
                let price = w.fetch("price", id, "price", &at("price"))?;
                if price["active"] != true {
                    return Err(ApiError::param(
                        at("price"),
                        format!(
                            "The price specified ({id}) is inactive. This field only accepts active prices."
                        ),
                    ));
                }
                price
            }
            (None, true) => crate::api::catalog::create_price_with(
                w,
                &item["price_data"],
                &at("price_data"),
                true,
            )?,
            (None, false) => {
                return Err(ApiError::param(
                    at("price"),
                    format!("Missing required param: {}.", at("price")),
                ));
            }
        };
        // Stripe: "Quantity should not be defined when recurring.usage_type=metered" (usage
        // decides what a metered price bills); every other price needs one.
        let metered = price["recurring"]["usage_type"] == "metered";
        let quantity = match (metered, item["quantity"].as_i64()) {
            (true, Some(_)) => {
                return Err(ApiError::param(
                    at("quantity"),
                    format!(
                        "Quantity should not be specified where usage_type is `metered`. Remove quantity from `{}`.",
                        at("quantity")
                    ),
                ));
            }
            (true, None) => 1,
            (false, Some(q)) => q,
            (false, None) => {
                return Err(ApiError::param(
                    at("quantity"),
                    format!("Missing required param: {}.", at("quantity")),
                ));
            }
        };
        if quantity < 1 {
            return Err(ApiError::param(
                at("quantity"),
                "Quantity must be at least 1.",
            ));
        }
        if mode == "payment" && price["type"] == "recurring" {
            return Err(ApiError::param(
                at("price"),
                "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or use only one-time prices.",
            ));
        }
        if let Some((first, _)) = out.first() {
            let first: &Value = first;
            if first["currency"] != price["currency"] {
                return Err(ApiError::param(
                    at("price"),
                    "All line items must use the same currency.",
                ));
            }
        }
        out.push((price, quantity));
    }
    if mode == "subscription" && !out.iter().any(|(price, _)| price["type"] == "recurring") {
        return Err(ApiError::param(
            "line_items",
            "You must provide at least one recurring price in `subscription` mode when using prices.",
        ));
    }
    Ok(out)
}

/// Whether a price bills metered usage (nothing at Checkout).
pub(crate) fn is_metered(price: &Value) -> bool {
    price["recurring"]["usage_type"] == "metered"
}

/// Resolves `discounts[]` to `(coupon, promotion code)` and checks they can be used.
pub(crate) fn resolve_discounts(
    w: &World,
    p: &Value,
    now: i64,
) -> ApiResult<Option<(Value, Option<Value>)>> {
    let Some(list) = p["discounts"].as_array().filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if list.len() > 1 {
        return Err(ApiError::param(
            "discounts",
            "You may only apply one discount to a Checkout Session.",
        ));
    }
    let d = &list[0];
    if let Some(code) = d["promotion_code"].as_str() {
        let promo = w.fetch(
            "promotion_code",
            code,
            "promotion code",
            "discounts[0][promotion_code]",
        )?;
        if let Some(msg) = crate::api::catalog::promotion_code_unusable(w, &promo, now) {
            return Err(ApiError::param("discounts[0][promotion_code]", msg));
        }
        let coupon_id = promo["promotion"]["coupon"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let coupon = w.fetch(
            "coupon",
            &coupon_id,
            "coupon",
            "discounts[0][promotion_code]",
        )?;
        return Ok(Some((coupon, Some(promo))));
    }
    if let Some(c) = d["coupon"].as_str() {
        let coupon = w.fetch("coupon", c, "coupon", "discounts[0][coupon]")?;
        if coupon["valid"] != true {
            return Err(ApiError::param(
                "discounts[0][coupon]",
                format!("Coupon {c} is no longer valid."),
            ));
        }
        return Ok(Some((coupon, None)));
    }
    Ok(None)
}

/// Whether a coupon discounts at least one of the items. A coupon restricted with
/// `applies_to[products]` to products none of which is in the session gives nothing, and
/// Stripe does not let such a code onto the session; the sandbox's wording is its own, as
/// Stripe's exact message was not found.
pub(crate) fn discount_applies(w: &World, coupon: &Value, items: &[(Value, i64)]) -> bool {
    items
        .iter()
        .any(|(price, _)| crate::api::catalog::coupon_applies_to_price(w, coupon, price))
}

/// Refuses, on create, a discount that applies to none of the items.
pub(crate) fn check_discount_applies(
    w: &World,
    discount: Option<&(Value, Option<Value>)>,
    items: &[(Value, i64)],
) -> ApiResult<()> {
    let Some((coupon, promo)) = discount else {
        return Ok(());
    };
    if discount_applies(w, coupon, items) {
        return Ok(());
    }
    let (param, what) = match promo {
        Some(_) => ("discounts[0][promotion_code]", "This promotion code"),
        None => ("discounts[0][coupon]", "This coupon"),
    };
    Err(ApiError::param(
        param,
        format!(
            "{what} cannot be applied to any of the items in this Checkout Session: its coupon applies only to other products."
        ),
    ))
}

/// Recomputes a session's amounts and its line items from the prices and the discount.
pub(crate) fn price_session(
    w: &mut World,
    session_id: &str,
    items: &[(Value, i64)],
    discount: Option<&(Value, Option<Value>)>,
) -> ApiResult<()> {
    let currency = items
        .first()
        .and_then(|(p, _)| p["currency"].as_str())
        .unwrap_or("usd")
        .to_owned();
    let mut subtotals = Vec::with_capacity(items.len());
    for (price, qty) in items {
        // A metered price bills its usage later, in arrears: nothing at Checkout.
        let unit = if is_metered(price) {
            0
        } else {
            price["unit_amount"].as_i64().unwrap_or(0)
        };
        let line = unit
            .checked_mul(*qty)
            .ok_or_else(|| ApiError::param("line_items", "The total amount is too large."))?;
        subtotals.push(line);
    }
    let subtotal = subtotals
        .iter()
        .try_fold(0i64, |acc, x| acc.checked_add(*x))
        .ok_or_else(|| ApiError::param("line_items", "The total amount is too large."))?;
    // A coupon restricted to some products discounts only their lines.
    let eligible: Vec<bool> = items
        .iter()
        .map(|(price, _)| {
            discount.is_some_and(|(coupon, _)| {
                crate::api::catalog::coupon_applies_to_price(w, coupon, price)
            })
        })
        .collect();
    let eligible_subtotal: i64 = subtotals
        .iter()
        .zip(&eligible)
        .filter(|(_, e)| **e)
        .map(|(s, _)| *s)
        .sum();
    let total_discount = discount.map_or(0, |(coupon, _)| {
        crate::api::catalog::coupon_discount(coupon, eligible_subtotal, &currency)
    });
    // Spread the discount over the eligible lines in proportion; the last takes the remainder.
    let last_eligible = eligible.iter().rposition(|e| *e);
    let mut left = total_discount;
    let mut lines = Vec::with_capacity(items.len());
    for (i, ((price, qty), line_subtotal)) in items.iter().zip(&subtotals).enumerate() {
        let share = if !eligible[i] {
            0
        } else if Some(i) == last_eligible || eligible_subtotal == 0 {
            left
        } else {
            (i128::from(total_discount) * i128::from(*line_subtotal)
                / i128::from(eligible_subtotal)) as i64
        };
        left -= share;
        let product_name = price["product"]
            .as_str()
            .and_then(|id| w.get(id))
            .map(|p| p["name"].clone())
            .unwrap_or(Value::Null);
        lines.push(json!({
            "id": new_id("li"),
            "object": "item",
            "amount_discount": share,
            "amount_subtotal": line_subtotal,
            "amount_tax": 0,
            "amount_total": line_subtotal - share,
            "currency": currency,
            "description": product_name,
            "price": price,
            "quantity": if is_metered(price) { Value::Null } else { json!(qty) },
        }));
    }
    let discounts = match discount {
        Some((coupon, promo)) => {
            json!([{ "coupon": coupon["id"], "promotion_code": promo.as_ref().map(|p| p["id"].clone()) }])
        }
        None => json!([]),
    };
    w.hidden
        .entry(session_id.to_owned())
        .or_insert_with(|| json!({}))["line_items"] = json!(lines);
    w.update(session_id, |s| {
        s["amount_subtotal"] = json!(subtotal);
        s["amount_total"] = json!(subtotal - total_discount);
        s["currency"] = json!(currency);
        s["discounts"] = discounts;
        s["total_details"] =
            json!({ "amount_discount": total_discount, "amount_shipping": 0, "amount_tax": 0 });
    });
    Ok(())
}

/// Applies a promotion code typed on the hosted page.
pub fn apply_promotion_code(w: &mut World, id: &str, code: &str) -> Result<(), String> {
    let session = w
        .fetch("checkout.session", id, "checkout.session", "session")
        .map_err(|e| e.message)?;
    if session["allow_promotion_codes"] != true {
        return Err("Promotion codes are not accepted for this purchase.".into());
    }
    let now = w.now_for_customer(session["customer"].as_str());
    let promo = w
        .all("promotion_code")
        .find(|p| {
            p["code"]
                .as_str()
                .is_some_and(|c| c.eq_ignore_ascii_case(code.trim()))
                && p["active"] == true
        })
        .cloned()
        .ok_or_else(|| "This code is invalid.".to_owned())?;
    if let Some(msg) = crate::api::catalog::promotion_code_unusable(w, &promo, now) {
        return Err(msg.into());
    }
    let coupon_id = promo["promotion"]["coupon"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let coupon = w
        .fetch("coupon", &coupon_id, "coupon", "code")
        .map_err(|e| e.message)?;
    let items: Vec<(Value, i64)> = w
        .hidden
        .get(id)
        .and_then(|h| h["line_items"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|li| (li["price"].clone(), li["quantity"].as_i64().unwrap_or(1)))
        .collect();
    if !discount_applies(w, &coupon, &items) {
        return Err("This code isn't valid for the items in your cart.".into());
    }
    price_session(w, id, &items, Some(&(coupon, Some(promo)))).map_err(|e| e.message)
}
