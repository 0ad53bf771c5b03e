//! The customer portal: its configurations and the sessions that open its hosted page.

use serde_json::{Value, json};

use crate::api::{Ctx, list, required_str};
use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;
use crate::world::{World, merge_metadata, metadata_of, wall_clock};

/// The account's default portal configuration, if someone has saved one.
fn default_configuration(w: &World) -> Option<Value> {
    w.all("billing_portal.configuration")
        .find(|c| c["is_default"] == true)
        .cloned()
}

/// Saves the account's default portal configuration, as saving the customer portal settings
/// in the Dashboard does: the first save creates it (`is_default: true`), later ones update
/// it. The API has no way to do this: `POST /v1/billing_portal/configurations` takes no
/// `is_default`, and the object's docs say a default "can be managed in the Dashboard".
pub fn save_default_configuration(w: &mut World, p: &Value) -> Value {
    match default_configuration(w) {
        Some(existing) => {
            let id = existing["id"].as_str().unwrap_or_default().to_owned();
            update_portal_configuration(w, &id, p).unwrap_or(existing)
        }
        None => {
            let config = w.insert(portal_configuration(p, true));
            w.emit(
                "billing_portal.configuration.created",
                &config,
                None,
                wall_clock(),
            );
            config
        }
    }
}

/// A configuration object from `billing_portal/configurations` parameters.
pub(crate) fn portal_configuration(p: &Value, is_default: bool) -> Value {
    let now = wall_clock();
    let f = &p["features"];
    let enabled = |v: &Value, default: bool| v["enabled"].as_bool().unwrap_or(default);
    json!({
        "id": new_id("bpc"),
        "object": "billing_portal.configuration",
        "active": p["active"].as_bool().unwrap_or(true),
        "application": null,
        "business_profile": {
            "headline": p["business_profile"]["headline"],
            "privacy_policy_url": p["business_profile"]["privacy_policy_url"],
            "terms_of_service_url": p["business_profile"]["terms_of_service_url"],
        },
        "created": now,
        "default_return_url": p.get("default_return_url").cloned().unwrap_or(Value::Null),
        "features": {
            "customer_update": { "allowed_updates": f["customer_update"]["allowed_updates"].as_array().cloned().unwrap_or_default(), "enabled": enabled(&f["customer_update"], false) },
            "invoice_history": { "enabled": enabled(&f["invoice_history"], true) },
            "payment_method_update": { "enabled": enabled(&f["payment_method_update"], true), "payment_method_configuration": null },
            "subscription_cancel": {
                "cancellation_reason": { "enabled": false, "feedback_options": null, "options": [] },
                "enabled": enabled(&f["subscription_cancel"], true),
                "mode": f["subscription_cancel"]["mode"].as_str().unwrap_or("at_period_end"),
                "proration_behavior": f["subscription_cancel"]["proration_behavior"].as_str().unwrap_or("none"),
            },
            "subscription_update": {
                "billing_cycle_anchor": null,
                "default_allowed_updates": f["subscription_update"]["default_allowed_updates"].as_array().cloned().unwrap_or_else(|| vec![json!("price")]),
                "enabled": enabled(&f["subscription_update"], true),
                "products": f["subscription_update"]["products"].as_array().map(|products| {
                    products
                        .iter()
                        .map(|p| json!({
                            "adjustable_quantity": {
                                "enabled": p["adjustable_quantity"]["enabled"].as_bool().unwrap_or(false),
                                "maximum": p["adjustable_quantity"]["maximum"],
                                "minimum": p["adjustable_quantity"]["minimum"].as_i64().unwrap_or(1),
                            },
                            "prices": p["prices"],
                            "product": p["product"],
                        }))
                        .collect::<Vec<_>>()
                }),
                "proration_behavior": f["subscription_update"]["proration_behavior"].as_str().unwrap_or("create_prorations"),
                "schedule_at_period_end": { "conditions": [] },
                "trial_update_behavior": "end_trial",
            },
        },
        "is_default": is_default,
        "livemode": false,
        "login_page": { "enabled": false, "url": null },
        "metadata": metadata_of(p),
        "name": p.get("name").cloned().unwrap_or(Value::Null),
        "updated": now,
    })
}

/// `POST /v1/billing_portal/configurations`: a configuration that is never the default.
pub fn create_portal_configuration(w: &mut World, p: &Value) -> ApiResult {
    let config = w.insert(portal_configuration(p, false));
    w.emit(
        "billing_portal.configuration.created",
        &config,
        None,
        wall_clock(),
    );
    Ok(config)
}

/// `POST /v1/billing_portal/configurations/{id}`.
pub fn update_portal_configuration(w: &mut World, id: &str, p: &Value) -> ApiResult {
    let current = w.fetch(
        "billing_portal.configuration",
        id,
        "configuration",
        "configuration",
    )?;
    let (config, prev) = w.update(id, |c| {
        if let Some(a) = p["active"].as_bool() {
            c["active"] = json!(a);
        }
        if let Some(bp) = p["business_profile"].as_object() {
            for (k, v) in bp {
                c["business_profile"][k] = v.clone();
            }
        }
        if let Some(url) = p.get("default_return_url") {
            c["default_return_url"] = if url == "" { Value::Null } else { url.clone() };
        }
        if let Some(features) = p["features"].as_object() {
            for (name, settings) in features {
                if let Some(settings) = settings.as_object() {
                    for (k, v) in settings {
                        c["features"][name][k] = v.clone();
                    }
                }
            }
        }
        merge_metadata(c, p.get("metadata"));
        c["updated"] = json!(wall_clock());
    });
    let _ = current;
    w.emit(
        "billing_portal.configuration.updated",
        &config,
        Some(prev),
        wall_clock(),
    );
    Ok(config)
}

/// `POST /v1/billing_portal/sessions`: the named configuration, else the account's default.
pub fn create_portal_session(w: &mut World, ctx: &Ctx, p: &Value) -> ApiResult {
    let customer = required_str(p, "customer")?.to_owned();
    w.fetch("customer", &customer, "customer", "customer")?;
    let config = match p["configuration"].as_str() {
        Some(c) => w.fetch(
            "billing_portal.configuration",
            c,
            "configuration",
            "configuration",
        )?,
        // A new account has no default until its portal settings are saved in the
        // Dashboard; until then Stripe refuses sessions that do not name a configuration
        // (mozilla/fxa#13245 quotes Stripe's answer).
        None => default_configuration(w).ok_or_else(|| {
            ApiError::invalid(
                "You can’t create a portal session in test mode until you save your customer portal settings in test mode at https://dashboard.stripe.com/test/settings/billing/portal.",
            )
        })?,
    };
    if config["active"] != true {
        return Err(ApiError::param(
            "configuration",
            "The configuration is not active.",
        ));
    }
    let return_url = p["return_url"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| config["default_return_url"].as_str().map(str::to_owned));
    if let Some(u) = &return_url
        && url::Url::parse(u).is_err()
    {
        return Err(ApiError::param("return_url", "Not a valid URL"));
    }
    let id = new_id("bps");
    let session = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": config["id"],
        "created": w.now_for_customer(Some(&customer)),
        "customer": customer,
        "flow": null,
        "livemode": false,
        "locale": p.get("locale").cloned().unwrap_or(Value::Null),
        "on_behalf_of": null,
        "return_url": return_url,
        "url": format!("{}/p/session/{id}", ctx.base_url),
    });
    Ok(w.insert(session))
}

/// `GET /v1/billing_portal/configurations`, filtered by `active` and `is_default`.
pub fn list_portal_configurations(w: &World, p: &Value) -> ApiResult {
    list(
        w.all("billing_portal.configuration")
            .filter(|c| p["active"].as_bool().is_none_or(|a| c["active"] == a))
            .filter(|c| {
                p["is_default"]
                    .as_bool()
                    .is_none_or(|d| c["is_default"] == d)
            }),
        "/v1/billing_portal/configurations",
        p,
    )
}
