//! Changing a subscription: a new price (with prorations, now or at the next renewal),
//! cancellation at period end, pausing collection, and resuming a paused subscription.

use serde_json::{Value, json};

use super::invoices::{
    InvoiceLine, InvoiceSpec, collect_invoice, create_invoice, finalize_invoice,
};
use super::periods::{
    add_intervals, hidden_of, interval_of, is_metered, period_of, plan_of, prorate, set_periods,
};
use super::subscriptions::mark_resumed;
use crate::api::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::{World, merge_metadata};

/// `POST /v1/subscriptions/{id}`: price changes (with prorations), cancellation at period
/// end, `cancel_at`, pausing collection, the default payment method, metadata.
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
