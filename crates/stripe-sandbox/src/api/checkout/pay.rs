//! Paying a Checkout Session on its hosted page: the card checked and charged (or
//! 3-D Secure asked for), the customer and subscription made, and the session completed.

use serde_json::{Value, json};

use super::mark_expired;
use crate::api::Ctx;
use crate::api::payments::{self, Outcome, Payment};
use crate::error::ApiResult;
use crate::world::{CardBehaviour, Decline, World};

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
pub(crate) struct Paying<'a> {
    id: &'a str,
    session: &'a Value,
    hidden: &'a Value,
    email: &'a str,
    pm: Option<&'a str>,
    authenticated: bool,
    now: i64,
}

/// Payment mode: one payment intent per session, reused across attempts, as Stripe does.
pub(crate) fn pay_payment(w: &mut World, p: Paying) -> ApiResult<PageOutcome> {
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
            let c = crate::api::customers::create(w, &json!({ "email": email }))?;
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
pub(crate) fn pay_subscription(
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
            let c = crate::api::customers::create(w, &json!({ "email": email }))?;
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
    let started = crate::api::billing::subscriptions::start_subscription(
        w,
        ctx,
        crate::api::billing::subscriptions::NewSubscription {
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
pub(crate) fn redeem_discount(w: &mut World, session: &Value) {
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
pub(crate) struct Completion<'a> {
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
pub(crate) fn complete(w: &mut World, id: &str, c: Completion) -> PageOutcome {
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
    save_to_customer(w, id, &customer_details, c.now);
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

/// What `customer_update` lets Checkout write back to the session's existing customer:
/// `address: auto` saves the billing address collected, `name: auto` the name. ("Describes
/// whether Checkout saves the billing address onto `customer.address`" / "the name onto
/// `customer.name`. Defaults to `never`.", API reference, customer_update.) The hosted page
/// collects no shipping address, so `shipping: auto` has nothing to save here.
fn save_to_customer(w: &mut World, session_id: &str, details: &Value, now: i64) {
    let Some(customer) = w
        .get(session_id)
        .and_then(|s| s["customer"].as_str())
        .map(str::to_owned)
    else {
        return;
    };
    let update = w
        .hidden
        .get(session_id)
        .map(|h| h["customer_update"].clone())
        .unwrap_or(Value::Null);
    let save_address = update["address"] == "auto";
    let save_name = update["name"] == "auto" && details["name"].is_string();
    if !save_address && !save_name {
        return;
    }
    let (updated, prev) = w.update(&customer, |c| {
        if save_address {
            c["address"] = details["address"].clone();
        }
        if save_name {
            c["name"] = details["name"].clone();
        }
    });
    if prev.as_object().is_some_and(|m| !m.is_empty()) {
        w.emit("customer.updated", &updated, Some(prev), now);
    }
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
