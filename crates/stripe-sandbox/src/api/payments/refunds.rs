//! Refunds: full or partial, never more than what is left of the charge; and the refund of a
//! 4000 0000 0000 5126 payment, which fails after it was created.

use serde_json::{Value, json};

use crate::api::{display_amount, list};
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::{CardBehaviour, Pending, World, metadata_of};

/// `POST /v1/refunds`.
pub fn create_refund(w: &mut World, p: &Value) -> ApiResult {
    let charge_id = match (p["charge"].as_str(), p["payment_intent"].as_str()) {
        (Some(ch), _) => w.fetch("charge", ch, "charge", "charge")?["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        (None, Some(pi)) => {
            let intent = w.fetch("payment_intent", pi, "payment_intent", "payment_intent")?;
            if intent["status"] != "succeeded" {
                return Err(ApiError::param(
                    "payment_intent",
                    format!(
                        "This PaymentIntent ({pi}) does not have a successful charge to refund."
                    ),
                ));
            }
            intent["latest_charge"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "One of the following params should be provided for this request: payment_intent or charge.",
            ));
        }
    };
    let charge = w.fetch("charge", &charge_id, "charge", "charge")?;
    if charge["status"] != "succeeded" {
        return Err(ApiError::param(
            "charge",
            format!("Charge {charge_id} has not succeeded; it cannot be refunded."),
        ));
    }
    if charge["disputed"] == true {
        return Err(ApiError::invalid(format!(
            "Charge {charge_id} has been charged back; cannot issue a refund."
        ))
        .with_code("charge_disputed"));
    }
    let amount = charge["amount"].as_i64().unwrap_or(0);
    let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
    let remaining = amount - refunded;
    let currency = charge["currency"].as_str().unwrap_or("usd").to_owned();
    if remaining <= 0 {
        return Err(
            ApiError::invalid(format!("Charge {charge_id} has already been refunded."))
                .with_code("charge_already_refunded"),
        );
    }
    let refund_amount = p["amount"].as_i64().unwrap_or(remaining);
    if refund_amount <= 0 {
        return Err(ApiError::param("amount", "Invalid positive integer"));
    }
    if refund_amount > remaining {
        return Err(ApiError::param(
            "amount",
            format!(
                "Refund amount ({}) is greater than unrefunded amount on charge ({})",
                display_amount(refund_amount, &currency),
                display_amount(remaining, &currency)
            ),
        ));
    }
    let customer = charge["customer"].as_str().map(str::to_owned);
    let now = w.now_for_customer(customer.as_deref());
    let id = new_id("re");
    let refund = json!({
        "id": id,
        "object": "refund",
        "amount": refund_amount,
        "balance_transaction": new_id("txn"),
        "charge": charge_id,
        "created": now,
        "currency": currency,
        "destination_details": { "card": { "reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund" }, "type": "card" },
        "metadata": metadata_of(p),
        "payment_intent": charge["payment_intent"],
        "reason": p.get("reason").cloned().unwrap_or(Value::Null),
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": "succeeded",
        "transfer_reversal": null,
    });
    let refund = w.insert(refund);
    w.emit("refund.created", &refund, None, now);
    let total = refunded + refund_amount;
    let (charge, prev) = w.update(&charge_id, |c| {
        c["amount_refunded"] = json!(total);
        c["refunded"] = json!(total == amount);
    });
    w.emit("charge.refunded", &charge, Some(prev), now);
    let fails = charge["payment_method"]
        .as_str()
        .and_then(|pm| w.cards.get(pm))
        .is_some_and(|b| *b == CardBehaviour::RefundFails);
    if fails {
        // 4000 0000 0000 5126: "Charge succeeds but refunding a captured charge fails
        // asynchronously with a failure_reason of expired_or_canceled_card. Note that because
        // refund failures are asynchronous, the refund will appear to be successful at first
        // and will only have the failed status on subsequent fetches. We also notify you of
        // refund failures using the charge.refund.updated webhook event." (Stripe's testing
        // docs, Refunds)
        w.hidden.entry(id.clone()).or_insert_with(|| json!({}))["will_fail"] = json!(true);
        w.touch();
        w.pending.push(Pending::FailRefund(id));
    }
    Ok(refund)
}

/// The refund of a 5126 payment fails: `status: failed` with `failure_reason`, the amount
/// goes back onto the charge (`amount_refunded` drops), and Stripe's events for it:
/// `refund.updated`, `refund.failed` and `charge.refund.updated`.
pub fn fail_refund(w: &mut World, id: &str) -> ApiResult<()> {
    let refund = w.fetch("refund", id, "refund", "refund")?;
    let will_fail = w
        .hidden
        .get_mut(id)
        .and_then(|h| h.as_object_mut())
        .and_then(|h| h.remove("will_fail"))
        .is_some();
    if !will_fail || refund["status"] != "succeeded" {
        return Ok(());
    }
    let charge_id = refund["charge"].as_str().unwrap_or_default().to_owned();
    let customer = w
        .get(&charge_id)
        .and_then(|c| c["customer"].as_str())
        .map(str::to_owned);
    let now = w.now_for_customer(customer.as_deref());
    let amount = refund["amount"].as_i64().unwrap_or(0);
    let (refund, prev) = w.update(id, |r| {
        r["status"] = json!("failed");
        r["failure_reason"] = json!("expired_or_canceled_card");
        r["failure_balance_transaction"] = json!(new_id("txn"));
    });
    w.emit("refund.updated", &refund, Some(prev.clone()), now);
    w.emit("refund.failed", &refund, None, now);
    w.emit("charge.refund.updated", &refund, Some(prev), now);
    w.update(&charge_id, |c| {
        let left = c["amount_refunded"].as_i64().unwrap_or(0) - amount;
        c["amount_refunded"] = json!(left.max(0));
        c["refunded"] = json!(false);
    });
    Ok(())
}

/// `GET /v1/refunds`, newest first, filtered by charge or payment intent.
pub fn list_refunds(w: &World, p: &Value) -> ApiResult {
    list(
        w.all("refund")
            .filter(|x| p["charge"].as_str().is_none_or(|c| x["charge"] == c))
            .filter(|x| {
                p["payment_intent"]
                    .as_str()
                    .is_none_or(|c| x["payment_intent"] == c)
            }),
        "/v1/refunds",
        p,
    )
}
