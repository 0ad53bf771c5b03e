//! Disputes: raised by Stripe's dispute test cards (or the `/_sandbox` admin route), the
//! money and Stripe's dispute fee withdrawn at once, and given back only if the dispute is
//! won.

use serde_json::{Value, json};

use crate::api::list;
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::World;

/// Stripe's dispute fee in the US, in cents: "When a client initiates a chargeback the
/// disputed amount, plus a $15 Stripe dispute fee, is debited from your Stripe account"
/// (Stripe's pricing, as its users quote it); the sandbox's account is a US one.
pub const DISPUTE_FEE: i64 = 1500;

/// How long the merchant has to answer a dispute before `evidence_details.due_by`.
const EVIDENCE_DAYS: i64 = 21;

/// A `balance_transaction` for money a dispute moves (negative: withdrawn).
fn balance_transaction(
    dispute: &str,
    amount: i64,
    fee: i64,
    currency: &Value,
    now: i64,
    category: &str,
    description: String,
) -> Value {
    json!({
        "id": new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "balance_type": "payments",
        "created": now,
        "currency": currency,
        "description": description,
        "exchange_rate": null,
        "fee": fee,
        "fee_details": if fee > 0 {
            json!([{ "amount": fee, "application": null, "currency": "usd", "description": "Dispute fee", "type": "stripe_fee" }])
        } else {
            json!([])
        },
        "net": amount - fee,
        "reporting_category": category,
        "source": dispute,
        "status": "available",
        "type": "adjustment",
    })
}

/// Raises a dispute on a succeeded charge. Stripe "debit[s] your Stripe balance for the
/// dispute amount plus the network dispute fee. This will appear in your balance history as
/// a single balance transaction for the dispute amount and fee." (support.stripe.com,
/// Dispute fees FAQ): the dispute's `balance_transactions` holds that one transaction, and
/// `charge.dispute.funds_withdrawn` follows `charge.dispute.created`.
pub fn open_dispute(w: &mut World, charge_id: &str, reason: &str) -> ApiResult {
    let charge = w.fetch("charge", charge_id, "charge", "charge")?;
    if charge["status"] != "succeeded" {
        return Err(ApiError::invalid(format!(
            "Charge {charge_id} did not succeed and cannot be disputed."
        )));
    }
    if charge["disputed"] == true {
        return Err(ApiError::invalid(format!(
            "Charge {charge_id} is already disputed."
        )));
    }
    let customer = charge["customer"].as_str().map(str::to_owned);
    let now = w.now_for_customer(customer.as_deref());
    let amount =
        charge["amount"].as_i64().unwrap_or(0) - charge["amount_refunded"].as_i64().unwrap_or(0);
    let id = new_id("dp");
    let withdrawal = balance_transaction(
        &id,
        -amount,
        DISPUTE_FEE,
        &charge["currency"],
        now,
        "dispute",
        format!("Chargeback withdrawal for {charge_id}"),
    );
    let dispute = json!({
        "id": id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [withdrawal],
        "charge": charge_id,
        "created": now,
        "currency": charge["currency"],
        "enhanced_eligibility_types": [],
        "evidence": evidence(),
        "evidence_details": {
            "due_by": now + EVIDENCE_DAYS * 86_400,
            "enhanced_eligibility": {},
            "has_evidence": false,
            "past_due": false,
            "submission_count": 0,
        },
        "is_charge_refundable": false,
        "livemode": false,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "needs_response",
    });
    let dispute = w.insert(dispute);
    w.update(charge_id, |c| c["disputed"] = json!(true));
    w.emit("charge.dispute.created", &dispute, None, now);
    w.emit("charge.dispute.funds_withdrawn", &dispute, None, now);
    Ok(dispute)
}

/// The evidence of a dispute no one has answered yet: every field empty.
fn evidence() -> Value {
    let mut e = serde_json::Map::new();
    for field in [
        "access_activity_log",
        "billing_address",
        "cancellation_policy",
        "cancellation_policy_disclosure",
        "cancellation_rebuttal",
        "customer_communication",
        "customer_email_address",
        "customer_name",
        "customer_purchase_ip",
        "customer_signature",
        "duplicate_charge_documentation",
        "duplicate_charge_explanation",
        "duplicate_charge_id",
        "product_description",
        "receipt",
        "refund_policy",
        "refund_policy_disclosure",
        "refund_refusal_explanation",
        "service_date",
        "service_documentation",
        "shipping_address",
        "shipping_carrier",
        "shipping_date",
        "shipping_documentation",
        "shipping_tracking_number",
        "uncategorized_file",
        "uncategorized_text",
    ] {
        e.insert(field.to_owned(), Value::Null);
    }
    e.insert("enhanced_evidence".into(), json!({}));
    Value::Object(e)
}

/// Closes a dispute as `lost` (what closing through the API means: "Closing the dispute for
/// a charge indicates that you do not have any evidence to submit and are essentially
/// dismissing the dispute, acknowledging it as lost", API reference) or `won`. Lost, the
/// money stays withdrawn; won, the disputed amount comes back
/// (`charge.dispute.funds_reinstated`, with a second balance transaction) — "If the dispute
/// is found in your favor, the disputed amount [...] is returned to you" (support.stripe.com,
/// Disputes) — while the dispute fee stays taken.
pub fn close_dispute(w: &mut World, id: &str, status: &str) -> ApiResult {
    let dispute = w.fetch("dispute", id, "dispute", "dispute")?;
    if matches!(dispute["status"].as_str(), Some("won" | "lost")) {
        return Err(ApiError::invalid(format!(
            "This dispute is already closed ({}).",
            dispute["status"].as_str().unwrap_or_default()
        )));
    }
    if !matches!(status, "won" | "lost") {
        return Err(ApiError::param("status", "status must be won or lost"));
    }
    let charge = dispute["charge"].as_str().unwrap_or_default().to_owned();
    let customer = w
        .get(&charge)
        .and_then(|c| c["customer"].as_str())
        .map(str::to_owned);
    let now = w.now_for_customer(customer.as_deref());
    let reinstated = (status == "won").then(|| {
        balance_transaction(
            id,
            dispute["amount"].as_i64().unwrap_or(0),
            0,
            &dispute["currency"],
            now,
            "dispute_reversal",
            format!("Chargeback reversal for {charge}"),
        )
    });
    let (dispute, prev) = w.update(id, |d| {
        d["status"] = json!(status);
        if let (Some(bt), Some(list)) = (&reinstated, d["balance_transactions"].as_array_mut()) {
            list.push(bt.clone());
        }
    });
    if reinstated.is_some() {
        w.emit("charge.dispute.funds_reinstated", &dispute, None, now);
    }
    w.emit("charge.dispute.closed", &dispute, Some(prev), now);
    Ok(dispute)
}

/// `GET /v1/disputes`, newest first, filtered by charge or payment intent.
pub fn list_disputes(w: &World, p: &Value) -> ApiResult {
    list(
        w.all("dispute")
            .filter(|x| p["charge"].as_str().is_none_or(|c| x["charge"] == c))
            .filter(|x| {
                p["payment_intent"]
                    .as_str()
                    .is_none_or(|c| x["payment_intent"] == c)
            }),
        "/v1/disputes",
        p,
    )
}
