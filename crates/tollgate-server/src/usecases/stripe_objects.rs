//! The Stripe objects Tollgate's own stand for, created once and on demand: a customer's
//! Stripe customer, a product's Stripe product and prices, a usage meter; and keeping
//! Stripe's copy of a product in line with Tollgate's. Each create carries an idempotency
//! key derived from Tollgate's id, so concurrent or retried callers make one object.

use tollgate_domain::{StripeMeterId, StripeTestClockId, TenantId};
use tollgate_store::{Customer, Price, Product};
use tollgate_stripe::NewStripePrice;

use super::metadata;
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// The customer with its Stripe customer, created once (concurrent callers share one
/// through the idempotency key derived from the customer's id). `test_clock` puts a new
/// Stripe customer on a test clock (test mode only), so that its subscriptions can be
/// taken through time.
pub async fn ensure_stripe_customer(
    state: &AppState,
    tenant: &TenantId,
    customer: Customer,
    test_clock: Option<&StripeTestClockId>,
) -> Result<Customer> {
    if customer.stripe_customer_id.is_some() {
        return Ok(customer);
    }
    if test_clock.is_some() && !state.stripe.is_test_mode() {
        return Err(Error::invalid(
            "test_clock",
            Code::TestModeOnly,
            "test_clock is only for Stripe's test mode.",
        ));
    }
    let stripe_id = state
        .stripe
        .create_customer(
            customer.email.as_ref(),
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

/// The name a tenant's lookup key has in Stripe, where keys are unique per account.
pub fn stripe_lookup_key(tenant: &TenantId, key: &str) -> String {
    format!("{tenant}:{key}")
}

/// Creates the product and price in Stripe if they are not there yet; returns the price
/// with its Stripe id.
pub async fn ensure_stripe_price(
    state: &AppState,
    tenant: &TenantId,
    product: &Product,
    price: Price,
) -> Result<Price> {
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
    let recurring = price
        .recurring
        .as_ref()
        .map(|r| (r.interval, u64::try_from(r.interval_count).unwrap_or(1)));
    let meter = match price.meter_event_name() {
        Some(event) if price.is_metered() => Some(ensure_stripe_meter(state, tenant, event).await?),
        _ => None,
    };
    let lookup_key = price
        .lookup_key
        .as_deref()
        .map(|k| stripe_lookup_key(tenant, k));
    let stripe_price = state
        .stripe
        .create_price(NewStripePrice {
            stripe_product_id: &stripe_product,
            currency: &price.currency,
            unit_amount: price.unit_amount,
            recurring,
            meter: meter.as_ref(),
            lookup_key: lookup_key.as_deref(),
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
) -> Result<StripeMeterId> {
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
pub async fn sync_product(state: &AppState, product: &Product) -> Result<()> {
    let Some(stripe_id) = &product.stripe_product_id else {
        return Ok(());
    };
    state
        .stripe
        .update_product(
            stripe_id,
            &product.title,
            product.description.as_deref(),
            product.is_sellable(),
        )
        .await?;
    Ok(())
}
