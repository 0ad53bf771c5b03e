//! The catalogue: products, prices, coupons and promotion codes.

use serde_json::{Value, json};

use super::{list, matches_range, required_str};
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, random_chars};
use crate::world::{World, merge_metadata, metadata_of, wall_clock};

/// Stripe caps recurring intervals at one year.
fn check_interval(interval: &str, count: i64, param: &str) -> ApiResult<()> {
    let max = match interval {
        "day" => 365,
        "week" => 52,
        "month" => 12,
        "year" => 1,
        _ => 0,
    };
    if count < 1 || count > max {
        return Err(ApiError::param(
            param,
            "Invalid recurring interval: the maximum is 1 year (1 year, 12 months, 52 weeks, or 365 days).",
        ));
    }
    Ok(())
}

pub fn create_product(w: &mut World, p: &Value) -> ApiResult {
    let name = required_str(p, "name")?.to_owned();
    let id = match p["id"].as_str() {
        Some(id) => {
            if w.get(id).is_some() {
                return Err(ApiError::param("id", "Product already exists.")
                    .with_code("resource_already_exists"));
            }
            id.to_owned()
        }
        None => new_id("prod"),
    };
    let now = wall_clock();
    let product = json!({
        "id": id,
        "object": "product",
        "active": p["active"].as_bool().unwrap_or(true),
        "created": now,
        "default_price": null,
        "description": p.get("description").cloned().unwrap_or(Value::Null),
        "images": p.get("images").cloned().unwrap_or(json!([])),
        "livemode": false,
        "marketing_features": [],
        "metadata": metadata_of(p),
        "name": name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": p.get("statement_descriptor").cloned().unwrap_or(Value::Null),
        "tax_code": p.get("tax_code").cloned().unwrap_or(Value::Null),
        "type": "service",
        "unit_label": p.get("unit_label").cloned().unwrap_or(Value::Null),
        "updated": now,
        "url": p.get("url").cloned().unwrap_or(Value::Null),
    });
    let product = w.insert(product);
    w.emit("product.created", &product, None, now);
    if p["default_price_data"].is_object() {
        let mut price_params = p["default_price_data"].clone();
        price_params["product"] = json!(id);
        let price = create_price(w, &price_params)?;
        let (product, prev) = w.update(&id, |prod| prod["default_price"] = price["id"].clone());
        w.emit("product.updated", &product, Some(prev), now);
        return Ok(product);
    }
    Ok(product)
}

pub fn update_product(w: &mut World, id: &str, p: &Value) -> ApiResult {
    w.fetch("product", id, "product", "id")?;
    if let Some(price) = p["default_price"].as_str() {
        let found = w.fetch("price", price, "price", "default_price")?;
        if found["product"] != id {
            return Err(ApiError::param(
                "default_price",
                format!("The price `{price}` does not belong to product `{id}`."),
            ));
        }
    }
    let now = wall_clock();
    let (product, prev) = w.update(id, |prod| {
        for field in [
            "name",
            "description",
            "active",
            "images",
            "statement_descriptor",
            "tax_code",
            "unit_label",
            "url",
            "default_price",
        ] {
            if let Some(v) = p.get(field) {
                prod[field] = if v == "" { Value::Null } else { v.clone() };
            }
        }
        merge_metadata(prod, p.get("metadata"));
        prod["updated"] = json!(now);
    });
    w.emit("product.updated", &product, Some(prev), now);
    Ok(product)
}

pub fn delete_product(w: &mut World, id: &str) -> ApiResult {
    let product = w.fetch("product", id, "product", "id")?;
    if w.all("price").any(|price| price["product"] == id) {
        return Err(ApiError::invalid(
            "This product cannot be deleted because it has one or more user-created prices.",
        ));
    }
    let out = w.delete(id);
    w.emit("product.deleted", &product, None, wall_clock());
    Ok(out)
}

pub fn list_products(w: &World, p: &Value) -> ApiResult {
    let ids: Option<Vec<&str>> = p["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    list(
        w.all("product")
            .filter(|x| p["active"].as_bool().is_none_or(|a| x["active"] == a))
            .filter(|x| {
                ids.as_ref()
                    .is_none_or(|ids| ids.iter().any(|i| x["id"] == *i))
            })
            .filter(|x| matches_range(x, "created", &p["created"])),
        "/v1/products",
        p,
    )
}

/// Creates a price from `prices.create` parameters or from inline `price_data`
/// (`inline: true`, which Stripe creates inactive and without events of its own product).
pub fn create_price_with(w: &mut World, p: &Value, param_prefix: &str, inline: bool) -> ApiResult {
    let name = |field: &str| {
        if param_prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{param_prefix}[{field}]")
        }
    };
    let currency = p["currency"]
        .as_str()
        .ok_or_else(|| {
            ApiError::param(
                name("currency"),
                format!("Missing required param: {}.", name("currency")),
            )
        })?
        .to_lowercase();
    super::validate::check_currency(&currency, &name("currency"))?;
    let product_id = if let Some(prod) = p["product"].as_str() {
        w.fetch("product", prod, "product", &name("product"))?;
        prod.to_owned()
    } else if p["product_data"].is_object() {
        let product = create_product(w, &p["product_data"])?;
        product["id"].as_str().unwrap_or_default().to_owned()
    } else {
        return Err(ApiError::param(
            name("product"),
            format!("Missing required param: {}.", name("product")),
        ));
    };
    let unit_amount = match (&p["unit_amount"], &p["unit_amount_decimal"]) {
        (Value::Number(n), _) => n.as_i64(),
        (_, Value::String(d)) => d
            .parse::<f64>()
            .ok()
            .filter(|x| x.fract() == 0.0)
            .map(|x| x as i64),
        _ => None,
    };
    let Some(unit_amount) = unit_amount else {
        return Err(ApiError::param(
            name("unit_amount"),
            format!("Missing required param: {}.", name("unit_amount")),
        ));
    };
    if unit_amount < 0 {
        return Err(ApiError::param(
            name("unit_amount"),
            "Invalid non-negative integer",
        ));
    }
    super::validate::check_amount(unit_amount, &name("unit_amount"))?;
    let recurring = match &p["recurring"] {
        Value::Object(r) => {
            let interval = r.get("interval").and_then(Value::as_str).ok_or_else(|| {
                ApiError::param(
                    name("recurring[interval]"),
                    format!("Missing required param: {}.", name("recurring[interval]")),
                )
            })?;
            let count = r.get("interval_count").and_then(Value::as_i64).unwrap_or(1);
            check_interval(interval, count, &name("recurring[interval_count]"))?;
            // Metered prices bill what a billing meter recorded, so they name one.
            if r.get("usage_type").and_then(Value::as_str) == Some("metered") {
                let meter = r.get("meter").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::param(
                        name("recurring[meter]"),
                        format!("Missing required param: {}.", name("recurring[meter]")),
                    )
                })?;
                w.fetch(
                    "billing.meter",
                    meter,
                    "billing meter",
                    &name("recurring[meter]"),
                )?;
            }
            json!({
                "interval": interval,
                "interval_count": count,
                "meter": r.get("meter").cloned().unwrap_or(Value::Null),
                "trial_period_days": r.get("trial_period_days").cloned().unwrap_or(Value::Null),
                "usage_type": r.get("usage_type").cloned().unwrap_or(json!("licensed")),
            })
        }
        _ => Value::Null,
    };
    if let Some(key) = p["lookup_key"].as_str() {
        let taken: Vec<String> = w
            .all("price")
            .filter(|x| x["lookup_key"] == key)
            .filter_map(|x| x["id"].as_str().map(str::to_owned))
            .collect();
        if !taken.is_empty() {
            if p["transfer_lookup_key"].as_bool() == Some(true) {
                for id in taken {
                    w.update(&id, |x| x["lookup_key"] = Value::Null);
                }
            } else {
                return Err(ApiError::param(
                    "lookup_key",
                    format!("A price (`{}`) already uses that lookup key.", taken[0]),
                ));
            }
        }
    }
    let now = wall_clock();
    let price = json!({
        "id": new_id("price"),
        "object": "price",
        "active": if inline { false } else { p["active"].as_bool().unwrap_or(true) },
        "billing_scheme": "per_unit",
        "created": now,
        "currency": currency,
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": p.get("lookup_key").cloned().unwrap_or(Value::Null),
        "metadata": metadata_of(p),
        "nickname": p.get("nickname").cloned().unwrap_or(Value::Null),
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": p.get("tax_behavior").cloned().unwrap_or(json!("unspecified")),
        "tiers_mode": null,
        "transform_quantity": null,
        "type": if recurring.is_null() { "one_time" } else { "recurring" },
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount.to_string(),
    });
    let price = w.insert(price);
    if !inline {
        w.emit("price.created", &price, None, now);
    }
    Ok(price)
}

pub fn create_price(w: &mut World, p: &Value) -> ApiResult {
    create_price_with(w, p, "", false)
}

pub fn update_price(w: &mut World, id: &str, p: &Value) -> ApiResult {
    w.fetch("price", id, "price", "price")?;
    if let Some(key) = p["lookup_key"].as_str() {
        let other = w
            .all("price")
            .find(|x| x["lookup_key"] == key && x["id"] != id)
            .map(|x| x["id"].clone());
        if let Some(other) = other {
            if p["transfer_lookup_key"].as_bool() == Some(true) {
                if let Some(other) = other.as_str() {
                    w.update(other, |x| x["lookup_key"] = Value::Null);
                }
            } else {
                return Err(ApiError::param(
                    "lookup_key",
                    format!(
                        "A price (`{}`) already uses that lookup key.",
                        other.as_str().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let (price, prev) = w.update(id, |x| {
        for field in ["active", "nickname", "lookup_key", "tax_behavior"] {
            if let Some(v) = p.get(field) {
                x[field] = if v == "" { Value::Null } else { v.clone() };
            }
        }
        merge_metadata(x, p.get("metadata"));
    });
    w.emit("price.updated", &price, Some(prev), wall_clock());
    Ok(price)
}

pub fn list_prices(w: &World, p: &Value) -> ApiResult {
    let keys: Option<Vec<&str>> = p["lookup_keys"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    list(
        w.all("price")
            .filter(|x| p["active"].as_bool().is_none_or(|a| x["active"] == a))
            .filter(|x| p["product"].as_str().is_none_or(|v| x["product"] == v))
            .filter(|x| p["currency"].as_str().is_none_or(|v| x["currency"] == v))
            .filter(|x| p["type"].as_str().is_none_or(|v| x["type"] == v))
            .filter(|x| {
                keys.as_ref()
                    .is_none_or(|k| k.iter().any(|key| x["lookup_key"] == *key))
            })
            .filter(|x| matches_range(x, "created", &p["created"])),
        "/v1/prices",
        p,
    )
}

pub fn create_coupon(w: &mut World, p: &Value) -> ApiResult {
    let percent_off = p["percent_off"].as_f64();
    let amount_off = p["amount_off"].as_i64();
    match (percent_off, amount_off) {
        (None, None) | (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "You must pass exactly one of percent_off or amount_off.",
            ));
        }
        (Some(pct), None) if !(pct > 0.0 && pct <= 100.0) => {
            return Err(ApiError::param(
                "percent_off",
                "Invalid percent_off: must be greater than 0 and at most 100.",
            ));
        }
        (None, Some(a)) if a <= 0 => {
            return Err(ApiError::param("amount_off", "Invalid positive integer"));
        }
        (None, Some(_)) if p["currency"].as_str().is_none() => {
            return Err(ApiError::param(
                "currency",
                "You must specify a currency when creating a coupon with an amount_off.",
            ));
        }
        (None, Some(a)) => super::validate::check_amount(a, "amount_off")?,
        _ => {}
    }
    if let Some(currency) = p["currency"].as_str() {
        super::validate::check_currency(currency, "currency")?;
    }
    let duration = p["duration"].as_str().unwrap_or("once");
    if duration == "repeating" && p["duration_in_months"].as_i64().is_none() {
        return Err(ApiError::param(
            "duration_in_months",
            "Missing required param: duration_in_months.",
        ));
    }
    // "A hash containing directions for what this Coupon will apply discounts to." (API
    // reference, applies_to); `applies_to[products]` names products, which must exist. It is
    // set on create only: the coupon update takes no `applies_to`.
    let applies_to: Option<Vec<String>> = match p["applies_to"]["products"].as_array() {
        Some(products) => {
            let mut ids = Vec::with_capacity(products.len());
            for (i, product) in products.iter().enumerate() {
                let id = product.as_str().unwrap_or_default();
                w.fetch(
                    "product",
                    id,
                    "product",
                    &format!("applies_to[products][{i}]"),
                )?;
                ids.push(id.to_owned());
            }
            Some(ids)
        }
        None => None,
    };
    let id = match p["id"].as_str() {
        Some(id) if w.get(id).is_some() => {
            return Err(ApiError::param("id", "Coupon already exists.")
                .with_code("resource_already_exists"));
        }
        Some(id) => id.to_owned(),
        None => random_chars(8),
    };
    let now = wall_clock();
    let coupon = json!({
        "id": id,
        "object": "coupon",
        "amount_off": amount_off,
        "created": now,
        "currency": p.get("currency").cloned().unwrap_or(Value::Null),
        "duration": duration,
        "duration_in_months": p.get("duration_in_months").cloned().unwrap_or(Value::Null),
        "livemode": false,
        "max_redemptions": p.get("max_redemptions").cloned().unwrap_or(Value::Null),
        "metadata": metadata_of(p),
        "name": p.get("name").cloned().unwrap_or(Value::Null),
        "percent_off": percent_off,
        "redeem_by": p.get("redeem_by").cloned().unwrap_or(Value::Null),
        "times_redeemed": 0,
        "valid": true,
    });
    let coupon = w.insert(coupon);
    if let Some(products) = applies_to {
        // Stripe renders `applies_to` only when asked for with `expand[]=applies_to` (an
        // includable field), so it is kept aside; see `coupon_applies_to`.
        w.hidden.entry(id.clone()).or_insert_with(|| json!({}))["applies_to"] =
            json!({ "products": products });
    }
    w.emit("coupon.created", &coupon, None, now);
    Ok(coupon)
}

pub fn delete_coupon(w: &mut World, id: &str) -> ApiResult {
    let coupon = w.fetch("coupon", id, "coupon", "coupon")?;
    let out = w.delete(id);
    w.emit("coupon.deleted", &coupon, None, wall_clock());
    Ok(out)
}

pub fn create_promotion_code(w: &mut World, p: &Value) -> ApiResult {
    let coupon_id = p["promotion"]["coupon"]
        .as_str()
        .or_else(|| p["coupon"].as_str())
        .ok_or_else(|| {
            ApiError::param(
                "promotion[coupon]",
                "Missing required param: promotion[coupon].",
            )
        })?;
    w.fetch("coupon", coupon_id, "coupon", "promotion[coupon]")?;
    let code = p["code"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| random_chars(8).to_uppercase());
    // "Valid characters are lower case letters (a-z), upper case letters (A-Z), digits
    // (0-9), and dashes (-)." (API reference, promotion code `code`)
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ApiError::param(
            "code",
            format!(
                "Invalid code: {code}. A promotion code may only contain letters (a-z, A-Z), digits (0-9) and dashes (-)."
            ),
        ));
    }
    if p["active"].as_bool() != Some(false) {
        check_code_free(w, &code, None)?;
    }
    let now = wall_clock();
    let restrictions = &p["restrictions"];
    let promo = json!({
        "id": new_id("promo"),
        "object": "promotion_code",
        "active": p["active"].as_bool().unwrap_or(true),
        "code": code,
        "created": now,
        "customer": p.get("customer").cloned().unwrap_or(Value::Null),
        "expires_at": p.get("expires_at").cloned().unwrap_or(Value::Null),
        "livemode": false,
        "max_redemptions": p.get("max_redemptions").cloned().unwrap_or(Value::Null),
        "metadata": metadata_of(p),
        "promotion": { "type": "coupon", "coupon": coupon_id },
        "restrictions": {
            "currency_options": {},
            "first_time_transaction": restrictions["first_time_transaction"].as_bool().unwrap_or(false),
            "minimum_amount": restrictions.get("minimum_amount").cloned().unwrap_or(Value::Null),
            "minimum_amount_currency": restrictions.get("minimum_amount_currency").cloned().unwrap_or(Value::Null),
        },
        "times_redeemed": 0,
    });
    let promo = w.insert(promo);
    w.emit("promotion_code.created", &promo, None, now);
    Ok(promo)
}

/// "Regardless of case, this code must be unique across all active promotion codes" (API
/// reference, promotion code `code`). Coupons and their codes belong to the whole account,
/// so the sandbox holds every code to it, whichever customer it is for.
fn check_code_free(w: &World, code: &str, except: Option<&str>) -> ApiResult<()> {
    let taken = w.all("promotion_code").any(|x| {
        x["active"] == true
            && except.is_none_or(|id| x["id"] != id)
            && x["code"]
                .as_str()
                .is_some_and(|c| c.eq_ignore_ascii_case(code))
    });
    if taken {
        return Err(ApiError::param(
            "code",
            format!("An active promotion code with `code: {code}` already exists."),
        )
        .with_code("resource_already_exists"));
    }
    Ok(())
}

/// `POST /v1/promotion_codes/{id}`: re-activating a code whose text another active code
/// has taken is refused like creating it.
pub fn update_promotion_code(w: &mut World, id: &str, p: &Value) -> ApiResult {
    let current = w.fetch("promotion_code", id, "promotion code", "promotion_code")?;
    if p["active"].as_bool() == Some(true) && current["active"] != true {
        check_code_free(w, current["code"].as_str().unwrap_or_default(), Some(id))?;
    }
    let (promo, prev) = w.update(id, |x| {
        if let Some(active) = p.get("active") {
            x["active"] = active.clone();
        }
        merge_metadata(x, p.get("metadata"));
    });
    w.emit("promotion_code.updated", &promo, Some(prev), wall_clock());
    Ok(promo)
}

pub fn list_promotion_codes(w: &World, p: &Value) -> ApiResult {
    list(
        w.all("promotion_code")
            .filter(|x| p["active"].as_bool().is_none_or(|a| x["active"] == a))
            .filter(|x| p["code"].as_str().is_none_or(|c| x["code"] == c))
            .filter(|x| {
                p["coupon"]
                    .as_str()
                    .is_none_or(|c| x["promotion"]["coupon"] == c)
            })
            .filter(|x| p["customer"].as_str().is_none_or(|c| x["customer"] == c)),
        "/v1/promotion_codes",
        p,
    )
}

/// Why a promotion code cannot be used now, if it cannot.
pub fn promotion_code_unusable(w: &World, promo: &Value, now: i64) -> Option<&'static str> {
    let coupon = promo["promotion"]["coupon"].as_str().and_then(|c| w.get(c));
    let exhausted = |obj: &Value| {
        obj["max_redemptions"]
            .as_i64()
            .is_some_and(|max| obj["times_redeemed"].as_i64().unwrap_or(0) >= max)
    };
    if promo["active"] != true
        || promo["expires_at"].as_i64().is_some_and(|t| t <= now)
        || exhausted(promo)
    {
        return Some("This promotion code is not valid.");
    }
    match coupon {
        Some(c)
            if c.get("deleted").is_none()
                && c["valid"] == true
                && !exhausted(c)
                && c["redeem_by"].as_i64().is_none_or(|t| t > now) =>
        {
            None
        }
        _ => Some("This promotion code is not valid."),
    }
}

/// The discount a coupon gives on `subtotal`, never more than the subtotal.
pub fn coupon_discount(coupon: &Value, subtotal: i64, currency: &str) -> i64 {
    let discount = if let Some(pct) = coupon["percent_off"].as_f64() {
        // Percentages come with up to two decimals; work in hundredths of a percent so the
        // rounding is integer and half-up, as Stripe rounds discounts.
        let hundredths = (pct * 100.0).round() as i128;
        ((i128::from(subtotal) * hundredths + 5_000) / 10_000) as i64
    } else if coupon["currency"] == currency {
        coupon["amount_off"].as_i64().unwrap_or(0)
    } else {
        0
    };
    discount.clamp(0, subtotal.max(0))
}

/// The products a coupon is restricted to (`applies_to[products]`), `None` when it applies
/// to everything.
pub fn coupon_products(w: &World, coupon_id: &str) -> Option<Vec<String>> {
    w.hidden.get(coupon_id)?["applies_to"]["products"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
}

/// Whether a coupon discounts a price: "A list of product IDs this coupon applies to" (API
/// reference, coupon `applies_to.products`); a coupon without the list applies to all.
pub fn coupon_applies_to_price(w: &World, coupon: &Value, price: &Value) -> bool {
    match coupon["id"].as_str().and_then(|id| coupon_products(w, id)) {
        Some(products) => price["product"]
            .as_str()
            .is_some_and(|p| products.iter().any(|x| x == p)),
        None => true,
    }
}

/// `applies_to` as `expand[]=applies_to` shows it.
pub fn coupon_applies_to(w: &World, coupon_id: &str) -> Value {
    json!({ "products": coupon_products(w, coupon_id).unwrap_or_default() })
}
