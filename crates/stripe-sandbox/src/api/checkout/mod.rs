//! Checkout Sessions: creation with its validation, listing, line items and expiry
//! (here); pricing a session's lines and discounts (`pricing`); and the completion that the
//! hosted page drives when a payer submits a card (`pay`).

pub mod pay;
pub mod pricing;

pub use pay::{PageOutcome, fail_authentication, pay};
pub use pricing::apply_promotion_code;

use serde_json::{Value, json};

use self::pricing::{check_discount_applies, price_session, resolve_discounts, resolve_line_items};
use super::{Ctx, matches_range};
use crate::api::validate::is_tax_location;
use crate::error::{ApiError, ApiResult};
use crate::ids::random_chars;
use crate::world::{World, merge_metadata, metadata_of};

pub(crate) const MIN_EXPIRY: i64 = 30 * 60;
pub(crate) const MAX_EXPIRY: i64 = 24 * 60 * 60;

/// Stripe's error for parameters that exclude each other.
pub(crate) fn only_one(names: &str) -> ApiError {
    ApiError::invalid(format!(
        "You may only specify one of these parameters: {names}."
    ))
}

/// Refuses a URL parameter that is not an absolute http(s) URL.
pub(crate) fn check_url(p: &Value, field: &str) -> ApiResult<()> {
    if let Some(u) = p[field].as_str() {
        let parsed = url::Url::parse(u).map_err(|_| ApiError::param(field, "Not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ApiError::param(field, "Not a valid URL"));
        }
    }
    Ok(())
}

/// Parameters that belong to the other mode are refused, not ignored.
fn check_mode_data(p: &Value, mode: &str) -> ApiResult<()> {
    // "You can not pass `payment_intent_data` in `subscription` mode." (Stripe's answer,
    // quoted in stripe/stripe-dotnet#3278); the API reference: `payment_intent_data` is "A
    // subset of parameters to be passed to PaymentIntent creation for Checkout Sessions in
    // `payment` mode", `subscription_data` the same "in `subscription` mode".
    for (field, only_in) in [
        ("payment_intent_data", "payment"),
        ("subscription_data", "subscription"),
    ] {
        if p.get(field).is_some() && mode != only_in {
            return Err(ApiError::param(
                field,
                format!("You can not pass `{field}` in `{mode}` mode."),
            ));
        }
    }
    Ok(())
}

/// `customer_update` and what Checkout needs it for when the session is for an existing
/// customer: automatic tax needs an address to tax, tax ID collection a business name.
fn check_customer_update(p: &Value, customer: Option<&Value>) -> ApiResult<()> {
    let update = &p["customer_update"];
    let Some(customer) = customer else {
        // "Controls what fields on Customer can be updated by the Checkout Session. Can only
        // be provided when `customer` is provided." (API reference, customer_update)
        if update.is_object() {
            return Err(ApiError::param(
                "customer_update",
                "`customer_update` can only be provided when `customer` is provided.",
            ));
        }
        return Ok(());
    };
    let auto = |field: &str| update[field] == "auto";
    // Stripe Tax uses the customer's shipping address if present, else the billing address
    // ("If a shipping address is present but invalid, we raise a
    // `customer_tax_location_invalid` error instead of trying the next address",
    // docs.stripe.com/tax/customer-locations).
    let located = if customer["shipping"]["address"].is_object() {
        is_tax_location(&customer["shipping"]["address"])
    } else {
        is_tax_location(&customer["address"])
    };
    let saves_collected_shipping = auto("shipping") && p["shipping_address_collection"].is_object();
    if p["automatic_tax"]["enabled"] == true
        && !located
        && !auto("address")
        && !saves_collected_shipping
    {
        // Stripe's answer, quoted in TryGhost/Ghost#19882 and #20105.
        return Err(ApiError::invalid(
            "Automatic tax calculation in Checkout requires a valid address on the Customer. Add a valid address to the Customer or set either `customer_update[address]` to 'auto' or `customer_update[shipping]` to 'auto' to save the address entered in Checkout to the Customer.",
        )
        .with_code("customer_tax_location_invalid"));
    }
    if p["tax_id_collection"]["enabled"] == true {
        // "Checkout saves the collected business name onto the Customer's name property [...]
        // Since the collection of a business name could result in the Customer's existing
        // name being overridden, [...]" (docs.stripe.com/tax/checkout/tax-ids, Existing
        // Customers); Stripe's answer is quoted in invertase/stripe-firebase-extensions#222
        // and laravel/cashier-stripe#1585.
        if !auto("name") {
            return Err(ApiError::param(
                "customer_update[name]",
                "Tax ID collection requires updating business name on the customer. To enable tax ID collection for an existing customer, please set `customer_update[name]` to `auto`.",
            ));
        }
        // Checkout locates the tax ID by the customer's address; one it cannot find must be
        // collected and saved (Stripe's answer quoted in NativePHP/nativephp.com#408).
        if !located && !auto("address") {
            return Err(ApiError::param(
                "customer_update[address]",
                "We could not find a valid address on the provided customer. To enable tax ID collection, please set customer_update[address] to auto.",
            ));
        }
    }
    Ok(())
}

/// `POST /v1/checkout/sessions`.
pub fn create(w: &mut World, ctx: &Ctx, p: &Value) -> ApiResult {
    let mode = p["mode"]
        .as_str()
        .ok_or_else(|| ApiError::param("mode", "Missing required param: mode."))?;
    if mode == "setup" {
        return Err(ApiError::param(
            "mode",
            "The sandbox does not support `setup` mode Checkout Sessions.",
        ));
    }
    if p["customer"].is_string() && p["customer_email"].is_string() {
        return Err(only_one("customer, customer_email"));
    }
    if p["allow_promotion_codes"].as_bool() == Some(true)
        && p["discounts"].as_array().is_some_and(|d| !d.is_empty())
    {
        return Err(only_one("allow_promotion_codes, discounts"));
    }
    for field in ["success_url", "cancel_url", "return_url"] {
        check_url(p, field)?;
    }
    crate::api::validate::check_email(p, "customer_email")?;
    check_mode_data(p, mode)?;
    let customer = match p["customer"].as_str() {
        Some(c) => Some(w.fetch("customer", c, "customer", "customer")?),
        None => None,
    };
    check_customer_update(p, customer.as_ref())?;
    let now = w.now_for_customer(customer.as_ref().and_then(|c| c["id"].as_str()));
    let expires_at = p["expires_at"].as_i64().unwrap_or(now + MAX_EXPIRY);
    if expires_at < now + MIN_EXPIRY || expires_at > now + MAX_EXPIRY {
        return Err(ApiError::param(
            "expires_at",
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
        ));
    }
    if let Some(days) = p["subscription_data"]["trial_period_days"].as_i64()
        && !(1..=730).contains(&days)
    {
        return Err(ApiError::param(
            "subscription_data[trial_period_days]",
            "The trial period must be between 1 and 730 days.",
        ));
    }
    let discount = resolve_discounts(w, p, now)?;
    let items = resolve_line_items(w, p, mode)?;
    check_discount_applies(w, discount.as_ref(), &items)?;

    let id = format!("cs_test_{}", random_chars(58));
    let url = format!("{}/c/pay/{id}", ctx.base_url);
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "adaptive_pricing": null,
        "after_expiration": null,
        "allow_promotion_codes": p.get("allow_promotion_codes").cloned().unwrap_or(Value::Null),
        "amount_subtotal": 0,
        "amount_total": 0,
        "automatic_tax": {
            "enabled": p["automatic_tax"]["enabled"].as_bool().unwrap_or(false),
            "liability": null,
            "provider": null,
            "status": if p["automatic_tax"]["enabled"].as_bool() == Some(true) { json!("requires_location_inputs") } else { Value::Null },
        },
        "billing_address_collection": p.get("billing_address_collection").cloned().unwrap_or(Value::Null),
        "cancel_url": p.get("cancel_url").cloned().unwrap_or(Value::Null),
        "client_reference_id": p.get("client_reference_id").cloned().unwrap_or(Value::Null),
        "client_secret": null,
        "consent": null,
        "consent_collection": null,
        "created": now,
        "currency": null,
        "custom_fields": [],
        "custom_text": { "after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null },
        "customer": customer.as_ref().map(|c| c["id"].clone()),
        "customer_creation": if customer.is_some() || mode == "subscription" { Value::Null } else { p.get("customer_creation").cloned().unwrap_or(json!("if_required")) },
        "customer_details": customer.as_ref().map(|c| json!({ "address": null, "email": c["email"], "name": c["name"], "phone": null, "tax_exempt": "none", "tax_ids": [] })),
        "customer_email": p.get("customer_email").cloned().unwrap_or(Value::Null),
        "discounts": [],
        "expires_at": expires_at,
        "invoice": null,
        "invoice_creation": null,
        "livemode": false,
        "locale": p.get("locale").cloned().unwrap_or(Value::Null),
        "metadata": metadata_of(p),
        "mode": mode,
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": if mode == "subscription" { p.get("payment_method_collection").cloned().unwrap_or(json!("always")) } else { Value::Null },
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "phone_number_collection": { "enabled": false },
        "recovered_from": null,
        "setup_intent": null,
        "shipping_address_collection": p.get("shipping_address_collection").cloned().unwrap_or(Value::Null),
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": p.get("submit_type").cloned().unwrap_or(Value::Null),
        "subscription": null,
        "success_url": p.get("success_url").cloned().unwrap_or(Value::Null),
        "tax_id_collection": { "enabled": p["tax_id_collection"]["enabled"].as_bool().unwrap_or(false), "required": "never" },
        "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
        "ui_mode": "hosted_page",
        "url": url,
    });
    w.insert(session);
    w.hidden.insert(
        id.clone(),
        json!({
            "line_items": [],
            "subscription_data": p.get("subscription_data").cloned().unwrap_or(json!({})),
            "payment_intent_data": p.get("payment_intent_data").cloned().unwrap_or(json!({})),
            // What Checkout may write back to the customer on completion. Stripe does not
            // render `customer_update` on the session object, so neither does the sandbox.
            "customer_update": p.get("customer_update").cloned().unwrap_or(json!({})),
        }),
    );
    price_session(w, &id, &items, discount.as_ref())?;
    w.fetch("checkout.session", &id, "checkout.session", "session")
}

/// `POST /v1/checkout/sessions/{id}`: metadata only.
pub fn update(w: &mut World, id: &str, p: &Value) -> ApiResult {
    w.fetch("checkout.session", id, "checkout.session", "session")?;
    let (s, _) = w.update(id, |s| merge_metadata(s, p.get("metadata")));
    Ok(s)
}

/// `GET /v1/checkout/sessions`.
pub fn list(w: &World, p: &Value) -> ApiResult {
    super::list(
        w.all("checkout.session")
            .filter(|s| p["customer"].as_str().is_none_or(|c| s["customer"] == c))
            .filter(|s| {
                p["payment_intent"]
                    .as_str()
                    .is_none_or(|c| s["payment_intent"] == c)
            })
            .filter(|s| {
                p["subscription"]
                    .as_str()
                    .is_none_or(|c| s["subscription"] == c)
            })
            .filter(|s| p["status"].as_str().is_none_or(|c| s["status"] == c))
            .filter(|s| matches_range(s, "created", &p["created"])),
        "/v1/checkout/sessions",
        p,
    )
}

/// The session's line items as a list object (first `limit`).
pub fn line_items_list(w: &World, id: &str, limit: usize) -> Value {
    let items: Vec<Value> = w
        .hidden
        .get(id)
        .and_then(|h| h["line_items"].as_array().cloned())
        .unwrap_or_default();
    json!({
        "object": "list",
        "data": items.iter().take(limit).collect::<Vec<_>>(),
        "has_more": items.len() > limit,
        "url": format!("/v1/checkout/sessions/{id}/line_items"),
    })
}

/// `GET /v1/checkout/sessions/{id}/line_items`.
pub fn list_line_items(w: &World, id: &str, p: &Value) -> ApiResult {
    w.fetch("checkout.session", id, "checkout.session", "session")?;
    let items: Vec<Value> = w
        .hidden
        .get(id)
        .and_then(|h| h["line_items"].as_array().cloned())
        .unwrap_or_default();
    super::list(
        items.iter(),
        &format!("/v1/checkout/sessions/{id}/line_items"),
        p,
    )
}

/// `POST /v1/checkout/sessions/{id}/expire`: open sessions only.
pub fn expire(w: &mut World, id: &str) -> ApiResult {
    let session = w.fetch("checkout.session", id, "checkout.session", "session")?;
    if session["status"] != "open" {
        return Err(ApiError::invalid(format!(
            "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
            session["status"].as_str().unwrap_or_default()
        )));
    }
    let now = w.now_for_customer(session["customer"].as_str());
    Ok(mark_expired(w, id, now))
}

/// Expires a session (`checkout.session.expired`).
pub(crate) fn mark_expired(w: &mut World, id: &str, now: i64) -> Value {
    let (s, prev) = w.update(id, |s| {
        s["status"] = json!("expired");
        s["url"] = Value::Null;
    });
    w.emit("checkout.session.expired", &s, Some(prev), now);
    s
}

/// Expires open sessions whose `expires_at` has passed, as Stripe does in the background.
pub fn expire_due(w: &mut World) {
    let due: Vec<(String, i64)> = w
        .open_sessions()
        .filter_map(|s| {
            let now = w.now_for_customer(s["customer"].as_str());
            (s["expires_at"].as_i64()? <= now)
                .then(|| (s["id"].as_str().unwrap_or_default().to_owned(), now))
        })
        .collect();
    for (id, now) in due {
        mark_expired(w, &id, now);
    }
}
