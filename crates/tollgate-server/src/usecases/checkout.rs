//! `POST /v1/checkout_sessions`: the validation pipeline, a pending order with its items
//! and bookings, then the Stripe Checkout Session.

use axum::http::StatusCode;
use tollgate_domain::{CustomerId, Email, OrderId, ProductId};
use tollgate_store::{NewOrder, NewOrderItem, Price, Product, StoreError, Tenant};
use tollgate_stripe::{CheckoutLine, CheckoutRequest};

use super::{ensure_stripe_customer, ensure_stripe_price, metadata};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// One requested line of a checkout.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartItem {
    pub product: String,
    pub price: Option<String>,
    pub quantity: Option<i64>,
}

#[derive(Debug, Clone, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CheckoutInput {
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    #[serde(default)]
    pub items: Vec<CartItem>,
    /// A single item, instead of `items`.
    pub product: Option<String>,
    pub price: Option<String>,
    pub quantity: Option<i64>,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    #[serde(default)]
    pub allow_promotion_codes: bool,
    #[serde(default)]
    pub automatic_tax: bool,
    #[serde(default)]
    pub tax_id_collection: bool,
    /// One of the tenant's promotion codes (its code or its id) to apply; the customer
    /// cannot enter another then.
    pub promotion_code: Option<String>,
    /// Days of free trial for a subscription (default: the price's own trial days).
    pub trial_period_days: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckoutOutput {
    pub id: String,
    pub url: Option<String>,
    pub order_id: OrderId,
    pub expires_at: i64,
}

/// Seats one order may book of an event, and seats of a subscription.
const MAX_QUANTITY: i64 = 100;
/// Items one cart may hold (Stripe Checkout takes at most 100 line items).
const MAX_ITEMS: usize = 100;

pub(crate) fn check_url(param: &str, url: &str) -> ApiResult<()> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ApiError::invalid(
            param,
            "invalid_url",
            format!("{param} must be an absolute http(s) URL"),
        )),
    }
}

fn fill_template(template: &str, order: &OrderId) -> String {
    template.replace("{ORDER_ID}", order.as_str())
}

/// The validation pipeline, then a pending order, then the Stripe session. If Stripe
/// fails, the order is marked failed and the caller gets 502/503.
pub async fn create_checkout(
    state: &AppState,
    tenant: &Tenant,
    input: CheckoutInput,
) -> ApiResult<CheckoutOutput> {
    let t = &tenant.id;
    let mut items = input.items.clone();
    if let Some(product) = &input.product {
        if !items.is_empty() {
            return Err(ApiError::invalid(
                "product",
                "parameter_conflict",
                "Pass either items or product, not both.",
            ));
        }
        items.push(CartItem {
            product: product.clone(),
            price: input.price.clone(),
            quantity: input.quantity,
        });
    } else if let Some(price) = input.price.as_ref().filter(|_| items.is_empty()) {
        // A price alone (its id or lookup key) names its product.
        let product = super::find_price(state, t, price, "price")
            .await?
            .product_id;
        items.push(CartItem {
            product: product.to_string(),
            price: Some(price.clone()),
            quantity: input.quantity,
        });
    }
    if items.is_empty() {
        return Err(ApiError::invalid(
            "items",
            "cart_empty",
            "The cart is empty: pass at least one item.",
        ));
    }
    if items.len() > MAX_ITEMS {
        return Err(ApiError::invalid(
            "items",
            "too_many_items",
            format!("A cart holds at most {MAX_ITEMS} items."),
        ));
    }

    // Products and prices: exist, published, priced, same currency.
    let mut lines: Vec<(Product, Price, i64)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = |f: &str| format!("items[{i}][{f}]");
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "product_not_found",
                format!("No such product, or it is not for sale: '{}'", item.product),
            )
            .with_param(&param("product"))
        };
        let product_id = ProductId::parse(&item.product).ok_or_else(not_found)?;
        let product = match state.store.product(t, &product_id).await {
            Ok(p) if p.deleted_at.is_none() && p.status == "published" => p,
            Ok(_) | Err(StoreError::NotFound) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let price = match &item.price {
            Some(id) => {
                let missing = || {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "price_not_found",
                        format!("No such price for this product: '{id}'"),
                    )
                    .with_param(&param("price"))
                };
                // A price id, or one of the tenant's lookup keys.
                match state.store.price_by_ref(t, id).await {
                    Ok(p) if p.product_id == product.id && p.active => p,
                    Ok(_) | Err(StoreError::NotFound) => return Err(missing()),
                    Err(e) => return Err(e.into()),
                }
            }
            None => state
                .store
                .prices_for_product(t, &product.id)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    ApiError::invalid(&param("product"), "no_price", "This product has no price.")
                })?,
        };
        if price.unit_amount <= 0 {
            return Err(ApiError::invalid(
                &param("price"),
                "free_product",
                "Free products cannot be checked out.",
            ));
        }
        if price.is_metered() && item.quantity.is_some() {
            return Err(ApiError::invalid(
                &param("quantity"),
                "invalid_quantity",
                "A metered price takes no quantity: reported usage decides what is billed.",
            ));
        }
        let quantity = item.quantity.unwrap_or(1);
        // Event seats and subscription seats come in numbers; anything else is owned once.
        let max = if product.kind == "event" || price.is_recurring() {
            MAX_QUANTITY
        } else {
            1
        };
        if !(1..=max).contains(&quantity) {
            return Err(ApiError::invalid(
                &param("quantity"),
                "invalid_quantity",
                format!("quantity must be between 1 and {max} for this product"),
            ));
        }
        if lines.iter().any(|(p, _, _)| p.id == product.id) {
            return Err(ApiError::invalid(
                &param("product"),
                "duplicate_item",
                "A product may appear once in a cart; use quantity.",
            ));
        }
        if let Some((_, first, _)) = lines.first()
            && first.currency != price.currency
        {
            return Err(ApiError::invalid(
                &param("price"),
                "currency_mismatch",
                "Every item of a cart must be in the same currency.",
            ));
        }
        if let Some((_, first, _)) = lines.first()
            && first.is_recurring() != price.is_recurring()
        {
            return Err(ApiError::invalid(
                &param("price"),
                "mixed_cart",
                "A cart is either one-time purchases or one subscription, not both.",
            ));
        }
        lines.push((product, price, quantity));
    }
    let subscription = lines[0].1.is_recurring();
    if subscription && lines.len() > 1 {
        return Err(ApiError::invalid(
            "items",
            "one_plan_per_checkout",
            "A subscription checkout takes one plan.",
        ));
    }
    let trial_days = match (subscription, input.trial_period_days) {
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "trial_period_days",
                "trial_needs_subscription",
                "trial_period_days applies to subscriptions only.",
            ));
        }
        (true, Some(d)) if !(1..=730).contains(&d) => {
            return Err(ApiError::invalid(
                "trial_period_days",
                "invalid_trial",
                "trial_period_days must be between 1 and 730.",
            ));
        }
        (true, days) => days.or(lines[0].1.trial_days),
        (false, None) => None,
    };

    // Who pays: a known customer, or a guest email.
    let customer = match &input.customer {
        Some(id) => {
            let cid = CustomerId::parse(id)
                .ok_or_else(|| ApiError::not_found("customer", id).with_param("customer"))?;
            match state.store.customer(t, &cid).await {
                Ok(c) => Some(c),
                Err(StoreError::NotFound) => {
                    return Err(ApiError::not_found("customer", id).with_param("customer"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => None,
    };
    let email = match &input.customer_email {
        Some(e) => Some(Email::parse(e).map_err(|_| {
            ApiError::invalid(
                "customer_email",
                "invalid_email",
                "customer_email is not a valid email address.",
            )
        })?),
        None => None,
    };
    if customer.is_none() && email.is_none() {
        return Err(ApiError::invalid(
            "customer",
            "customer_required",
            "Pass a customer, or a customer_email for a guest checkout.",
        ));
    }
    if subscription {
        let Some(c) = &customer else {
            return Err(ApiError::invalid(
                "customer",
                "customer_required",
                "A subscription belongs to a customer: pass customer (guests buy one-time items only).",
            ));
        };
        let plan = &lines[0].0;
        // Two payable checkouts of one plan would make two subscriptions: the newest
        // checkout wins. Each older one is expired in Stripe and then settled from Stripe's
        // state, so one paid in the meantime completes and is caught just below.
        for open in state
            .store
            .open_subscription_orders(t, &c.id, &plan.id)
            .await?
        {
            let Some(session) = &open.stripe_checkout_session_id else {
                continue;
            };
            if let Err(e) = state.stripe.expire_session(session).await {
                tracing::info!(error = %e, session = %session, "an older subscription checkout could not be expired; reading its state");
            }
            super::complete_from_stripe(state, tenant, session, None).await?;
        }
        if let Some(live) = state
            .store
            .live_subscription_for_product(t, &c.id, &plan.id)
            .await?
            .first()
        {
            return Err(ApiError::conflict(
                "already_subscribed",
                format!(
                    "The customer has a {} subscription to '{}' ({}); change it instead.",
                    live.status, plan.id, live.id
                ),
            )
            .with_param("items"));
        }
    }
    let promotion_code = match &input.promotion_code {
        None => None,
        Some(_) if input.allow_promotion_codes => {
            return Err(ApiError::invalid(
                "promotion_code",
                "parameter_conflict",
                "Pass promotion_code or allow_promotion_codes, not both.",
            ));
        }
        Some(code) => Some(super::stripe_promotion_code(state, tenant, code).await?),
    };
    if let Some(c) = &customer {
        for (product, _, _) in &lines {
            if product.kind != "event"
                && state
                    .store
                    .has_active_purchase(t, &c.id, &product.id)
                    .await?
            {
                return Err(ApiError::conflict(
                    "already_purchased",
                    format!("The customer already owns '{}'.", product.id),
                )
                .with_param("items"));
            }
        }
    }
    for (product, _, quantity) in &lines {
        if let Some(capacity) = product.capacity
            && state.store.seats_taken(t, &product.id).await? + quantity > capacity
        {
            return Err(ApiError::conflict(
                "sold_out",
                format!("'{}' has no seats left.", product.id),
            )
            .with_param("items"));
        }
    }
    let success_template = input
        .success_url
        .clone()
        .or_else(|| tenant.success_url_template.clone())
        .ok_or_else(|| {
            ApiError::invalid(
                "success_url",
                "parameter_missing",
                "Pass success_url, or set the tenant's success URL template.",
            )
        })?;
    let cancel_template = input
        .cancel_url
        .clone()
        .or_else(|| tenant.cancel_url_template.clone());
    check_url(
        "success_url",
        &success_template
            .replace("{CHECKOUT_SESSION_ID}", "cs")
            .replace("{ORDER_ID}", "ord"),
    )?;
    if let Some(c) = &cancel_template {
        check_url(
            "cancel_url",
            &c.replace("{CHECKOUT_SESSION_ID}", "cs")
                .replace("{ORDER_ID}", "ord"),
        )?;
    }
    if state.checkout_limiter.check_key(t).is_err() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many checkout sessions for this tenant; slow down.",
        ));
    }

    // Stripe objects the session refers to, created once.
    let customer = match customer {
        Some(c) => Some(ensure_stripe_customer(state, t, c, None).await?),
        None => None,
    };
    let mut priced = Vec::with_capacity(lines.len());
    for (product, price, quantity) in lines {
        let price = ensure_stripe_price(state, t, &product, price).await?;
        priced.push((product, price, quantity));
    }

    let order = state
        .store
        .create_order(
            t,
            &NewOrder {
                customer_id: customer.as_ref().map(|c| c.id.clone()),
                email: email
                    .as_ref()
                    .map(|e| e.as_str().to_owned())
                    .or_else(|| customer.as_ref().and_then(|c| c.email.clone())),
                currency: priced[0].1.currency.clone(),
                items: priced
                    .iter()
                    .map(|(product, price, quantity)| NewOrderItem {
                        product_id: product.id.clone(),
                        price_id: price.id.clone(),
                        title: product.title.clone(),
                        quantity: *quantity,
                        // Usage is billed later: nothing of a metered price is due now.
                        unit_amount: if price.is_metered() {
                            0
                        } else {
                            price.unit_amount
                        },
                        event_capacity: if product.kind == "event" {
                            product.capacity
                        } else {
                            None
                        },
                    })
                    .collect(),
                fees: tenant.fees(),
                subscription,
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(c) if c.starts_with("sold_out:") => ApiError::conflict(
                "sold_out",
                format!("'{}' has no seats left.", &c["sold_out:".len()..]),
            )
            .with_param("items"),
            other => other.into(),
        })?;

    let request = CheckoutRequest {
        subscription,
        lines: priced
            .iter()
            .map(|(_, price, quantity)| CheckoutLine {
                stripe_price_id: price.stripe_price_id.clone().unwrap_or_default(),
                quantity: (!price.is_metered()).then(|| u64::try_from(*quantity).unwrap_or(1)),
            })
            .collect(),
        stripe_customer_id: customer.as_ref().and_then(|c| c.stripe_customer_id.clone()),
        customer_email: if customer.is_some() {
            None
        } else {
            email.map(|e| e.as_str().to_owned())
        },
        success_url: fill_template(&success_template, &order.id),
        cancel_url: cancel_template.map(|c| fill_template(&c, &order.id)),
        metadata: metadata(&[
            ("tenant_id", t.as_str()),
            ("order_id", order.id.as_str()),
            (
                "customer_id",
                customer.as_ref().map(|c| c.id.as_str()).unwrap_or(""),
            ),
        ]),
        allow_promotion_codes: input.allow_promotion_codes,
        automatic_tax: input.automatic_tax,
        tax_id_collection: input.tax_id_collection,
        trial_days: trial_days.and_then(|d| u32::try_from(d).ok()),
        promotion_code,
        idempotency_key: format!("tg-checkout-{}", order.id),
    };
    let session = match state.stripe.create_checkout_session(&request).await {
        Ok(s) => s,
        Err(e) => {
            let e = ApiError::from(e);
            // What the caller is told, not what went on inside.
            let reason = e.message.clone();
            if let Err(close) = state
                .store
                .close_order(t, &order.id, "failed", Some(&reason))
                .await
            {
                tracing::error!(error = %close, order = %order.id, "marking a failed order failed");
            }
            return Err(e);
        }
    };
    state
        .store
        .attach_checkout_session(
            t,
            &order.id,
            &session.id,
            session.url.as_deref(),
            Some(session.expires_at),
        )
        .await?;
    tracing::info!(tenant = %t, order = %order.id, session = %session.id, "checkout session created");
    Ok(CheckoutOutput {
        id: session.id,
        url: session.url,
        order_id: order.id,
        expires_at: session.expires_at,
    })
}
