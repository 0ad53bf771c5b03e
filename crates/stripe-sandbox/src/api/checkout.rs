//! Checkout Sessions: creation with its validation, line items, expiry, and the completion
//! that the hosted page drives when a payer submits a card.

use serde_json::{Value, json};

use super::payments::{self, Outcome, Payment};
use super::{Ctx, matches_range};
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, random_chars};
use crate::world::{CardBehaviour, Decline, World, merge_metadata, metadata_of};

const MIN_EXPIRY: i64 = 30 * 60;
const MAX_EXPIRY: i64 = 24 * 60 * 60;

fn only_one(names: &str) -> ApiError {
    ApiError::invalid(format!(
        "You may only specify one of these parameters: {names}."
    ))
}

fn check_url(p: &Value, field: &str) -> ApiResult<()> {
    if let Some(u) = p[field].as_str() {
        let parsed = url::Url::parse(u).map_err(|_| ApiError::param(field, "Not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ApiError::param(field, "Not a valid URL"));
        }
    }
    Ok(())
}

/// A line item resolved to a price: `(price object, quantity)`.
fn resolve_line_items(w: &mut World, p: &Value, mode: &str) -> ApiResult<Vec<(Value, i64)>> {
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
            (None, true) => {
                super::catalog::create_price_with(w, &item["price_data"], &at("price_data"), true)?
            }
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

fn is_metered(price: &Value) -> bool {
    price["recurring"]["usage_type"] == "metered"
}

/// Resolves `discounts[]` to `(coupon, promotion code)` and checks they can be used.
fn resolve_discounts(w: &World, p: &Value, now: i64) -> ApiResult<Option<(Value, Option<Value>)>> {
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
        if let Some(msg) = super::catalog::promotion_code_unusable(w, &promo, now) {
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

/// Recomputes a session's amounts and its line items from the prices and the discount.
fn price_session(
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
    let total_discount = discount.map_or(0, |(coupon, _)| {
        super::catalog::coupon_discount(coupon, subtotal, &currency)
    });
    // Spread the discount over the lines in proportion; the last line takes the remainder.
    let mut left = total_discount;
    let mut lines = Vec::with_capacity(items.len());
    for (i, ((price, qty), line_subtotal)) in items.iter().zip(&subtotals).enumerate() {
        let share = if i + 1 == items.len() || subtotal == 0 {
            left
        } else {
            (i128::from(total_discount) * i128::from(*line_subtotal) / i128::from(subtotal)) as i64
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
    if let Some(email) = p["customer_email"].as_str()
        && (!email.contains('@') || email.starts_with('@') || email.ends_with('@'))
    {
        return Err(ApiError::param(
            "customer_email",
            format!("Invalid email address: {email}"),
        ));
    }
    let customer = match p["customer"].as_str() {
        Some(c) => Some(w.fetch("customer", c, "customer", "customer")?),
        None => None,
    };
    let now = w.now_for_customer(customer.as_ref().and_then(|c| c["id"].as_str()));
    let expires_at = p["expires_at"].as_i64().unwrap_or(now + MAX_EXPIRY);
    if expires_at < now + MIN_EXPIRY || expires_at > now + MAX_EXPIRY {
        return Err(ApiError::param(
            "expires_at",
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
        ));
    }
    if let Some(days) = p["subscription_data"]["trial_period_days"].as_i64() {
        if mode != "subscription" {
            return Err(ApiError::param(
                "subscription_data[trial_period_days]",
                "You can only use `subscription_data` in `subscription` mode.",
            ));
        }
        if !(1..=730).contains(&days) {
            return Err(ApiError::param(
                "subscription_data[trial_period_days]",
                "The trial period must be between 1 and 730 days.",
            ));
        }
    }
    let discount = resolve_discounts(w, p, now)?;
    let items = resolve_line_items(w, p, mode)?;

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
        "shipping_address_collection": null,
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
        }),
    );
    price_session(w, &id, &items, discount.as_ref())?;
    w.fetch("checkout.session", &id, "checkout.session", "session")
}

pub fn update(w: &mut World, id: &str, p: &Value) -> ApiResult {
    w.fetch("checkout.session", id, "checkout.session", "session")?;
    let (s, _) = w.update(id, |s| merge_metadata(s, p.get("metadata")));
    Ok(s)
}

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

fn mark_expired(w: &mut World, id: &str, now: i64) -> Value {
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
        .all("checkout.session")
        .filter(|s| s["status"] == "open")
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
    if let Some(msg) = super::catalog::promotion_code_unusable(w, &promo, now) {
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
    price_session(w, id, &items, Some(&(coupon, Some(promo)))).map_err(|e| e.message)
}

/// What submitting the hosted page came to.
pub enum PageOutcome {
    /// Paid (or nothing to pay): redirect here.
    Complete { redirect: Option<String> },
    /// Show the 3-D Secure step.
    Authenticate,
    /// Show this error and stay on the page.
    Error(String),
}

/// The payer submitted the page (a card, or none where none is needed) or completed
/// 3-D Secure. Charges and completes the session, emitting Stripe's events.
pub fn pay(
    w: &mut World,
    ctx: &Ctx,
    id: &str,
    card_number: Option<&str>,
    email: Option<&str>,
    authenticated: bool,
) -> ApiResult<PageOutcome> {
    let session = w.fetch("checkout.session", id, "checkout.session", "session")?;
    if session["status"] != "open" {
        return Ok(PageOutcome::Error(format!(
            "This Checkout Session is {}.",
            session["status"].as_str().unwrap_or("closed")
        )));
    }
    let now = w.now_for_customer(session["customer"].as_str());
    if session["expires_at"].as_i64().is_some_and(|t| t <= now) {
        mark_expired(w, id, now);
        return Ok(PageOutcome::Error(
            "This Checkout Session has expired.".into(),
        ));
    }
    let email = session["customer_details"]["email"]
        .as_str()
        .or_else(|| session["customer_email"].as_str())
        .or(email.filter(|e| e.contains('@')))
        .map(str::to_owned);
    let Some(email) = email else {
        return Ok(PageOutcome::Error(
            "Please enter a valid email address.".into(),
        ));
    };
    let hidden = w.hidden.get(id).cloned().unwrap_or_default();
    let mode = session["mode"].as_str().unwrap_or("payment").to_owned();
    let amount = session["amount_total"].as_i64().unwrap_or(0);
    let trial_days = hidden["subscription_data"]["trial_period_days"].as_i64();
    // Subscription mode with `payment_method_collection=if_required` asks for no card when
    // nothing is due now (a trial, or a total of zero).
    let card_optional = mode == "subscription"
        && session["payment_method_collection"] == "if_required"
        && (trial_days.is_some() || amount == 0);

    // The card: a new one from the form, or the one waiting on 3-D Secure.
    let typed = card_number.map(str::trim).filter(|n| !n.is_empty());
    let pm_id = match typed {
        Some(number) => match payments::create_card_payment_method(w, number, Some(&email), now) {
            Ok(pm) => Some(pm["id"].as_str().unwrap_or_default().to_owned()),
            Err(decline) => return Ok(PageOutcome::Error(decline.message.to_owned())),
        },
        None => match hidden["pending_payment_method"].as_str() {
            Some(pm) => Some(pm.to_owned()),
            None if card_optional && !authenticated => None,
            None => return Ok(PageOutcome::Error("Please enter your card details.".into())),
        },
    };
    let ctx_pay = Paying {
        id,
        session: &session,
        hidden: &hidden,
        email: &email,
        pm: pm_id.as_deref(),
        authenticated,
        now,
    };
    if mode == "subscription" {
        pay_subscription(w, ctx, ctx_pay, trial_days)
    } else {
        pay_payment(w, ctx_pay)
    }
}

/// What both modes need to know about the submission.
struct Paying<'a> {
    id: &'a str,
    session: &'a Value,
    hidden: &'a Value,
    email: &'a str,
    pm: Option<&'a str>,
    authenticated: bool,
    now: i64,
}

/// Payment mode: one payment intent per session, reused across attempts, as Stripe does.
fn pay_payment(w: &mut World, p: Paying) -> ApiResult<PageOutcome> {
    let Paying {
        id,
        session,
        hidden,
        email,
        pm,
        authenticated,
        mut now,
    } = p;
    let Some(pm_id) = pm else {
        return Ok(PageOutcome::Error("Please enter your card details.".into()));
    };
    let amount = session["amount_total"].as_i64().unwrap_or(0);
    let currency = session["currency"].as_str().unwrap_or("usd").to_owned();
    let customer_id = match session["customer"].as_str() {
        Some(c) => Some(c.to_owned()),
        None if session["customer_creation"] == "always" => {
            let c = super::customers::create(w, &json!({ "email": email }))?;
            c["id"].as_str().map(str::to_owned)
        }
        None => None,
    };
    if let Some(c) = &customer_id {
        now = w.now_for_customer(Some(c));
        if hidden["payment_intent_data"]["setup_future_usage"].is_string() {
            payments::attach_payment_method(w, pm_id, c)?;
        }
    }
    let mut payment_intent = session["payment_intent"].as_str().map(str::to_owned);
    if amount > 0 {
        let outcome = payments::charge(
            w,
            Payment {
                amount,
                currency: &currency,
                customer: customer_id.as_deref(),
                payment_method: pm_id,
                metadata: hidden["payment_intent_data"]["metadata"]
                    .as_object()
                    .cloned()
                    .map(Value::Object)
                    .unwrap_or(json!({})),
                description: hidden["payment_intent_data"]["description"]
                    .as_str()
                    .map(str::to_owned),
                off_session: false,
                payment_intent: payment_intent.clone(),
                authenticated,
                invoice: None,
                now,
            },
        )?;
        match outcome {
            Outcome::Succeeded(pi) => payment_intent = pi["id"].as_str().map(str::to_owned),
            Outcome::RequiresAction(pi) => {
                let pi_id = pi["id"].clone();
                w.update(id, |s| s["payment_intent"] = pi_id.clone());
                w.hidden.entry(id.to_owned()).or_insert_with(|| json!({}))["pending_payment_method"] =
                    json!(pm_id);
                return Ok(PageOutcome::Authenticate);
            }
            Outcome::Failed(pi, err) => {
                let pi_id = pi["id"].clone();
                w.update(id, |s| s["payment_intent"] = pi_id);
                return Ok(PageOutcome::Error(err.message));
            }
        }
    }
    redeem_discount(w, session);
    let paid = if amount == 0 {
        "no_payment_required"
    } else {
        "paid"
    };
    Ok(complete(
        w,
        id,
        Completion {
            customer: customer_id,
            email,
            payment_status: paid,
            payment_intent,
            subscription: None,
            invoice: None,
            now,
        },
    ))
}

/// Subscription mode. The card is checked before anything is made (a decline, or 3-D Secure
/// still to do, leaves no customer or subscription behind); then, once: the customer (given
/// or new), the card attached, and the subscription with its first invoice paid.
fn pay_subscription(
    w: &mut World,
    ctx: &Ctx,
    p: Paying,
    trial_days: Option<i64>,
) -> ApiResult<PageOutcome> {
    let Paying {
        id,
        session,
        hidden,
        email,
        pm,
        authenticated,
        now,
    } = p;
    let amount = session["amount_total"].as_i64().unwrap_or(0);
    let charge_now = trial_days.is_none() && amount > 0;
    if let Some(pm_id) = pm {
        match w.cards.get(pm_id).copied() {
            Some(CardBehaviour::Declines(d)) => return Ok(PageOutcome::Error(d.message.into())),
            Some(CardBehaviour::AttachThenFail) if charge_now => {
                return Ok(PageOutcome::Error(Decline::GENERIC.message.into()));
            }
            Some(CardBehaviour::Requires3ds) if !authenticated => {
                w.hidden.entry(id.to_owned()).or_insert_with(|| json!({}))["pending_payment_method"] =
                    json!(pm_id);
                return Ok(PageOutcome::Authenticate);
            }
            _ => {}
        }
    }

    let customer_id = match session["customer"].as_str() {
        Some(c) => c.to_owned(),
        None => {
            let c = super::customers::create(w, &json!({ "email": email }))?;
            c["id"].as_str().unwrap_or_default().to_owned()
        }
    };
    let now = if session["customer"].is_string() {
        now
    } else {
        w.now_for_customer(Some(&customer_id))
    };
    if let Some(pm_id) = pm {
        payments::attach_payment_method(w, pm_id, &customer_id)?;
    }
    let items: Vec<(Value, i64)> = hidden["line_items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|li| (li["price"].clone(), li["quantity"].as_i64().unwrap_or(1)))
        .collect();
    let discount = session["discounts"]
        .as_array()
        .and_then(|d| d.first())
        .and_then(|d| {
            let coupon = w.get(d["coupon"].as_str()?)?.clone();
            let promo = d["promotion_code"].as_str().and_then(|p| w.get(p)).cloned();
            Some((coupon, promo))
        });
    let sub_data = &hidden["subscription_data"];
    let started = super::billing::subscriptions::start_subscription(
        w,
        ctx,
        super::billing::subscriptions::NewSubscription {
            customer: &customer_id,
            items: &items,
            payment_method: pm,
            trial_days,
            missing_payment_method:
                sub_data["trial_settings"]["end_behavior"]["missing_payment_method"]
                    .as_str()
                    .unwrap_or("create_invoice"),
            metadata: sub_data["metadata"]
                .as_object()
                .cloned()
                .map(Value::Object)
                .unwrap_or(json!({})),
            discount,
            checkout_session: Some(id),
            automatic_tax: session["automatic_tax"]["enabled"]
                .as_bool()
                .unwrap_or(false),
            authenticated,
            now,
        },
    )?;
    if started.invoice["status"] != "paid" {
        // Only reachable if the card changed behaviour between the check and the charge.
        return Ok(PageOutcome::Error(Decline::GENERIC.message.into()));
    }
    redeem_discount(w, session);
    Ok(complete(
        w,
        id,
        Completion {
            customer: Some(customer_id),
            email,
            payment_status: if charge_now {
                "paid"
            } else {
                "no_payment_required"
            },
            payment_intent: None,
            subscription: started.subscription["id"].as_str().map(str::to_owned),
            invoice: started.invoice["id"].as_str().map(str::to_owned),
            now,
        },
    ))
}

/// Counts a use of the session's promotion code and coupon.
fn redeem_discount(w: &mut World, session: &Value) {
    if let Some(d) = session["discounts"].as_array().and_then(|d| d.first()) {
        for id in [d["promotion_code"].as_str(), d["coupon"].as_str()]
            .into_iter()
            .flatten()
        {
            let id = id.to_owned();
            w.update(&id, |x| {
                x["times_redeemed"] = json!(x["times_redeemed"].as_i64().unwrap_or(0) + 1)
            });
        }
    }
}

/// How a session ended.
struct Completion<'a> {
    customer: Option<String>,
    email: &'a str,
    payment_status: &'a str,
    payment_intent: Option<String>,
    subscription: Option<String>,
    invoice: Option<String>,
    now: i64,
}

/// Marks the session complete (`checkout.session.completed`, the last event of a
/// successful Checkout) and says where the payer goes next.
fn complete(w: &mut World, id: &str, c: Completion) -> PageOutcome {
    let name = c
        .customer
        .as_deref()
        .and_then(|cu| w.get(cu))
        .map(|cu| cu["name"].clone())
        .unwrap_or(Value::Null);
    let customer_details = json!({
        "address": { "city": null, "country": "US", "line1": null, "line2": null, "postal_code": "42424", "state": null },
        "email": c.email,
        "name": name,
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": [],
    });
    let (session, prev) = w.update(id, |s| {
        s["status"] = json!("complete");
        s["payment_status"] = json!(c.payment_status);
        s["customer"] = json!(c.customer);
        s["customer_details"] = customer_details;
        s["payment_intent"] = json!(c.payment_intent);
        s["subscription"] = json!(c.subscription);
        s["invoice"] = json!(c.invoice);
        s["url"] = Value::Null;
        if s["automatic_tax"]["enabled"] == true {
            s["automatic_tax"]["status"] = json!("complete");
        }
    });
    w.emit("checkout.session.completed", &session, Some(prev), c.now);
    let redirect = session["success_url"]
        .as_str()
        .map(|u| u.replace("{CHECKOUT_SESSION_ID}", id));
    PageOutcome::Complete { redirect }
}

/// The payer failed the 3-D Secure step.
pub fn fail_authentication(w: &mut World, id: &str) -> ApiResult<String> {
    let session = w.fetch("checkout.session", id, "checkout.session", "session")?;
    let now = w.now_for_customer(session["customer"].as_str());
    if let Some(h) = w.hidden.get_mut(id)
        && let Some(m) = h.as_object_mut()
    {
        m.remove("pending_payment_method");
    }
    match session["payment_intent"].as_str() {
        Some(pi) => Ok(payments::fail_authentication(w, pi, now).message),
        None => Ok("We are unable to authenticate your payment method. Please choose a different payment method and try again.".into()),
    }
}
