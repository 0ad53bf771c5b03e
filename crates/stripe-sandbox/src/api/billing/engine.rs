//! The clock engine: what happens to subscriptions on their own as (test clock) time
//! passes: trial-end warnings, renewals, the hour-later finalization and charge of a
//! renewal invoice, dunning retries, cancellation at period end, and unpausing.

use serde_json::{Value, json};

use super::invoices::{
    InvoiceLine, InvoiceSpec, collect_invoice, create_invoice, finalize_invoice, payment_method_for,
};
use super::meters::meter_usage;
use super::periods::{
    DAY, add_intervals, hidden_of, interval_of, is_metered, period_of, set_periods,
};
use super::subscriptions::end_subscription;
use crate::api::Ctx;
use crate::error::ApiResult;
use crate::ids::new_id;
use crate::world::World;

/// Starts the next period of a subscription (trial end or renewal): the period moves, and
/// a draft `subscription_cycle` invoice is created for it, licensed prices billed for the
/// new period and metered prices for the usage of the period that just ended. Stripe
/// finalizes and charges that draft about an hour later ([`Due::Finalize`]).
pub(crate) fn renew(w: &mut World, sub_id: &str, now: i64) -> ApiResult<()> {
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
pub(crate) const FINALIZE_AFTER: i64 = 3_600;

/// The hour after a renewal: the draft is finalized and charged, unless collection is
/// paused, in which case `pause_collection[behavior]` decides what becomes of it.
pub(crate) fn finalize_renewal(w: &mut World, ctx: &Ctx, sub_id: &str, now: i64) -> ApiResult<()> {
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
pub(crate) fn metered_usage(
    w: &World,
    item: &Value,
    customer: &str,
    (from, to): (i64, i64),
) -> i64 {
    item["price"]["recurring"]["meter"]
        .as_str()
        .and_then(|meter| meter_usage(w, meter, customer, from, to).ok())
        .unwrap_or(0)
}

/// The next thing that happens to a subscription on its own, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    TrialWillEnd,
    Renew,
    Finalize,
    EndAtPeriodEnd,
    RetryInvoice,
    Unpause,
}

/// The earliest thing due on a subscription, with when.
pub(crate) fn next_due(w: &World, sub: &Value) -> Option<(i64, Due)> {
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

/// Does what fell due on a subscription at `now`.
pub(crate) fn run_due(w: &mut World, ctx: &Ctx, sub_id: &str, due: Due, now: i64) -> ApiResult<()> {
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

/// Runs, in time order and each at its own time, everything that falls due on the
/// clock's subscriptions up to `target`.
pub(crate) fn run_until(
    w: &mut World,
    ctx: &Ctx,
    clock: &str,
    current: i64,
    target: i64,
) -> ApiResult<()> {
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
