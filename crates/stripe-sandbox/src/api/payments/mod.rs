//! Money movement: payment methods from Stripe's test cards, payment intents and charges
//! (here), refunds (`refunds`) and disputes (`disputes`).

pub mod disputes;
pub mod refunds;

use serde_json::{Value, json};

use super::list;
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, random_chars};
use crate::world::{CardBehaviour, Decline, World};

/// A test card's brand, funding and behaviour, or the error Stripe gives for the number.
pub fn test_card(number: &str) -> Result<(&'static str, &'static str, CardBehaviour), Decline> {
    let digits: String = number
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) || !luhn(&digits) {
        return Err(Decline {
            code: "incorrect_number",
            decline_code: None,
            message: "Your card number is incorrect.",
        });
    }
    let card = match digits.as_str() {
        "4242424242424242" => ("visa", "credit", CardBehaviour::Succeeds),
        "4000056655665556" => ("visa", "debit", CardBehaviour::Succeeds),
        "5555555555554444" => ("mastercard", "credit", CardBehaviour::Succeeds),
        "378282246310005" => ("amex", "credit", CardBehaviour::Succeeds),
        "4000000000000002" => ("visa", "credit", CardBehaviour::Declines(Decline::GENERIC)),
        "4000000000009995" => (
            "visa",
            "credit",
            CardBehaviour::Declines(Decline::INSUFFICIENT_FUNDS),
        ),
        "4000000000000069" => (
            "visa",
            "credit",
            CardBehaviour::Declines(Decline::EXPIRED_CARD),
        ),
        "4000000000000127" => (
            "visa",
            "credit",
            CardBehaviour::Declines(Decline::INCORRECT_CVC),
        ),
        // Stripe's testing docs, Refunds and Disputes.
        "4000000000005126" => ("visa", "credit", CardBehaviour::RefundFails),
        "4000000000000259" => ("visa", "credit", CardBehaviour::Disputed("fraudulent")),
        "4000000000002685" => (
            "visa",
            "credit",
            CardBehaviour::Disputed("product_not_received"),
        ),
        "4000002500003155" => ("visa", "credit", CardBehaviour::Requires3ds),
        "4000000000000341" => ("visa", "credit", CardBehaviour::AttachThenFail),
        _ => {
            return Err(Decline {
                code: "card_declined",
                decline_code: Some("test_mode_live_card"),
                message: "Your card was declined. Your request was in test mode, but used a non test card. For a list of valid test cards, visit: https://stripe.com/docs/testing.",
            });
        }
    };
    Ok(card)
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Creates a card payment method from a test card number (what the hosted page does when a
/// person types a card).
pub fn create_card_payment_method(
    w: &mut World,
    number: &str,
    email: Option<&str>,
    now: i64,
) -> Result<Value, Decline> {
    let (brand, funding, behaviour) = test_card(number)?;
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let last4 = &digits[digits.len() - 4..];
    let pm = json!({
        "id": new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": { "city": null, "country": "US", "line1": null, "line2": null, "postal_code": "42424", "state": null },
            "email": email,
            "name": null,
            "phone": null,
            "tax_id": null,
        },
        "card": {
            "brand": brand,
            "checks": { "address_line1_check": null, "address_postal_code_check": "pass", "cvc_check": "pass" },
            "country": "US",
            "display_brand": brand,
            "exp_month": 12,
            "exp_year": chrono::DateTime::from_timestamp(now, 0).map(|t| t.format("%Y").to_string().parse::<i64>().unwrap_or(2030) + 4).unwrap_or(2030),
            "fingerprint": random_chars(16),
            "funding": funding,
            "generated_from": null,
            "last4": last4,
            "networks": { "available": [brand], "preferred": null },
            "regulated_status": "unregulated",
            "three_d_secure_usage": { "supported": true },
            "wallet": null,
        },
        "created": now,
        "customer": null,
        "livemode": false,
        "metadata": {},
        "type": "card",
    });
    let id = pm["id"].as_str().unwrap_or_default().to_owned();
    w.cards.insert(id, behaviour);
    Ok(w.insert(pm))
}

/// Attaches a card to a customer. Stripe checks the card with the issuer on attach, so a
/// card that declines every charge (0002, 9995, ...) is refused here; 0341 attaches.
pub fn attach_payment_method(w: &mut World, pm: &str, customer: &str) -> ApiResult<Value> {
    w.fetch("payment_method", pm, "PaymentMethod", "payment_method")?;
    if let Some(CardBehaviour::Declines(d)) = w.cards.get(pm).copied() {
        return Err(ApiError::card(d.code, d.decline_code, d.message).with_param("payment_method"));
    }
    let now = w.now_for_customer(Some(customer));
    let (method, prev) = w.update(pm, |m| m["customer"] = json!(customer));
    w.emit("payment_method.attached", &method, Some(prev), now);
    Ok(method)
}

/// What a charge attempt came to.
pub enum Outcome {
    /// The payment intent succeeded.
    Succeeded(Value),
    /// 3-D Secure must be completed by the payer.
    RequiresAction(Value),
    /// Declined: the payment intent (with `last_payment_error`) and the error to show.
    Failed(Value, ApiError),
}

/// A payment to attempt.
pub struct Payment<'a> {
    pub amount: i64,
    pub currency: &'a str,
    pub customer: Option<&'a str>,
    pub payment_method: &'a str,
    pub metadata: Value,
    pub description: Option<String>,
    /// A renewal or retry without the payer present: 3-D Secure cards set up earlier pass.
    pub off_session: bool,
    /// Reuse this payment intent (a second try on the same Checkout page).
    pub payment_intent: Option<String>,
    /// The payer completed 3-D Secure.
    pub authenticated: bool,
    /// The invoice this payment pays: a new payment intent is recorded in its `payments`.
    pub invoice: Option<String>,
    pub now: i64,
}

/// Creates (or reuses) a payment intent for `pay` and charges the card, emitting the events
/// Stripe emits on the way.
pub fn charge(w: &mut World, pay: Payment) -> ApiResult<Outcome> {
    let behaviour = w
        .cards
        .get(pay.payment_method)
        .copied()
        .unwrap_or(CardBehaviour::Succeeds);
    let pi_id = match pay
        .payment_intent
        .as_deref()
        .filter(|id| w.get(id).is_some())
    {
        Some(id) => {
            let (pi, prev) = w.update(id, |pi| {
                pi["payment_method"] = json!(pay.payment_method);
                pi["customer"] = json!(pay.customer);
            });
            if !prev.as_object().is_some_and(|m| m.is_empty()) {
                w.emit("payment_intent.updated", &pi, Some(prev), pay.now);
            }
            id.to_owned()
        }
        None => {
            let id = new_id("pi");
            let pi = json!({
                "id": id,
                "object": "payment_intent",
                "amount": pay.amount,
                "amount_capturable": 0,
                "amount_details": { "tip": {} },
                "amount_received": 0,
                "application": null,
                "application_fee_amount": null,
                "automatic_payment_methods": null,
                "canceled_at": null,
                "cancellation_reason": null,
                "capture_method": "automatic_async",
                "client_secret": format!("{id}_secret_{}", random_chars(24)),
                "confirmation_method": "automatic",
                "created": pay.now,
                "currency": pay.currency,
                "customer": pay.customer,
                "description": pay.description,
                "last_payment_error": null,
                "latest_charge": null,
                "livemode": false,
                "metadata": pay.metadata,
                "next_action": null,
                "on_behalf_of": null,
                "payment_method": pay.payment_method,
                "payment_method_options": {},
                "payment_method_types": ["card"],
                "processing": null,
                "receipt_email": null,
                "review": null,
                "setup_future_usage": null,
                "shipping": null,
                "statement_descriptor": null,
                "statement_descriptor_suffix": null,
                "status": "requires_payment_method",
                "transfer_data": null,
                "transfer_group": null,
            });
            let pi = w.insert(pi);
            if let Some(invoice) = &pay.invoice {
                link_invoice_payment(w, invoice, &pi, pay.now);
            }
            w.emit("payment_intent.created", &pi, None, pay.now);
            id
        }
    };

    let decline = match behaviour {
        CardBehaviour::Succeeds | CardBehaviour::RefundFails | CardBehaviour::Disputed(_) => None,
        CardBehaviour::Requires3ds if pay.off_session || pay.authenticated => None,
        CardBehaviour::Requires3ds => {
            let (pi, prev) = w.update(&pi_id, |pi| {
                pi["status"] = json!("requires_action");
                pi["next_action"] = json!({
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": { "type": "three_d_secure_redirect", "stripe_js": "" },
                });
            });
            w.emit("payment_intent.requires_action", &pi, Some(prev), pay.now);
            return Ok(Outcome::RequiresAction(pi));
        }
        CardBehaviour::Declines(d) => Some(d),
        CardBehaviour::AttachThenFail => Some(Decline::GENERIC),
    };

    let charge_id = new_id("ch");
    let pm = w.get(pay.payment_method).cloned().unwrap_or(Value::Null);
    let charge = json!({
        "id": charge_id,
        "object": "charge",
        "amount": pay.amount,
        "amount_captured": if decline.is_none() { pay.amount } else { 0 },
        "amount_refunded": 0,
        "application_fee_amount": null,
        "balance_transaction": if decline.is_none() { json!(new_id("txn")) } else { Value::Null },
        "billing_details": pm["billing_details"],
        "captured": decline.is_none(),
        "created": pay.now,
        "currency": pay.currency,
        "customer": pay.customer,
        "description": pay.description,
        "disputed": false,
        "failure_balance_transaction": null,
        "failure_code": decline.map(|d| d.code),
        "failure_message": decline.map(|d| d.message),
        "fraud_details": {},
        "livemode": false,
        "metadata": pay.metadata,
        "outcome": match decline {
            None => json!({ "network_status": "approved_by_network", "reason": null, "risk_level": "normal", "risk_score": 20, "seller_message": "Payment complete.", "type": "authorized" }),
            Some(d) => json!({ "network_status": "declined_by_network", "reason": d.decline_code, "risk_level": "normal", "risk_score": 20, "seller_message": "The bank did not return any further details with this decline.", "type": "issuer_declined" }),
        },
        "paid": decline.is_none(),
        "payment_intent": pi_id,
        "payment_method": pay.payment_method,
        "payment_method_details": { "card": card_details(&pm["card"], decline.is_none().then_some(pay.amount), behaviour, pay.authenticated), "type": "card" },
        "receipt_email": null,
        "receipt_url": null,
        "refunded": false,
        "review": null,
        "shipping": null,
        "status": if decline.is_none() { "succeeded" } else { "failed" },
    });
    let charge = w.insert(charge);

    match decline {
        None => {
            w.emit("charge.succeeded", &charge, None, pay.now);
            let (pi, prev) = w.update(&pi_id, |pi| {
                pi["status"] = json!("succeeded");
                pi["amount_received"] = json!(pay.amount);
                pi["latest_charge"] = json!(charge_id);
                pi["next_action"] = Value::Null;
                pi["last_payment_error"] = Value::Null;
            });
            w.emit("payment_intent.succeeded", &pi, Some(prev), pay.now);
            // Stripe's dispute test cards (docs.stripe.com/testing, Disputes): the charge
            // succeeds, then the cardholder disputes it.
            if let CardBehaviour::Disputed(reason) = behaviour {
                disputes::open_dispute(w, &charge_id, reason)?;
            }
            Ok(Outcome::Succeeded(pi))
        }
        Some(d) => {
            w.emit("charge.failed", &charge, None, pay.now);
            let error = ApiError::card(d.code, d.decline_code, d.message)
                .with_extra("charge", json!(charge_id))
                .with_extra("payment_intent", json!(pi_id));
            let last_error = json!({
                "charge": charge_id,
                "code": d.code,
                "decline_code": d.decline_code,
                "message": d.message,
                "payment_method": pm,
                "type": "card_error",
            });
            let (pi, prev) = w.update(&pi_id, |pi| {
                pi["status"] = json!("requires_payment_method");
                pi["latest_charge"] = json!(charge_id);
                pi["last_payment_error"] = last_error;
                pi["next_action"] = Value::Null;
            });
            w.emit("payment_intent.payment_failed", &pi, Some(prev), pay.now);
            Ok(Outcome::Failed(pi, error))
        }
    }
}

/// A charge's `payment_method_details.card`: what happened to this payment on the card (the
/// schema `payment_method_details_card`), not the card's own fields as the payment method
/// shows them.
fn card_details(
    card: &Value,
    authorized: Option<i64>,
    behaviour: CardBehaviour,
    authenticated: bool,
) -> Value {
    let three_d_secure = if behaviour == CardBehaviour::Requires3ds && authenticated {
        json!({
            "authentication_flow": "challenge",
            "electronic_commerce_indicator": "05",
            "exemption_indicator": null,
            "result": "authenticated",
            "result_reason": null,
            "transaction_id": random_chars(36),
            "version": "2.2.0",
        })
    } else {
        Value::Null
    };
    json!({
        "amount_authorized": authorized,
        "authorization_code": authorized.map(|_| random_chars(6).to_uppercase()),
        "brand": card["brand"],
        "checks": card["checks"],
        "country": card["country"],
        "exp_month": card["exp_month"],
        "exp_year": card["exp_year"],
        "extended_authorization": { "status": "disabled" },
        "fingerprint": card["fingerprint"],
        "funding": card["funding"],
        "incremental_authorization": { "status": "unavailable" },
        "installments": null,
        "last4": card["last4"],
        "mandate": null,
        "multicapture": { "status": "unavailable" },
        "network": card["brand"],
        "network_token": { "used": false },
        "network_transaction_id": authorized.map(|_| random_chars(15)),
        "overcapture": { "maximum_amount_capturable": authorized.unwrap_or(0), "status": "unavailable" },
        "regulated_status": card["regulated_status"],
        "three_d_secure": three_d_secure,
        "wallet": null,
    })
}

/// Records a payment intent on an invoice as Stripe's Invoice Payments do: an
/// `invoice_payment` in the invoice's `payments` list, the only link between the two in
/// this API version (the payment intent has no `invoice` field any more).
fn link_invoice_payment(w: &mut World, invoice: &str, pi: &Value, now: i64) {
    let record = json!({
        "id": new_id("inpay"),
        "object": "invoice_payment",
        "amount_paid": null,
        "amount_requested": pi["amount"],
        "created": now,
        "currency": pi["currency"],
        "invoice": invoice,
        "is_default": true,
        "livemode": false,
        "payment": { "payment_intent": pi["id"], "type": "payment_intent" },
        "status": "open",
        "status_transitions": { "canceled_at": null, "paid_at": null },
    });
    w.hidden
        .entry(invoice.to_owned())
        .or_insert_with(|| json!({}))["payment_intent"] = pi["id"].clone();
    w.update(invoice, |inv| {
        if let Some(data) = inv["payments"]["data"].as_array_mut() {
            for earlier in data.iter_mut() {
                earlier["is_default"] = json!(false);
            }
            data.insert(0, record);
        }
    });
}

/// The payer failed 3-D Secure: the payment intent goes back to needing a payment method.
pub fn fail_authentication(w: &mut World, pi_id: &str, now: i64) -> ApiError {
    let message = "We are unable to authenticate your payment method. Please choose a different payment method and try again.";
    let (pi, prev) = w.update(pi_id, |pi| {
        pi["status"] = json!("requires_payment_method");
        pi["next_action"] = Value::Null;
        pi["last_payment_error"] = json!({
            "code": "payment_intent_authentication_failure",
            "message": message,
            "type": "invalid_request_error",
        });
    });
    w.emit("payment_intent.payment_failed", &pi, Some(prev), now);
    ApiError::invalid(message).with_code("payment_intent_authentication_failure")
}

/// `GET /v1/customers/{id}/payment_methods`.
pub fn list_customer_payment_methods(w: &World, customer: &str, p: &Value) -> ApiResult {
    w.fetch("customer", customer, "customer", "customer")?;
    list(
        w.all("payment_method")
            .filter(|m| m["customer"] == customer),
        &format!("/v1/customers/{customer}/payment_methods"),
        p,
    )
}

/// `GET /v1/payment_intents`.
pub fn list_payment_intents(w: &World, p: &Value) -> ApiResult {
    list(
        w.all("payment_intent")
            .filter(|x| p["customer"].as_str().is_none_or(|c| x["customer"] == c))
            .filter(|x| super::matches_range(x, "created", &p["created"])),
        "/v1/payment_intents",
        p,
    )
}

/// `GET /v1/charges`.
pub fn list_charges(w: &World, p: &Value) -> ApiResult {
    list(
        w.all("charge")
            .filter(|x| p["customer"].as_str().is_none_or(|c| x["customer"] == c))
            .filter(|x| {
                p["payment_intent"]
                    .as_str()
                    .is_none_or(|c| x["payment_intent"] == c)
            }),
        "/v1/charges",
        p,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_test_cards_pass_the_luhn_check_and_map_to_their_behaviour() {
        assert_eq!(
            test_card("4242 4242 4242 4242").map(|c| c.2),
            Ok(CardBehaviour::Succeeds)
        );
        assert_eq!(
            test_card("4000000000000341").map(|c| c.2),
            Ok(CardBehaviour::AttachThenFail)
        );
        assert_eq!(
            test_card("4000002500003155").map(|c| c.2),
            Ok(CardBehaviour::Requires3ds)
        );
        assert!(matches!(
            test_card("4000000000009995").map(|c| c.2),
            Ok(CardBehaviour::Declines(Decline {
                decline_code: Some("insufficient_funds"),
                ..
            }))
        ));
    }

    #[test]
    fn a_mistyped_number_is_incorrect_and_a_real_looking_one_is_a_live_card() {
        assert_eq!(
            test_card("4242424242424241")
                .map(|c| c.2)
                .map_err(|d| d.code),
            Err("incorrect_number")
        );
        assert_eq!(
            test_card("4012888888881881")
                .map(|c| c.2)
                .map_err(|d| d.decline_code),
            Err(Some("test_mode_live_card"))
        );
    }
}
