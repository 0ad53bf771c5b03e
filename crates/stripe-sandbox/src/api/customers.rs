//! Customers: create, retrieve, update, delete, list (filter by email, created, test clock).

use serde_json::{Value, json};

use super::matches_range;
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, random_chars};
use crate::world::{World, merge_metadata, metadata_of};

/// The customer's shipping details as Stripe renders them, from `shipping` parameters.
fn shipping_of(given: &Value) -> Value {
    if !given.is_object() {
        return Value::Null;
    }
    json!({
        "address": super::validate::address(&given["address"]),
        "name": given.get("name").cloned().unwrap_or(Value::Null),
        "phone": given.get("phone").cloned().unwrap_or(Value::Null),
    })
}

/// `POST /v1/customers`.
pub fn create(w: &mut World, p: &Value) -> ApiResult {
    super::validate::check_email(p, "email")?;
    if let Some(clock) = p["test_clock"].as_str() {
        w.fetch("test_helpers.test_clock", clock, "test_clock", "test_clock")?;
    }
    let id = new_id("cus");
    let created = match p["test_clock"].as_str() {
        Some(clock) => w
            .get(clock)
            .and_then(|c| c["frozen_time"].as_i64())
            .unwrap_or_default(),
        None => crate::world::wall_clock(),
    };
    let customer = json!({
        "id": id,
        "object": "customer",
        "address": p.get("address").filter(|a| a.is_object()).map_or(Value::Null, super::validate::address),
        "balance": 0,
        "created": created,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": p.get("description").cloned().unwrap_or(Value::Null),
        "discount": null,
        "email": p.get("email").cloned().unwrap_or(Value::Null),
        "invoice_prefix": random_chars(8).to_uppercase(),
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null,
        },
        "livemode": false,
        "metadata": metadata_of(p),
        "name": p.get("name").cloned().unwrap_or(Value::Null),
        "next_invoice_sequence": 1,
        "phone": p.get("phone").cloned().unwrap_or(Value::Null),
        "preferred_locales": p.get("preferred_locales").cloned().unwrap_or(json!([])),
        "shipping": shipping_of(&p["shipping"]),
        "tax_exempt": "none",
        "test_clock": p.get("test_clock").cloned().unwrap_or(Value::Null),
    });
    let customer = w.insert(customer);
    w.emit("customer.created", &customer, None, created);
    if let Some(pm) = p["payment_method"].as_str() {
        super::payments::attach_payment_method(w, pm, &id)?;
    }
    if let Some(pm) = p["invoice_settings"]["default_payment_method"].as_str() {
        set_default_payment_method(w, &id, pm)?;
    }
    w.fetch("customer", &id, "customer", "id")
}

pub fn retrieve(w: &World, id: &str) -> ApiResult {
    match w.get(id) {
        // A deleted customer answers with the deleted stub, as Stripe's does.
        Some(c) if c["object"] == "customer" && c.get("deleted").is_some() => {
            Ok(json!({ "id": id, "object": "customer", "deleted": true }))
        }
        _ => w.fetch("customer", id, "customer", "customer"),
    }
}

/// `POST /v1/customers/{id}`.
pub fn update(w: &mut World, id: &str, p: &Value) -> ApiResult {
    w.fetch("customer", id, "customer", "customer")?;
    super::validate::check_email(p, "email")?;
    if let Some(pm) = p["invoice_settings"]["default_payment_method"].as_str() {
        w.fetch(
            "payment_method",
            pm,
            "PaymentMethod",
            "invoice_settings[default_payment_method]",
        )?;
    }
    let now = w.now_for_customer(Some(id));
    let (customer, previous) = w.update(id, |c| {
        for field in ["email", "name", "description", "phone", "preferred_locales"] {
            if let Some(v) = p.get(field) {
                c[field] = if v == "" { Value::Null } else { v.clone() };
            }
        }
        match p.get("address") {
            Some(a @ Value::Object(_)) => c["address"] = super::validate::address(a),
            Some(_) => c["address"] = Value::Null,
            None => {}
        }
        match p.get("shipping") {
            Some(s @ Value::Object(_)) => c["shipping"] = shipping_of(s),
            Some(_) => c["shipping"] = Value::Null,
            None => {}
        }
        if let Some(pm) = p["invoice_settings"]["default_payment_method"].as_str() {
            c["invoice_settings"]["default_payment_method"] = json!(pm);
        }
        merge_metadata(c, p.get("metadata"));
    });
    w.emit("customer.updated", &customer, Some(previous), now);
    Ok(customer)
}

pub fn delete(w: &mut World, id: &str) -> ApiResult {
    let customer = w.fetch("customer", id, "customer", "customer")?;
    let now = w.now_for_customer(Some(id));
    // Deleting a customer cancels their subscriptions at once, as Stripe does.
    super::billing::subscriptions::cancel_customer_subscriptions(w, id, now);
    let out = w.delete(id);
    w.emit("customer.deleted", &customer, None, now);
    Ok(out)
}

pub fn list_customers_matching<'a>(w: &'a World, p: &'a Value) -> impl Iterator<Item = &'a Value> {
    w.all("customer")
        .filter(|c| p["email"].as_str().is_none_or(|e| c["email"] == e))
        .filter(|c| {
            p["test_clock"]
                .as_str()
                .is_none_or(|t| c["test_clock"] == t)
        })
        .filter(|c| matches_range(c, "created", &p["created"]))
}

pub fn list(w: &World, p: &Value) -> ApiResult {
    super::list(list_customers_matching(w, p), "/v1/customers", p)
}

/// Sets `invoice_settings.default_payment_method` after checking the method belongs to the customer.
pub fn set_default_payment_method(w: &mut World, customer: &str, pm: &str) -> ApiResult<()> {
    let method = w.fetch(
        "payment_method",
        pm,
        "PaymentMethod",
        "invoice_settings[default_payment_method]",
    )?;
    if method["customer"] != customer {
        return Err(ApiError::param(
            "invoice_settings[default_payment_method]",
            format!(
                "The PaymentMethod {pm} does not belong to the Customer {customer}. Please attach it first."
            ),
        ));
    }
    let now = w.now_for_customer(Some(customer));
    let (c, prev) = w.update(customer, |c| {
        c["invoice_settings"]["default_payment_method"] = json!(pm);
    });
    w.emit("customer.updated", &c, Some(prev), now);
    Ok(())
}
