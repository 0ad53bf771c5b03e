//! Billing: subscriptions and their invoices, renewals and dunning driven by test clocks,
//! the customer portal, and billing meters.

use chrono::{DateTime, Days, Months};
use serde_json::{Value, json};

use super::payments::{self, Outcome, Payment};
use super::{Ctx, list, matches_range, required_str};
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, random_chars};
use crate::world::{World, merge_metadata, metadata_of, wall_clock};

const DAY: i64 = 86_400;

/// `start` moved on by `n` recurring intervals, on the calendar (a month after 31 January is
/// the last day of February), as Stripe bills.
pub fn add_intervals(start: i64, interval: &str, count: i64, n: i64) -> i64 {
    let Some(t) = DateTime::from_timestamp(start, 0) else {
        return start;
    };
    let steps = u32::try_from(count.saturating_mul(n).max(0)).unwrap_or(u32::MAX);
    let moved = match interval {
        "day" => t.checked_add_days(Days::new(u64::from(steps))),
        "week" => t.checked_add_days(Days::new(u64::from(steps) * 7)),
        "month" => t.checked_add_months(Months::new(steps)),
        "year" => t.checked_add_months(Months::new(steps.saturating_mul(12))),
        _ => None,
    };
    moved.map_or(start, |m| m.timestamp())
}

fn plan_of(price: &Value) -> Value {
    let r = &price["recurring"];
    json!({
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price["created"],
        "currency": price["currency"],
        "interval": r["interval"],
        "interval_count": r["interval_count"],
        "livemode": false,
        "metadata": price["metadata"],
        "meter": r["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": r["usage_type"],
    })
}

/// What a new subscription starts from (Checkout fills this in).
pub struct NewSubscription<'a> {
    pub customer: &'a str,
    /// `(price, quantity)`; the quantity of a metered price is ignored (usage decides).
    pub items: &'a [(Value, i64)],
    /// `None` only for a trial that Checkout let start without a card.
    pub payment_method: Option<&'a str>,
    pub trial_days: Option<i64>,
    /// `trial_settings.end_behavior.missing_payment_method`: `create_invoice`, `pause` or `cancel`.
    pub missing_payment_method: &'a str,
    pub metadata: Value,
    /// The coupon (and the promotion code that carried it) applied at Checkout.
    pub discount: Option<(Value, Option<Value>)>,
    pub checkout_session: Option<&'a str>,
    pub automatic_tax: bool,
    /// The payer completed 3-D Secure on the Checkout page.
    pub authenticated: bool,
    pub now: i64,
}

/// A subscription Checkout started, with its first invoice.
pub struct Started {
    pub subscription: Value,
    pub invoice: Value,
}

/// The recurring interval the subscription bills on (its first recurring price's).
fn interval_of(sub: &Value) -> (String, i64) {
    sub["items"]["data"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["price"]["type"] == "recurring"))
        .map(|i| {
            (
                i["price"]["recurring"]["interval"]
                    .as_str()
                    .unwrap_or("month")
                    .to_owned(),
                i["price"]["recurring"]["interval_count"]
                    .as_i64()
                    .unwrap_or(1),
            )
        })
        .unwrap_or(("month".into(), 1))
}

fn set_periods(sub: &mut Value, start: i64, end: i64) {
    if let Some(items) = sub["items"]["data"].as_array_mut() {
        for item in items {
            item["current_period_start"] = json!(start);
            item["current_period_end"] = json!(end);
        }
    }
}

fn period_of(sub: &Value) -> (i64, i64) {
    let item = &sub["items"]["data"][0];
    (
        item["current_period_start"].as_i64().unwrap_or(0),
        item["current_period_end"].as_i64().unwrap_or(0),
    )
}

fn is_metered(price: &Value) -> bool {
    price["recurring"]["usage_type"] == "metered"
}

fn hidden_of<'w>(w: &'w mut World, id: &str) -> &'w mut Value {
    w.hidden.entry(id.to_owned()).or_insert_with(|| json!({}))
}

/// Creates a subscription once the Checkout page has a card it can use (or, for a trial
/// that does not need one, none), in Stripe's order: `customer.subscription.created`
/// (incomplete, or trialing), the first invoice created and finalized, its payment intent
/// charged, `invoice.paid`, then the subscription's `customer.subscription.updated` to active.
/// The caller has already refused cards that would decline, so nothing is left half made.
pub fn start_subscription(w: &mut World, ctx: &Ctx, new: NewSubscription) -> ApiResult<Started> {
    let id = new_id("sub");
    let now = new.now;
    let currency = new
        .items
        .first()
        .and_then(|(p, _)| p["currency"].as_str())
        .unwrap_or("usd")
        .to_owned();
    let recurring: Vec<&(Value, i64)> = new
        .items
        .iter()
        .filter(|(p, _)| p["type"] == "recurring")
        .collect();
    let items: Vec<Value> = recurring
        .iter()
        .map(|(price, qty)| {
            json!({
                "id": new_id("si"),
                "object": "subscription_item",
                "billing_thresholds": null,
                "created": now,
                "current_period_end": now,
                "current_period_start": now,
                "discounts": [],
                "metadata": {},
                "plan": plan_of(price),
                "price": price,
                "quantity": if is_metered(price) { Value::Null } else { json!(qty) },
                "subscription": id,
                "tax_rates": [],
            })
        })
        .collect();
    let trial_end = new.trial_days.map(|d| now + d * DAY);
    let clock = w
        .get(new.customer)
        .map(|c| c["test_clock"].clone())
        .unwrap_or(Value::Null);
    let invoice_id = new_id("in");
    let discount_id = new
        .discount
        .as_ref()
        .map(|(coupon, promo)| create_discount(w, coupon, promo.as_ref(), &new, &id, now));
    let mut sub = json!({
        "id": id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": { "disabled_reason": null, "enabled": new.automatic_tax, "liability": null },
        "billing_cycle_anchor": trial_end.unwrap_or(now),
        "billing_cycle_anchor_config": null,
        "billing_mode": { "flexible": null, "type": "classic", "updated_at": null },
        "billing_schedules": [],
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "cancellation_details": { "comment": null, "feedback": null, "reason": null },
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "customer": new.customer,
        "days_until_due": null,
        "default_payment_method": new.payment_method,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": discount_id.iter().collect::<Vec<_>>(),
        "ended_at": null,
        "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
        "items": {
            "object": "list",
            "data": items,
            "has_more": false,
            "total_count": recurring.len(),
            "url": format!("/v1/subscription_items?subscription={id}"),
        },
        "latest_invoice": invoice_id,
        "livemode": false,
        "metadata": new.metadata,
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": { "payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off" },
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": now,
        "status": if trial_end.is_some() { "trialing" } else { "incomplete" },
        "test_clock": clock,
        "transfer_data": null,
        "trial_end": trial_end,
        "trial_settings": { "end_behavior": { "missing_payment_method": new.missing_payment_method } },
        "trial_start": trial_end.map(|_| now),
    });
    let (interval, count) = interval_of(&sub);
    let period_end = trial_end.unwrap_or_else(|| add_intervals(now, &interval, count, 1));
    set_periods(&mut sub, now, period_end);
    let sub = w.insert(sub);
    w.hidden.insert(
        id.clone(),
        json!({ "anchor": trial_end.unwrap_or(now), "period_index": if trial_end.is_some() { 0 } else { 1 } }),
    );
    w.emit("customer.subscription.created", &sub, None, now);

    // The first invoice: the trial's zero invoice, or the first period paid in advance
    // (metered prices bill in arrears, so they start at zero).
    let lines: Vec<InvoiceLine> = new
        .items
        .iter()
        .map(|(price, qty)| InvoiceLine {
            price: price.clone(),
            amount: if trial_end.is_some() || is_metered(price) {
                0
            } else {
                price["unit_amount"]
                    .as_i64()
                    .unwrap_or(0)
                    .saturating_mul(*qty)
            },
            quantity: if is_metered(price) { 0 } else { *qty },
            proration: false,
            period: (now, period_end),
        })
        .collect();
    let invoice = create_invoice(
        w,
        &sub,
        InvoiceSpec {
            id: Some(invoice_id.clone()),
            reason: "subscription_create",
            lines: &lines,
            now,
        },
    )?;
    finalize_invoice(w, &invoice_id, now);
    let paid = if invoice["amount_due"].as_i64().unwrap_or(0) > 0 {
        collect_invoice(w, ctx, &invoice_id, now, new.authenticated)?
    } else {
        settle_invoice(w, &invoice_id, now);
        true
    };
    let invoice = w.fetch("invoice", &invoice_id, "invoice", "invoice")?;
    if paid {
        let (sub, prev) = w.update(&id, |s| {
            if s["status"] == "incomplete" {
                s["status"] = json!("active");
            }
        });
        if prev.as_object().is_some_and(|m| !m.is_empty()) {
            w.emit("customer.subscription.updated", &sub, Some(prev), now);
        }
    }
    let subscription = w.fetch("subscription", &id, "subscription", "subscription")?;
    Ok(Started {
        subscription,
        invoice,
    })
}

/// A `discount` object for a coupon applied to a new subscription. A repeating coupon ends
/// `duration_in_months` after it starts; once and forever have no end (a once discount is
/// removed after the first invoice that charges something).
fn create_discount(
    w: &mut World,
    coupon: &Value,
    promo: Option<&Value>,
    new: &NewSubscription,
    sub_id: &str,
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
        "checkout_session": new.checkout_session,
        "customer": new.customer,
        "end": end,
        "invoice": null,
        "invoice_item": null,
        "promotion_code": promo.map(|p| p["id"].clone()),
        "source": { "coupon": coupon["id"], "type": "coupon" },
        "start": now,
        "subscription": sub_id,
        "subscription_item": null,
    }));
    id
}

/// The subscription's discount that applies to an invoice made at `now`, with its coupon.
/// A repeating discount past its end is taken off the subscription instead.
fn current_discount(w: &mut World, sub: &Value, now: i64) -> Option<(String, Value)> {
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
fn remove_discount(w: &mut World, sub: &Value, discount: &str) {
    let sub_id = sub["id"].as_str().unwrap_or_default().to_owned();
    w.update(&sub_id, |s| {
        if let Some(list) = s["discounts"].as_array_mut() {
            list.retain(|d| d != discount);
        }
    });
}

/// One invoice line.
struct InvoiceLine {
    price: Value,
    amount: i64,
    quantity: i64,
    proration: bool,
    period: (i64, i64),
}

struct InvoiceSpec<'a> {
    /// The id to use, when the subscription already points at it.
    id: Option<String>,
    reason: &'a str,
    lines: &'a [InvoiceLine],
    now: i64,
}

/// Creates a draft invoice for a subscription (`invoice.created`), discounted by the
/// subscription's current discount.
fn create_invoice(w: &mut World, sub: &Value, spec: InvoiceSpec) -> ApiResult<Value> {
    let id = spec.id.unwrap_or_else(|| new_id("in"));
    let sub_id = sub["id"].as_str().unwrap_or_default();
    let customer_id = sub["customer"].as_str().unwrap_or_default();
    let customer = w.get(customer_id).cloned().unwrap_or(Value::Null);
    let currency = sub["currency"].clone();
    let mut subtotal: i64 = 0;
    let mut discountable: i64 = 0;
    let mut lines = Vec::new();
    for line in spec.lines {
        subtotal = subtotal
            .checked_add(line.amount)
            .ok_or_else(|| ApiError::invalid("Invoice total is too large."))?;
        if !line.proration {
            discountable = discountable.saturating_add(line.amount);
        }
        let price = &line.price;
        // The item billing this price; a proration for a price the item has since left
        // still belongs to that item (a price change keeps the item's id), and the
        // sandbox's subscriptions change price on their first item.
        let item_id = sub["items"]["data"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|it| it["price"]["id"] == price["id"])
                    .or(items.first())
            })
            .map(|it| it["id"].clone())
            .unwrap_or(Value::Null);
        let product_name = price["product"]
            .as_str()
            .and_then(|p| w.get(p))
            .and_then(|p| p["name"].as_str())
            .unwrap_or("plan")
            .to_owned();
        let qty = line.quantity;
        lines.push(json!({
            "id": new_id("il"),
            "object": "line_item",
            "amount": line.amount,
            "currency": currency,
            "description": if line.proration { format!("Proration: {product_name}") } else { format!("{qty} × {product_name}") },
            "discount_amounts": [],
            "discountable": !line.proration,
            "discounts": [],
            "invoice": id,
            "livemode": false,
            "metadata": {},
            "parent": {
                "invoice_item_details": null,
                "subscription_item_details": {
                    "invoice_item": null,
                    "proration": line.proration,
                    "proration_details": { "credited_items": null },
                    "subscription": sub_id,
                    "subscription_item": item_id,
                },
                "type": "subscription_item_details",
            },
            "period": { "end": line.period.1, "start": line.period.0 },
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": { "price": price["id"], "product": price["product"] },
                "type": "price_details",
                "unit_amount_decimal": price["unit_amount_decimal"],
            },
            "quantity": qty,
            "subtotal": line.amount,
            "taxes": [],
        }));
    }
    let currency_code = currency.as_str().unwrap_or("usd").to_owned();
    let mut discount_ids: Vec<String> = Vec::new();
    let mut discount = 0;
    if let Some((discount_id, coupon)) = current_discount(w, sub, spec.now) {
        discount = super::checkout::coupon_discount(&coupon, discountable, &currency_code);
        discount_ids.push(discount_id.clone());
        // A once coupon is spent by the first invoice it takes money off.
        if coupon["duration"] == "once" && discount > 0 {
            remove_discount(w, sub, &discount_id);
        }
    }
    let total = subtotal - discount;
    let amount_due = total.max(0);
    let number = format!(
        "{}-{:04}",
        customer["invoice_prefix"].as_str().unwrap_or("SANDBOX"),
        customer["next_invoice_sequence"].as_i64().unwrap_or(1)
    );
    w.update(customer_id, |c| {
        c["next_invoice_sequence"] = json!(c["next_invoice_sequence"].as_i64().unwrap_or(1) + 1);
    });
    let (period_start, period_end) = spec
        .lines
        .iter()
        .find(|l| !l.proration)
        .or(spec.lines.first())
        .map_or((spec.now, spec.now), |l| l.period);
    // Stripe dates a subscription invoice's own period by the period that just ended for
    // renewals and by creation for the first one.
    let (period_start, period_end) = if spec.reason == "subscription_create" {
        (spec.now, spec.now)
    } else {
        (period_start, period_end)
    };
    let invoice = json!({
        "id": id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Stripe Sandbox",
        "account_tax_ids": null,
        "amount_due": amount_due,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": amount_due,
        "amount_shipping": 0,
        "application": null,
        "attempt_count": 0,
        "attempted": false,
        "auto_advance": true,
        "automatic_tax": { "disabled_reason": null, "enabled": sub["automatic_tax"]["enabled"], "liability": null, "provider": null, "status": null },
        "automatically_finalizes_at": null,
        "billing_reason": spec.reason,
        "collection_method": "charge_automatically",
        "created": spec.now,
        "currency": currency,
        "custom_fields": null,
        "customer": customer_id,
        "customer_address": null,
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": null,
        "customer_shipping": null,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": null,
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": discount_ids,
        "due_date": null,
        "effective_at": null,
        "ending_balance": null,
        "footer": null,
        "from_invoice": null,
        "hosted_invoice_url": null,
        "invoice_pdf": null,
        "issuer": { "type": "self" },
        "last_finalization_error": null,
        "latest_revision": null,
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": false,
            "total_count": spec.lines.len(),
            "url": format!("/v1/invoices/{id}/lines"),
        },
        "livemode": false,
        "metadata": {},
        "next_payment_attempt": null,
        "number": null,
        "on_behalf_of": null,
        "parent": {
            "quote_details": null,
            "subscription_details": { "metadata": sub["metadata"], "subscription": sub_id },
            "type": "subscription_details",
        },
        "payment_settings": { "default_mandate": null, "payment_method_options": null, "payment_method_types": null },
        "payments": { "object": "list", "data": [], "has_more": false, "url": "/v1/invoice_payments" },
        "period_end": period_end,
        "period_start": period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": null,
        "rendering": null,
        "shipping_cost": null,
        "shipping_details": null,
        "starting_balance": 0,
        "statement_descriptor": null,
        "status": "draft",
        "status_transitions": { "finalized_at": null, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null },
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "test_clock": sub["test_clock"],
        "total": total,
        "total_discount_amounts": discount_ids.first().map_or(json!([]), |d| json!([{ "amount": discount, "discount": d }])),
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": spec.now,
    });
    let invoice = w.insert(invoice);
    w.hidden.insert(id.clone(), json!({ "number": number }));
    w.emit("invoice.created", &invoice, None, spec.now);
    Ok(invoice)
}

/// Finalizes a draft invoice (`invoice.finalized`): it gets its number and becomes `open`.
fn finalize_invoice(w: &mut World, id: &str, now: i64) -> Value {
    let number = w
        .hidden
        .get(id)
        .map(|h| h["number"].clone())
        .unwrap_or(Value::Null);
    let (invoice, prev) = w.update(id, |inv| {
        inv["status"] = json!("open");
        inv["number"] = number;
        inv["effective_at"] = json!(now);
        inv["ending_balance"] = json!(0);
        inv["automatically_finalizes_at"] = Value::Null;
        inv["status_transitions"]["finalized_at"] = json!(now);
    });
    w.emit("invoice.finalized", &invoice, Some(prev), now);
    invoice
}

/// Marks an invoice paid (`invoice.paid`, `invoice.payment_succeeded`).
fn settle_invoice(w: &mut World, id: &str, now: i64) -> Value {
    let (invoice, _) = w.update(id, |inv| {
        let due = inv["amount_due"].as_i64().unwrap_or(0);
        inv["status"] = json!("paid");
        inv["amount_paid"] = json!(due);
        inv["amount_remaining"] = json!(0);
        inv["attempted"] = json!(true);
        if due > 0 {
            inv["attempt_count"] = json!(inv["attempt_count"].as_i64().unwrap_or(0).max(1));
        }
        inv["next_payment_attempt"] = Value::Null;
        inv["status_transitions"]["paid_at"] = json!(now);
        if let Some(payment) = inv["payments"]["data"]
            .as_array_mut()
            .and_then(|d| d.first_mut())
        {
            payment["status"] = json!("paid");
            payment["amount_paid"] = json!(due);
            payment["status_transitions"]["paid_at"] = json!(now);
        }
    });
    w.emit("invoice.paid", &invoice, None, now);
    w.emit("invoice.payment_succeeded", &invoice, None, now);
    invoice
}

/// The payment method a subscription's invoices are charged to.
fn payment_method_for(w: &World, sub: &Value) -> Option<String> {
    sub["default_payment_method"]
        .as_str()
        .or_else(|| {
            sub["customer"]
                .as_str()
                .and_then(|c| w.get(c))
                .and_then(|c| c["invoice_settings"]["default_payment_method"].as_str())
        })
        .map(str::to_owned)
}

/// Tries to collect an open invoice (off-session unless the payer is on the page and has
/// just authenticated). Returns whether it was paid. A failure schedules the next retry
/// per `Config::dunning_retry_days`: each entry counts days after the previous attempt.
fn collect_invoice(
    w: &mut World,
    ctx: &Ctx,
    invoice_id: &str,
    now: i64,
    authenticated: bool,
) -> ApiResult<bool> {
    let invoice = w.fetch("invoice", invoice_id, "invoice", "invoice")?;
    let amount = invoice["amount_due"].as_i64().unwrap_or(0);
    if amount == 0 {
        settle_invoice(w, invoice_id, now);
        return Ok(true);
    }
    let sub_id = invoice["parent"]["subscription_details"]["subscription"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sub = w.get(&sub_id).cloned().unwrap_or(Value::Null);
    let pm = payment_method_for(w, &sub);
    let attempts = invoice["attempt_count"].as_i64().unwrap_or(0) + 1;
    let description = match invoice["billing_reason"].as_str() {
        Some("subscription_create") => "Subscription creation",
        Some("subscription_update") => "Subscription update",
        _ => "Subscription cycle",
    };
    let outcome = match &pm {
        Some(pm) => Some(payments::charge(
            w,
            Payment {
                amount,
                currency: invoice["currency"].as_str().unwrap_or("usd"),
                customer: invoice["customer"].as_str(),
                payment_method: pm,
                metadata: json!({}),
                description: Some(description.to_owned()),
                off_session: !authenticated,
                payment_intent: w
                    .hidden
                    .get(invoice_id)
                    .and_then(|h| h["payment_intent"].as_str())
                    .map(str::to_owned),
                authenticated,
                invoice: Some(invoice_id.to_owned()),
                now,
            },
        )?),
        None => None,
    };
    if let Some(Outcome::Succeeded(_)) = outcome {
        w.update(invoice_id, |inv| inv["attempt_count"] = json!(attempts));
        settle_invoice(w, invoice_id, now);
        return Ok(true);
    }
    // "Stripe doesn't retry payments if no payment methods are available."
    let retry_days = &ctx.config.dunning_retry_days;
    let next = usize::try_from(attempts - 1)
        .ok()
        .and_then(|i| retry_days.get(i))
        .filter(|_| pm.is_some())
        .map(|d| now + d * DAY);
    let (invoice, prev) = w.update(invoice_id, |inv| {
        inv["attempt_count"] = json!(attempts);
        inv["attempted"] = json!(true);
        inv["next_payment_attempt"] = json!(next);
    });
    w.emit("invoice.payment_failed", &invoice, Some(prev), now);
    Ok(false)
}

/// Starts the next period of a subscription (trial end or renewal): the period moves, and
/// a draft `subscription_cycle` invoice is created for it, licensed prices billed for the
/// new period and metered prices for the usage of the period that just ended. Stripe
/// finalizes and charges that draft about an hour later ([`Due::Finalize`]).
fn renew(w: &mut World, sub_id: &str, now: i64) -> ApiResult<()> {
    let sub = w.fetch("subscription", sub_id, "subscription", "subscription")?;
    let was_trialing = sub["status"] == "trialing";
    if was_trialing && payment_method_for(w, &sub).is_none() {
        match sub["trial_settings"]["end_behavior"]["missing_payment_method"].as_str() {
            Some("pause") => {
                let (sub, prev) = w.update(sub_id, |s| s["status"] = json!("paused"));
                w.emit("customer.subscription.updated", &sub, Some(prev), now);
                w.emit("customer.subscription.paused", &sub, None, now);
                return Ok(());
            }
            Some("cancel") => {
                end_subscription(w, sub_id, None, now);
                return Ok(());
            }
            _ => {}
        }
    }
    let (interval, count) = interval_of(&sub);
    let hidden = w.hidden.get(sub_id).cloned().unwrap_or_default();
    let anchor = hidden["anchor"].as_i64().unwrap_or(now);
    let index = hidden["period_index"].as_i64().unwrap_or(0);
    let (old_start, start) = period_of(&sub);
    let end = add_intervals(anchor, &interval, count, index + 1);
    hidden_of(w, sub_id)["period_index"] = json!(index + 1);
    let customer = sub["customer"].as_str().unwrap_or_default().to_owned();

    // Prorations waiting for this invoice, then the period's own lines.
    let pending: Vec<Value> = w
        .hidden
        .get_mut(sub_id)
        .and_then(|h| h.get_mut("pending_prorations"))
        .map(std::mem::take)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let mut lines: Vec<InvoiceLine> = pending
        .iter()
        .map(|p| InvoiceLine {
            price: p["price"].clone(),
            amount: p["amount"].as_i64().unwrap_or(0),
            quantity: p["quantity"].as_i64().unwrap_or(1),
            proration: true,
            period: (p["from"].as_i64().unwrap_or(old_start), start),
        })
        .collect();
    for item in sub["items"]["data"].as_array().cloned().unwrap_or_default() {
        if is_metered(&item["price"]) {
            // Usage is billed in arrears, for the period that just ended; a trial's is free.
            let usage = if was_trialing {
                0
            } else {
                metered_usage(w, &item, &customer, (old_start, start))
            };
            let unit = item["price"]["unit_amount"].as_i64().unwrap_or(0);
            lines.push(InvoiceLine {
                price: item["price"].clone(),
                amount: usage.saturating_mul(unit),
                quantity: usage,
                proration: false,
                period: (old_start, start),
            });
        } else {
            let qty = item["quantity"].as_i64().unwrap_or(1);
            lines.push(InvoiceLine {
                price: item["price"].clone(),
                amount: item["price"]["unit_amount"]
                    .as_i64()
                    .unwrap_or(0)
                    .saturating_mul(qty),
                quantity: qty,
                proration: false,
                period: (start, end),
            });
        }
    }
    let invoice_id = new_id("in");
    let (sub, prev) = w.update(sub_id, |s| {
        set_periods(s, start, end);
        s["latest_invoice"] = json!(invoice_id);
        if was_trialing {
            s["status"] = json!("active");
        }
    });
    w.emit("customer.subscription.updated", &sub, Some(prev), now);
    create_invoice(
        w,
        &sub,
        InvoiceSpec {
            id: Some(invoice_id.clone()),
            reason: "subscription_cycle",
            lines: &lines,
            now,
        },
    )?;
    let finalizes_at = now + FINALIZE_AFTER;
    w.update(&invoice_id, |inv| {
        inv["automatically_finalizes_at"] = json!(finalizes_at);
    });
    hidden_of(w, sub_id)["finalize"] = json!({ "invoice": invoice_id, "at": finalizes_at });
    Ok(())
}

/// How long after a renewal's `invoice.created` Stripe finalizes the draft and attempts
/// payment (the hour it leaves for `invoice.created` handlers to change the draft).
const FINALIZE_AFTER: i64 = 3_600;

/// The hour after a renewal: the draft is finalized and charged, unless collection is
/// paused, in which case `pause_collection[behavior]` decides what becomes of it.
fn finalize_renewal(w: &mut World, ctx: &Ctx, sub_id: &str, now: i64) -> ApiResult<()> {
    let invoice_id = w
        .hidden
        .get_mut(sub_id)
        .and_then(|h| h.as_object_mut())
        .and_then(|h| h.remove("finalize"))
        .and_then(|f| f["invoice"].as_str().map(str::to_owned));
    let Some(invoice_id) = invoice_id else {
        return Ok(());
    };
    let Ok(invoice) = w.fetch("invoice", &invoice_id, "invoice", "invoice") else {
        return Ok(());
    };
    if invoice["status"] != "draft" {
        return Ok(());
    }
    let sub = w.fetch("subscription", sub_id, "subscription", "subscription")?;
    match sub["pause_collection"]["behavior"].as_str() {
        Some("keep_as_draft") => {
            // Stays a draft that will not advance on its own; Stripe never un-finalizes.
            let (inv, prev) = w.update(&invoice_id, |inv| {
                inv["auto_advance"] = json!(false);
                inv["automatically_finalizes_at"] = Value::Null;
            });
            w.emit("invoice.updated", &inv, Some(prev), now);
        }
        Some("void") => {
            finalize_invoice(w, &invoice_id, now);
            let (inv, prev) = w.update(&invoice_id, |inv| {
                inv["status"] = json!("void");
                inv["amount_remaining"] = json!(0);
                inv["status_transitions"]["voided_at"] = json!(now);
            });
            let _ = prev;
            w.emit("invoice.voided", &inv, None, now);
        }
        Some("mark_uncollectible") => {
            finalize_invoice(w, &invoice_id, now);
            let (inv, _) = w.update(&invoice_id, |inv| {
                inv["status"] = json!("uncollectible");
                inv["status_transitions"]["marked_uncollectible_at"] = json!(now);
            });
            w.emit("invoice.marked_uncollectible", &inv, None, now);
        }
        _ => {
            finalize_invoice(w, &invoice_id, now);
            if !collect_invoice(w, ctx, &invoice_id, now, false)? {
                let (sub, prev) = w.update(sub_id, |s| {
                    if matches!(s["status"].as_str(), Some("active" | "trialing")) {
                        s["status"] = json!("past_due");
                    }
                });
                if prev.as_object().is_some_and(|m| !m.is_empty()) {
                    w.emit("customer.subscription.updated", &sub, Some(prev), now);
                }
            }
        }
    }
    Ok(())
}

/// Usage reported to the item's meter for the customer in `[from, to)`.
fn metered_usage(w: &World, item: &Value, customer: &str, (from, to): (i64, i64)) -> i64 {
    item["price"]["recurring"]["meter"]
        .as_str()
        .and_then(|meter| meter_usage(w, meter, customer, from, to).ok())
        .unwrap_or(0)
}

/// Ends a subscription now (`customer.subscription.deleted`).
fn end_subscription(w: &mut World, sub_id: &str, reason: Option<&str>, now: i64) -> Value {
    let (sub, _) = w.update(sub_id, |s| {
        s["status"] = json!("canceled");
        if s["canceled_at"].is_null() {
            s["canceled_at"] = json!(now);
        }
        s["ended_at"] = json!(now);
        if let Some(reason) = reason {
            s["cancellation_details"]["reason"] = json!(reason);
        }
    });
    if let Some(h) = w.hidden.get_mut(sub_id).and_then(|h| h.as_object_mut()) {
        h.remove("finalize");
    }
    w.emit("customer.subscription.deleted", &sub, None, now);
    sub
}

/// Cancels every live subscription of a customer that is being deleted, as Stripe does.
pub fn cancel_customer_subscriptions(w: &mut World, customer: &str, now: i64) {
    let subs: Vec<String> = w
        .all("subscription")
        .filter(|s| s["customer"] == customer)
        .filter(|s| {
            !matches!(
                s["status"].as_str(),
                Some("canceled" | "incomplete_expired")
            )
        })
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    for id in subs {
        end_subscription(w, &id, None, now);
    }
}

/// The next thing that happens to a subscription on its own, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    TrialWillEnd,
    Renew,
    Finalize,
    EndAtPeriodEnd,
    RetryInvoice,
    Unpause,
}

fn next_due(w: &World, sub: &Value) -> Option<(i64, Due)> {
    let status = sub["status"].as_str()?;
    if matches!(status, "canceled" | "incomplete_expired" | "paused") {
        return None;
    }
    let id = sub["id"].as_str()?;
    let hidden = w.hidden.get(id);
    let (_, period_end) = period_of(sub);
    let mut candidates = Vec::new();
    if status == "trialing"
        && let Some(trial_end) = sub["trial_end"].as_i64()
    {
        let warn = trial_end - 3 * DAY;
        if hidden.is_none_or(|h| h["trial_will_end_sent"] != true)
            && warn > sub["trial_start"].as_i64().unwrap_or(0)
        {
            candidates.push((warn, Due::TrialWillEnd));
        }
    }
    if let Some(at) = hidden.and_then(|h| h["finalize"]["at"].as_i64()) {
        candidates.push((at, Due::Finalize));
    }
    if sub["cancel_at_period_end"] == true {
        candidates.push((period_end, Due::EndAtPeriodEnd));
    } else if let Some(at) = sub["cancel_at"].as_i64() {
        candidates.push((at, Due::EndAtPeriodEnd));
    } else if status != "unpaid" {
        candidates.push((period_end, Due::Renew));
    }
    if status == "past_due"
        && let Some(next) = sub["latest_invoice"]
            .as_str()
            .and_then(|i| w.get(i))
            .filter(|i| i["status"] == "open")
            .and_then(|i| i["next_payment_attempt"].as_i64())
    {
        candidates.push((next, Due::RetryInvoice));
    }
    if let Some(resumes) = sub["pause_collection"]["resumes_at"].as_i64() {
        candidates.push((resumes, Due::Unpause));
    }
    candidates.into_iter().min_by_key(|(t, _)| *t)
}

fn run_due(w: &mut World, ctx: &Ctx, sub_id: &str, due: Due, now: i64) -> ApiResult<()> {
    match due {
        Due::TrialWillEnd => {
            hidden_of(w, sub_id)["trial_will_end_sent"] = json!(true);
            let sub = w.fetch("subscription", sub_id, "subscription", "subscription")?;
            w.emit("customer.subscription.trial_will_end", &sub, None, now);
        }
        Due::Renew => renew(w, sub_id, now)?,
        Due::Finalize => finalize_renewal(w, ctx, sub_id, now)?,
        Due::EndAtPeriodEnd => {
            end_subscription(w, sub_id, Some("cancellation_requested"), now);
        }
        Due::RetryInvoice => {
            let sub = w.fetch("subscription", sub_id, "subscription", "subscription")?;
            let invoice_id = sub["latest_invoice"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if collect_invoice(w, ctx, &invoice_id, now, false)? {
                let (sub, prev) = w.update(sub_id, |s| s["status"] = json!("active"));
                w.emit("customer.subscription.updated", &sub, Some(prev), now);
            } else {
                let exhausted = w
                    .get(&invoice_id)
                    .is_some_and(|i| i["next_payment_attempt"].is_null());
                if exhausted {
                    if ctx.config.dunning_mark_unpaid {
                        let (sub, prev) = w.update(sub_id, |s| s["status"] = json!("unpaid"));
                        w.emit("customer.subscription.updated", &sub, Some(prev), now);
                    } else {
                        end_subscription(w, sub_id, Some("payment_failed"), now);
                    }
                }
            }
        }
        Due::Unpause => {
            let (sub, prev) = w.update(sub_id, |s| s["pause_collection"] = Value::Null);
            w.emit("customer.subscription.updated", &sub, Some(prev), now);
        }
    }
    Ok(())
}

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

/// Runs, in time order and each at its own time, everything that falls due on the
/// clock's subscriptions up to `target`.
fn run_until(w: &mut World, ctx: &Ctx, clock: &str, current: i64, target: i64) -> ApiResult<()> {
    // Bounded: each step moves time forward or ends a subscription.
    for _ in 0..10_000 {
        let subs: Vec<(String, i64, Due)> = w
            .all("subscription")
            .filter(|s| s["test_clock"] == clock)
            .filter_map(|s| {
                next_due(w, s).map(|(t, d)| (s["id"].as_str().unwrap_or_default().to_owned(), t, d))
            })
            .filter(|(_, t, _)| *t <= target)
            .collect();
        let Some((sub_id, at, due)) = subs.into_iter().min_by_key(|(_, t, _)| *t) else {
            break;
        };
        let at = at.max(current);
        w.update(clock, |c| c["frozen_time"] = json!(at));
        run_due(w, ctx, &sub_id, due, at)?;
    }
    Ok(())
}

pub fn list_subscriptions(w: &World, p: &Value) -> ApiResult {
    let status = p["status"].as_str();
    list(
        w.all("subscription")
            .filter(|s| p["customer"].as_str().is_none_or(|c| s["customer"] == c))
            .filter(|s| {
                p["price"].as_str().is_none_or(|pr| {
                    s["items"]["data"]
                        .as_array()
                        .is_some_and(|items| items.iter().any(|i| i["price"]["id"] == pr))
                })
            })
            .filter(|s| {
                p["test_clock"]
                    .as_str()
                    .is_none_or(|c| s["test_clock"] == c)
            })
            .filter(|s| match status {
                None => s["status"] != "canceled" && s["status"] != "incomplete_expired",
                Some("all") => true,
                Some("ended") => matches!(
                    s["status"].as_str(),
                    Some("canceled" | "incomplete_expired")
                ),
                Some(st) => s["status"] == st,
            })
            .filter(|s| matches_range(s, "created", &p["created"])),
        "/v1/subscriptions",
        p,
    )
}

pub fn list_invoices(w: &World, p: &Value) -> ApiResult {
    list(
        w.all("invoice")
            .filter(|i| p["customer"].as_str().is_none_or(|c| i["customer"] == c))
            .filter(|i| {
                p["subscription"]
                    .as_str()
                    .is_none_or(|s| i["parent"]["subscription_details"]["subscription"] == s)
            })
            .filter(|i| p["status"].as_str().is_none_or(|s| i["status"] == s))
            .filter(|i| matches_range(i, "created", &p["created"])),
        "/v1/invoices",
        p,
    )
}

pub fn pay_invoice(w: &mut World, ctx: &Ctx, id: &str) -> ApiResult {
    let invoice = w.fetch("invoice", id, "invoice", "invoice")?;
    if invoice["status"] == "paid" {
        return Err(ApiError::invalid("Invoice is already paid").with_code("invoice_already_paid"));
    }
    if !matches!(invoice["status"].as_str(), Some("open" | "draft")) {
        return Err(ApiError::invalid(format!(
            "You can only pay an invoice with status `open` or `draft`; this one is `{}`.",
            invoice["status"].as_str().unwrap_or_default()
        )));
    }
    let now = w.now_for_customer(invoice["customer"].as_str());
    if invoice["status"] == "draft" {
        // Paying a draft finalizes it first, as Stripe's pay endpoint does.
        finalize_invoice(w, id, now);
        let sub_id = invoice["parent"]["subscription_details"]["subscription"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(h) = w.hidden.get_mut(&sub_id).and_then(|h| h.as_object_mut())
            && h.get("finalize").is_some_and(|f| f["invoice"] == id)
        {
            h.remove("finalize");
        }
    }
    if collect_invoice(w, ctx, id, now, false)? {
        let sub_id = invoice["parent"]["subscription_details"]["subscription"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let resumption = w
            .hidden
            .get(&sub_id)
            .is_some_and(|h| h["resumption_invoice"] == id);
        if resumption && let Some(before) = w.get(&sub_id).cloned() {
            mark_resumed(w, &sub_id, &before, now);
        } else if w
            .get(&sub_id)
            .is_some_and(|s| matches!(s["status"].as_str(), Some("past_due" | "unpaid")))
        {
            let (sub, prev) = w.update(&sub_id, |s| s["status"] = json!("active"));
            w.emit("customer.subscription.updated", &sub, Some(prev), now);
        }
        return w.fetch("invoice", id, "invoice", "invoice");
    }
    let pi = w
        .hidden
        .get(id)
        .and_then(|h| h["payment_intent"].as_str())
        .map(str::to_owned);
    let err = pi
        .as_deref()
        .and_then(|pi| w.get(pi))
        .map(|pi| pi["last_payment_error"].clone())
        .unwrap_or(Value::Null);
    Err(ApiError::card(
        "card_declined",
        Some("generic_decline"),
        err["message"].as_str().unwrap_or("Your card was declined."),
    ))
}

/// Amount for `fraction` (remaining / total seconds) of `amount`, rounded half away from zero.
fn prorate(amount: i64, remaining: i64, total: i64) -> i64 {
    if total <= 0 {
        return 0;
    }
    let num = i128::from(amount) * i128::from(remaining.clamp(0, total));
    let den = i128::from(total);
    let q = (num.abs() * 2 + den) / (den * 2);
    (if num < 0 { -q } else { q }) as i64
}

pub fn update_subscription(w: &mut World, ctx: &Ctx, id: &str, p: &Value) -> ApiResult {
    let sub = w.fetch(
        "subscription",
        id,
        "subscription",
        "subscription_exposed_id",
    )?;
    let status = sub["status"].as_str().unwrap_or_default().to_owned();
    if status == "canceled" {
        let allowed = p.as_object().is_some_and(|m| {
            m.keys()
                .all(|k| k == "metadata" || k == "cancellation_details")
        });
        if !allowed {
            return Err(ApiError::invalid(
                "A canceled subscription can only update its cancellation_details and metadata.",
            ));
        }
    }
    let now = w.now_for_customer(sub["customer"].as_str());
    if let Some(pm) = p["default_payment_method"].as_str() {
        w.fetch(
            "payment_method",
            pm,
            "PaymentMethod",
            "default_payment_method",
        )?;
    }

    // A price change on the first item.
    let mut new_price: Option<(usize, Value, i64)> = None;
    if let Some(items) = p["items"].as_array() {
        for (i, item) in items.iter().enumerate() {
            let Some(price_id) = item["price"].as_str() else {
                continue;
            };
            let price = w.fetch("price", price_id, "price", &format!("items[{i}][price]"))?;
            if price["type"] != "recurring" {
                return Err(ApiError::param(
                    format!("items[{i}][price]"),
                    "The price specified is not a recurring price.",
                ));
            }
            let index = match item["id"].as_str() {
                Some(si) => sub["items"]["data"]
                    .as_array()
                    .and_then(|d| d.iter().position(|x| x["id"] == si))
                    .ok_or_else(|| {
                        ApiError::missing("subscription item", si, &format!("items[{i}][id]"))
                    })?,
                None => 0,
            };
            let qty = item["quantity"]
                .as_i64()
                .or_else(|| sub["items"]["data"][index]["quantity"].as_i64())
                .unwrap_or(1);
            if price["currency"] != sub["currency"] {
                return Err(ApiError::param(
                    format!("items[{i}][price]"),
                    "The price's currency must match the subscription's currency.",
                ));
            }
            new_price = Some((index, price, qty));
        }
    }
    let proration = p["proration_behavior"]
        .as_str()
        .unwrap_or("create_prorations")
        .to_owned();
    let mut proration_lines: Vec<Value> = Vec::new();
    if let Some((index, price, qty)) = &new_price {
        let old = &sub["items"]["data"][*index];
        let (start, end) = period_of(&sub);
        if proration != "none" && status != "trialing" {
            let remaining = end - now;
            let total = end - start;
            let old_amount = old["price"]["unit_amount"].as_i64().unwrap_or(0)
                * old["quantity"].as_i64().unwrap_or(1);
            let new_amount = price["unit_amount"].as_i64().unwrap_or(0) * qty;
            proration_lines.push(json!({ "price": old["price"], "amount": -prorate(old_amount, remaining, total), "quantity": old["quantity"], "from": now }));
            proration_lines.push(json!({ "price": price, "amount": prorate(new_amount, remaining, total), "quantity": qty, "from": now }));
        }
    }

    let (updated, prev) = w.update(id, |s| {
        if let Some(v) = p["cancel_at_period_end"].as_bool() {
            s["cancel_at_period_end"] = json!(v);
            s["canceled_at"] = if v { json!(now) } else { Value::Null };
            s["cancellation_details"]["reason"] = if v {
                json!("cancellation_requested")
            } else {
                Value::Null
            };
        }
        if p.get("cancel_at").is_some() {
            s["cancel_at"] = if p["cancel_at"] == "" {
                Value::Null
            } else {
                p["cancel_at"].clone()
            };
            s["canceled_at"] = if s["cancel_at"].is_null() {
                Value::Null
            } else {
                json!(now)
            };
        }
        if let Some(details) = p["cancellation_details"].as_object() {
            for (k, v) in details {
                s["cancellation_details"][k] = v.clone();
            }
        }
        match p.get("pause_collection") {
            Some(Value::String(e)) if e.is_empty() => s["pause_collection"] = Value::Null,
            Some(Value::Object(pc)) => {
                s["pause_collection"] =
                    json!({ "behavior": pc.get("behavior"), "resumes_at": pc.get("resumes_at") });
            }
            _ => {}
        }
        if let Some(pm) = p["default_payment_method"].as_str() {
            s["default_payment_method"] = json!(pm);
        }
        if let Some((index, price, qty)) = &new_price {
            let item = &mut s["items"]["data"][*index];
            item["price"] = price.clone();
            item["plan"] = plan_of(price);
            item["quantity"] = json!(qty);
        }
        merge_metadata(s, p.get("metadata"));
    });
    if let Some(m) = prev.as_object()
        && !m.is_empty()
    {
        w.emit(
            "customer.subscription.updated",
            &updated,
            Some(prev.clone()),
            now,
        );
    }
    if !proration_lines.is_empty() {
        if proration == "always_invoice" {
            let lines: Vec<InvoiceLine> = proration_lines
                .iter()
                .map(|l| InvoiceLine {
                    price: l["price"].clone(),
                    amount: l["amount"].as_i64().unwrap_or(0),
                    quantity: l["quantity"].as_i64().unwrap_or(1),
                    proration: true,
                    period: (now, period_of(&updated).1),
                })
                .collect();
            let invoice = create_invoice(
                w,
                &updated,
                InvoiceSpec {
                    id: None,
                    reason: "subscription_update",
                    lines: &lines,
                    now,
                },
            )?;
            let invoice_id = invoice["id"].as_str().unwrap_or_default().to_owned();
            finalize_invoice(w, &invoice_id, now);
            // A credit (total <= 0) settles at once: Stripe keeps it on the customer's
            // balance for the next invoice.
            collect_invoice(w, ctx, &invoice_id, now, false)?;
            let (s, prev) = w.update(id, |s| s["latest_invoice"] = json!(invoice_id));
            w.emit("customer.subscription.updated", &s, Some(prev), now);
        } else {
            let h = w.hidden.entry(id.to_owned()).or_insert_with(|| json!({}));
            let mut pending = h["pending_prorations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            pending.extend(proration_lines);
            h["pending_prorations"] = json!(pending);
        }
    }
    w.fetch(
        "subscription",
        id,
        "subscription",
        "subscription_exposed_id",
    )
}

pub fn cancel_subscription_now(w: &mut World, _ctx: &Ctx, id: &str, p: &Value) -> ApiResult {
    let sub = w.fetch(
        "subscription",
        id,
        "subscription",
        "subscription_exposed_id",
    )?;
    if sub["status"] == "canceled" {
        return Err(ApiError::invalid(format!(
            "No such subscription: '{id}'; it has already been canceled."
        ))
        .with_code("resource_missing"));
    }
    let now = w.now_for_customer(sub["customer"].as_str());
    if let Some(details) = p["cancellation_details"].as_object() {
        let details = details.clone();
        w.update(id, |s| {
            for (k, v) in details {
                s["cancellation_details"][k] = v;
            }
        });
    }
    Ok(end_subscription(w, id, Some("cancellation_requested"), now))
}

/// Resumes a paused subscription, as the API version's spec describes it. With
/// `billing_cycle_anchor=now` (the default) a new period starts now and its resumption
/// invoice is finalized at once and charged: paid, the subscription is `active`
/// (`customer.subscription.resumed`); not paid, it stays `paused` until that invoice is
/// paid. `unchanged` generates no invoice and the subscription is `active` at once.
pub fn resume_subscription(w: &mut World, ctx: &Ctx, id: &str, p: &Value) -> ApiResult {
    let sub = w.fetch("subscription", id, "subscription", "subscription")?;
    if sub["status"] != "paused" {
        return Err(ApiError::invalid(format!(
            "Subscription {id} is not paused, so it cannot be resumed. Only subscriptions with status `paused` can be resumed."
        )));
    }
    let now = w.now_for_customer(sub["customer"].as_str());
    if p["billing_cycle_anchor"] == "unchanged" {
        let (sub, prev) = w.update(id, |s| s["status"] = json!("active"));
        w.emit("customer.subscription.updated", &sub, Some(prev), now);
        w.emit("customer.subscription.resumed", &sub, None, now);
        return Ok(sub);
    }
    let (interval, count) = interval_of(&sub);
    let end = add_intervals(now, &interval, count, 1);
    let lines: Vec<InvoiceLine> = sub["items"]["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|item| {
            let qty = item["quantity"].as_i64().unwrap_or(1);
            let amount = if is_metered(&item["price"]) {
                0
            } else {
                item["price"]["unit_amount"]
                    .as_i64()
                    .unwrap_or(0)
                    .saturating_mul(qty)
            };
            InvoiceLine {
                price: item["price"].clone(),
                amount,
                quantity: if is_metered(&item["price"]) { 0 } else { qty },
                proration: false,
                period: (now, end),
            }
        })
        .collect();
    let invoice_id = new_id("in");
    hidden_of(w, id)["anchor"] = json!(now);
    hidden_of(w, id)["period_index"] = json!(1);
    let (current, _) = w.update(id, |s| {
        s["billing_cycle_anchor"] = json!(now);
        s["latest_invoice"] = json!(invoice_id);
        set_periods(s, now, end);
    });
    create_invoice(
        w,
        &current,
        InvoiceSpec {
            id: Some(invoice_id.clone()),
            reason: "subscription_cycle",
            lines: &lines,
            now,
        },
    )?;
    finalize_invoice(w, &invoice_id, now);
    let paid = collect_invoice(w, ctx, &invoice_id, now, false)?;
    if !paid {
        // Stays paused; a resumption invoice is not retried on the dunning schedule.
        w.update(&invoice_id, |inv| inv["next_payment_attempt"] = Value::Null);
        hidden_of(w, id)["resumption_invoice"] = json!(invoice_id);
        return w.fetch("subscription", id, "subscription", "subscription");
    }
    Ok(mark_resumed(w, id, &sub, now))
}

/// A paused subscription whose resumption invoice is paid becomes `active`:
/// `customer.subscription.updated` (against `before`, as it was while paused) and
/// `customer.subscription.resumed`.
fn mark_resumed(w: &mut World, id: &str, before: &Value, now: i64) -> Value {
    if let Some(h) = w.hidden.get_mut(id).and_then(|h| h.as_object_mut()) {
        h.remove("resumption_invoice");
    }
    let (after, _) = w.update(id, |s| s["status"] = json!("active"));
    let mut prev = json!({ "status": "paused" });
    if before["items"] != after["items"] {
        prev["items"] = before["items"].clone();
    }
    if before["billing_cycle_anchor"] != after["billing_cycle_anchor"] {
        prev["billing_cycle_anchor"] = before["billing_cycle_anchor"].clone();
    }
    if before["latest_invoice"] != after["latest_invoice"] {
        prev["latest_invoice"] = before["latest_invoice"].clone();
    }
    w.emit("customer.subscription.updated", &after, Some(prev), now);
    w.emit("customer.subscription.resumed", &after, None, now);
    after
}

/// The account's default portal configuration, created on first use as Stripe's Dashboard does.
pub fn ensure_default_portal_configuration(w: &mut World) -> Value {
    if let Some(c) = w
        .all("billing_portal.configuration")
        .find(|c| c["is_default"] == true)
    {
        return c.clone();
    }
    let config = portal_configuration(&json!({}), true);
    w.insert(config)
}

fn portal_configuration(p: &Value, is_default: bool) -> Value {
    let now = wall_clock();
    let f = &p["features"];
    let enabled = |v: &Value, default: bool| v["enabled"].as_bool().unwrap_or(default);
    json!({
        "id": new_id("bpc"),
        "object": "billing_portal.configuration",
        "active": p["active"].as_bool().unwrap_or(true),
        "application": null,
        "business_profile": {
            "headline": p["business_profile"]["headline"],
            "privacy_policy_url": p["business_profile"]["privacy_policy_url"],
            "terms_of_service_url": p["business_profile"]["terms_of_service_url"],
        },
        "created": now,
        "default_return_url": p.get("default_return_url").cloned().unwrap_or(Value::Null),
        "features": {
            "customer_update": { "allowed_updates": f["customer_update"]["allowed_updates"].as_array().cloned().unwrap_or_default(), "enabled": enabled(&f["customer_update"], false) },
            "invoice_history": { "enabled": enabled(&f["invoice_history"], true) },
            "payment_method_update": { "enabled": enabled(&f["payment_method_update"], true), "payment_method_configuration": null },
            "subscription_cancel": {
                "cancellation_reason": { "enabled": false, "feedback_options": null, "options": [] },
                "enabled": enabled(&f["subscription_cancel"], true),
                "mode": f["subscription_cancel"]["mode"].as_str().unwrap_or("at_period_end"),
                "proration_behavior": f["subscription_cancel"]["proration_behavior"].as_str().unwrap_or("none"),
            },
            "subscription_update": {
                "billing_cycle_anchor": null,
                "default_allowed_updates": f["subscription_update"]["default_allowed_updates"].as_array().cloned().unwrap_or_else(|| vec![json!("price")]),
                "enabled": enabled(&f["subscription_update"], true),
                "products": f["subscription_update"]["products"].as_array().map(|products| {
                    products
                        .iter()
                        .map(|p| json!({
                            "adjustable_quantity": {
                                "enabled": p["adjustable_quantity"]["enabled"].as_bool().unwrap_or(false),
                                "maximum": p["adjustable_quantity"]["maximum"],
                                "minimum": p["adjustable_quantity"]["minimum"].as_i64().unwrap_or(1),
                            },
                            "prices": p["prices"],
                            "product": p["product"],
                        }))
                        .collect::<Vec<_>>()
                }),
                "proration_behavior": f["subscription_update"]["proration_behavior"].as_str().unwrap_or("create_prorations"),
                "schedule_at_period_end": { "conditions": [] },
                "trial_update_behavior": "end_trial",
            },
        },
        "is_default": is_default,
        "livemode": false,
        "login_page": { "enabled": false, "url": null },
        "metadata": metadata_of(p),
        "name": p.get("name").cloned().unwrap_or(Value::Null),
        "updated": now,
    })
}

pub fn create_portal_configuration(w: &mut World, p: &Value) -> ApiResult {
    ensure_default_portal_configuration(w);
    let config = w.insert(portal_configuration(p, false));
    w.emit(
        "billing_portal.configuration.created",
        &config,
        None,
        wall_clock(),
    );
    Ok(config)
}

pub fn update_portal_configuration(w: &mut World, id: &str, p: &Value) -> ApiResult {
    let current = w.fetch(
        "billing_portal.configuration",
        id,
        "configuration",
        "configuration",
    )?;
    let (config, prev) = w.update(id, |c| {
        if let Some(a) = p["active"].as_bool() {
            c["active"] = json!(a);
        }
        if let Some(bp) = p["business_profile"].as_object() {
            for (k, v) in bp {
                c["business_profile"][k] = v.clone();
            }
        }
        if let Some(url) = p.get("default_return_url") {
            c["default_return_url"] = if url == "" { Value::Null } else { url.clone() };
        }
        if let Some(features) = p["features"].as_object() {
            for (name, settings) in features {
                if let Some(settings) = settings.as_object() {
                    for (k, v) in settings {
                        c["features"][name][k] = v.clone();
                    }
                }
            }
        }
        merge_metadata(c, p.get("metadata"));
        c["updated"] = json!(wall_clock());
    });
    let _ = current;
    w.emit(
        "billing_portal.configuration.updated",
        &config,
        Some(prev),
        wall_clock(),
    );
    Ok(config)
}

pub fn create_portal_session(w: &mut World, ctx: &Ctx, p: &Value) -> ApiResult {
    let customer = required_str(p, "customer")?.to_owned();
    w.fetch("customer", &customer, "customer", "customer")?;
    let config = match p["configuration"].as_str() {
        Some(c) => w.fetch(
            "billing_portal.configuration",
            c,
            "configuration",
            "configuration",
        )?,
        None => ensure_default_portal_configuration(w),
    };
    if config["active"] != true {
        return Err(ApiError::param(
            "configuration",
            "The configuration is not active.",
        ));
    }
    let return_url = p["return_url"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| config["default_return_url"].as_str().map(str::to_owned));
    if let Some(u) = &return_url
        && url::Url::parse(u).is_err()
    {
        return Err(ApiError::param("return_url", "Not a valid URL"));
    }
    let id = new_id("bps");
    let session = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": config["id"],
        "created": w.now_for_customer(Some(&customer)),
        "customer": customer,
        "flow": null,
        "livemode": false,
        "locale": p.get("locale").cloned().unwrap_or(Value::Null),
        "on_behalf_of": null,
        "return_url": return_url,
        "url": format!("{}/p/session/{id}", ctx.base_url),
    });
    Ok(w.insert(session))
}

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
const METER_EVENT_MAX_AGE: i64 = 35 * DAY;
/// How far ahead a meter event's `timestamp` may be.
const METER_EVENT_MAX_AHEAD: i64 = 5 * 60;

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
fn meter_usage(w: &World, meter_id: &str, customer: &str, from: i64, to: i64) -> ApiResult<i64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_after_the_31st_of_january_is_the_last_day_of_february() {
        let jan31 = 1_769_817_600; // 2026-01-31T00:00:00Z
        let feb28 = 1_772_236_800; // 2026-02-28T00:00:00Z
        assert_eq!(add_intervals(jan31, "month", 1, 1), feb28);
        // The next period counts from the anchor, so March gets its 31st back.
        assert_eq!(add_intervals(jan31, "month", 1, 2), 1_774_915_200); // 2026-03-31
    }

    #[test]
    fn proration_rounds_half_away_from_zero() {
        assert_eq!(prorate(1000, 1, 2), 500);
        assert_eq!(prorate(1001, 1, 2), 501);
        assert_eq!(prorate(-1001, 1, 2), -501);
        assert_eq!(prorate(1000, 5, 0), 0);
    }
}
