//! The use cases the API, the webhook worker and the CLI share, one module per concern:
//! creating a checkout, completing an order from Stripe's state, refunding, subscriptions
//! and billing. Handlers parse, call one of these, and render.

mod billing;
mod checkout;
mod completion;
mod refunds;
mod subscriptions;

use std::collections::HashMap;

use tollgate_domain::TenantId;
use tollgate_store::{Customer, Price, Product, StoreError};
use tollgate_stripe::NewStripePrice;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub use billing::*;
pub use checkout::*;
pub use completion::*;
pub use refunds::*;
pub use subscriptions::*;

pub(crate) fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The customer's Stripe customer, created once (concurrent callers share one through the
/// idempotency key derived from the customer's id).
/// `test_clock` puts a new Stripe customer on a test clock (in test mode only), so that
/// its subscriptions can be taken through time.
/// One of the tenant's prices, by id or lookup key; 404 naming `param` when there is none.
pub async fn find_price(
    state: &AppState,
    tenant: &TenantId,
    reference: &str,
    param: &str,
) -> ApiResult<Price> {
    match state.store.price_by_ref(tenant, reference).await {
        Ok(p) => Ok(p),
        Err(StoreError::NotFound) => Err(ApiError::not_found("price", reference).with_param(param)),
        Err(e) => Err(e.into()),
    }
}

pub async fn ensure_stripe_customer(
    state: &AppState,
    tenant: &TenantId,
    customer: Customer,
    test_clock: Option<&str>,
) -> ApiResult<Customer> {
    if customer.stripe_customer_id.is_some() {
        return Ok(customer);
    }
    if test_clock.is_some() && !state.stripe.is_test_mode() {
        return Err(ApiError::invalid(
            "test_clock",
            "test_mode_only",
            "test_clock is only for Stripe's test mode.",
        ));
    }
    let stripe_id = state
        .stripe
        .create_customer(
            customer.email.as_deref(),
            customer.name.as_deref(),
            metadata(&[
                ("tenant_id", tenant.as_str()),
                ("customer_id", customer.id.as_str()),
                ("external_user_id", &customer.external_user_id),
            ]),
            test_clock,
            &format!("tg-customer-{}", customer.id),
        )
        .await?;
    Ok(state
        .store
        .set_stripe_customer(tenant, &customer.id, &stripe_id)
        .await?)
}

/// Creates the product and price in Stripe if they are not there yet; returns the price
/// with its Stripe id.
pub async fn ensure_stripe_price(
    state: &AppState,
    tenant: &TenantId,
    product: &Product,
    price: Price,
) -> ApiResult<Price> {
    if price.stripe_price_id.is_some() {
        return Ok(price);
    }
    let stripe_product = match &product.stripe_product_id {
        Some(p) => p.clone(),
        None => {
            let id = state
                .stripe
                .create_product(
                    &product.title,
                    product.description.as_deref(),
                    metadata(&[
                        ("tenant_id", tenant.as_str()),
                        ("product_id", product.id.as_str()),
                    ]),
                    &format!("tg-product-{}", product.id),
                )
                .await?;
            state
                .store
                .set_stripe_product(tenant, &product.id, &id)
                .await?;
            id
        }
    };
    let recurring = price.recurring_interval.as_deref().map(|i| {
        (
            i,
            u64::try_from(price.recurring_interval_count.unwrap_or(1)).unwrap_or(1),
        )
    });
    let meter = match (&price.meter_event_name, price.is_metered()) {
        (Some(event), true) => Some(ensure_stripe_meter(state, tenant, event).await?),
        _ => None,
    };
    let stripe_price = state
        .stripe
        .create_price(NewStripePrice {
            stripe_product_id: &stripe_product,
            currency: &price.currency,
            unit_amount: price.unit_amount,
            recurring,
            meter: meter.as_deref(),
            metadata: metadata(&[
                ("tenant_id", tenant.as_str()),
                ("price_id", price.id.as_str()),
            ]),
            idempotency_key: format!("tg-price-{}", price.id),
        })
        .await?;
    state
        .store
        .set_stripe_price(tenant, &price.id, &stripe_price)
        .await?;
    Ok(state.store.price(tenant, &price.id).await?)
}

/// The Stripe billing meter for one of the tenant's usage event names, made once.
pub async fn ensure_stripe_meter(
    state: &AppState,
    tenant: &TenantId,
    event_name: &str,
) -> ApiResult<String> {
    let meter = state.store.get_or_create_meter(tenant, event_name).await?;
    if let Some(id) = meter.stripe_meter_id {
        return Ok(id);
    }
    let id = state
        .stripe
        .create_meter(
            event_name,
            &meter.stripe_event_name,
            &format!("tg-meter-{}", meter.id),
        )
        .await?;
    state.store.set_stripe_meter(tenant, &meter.id, &id).await?;
    Ok(id)
}

/// Brings Stripe's copy of a product in line with Tollgate's: its name, description, and
/// whether it can be bought (published and not deleted). A product Stripe has not seen yet
/// is left until it is first sold.
pub async fn sync_product(state: &AppState, product: &Product) -> ApiResult<()> {
    let Some(stripe_id) = &product.stripe_product_id else {
        return Ok(());
    };
    let active = product.status == "published" && product.deleted_at.is_none();
    state
        .stripe
        .update_product(
            stripe_id,
            &product.title,
            product.description.as_deref(),
            active,
        )
        .await?;
    Ok(())
}
