//! The hosted pages a person (or a browser test) acts on: Checkout, its 3-D Secure step,
//! and the customer portal. Plain server-rendered HTML forms, so that plain HTTP form posts
//! drive them as well as a browser does.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::api::billing::{changes, subscriptions};
use crate::api::checkout::{self, PageOutcome};
use crate::api::{Ctx, display_amount, payments};
use crate::http::with_world;

/// Escapes text for HTML. Five characters; not worth a dependency.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; padding: 0 1rem; color: #1a1f36; }}
.banner {{ background: #fff4e5; border: 1px solid #f5a623; padding: .4rem .8rem; border-radius: 6px; font-size: .85rem; }}
table {{ width: 100%; border-collapse: collapse; margin: 1rem 0; }} td {{ padding: .3rem 0; }} td.amount {{ text-align: right; }}
tr.total td {{ border-top: 1px solid #ccc; font-weight: bold; }}
label {{ display: block; margin-top: .8rem; font-size: .9rem; }} input {{ width: 100%; padding: .5rem; font-size: 1rem; box-sizing: border-box; }}
button {{ margin-top: 1rem; padding: .6rem 1.2rem; font-size: 1rem; background: #635bff; color: white; border: 0; border-radius: 6px; cursor: pointer; }}
button.secondary {{ background: #e3e8ee; color: #1a1f36; }}
.error {{ color: #df1b41; margin-top: 1rem; }} .notice {{ color: #0a7c3f; margin-top: 1rem; }}
.sub {{ border: 1px solid #e3e8ee; border-radius: 8px; padding: .8rem 1rem; margin: 1rem 0; }}
</style></head>
<body><p class="banner">Stripe sandbox: test mode, no real money moves.</p>
{body}
</body></html>"#,
        title = esc(title)
    )
}

pub async fn index(State(shared): State<Arc<Shared>>) -> Html<String> {
    Html(layout(
        "Stripe sandbox",
        &format!(
            "<h1>Stripe sandbox</h1><p>Point a Stripe client at <code>{}</code> with any <code>sk_test_</code> key.</p>",
            esc(&shared.base_url)
        ),
    ))
}

fn checkout_html(
    w: &crate::world::World,
    session: &Value,
    error: Option<&str>,
    notice: Option<&str>,
    typed_email: Option<&str>,
) -> String {
    let id = session["id"].as_str().unwrap_or_default();
    let currency = session["currency"].as_str().unwrap_or("usd");
    let items = checkout::line_items_list(w, id, 100);
    let mut rows = String::new();
    for li in items["data"].as_array().into_iter().flatten() {
        let recurring = &li["price"]["recurring"];
        let per = match recurring["interval"].as_str() {
            Some(interval) => format!(" / {interval}"),
            None => String::new(),
        };
        rows.push_str(&format!(
            r#"<tr class="line-item"><td>{} × {}</td><td class="amount">{}{}</td></tr>"#,
            li["quantity"].as_i64().unwrap_or(1),
            esc(li["description"].as_str().unwrap_or("Item")),
            display_amount(li["amount_subtotal"].as_i64().unwrap_or(0), currency),
            esc(&per),
        ));
    }
    let discount = session["total_details"]["amount_discount"]
        .as_i64()
        .unwrap_or(0);
    if discount > 0 {
        rows.push_str(&format!(
            r#"<tr class="discount"><td>Discount</td><td class="amount">-{}</td></tr>"#,
            display_amount(discount, currency)
        ));
    }
    let trial = w
        .hidden
        .get(id)
        .and_then(|h| h["subscription_data"]["trial_period_days"].as_i64())
        .map(|d| format!("<p class=\"trial\">{d}-day free trial: nothing is charged today.</p>"))
        .unwrap_or_default();
    rows.push_str(&format!(
        r#"<tr class="total"><td>Total due today</td><td class="amount" id="total">{}</td></tr>"#,
        display_amount(session["amount_total"].as_i64().unwrap_or(0), currency)
    ));
    let status = session["status"].as_str().unwrap_or_default();
    if status != "open" {
        return layout(
            "Checkout",
            &format!(
                "<h1>Checkout</h1><p class=\"error\" id=\"error\">This Checkout Session is {}.</p>",
                esc(status)
            ),
        );
    }
    let email_field = if session["customer_email"].is_string()
        || session["customer_details"]["email"].is_string()
    {
        let email = session["customer_email"]
            .as_str()
            .or(session["customer_details"]["email"].as_str())
            .unwrap_or_default();
        format!(
            "<p>Email: <span id=\"customer-email\">{}</span></p>",
            esc(email)
        )
    } else {
        format!(
            r#"<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="email" value="{}" required>"#,
            esc(typed_email.unwrap_or_default())
        )
    };
    let promo = if session["allow_promotion_codes"] == true {
        format!(
            r#"<form method="post" action="/c/pay/{id}/promotion_code" id="promo-form"><label for="promotion_code">Promotion code</label><input id="promotion_code" name="code"><button class="secondary" type="submit" id="apply-promo">Apply</button></form>"#
        )
    } else {
        String::new()
    };
    let back = match session["cancel_url"].as_str() {
        Some(_) => format!(r#"<p><a id="back" href="/c/pay/{id}/cancel">← Back</a></p>"#),
        None => String::new(),
    };
    let error = error
        .map(|e| format!(r#"<p class="error" id="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let notice = notice
        .map(|n| format!(r#"<p class="notice" id="notice">{}</p>"#, esc(n)))
        .unwrap_or_default();
    let button = if session["mode"] == "subscription" {
        "Subscribe"
    } else {
        "Pay"
    };
    // `payment_method_collection=if_required` with nothing due now: the card is optional.
    let card_optional = session["mode"] == "subscription"
        && session["payment_method_collection"] == "if_required"
        && (!trial.is_empty() || session["amount_total"] == 0);
    let card_required = if card_optional { "" } else { " required" };
    let invalid = if error.is_empty() {
        ""
    } else {
        r#" aria-invalid="true" aria-describedby="error""#
    };
    layout(
        "Checkout",
        &format!(
            r#"{back}<h1>Checkout</h1><table>{rows}</table>{trial}{promo}{notice}
<form method="post" action="/c/pay/{id}" id="payment-form">
{email_field}
<label for="card_number">Card number</label><input id="card_number" name="card_number" inputmode="numeric" autocomplete="cc-number" placeholder="4242 4242 4242 4242"{card_required}{invalid}>
<label for="card_expiry">Expiry (MM / YY)</label><input id="card_expiry" name="card_expiry" autocomplete="cc-exp" placeholder="12 / 34">
<label for="card_cvc">CVC</label><input id="card_cvc" name="card_cvc" autocomplete="cc-csc" placeholder="123">
{error}
<button type="submit" id="submit">{button}</button>
</form>"#
        ),
    )
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(layout(
            "Not found",
            "<h1>Not found</h1><p>No such page.</p>",
        )),
    )
        .into_response()
}

fn ctx(shared: &Shared) -> Ctx<'_> {
    Ctx {
        base_url: &shared.base_url,
        config: &shared.config,
    }
}

pub async fn checkout_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    with_world(&shared, |w| {
        checkout::expire_due(w);
        match w.fetch("checkout.session", &id, "checkout.session", "session") {
            Ok(session) => Html(checkout_html(w, &session, None, None, None)).into_response(),
            Err(_) => not_found(),
        }
    })
}

#[derive(Deserialize)]
pub struct PayForm {
    card_number: Option<String>,
    email: Option<String>,
}

fn render_outcome(
    shared: &Shared,
    id: &str,
    outcome: PageOutcome,
    typed_email: Option<&str>,
) -> Response {
    match outcome {
        PageOutcome::Complete { redirect: Some(url) } => Redirect::to(&url).into_response(),
        PageOutcome::Complete { redirect: None } => Html(layout(
            "Payment complete",
            "<h1 id=\"complete\">Thanks for your payment</h1><p>You can close this page.</p>",
        ))
        .into_response(),
        PageOutcome::Authenticate => Html(layout(
            "3D Secure authentication",
            &format!(
                r#"<h1>3D Secure 2 test page</h1><p>This payment requires authentication. Complete or fail the test authentication.</p>
<form method="post" action="/c/pay/{id}/authenticate"><input type="hidden" name="action" value="complete"><button type="submit" id="authenticate-complete">Complete authentication</button></form>
<form method="post" action="/c/pay/{id}/authenticate"><input type="hidden" name="action" value="fail"><button class="secondary" type="submit" id="authenticate-fail">Fail authentication</button></form>"#
            ),
        ))
        .into_response(),
        PageOutcome::Error(message) => {
            let world = shared.world();
            match world.fetch("checkout.session", id, "checkout.session", "session") {
                Ok(session) => (
                    StatusCode::PAYMENT_REQUIRED,
                    Html(checkout_html(&world, &session, Some(&message), None, typed_email)),
                )
                    .into_response(),
                Err(_) => not_found(),
            }
        }
    }
}

pub async fn checkout_pay(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Form(form): Form<PayForm>,
) -> Response {
    let result = with_world(&shared, |w| {
        checkout::pay(
            w,
            &ctx(&shared),
            &id,
            form.card_number.as_deref().filter(|c| !c.trim().is_empty()),
            form.email.as_deref(),
            false,
        )
    });
    match result {
        Ok(outcome) => render_outcome(&shared, &id, outcome, form.email.as_deref()),
        Err(_) => not_found(),
    }
}

#[derive(Deserialize)]
pub struct AuthForm {
    action: String,
}

pub async fn checkout_authenticate(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Form(form): Form<AuthForm>,
) -> Response {
    let result = with_world(&shared, |w| {
        if form.action == "complete" {
            checkout::pay(w, &ctx(&shared), &id, None, None, true)
        } else {
            checkout::fail_authentication(w, &id).map(PageOutcome::Error)
        }
    });
    match result {
        Ok(outcome) => render_outcome(&shared, &id, outcome, None),
        Err(_) => not_found(),
    }
}

#[derive(Deserialize)]
pub struct PromoForm {
    code: String,
}

pub async fn checkout_promotion_code(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Form(form): Form<PromoForm>,
) -> Response {
    with_world(&shared, |w| {
        let result = checkout::apply_promotion_code(w, &id, &form.code);
        let Ok(session) = w.fetch("checkout.session", &id, "checkout.session", "session") else {
            return not_found();
        };
        match result {
            Ok(()) => Html(checkout_html(
                w,
                &session,
                None,
                Some("Promotion code applied."),
                None,
            ))
            .into_response(),
            Err(msg) => (
                StatusCode::BAD_REQUEST,
                Html(checkout_html(w, &session, Some(&msg), None, None)),
            )
                .into_response(),
        }
    })
}

pub async fn checkout_cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response {
    let session = shared
        .world()
        .fetch("checkout.session", &id, "checkout.session", "session");
    match session.ok().and_then(|s| {
        s["cancel_url"]
            .as_str()
            .map(|u| u.replace("{CHECKOUT_SESSION_ID}", &id))
    }) {
        Some(url) => Redirect::to(&url).into_response(),
        None => not_found(),
    }
}

#[derive(Deserialize)]
pub struct PortalQuery {
    done: Option<String>,
    error: Option<String>,
}

pub async fn portal_page(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<PortalQuery>,
) -> Response {
    let w = shared.world();
    let Ok(session) = w.fetch("billing_portal.session", &id, "session", "session") else {
        return not_found();
    };
    let customer = session["customer"].as_str().unwrap_or_default();
    let config = session["configuration"]
        .as_str()
        .and_then(|c| w.get(c))
        .cloned()
        .unwrap_or(Value::Null);
    let features = &config["features"];
    let subs: Vec<&Value> = w
        .all("subscription")
        .filter(|s| s["customer"] == customer && s["status"] != "canceled")
        .collect();
    let mut body = String::from("<h1>Manage your subscription</h1>");
    if let Some(h) = config["business_profile"]["headline"].as_str() {
        body.push_str(&format!("<p class=\"headline\">{}</p>", esc(h)));
    }
    if let Some(done) = &q.done {
        body.push_str(&format!(
            r#"<p class="notice" id="notice">{}</p>"#,
            esc(done)
        ));
    }
    if let Some(err) = &q.error {
        body.push_str(&format!(r#"<p class="error" id="error">{}</p>"#, esc(err)));
    }
    if subs.is_empty() {
        body.push_str("<p id=\"no-subscriptions\">No active subscriptions.</p>");
    }
    for sub in subs {
        let sid = sub["id"].as_str().unwrap_or_default();
        let item = &sub["items"]["data"][0];
        let price = &item["price"];
        let product = price["product"]
            .as_str()
            .and_then(|p| w.get(p))
            .and_then(|p| p["name"].as_str())
            .unwrap_or("Plan");
        let period_end = item["current_period_end"].as_i64().unwrap_or(0);
        let end_date = chrono::DateTime::from_timestamp(period_end, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        body.push_str(&format!(
            r#"<div class="sub" id="{sid}"><p><strong>{}</strong> — {} / {} <span class="status">{}</span></p>"#,
            esc(product),
            display_amount(price["unit_amount"].as_i64().unwrap_or(0), price["currency"].as_str().unwrap_or("usd")),
            esc(price["recurring"]["interval"].as_str().unwrap_or("month")),
            esc(sub["status"].as_str().unwrap_or_default()),
        ));
        if sub["cancel_at_period_end"] == true {
            body.push_str(&format!(
                r#"<p>Cancels on {end_date}.</p><form method="post" action="/p/session/{id}/resume"><input type="hidden" name="subscription" value="{sid}"><button type="submit" class="resume">Renew plan</button></form>"#
            ));
        } else {
            body.push_str(&format!("<p>Renews on {end_date}.</p>"));
            if features["subscription_cancel"]["enabled"] == true {
                body.push_str(&format!(
                    r#"<form method="post" action="/p/session/{id}/cancel"><input type="hidden" name="subscription" value="{sid}"><button type="submit" class="cancel secondary">Cancel plan</button></form>"#
                ));
            }
        }
        if features["subscription_update"]["enabled"] == true {
            for other in switchable_prices(&w, features, price) {
                let name = other["product"]
                    .as_str()
                    .and_then(|p| w.get(p))
                    .and_then(|p| p["name"].as_str())
                    .unwrap_or("Plan");
                let oid = other["id"].as_str().unwrap_or_default();
                body.push_str(&format!(
                    r#"<form method="post" action="/p/session/{id}/switch"><input type="hidden" name="subscription" value="{sid}"><input type="hidden" name="price" value="{oid}"><button type="submit" class="switch secondary" data-price="{oid}">Switch to {} ({} / {})</button></form>"#,
                    esc(name),
                    display_amount(other["unit_amount"].as_i64().unwrap_or(0), other["currency"].as_str().unwrap_or("usd")),
                    esc(other["recurring"]["interval"].as_str().unwrap_or("month")),
                ));
            }
        }
        body.push_str("</div>");
    }
    if features["payment_method_update"]["enabled"] == true {
        body.push_str(&format!(
            r#"<form method="post" action="/p/session/{id}/card" id="card-form"><label for="card_number">New card number</label><input id="card_number" name="card_number" required><button type="submit" id="update-card" class="secondary">Update payment method</button></form>"#
        ));
    }
    if let Some(url) = session["return_url"].as_str() {
        body.push_str(&format!(
            r#"<p><a id="return" href="{}">← Return</a></p>"#,
            esc(url)
        ));
    }
    Html(layout("Customer portal", &body)).into_response()
}

/// Other active recurring prices the configuration lets the customer switch to.
fn switchable_prices<'a>(
    w: &'a crate::world::World,
    features: &Value,
    current: &Value,
) -> Vec<&'a Value> {
    let allowed: Option<Vec<String>> =
        features["subscription_update"]["products"]
            .as_array()
            .map(|products| {
                products
                    .iter()
                    .flat_map(|p| p["prices"].as_array().cloned().unwrap_or_default())
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            });
    w.all("price")
        .filter(|p| p["active"] == true && p["type"] == "recurring" && p["id"] != current["id"])
        .filter(|p| p["currency"] == current["currency"])
        .filter(|p| match &allowed {
            Some(list) => list.iter().any(|a| p["id"] == a.as_str()),
            // No list configured: any recurring price in the same currency.
            None => true,
        })
        .collect()
}

#[derive(Deserialize)]
pub struct PortalForm {
    subscription: Option<String>,
    price: Option<String>,
    card_number: Option<String>,
}

pub async fn portal_action(
    State(shared): State<Arc<Shared>>,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<PortalForm>,
) -> Response {
    let ctx = ctx(&shared);
    let result: Result<&str, String> = with_world(&shared, |w| {
        let session = w
            .fetch("billing_portal.session", &id, "session", "session")
            .map_err(|e| e.message)?;
        let customer = session["customer"].as_str().unwrap_or_default().to_owned();
        let config = session["configuration"]
            .as_str()
            .and_then(|c| w.get(c))
            .cloned()
            .unwrap_or(Value::Null);
        let features = config["features"].clone();
        // The subscription must be this customer's.
        let sub = match &form.subscription {
            Some(s) => {
                let sub = w
                    .fetch("subscription", s, "subscription", "subscription")
                    .map_err(|e| e.message)?;
                if sub["customer"] != customer.as_str() {
                    return Err("No such subscription.".to_owned());
                }
                Some(s.clone())
            }
            None => None,
        };
        let need_sub = || {
            sub.clone()
                .ok_or_else(|| "Choose a subscription.".to_owned())
        };
        match action.as_str() {
            "cancel" if features["subscription_cancel"]["enabled"] == true => {
                let sub = need_sub()?;
                if features["subscription_cancel"]["mode"] == "immediately" {
                    subscriptions::cancel_subscription_now(w, &ctx, &sub, &json!({}))
                        .map_err(|e| e.message)?;
                } else {
                    changes::update_subscription(
                        w,
                        &ctx,
                        &sub,
                        &json!({ "cancel_at_period_end": true }),
                    )
                    .map_err(|e| e.message)?;
                }
                Ok("Your plan has been canceled.")
            }
            "resume" => {
                changes::update_subscription(
                    w,
                    &ctx,
                    &need_sub()?,
                    &json!({ "cancel_at_period_end": false }),
                )
                .map_err(|e| e.message)?;
                Ok("Your plan has been renewed.")
            }
            "switch" if features["subscription_update"]["enabled"] == true => {
                let sub = need_sub()?;
                let price = form.price.clone().ok_or("Choose a price.")?;
                let current = w.get(&sub).cloned().unwrap_or(Value::Null);
                if !switchable_prices(w, &features, &current["items"]["data"][0]["price"])
                    .iter()
                    .any(|p| p["id"] == price.as_str())
                {
                    return Err("That price is not available.".to_owned());
                }
                let item = current["items"]["data"][0]["id"].clone();
                let proration = features["subscription_update"]["proration_behavior"]
                    .as_str()
                    .unwrap_or("create_prorations")
                    .to_owned();
                changes::update_subscription(
                    w,
                    &ctx,
                    &sub,
                    &json!({ "items": [{ "id": item, "price": price }], "proration_behavior": proration }),
                )
                .map_err(|e| e.message)?;
                Ok("Your plan has been updated.")
            }
            "card" if features["payment_method_update"]["enabled"] == true => {
                let number = form.card_number.clone().unwrap_or_default();
                let now = w.now_for_customer(Some(&customer));
                let pm = payments::create_card_payment_method(w, &number, None, now)
                    .map_err(|d| d.message.to_owned())?;
                let pm_id = pm["id"].as_str().unwrap_or_default().to_owned();
                payments::attach_payment_method(w, &pm_id, &customer).map_err(|e| e.message)?;
                crate::api::customers::set_default_payment_method(w, &customer, &pm_id)
                    .map_err(|e| e.message)?;
                let subs: Vec<String> = w
                    .all("subscription")
                    .filter(|s| s["customer"] == customer.as_str() && s["status"] != "canceled")
                    .filter_map(|s| s["id"].as_str().map(str::to_owned))
                    .collect();
                for s in subs {
                    changes::update_subscription(
                        w,
                        &ctx,
                        &s,
                        &json!({ "default_payment_method": pm_id }),
                    )
                    .map_err(|e| e.message)?;
                }
                Ok("Your payment method has been updated.")
            }
            _ => Err("That action is not available.".to_owned()),
        }
    });
    let query = match result {
        Ok(done) => format!(
            "done={}",
            url::form_urlencoded::byte_serialize(done.as_bytes()).collect::<String>()
        ),
        Err(e) => format!(
            "error={}",
            url::form_urlencoded::byte_serialize(e.as_bytes()).collect::<String>()
        ),
    };
    Redirect::to(&format!("/p/session/{id}?{query}")).into_response()
}
