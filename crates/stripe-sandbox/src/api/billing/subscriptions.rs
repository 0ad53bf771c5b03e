//! Subscriptions: starting one from Checkout with its first invoice, listing, ending
//! (now, or with the customer), and paying an invoice by hand, which can bring a
//! subscription back from `past_due` or `paused`.

use serde_json::{Value, json};

use super::discounts::{DiscountOrigin, create_discount};
use super::invoices::{
    InvoiceLine, InvoiceSpec, collect_invoice, create_invoice, finalize_invoice, settle_invoice,
};
use super::periods::{DAY, add_intervals, interval_of, is_metered, plan_of, set_periods};
use crate::api::{Ctx, list, matches_range};
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::World;

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
    let discount_id = new.discount.as_ref().map(|(coupon, promo)| {
        let origin = DiscountOrigin {
            customer: new.customer,
            checkout_session: new.checkout_session,
            subscription: &id,
        };
        create_discount(w, coupon, promo.as_ref(), origin, now)
    });
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

/// Ends a subscription now (`customer.subscription.deleted`).
pub(crate) fn end_subscription(
    w: &mut World,
    sub_id: &str,
    reason: Option<&str>,
    now: i64,
) -> Value {
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

/// `GET /v1/subscriptions`: live ones by default, `status=all` or `ended` for the others.
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

/// `POST /v1/invoices/{id}/pay`: a draft is finalized first; paid, a `past_due`, `unpaid`
/// or `paused` subscription it belongs to comes back.
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

/// `DELETE /v1/subscriptions/{id}`: the subscription ends now.
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

/// A paused subscription whose resumption invoice is paid becomes `active`:
/// `customer.subscription.updated` (against `before`, as it was while paused) and
/// `customer.subscription.resumed`.
pub(crate) fn mark_resumed(w: &mut World, id: &str, before: &Value, now: i64) -> Value {
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
