//! Subscription invoices: drafting one (with its lines and discount), finalizing, collecting
//! it from the customer's card (scheduling dunning retries on failure), settling and listing.
//! Paying one by hand is in `subscriptions`, since it can bring its subscription back.

use serde_json::{Value, json};

use super::discounts::{current_discount, remove_discount};
use super::periods::DAY;
use crate::api::payments::{self, Outcome, Payment};
use crate::api::{Ctx, list, matches_range};
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::World;

/// One invoice line.
pub(crate) struct InvoiceLine {
    pub price: Value,
    pub amount: i64,
    pub quantity: i64,
    pub proration: bool,
    pub period: (i64, i64),
}

/// What an invoice is drafted from.
pub(crate) struct InvoiceSpec<'a> {
    /// The id to use, when the subscription already points at it.
    pub id: Option<String>,
    /// `billing_reason`: `subscription_create`, `subscription_cycle`, `subscription_update`.
    pub reason: &'a str,
    pub lines: &'a [InvoiceLine],
    pub now: i64,
}

/// Creates a draft invoice for a subscription (`invoice.created`), discounted by the
/// subscription's current discount.
pub(crate) fn create_invoice(w: &mut World, sub: &Value, spec: InvoiceSpec) -> ApiResult<Value> {
    let id = spec.id.unwrap_or_else(|| new_id("in"));
    let sub_id = sub["id"].as_str().unwrap_or_default();
    let customer_id = sub["customer"].as_str().unwrap_or_default();
    let customer = w.get(customer_id).cloned().unwrap_or(Value::Null);
    let currency = sub["currency"].clone();
    let mut subtotal: i64 = 0;
    let mut discountable: i64 = 0;
    let restricted: Option<Vec<String>> = sub["discounts"][0]
        .as_str()
        .and_then(|d| w.get(d))
        .and_then(|d| d["source"]["coupon"].as_str())
        .and_then(|c| crate::api::catalog::coupon_products(w, c));
    let mut lines = Vec::new();
    for line in spec.lines {
        subtotal = subtotal
            .checked_add(line.amount)
            .ok_or_else(|| ApiError::invalid("Invoice total is too large."))?;
        // Prorations are not discounted; a coupon restricted to some products discounts only
        // their lines.
        if !line.proration
            && restricted.as_ref().is_none_or(|products| {
                line.price["product"]
                    .as_str()
                    .is_some_and(|p| products.iter().any(|x| x == p))
            })
        {
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
        discount = crate::api::catalog::coupon_discount(&coupon, discountable, &currency_code);
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
        "amount_paid_off_stripe": 0,
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
pub(crate) fn finalize_invoice(w: &mut World, id: &str, now: i64) -> Value {
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
pub(crate) fn settle_invoice(w: &mut World, id: &str, now: i64) -> Value {
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
pub(crate) fn payment_method_for(w: &World, sub: &Value) -> Option<String> {
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
pub(crate) fn collect_invoice(
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

/// `GET /v1/invoices`, filtered by customer, subscription, status and created.
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
