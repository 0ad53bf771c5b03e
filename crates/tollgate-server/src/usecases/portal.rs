//! The customer portal: a session with the tenant's return URL, on a portal configuration
//! made from the tenant's settings and plans.

use sha2::Digest;
use tollgate_domain::status::ProductStatus;
use tollgate_domain::{CustomerId, StripePortalConfigurationId};
use tollgate_store::Tenant;
use tollgate_stripe::PortalConfig;

use super::stripe_objects::{ensure_stripe_customer, ensure_stripe_price};
use super::{customers, metadata, validate};
use crate::error::{Error, Result};
use crate::state::AppState;

/// A customer portal session with the tenant's return URL and portal configuration;
/// answers its URL.
pub async fn portal_session(
    state: &AppState,
    tenant: &Tenant,
    customer: &CustomerId,
    return_url: Option<String>,
) -> Result<String> {
    let t = &tenant.id;
    let customer = customers::find(state, tenant, customer, None).await?;
    let return_url = return_url
        .or_else(|| {
            tenant
                .portal_return_url_template
                .as_ref()
                .map(|u| u.replace("{CUSTOMER_ID}", customer.id.as_str()))
        })
        .ok_or_else(|| {
            Error::missing(
                "return_url",
                "Pass return_url, or set the tenant's portal return URL template.",
            )
        })?;
    validate::url("return_url", &return_url)?;
    let customer = ensure_stripe_customer(state, t, customer, None).await?;
    let stripe_customer = customer.stripe_customer_id.ok_or_else(Error::internal)?;
    let configuration = portal_configuration(state, tenant).await?;
    Ok(state
        .stripe
        .create_portal_session(&stripe_customer, Some(&return_url), &configuration)
        .await?)
}

/// The Stripe portal configuration for the tenant's settings and plans, made anew when
/// either changes (configurations are keyed by a hash of what they are made from).
async fn portal_configuration(
    state: &AppState,
    tenant: &Tenant,
) -> Result<StripePortalConfigurationId> {
    let t = &tenant.id;
    let settings = &tenant.portal;
    // The plans a customer may switch between: the tenant's published products with
    // active recurring prices, each price known to Stripe.
    let mut switch_to = Vec::new();
    if settings.switch_plan {
        for product in state
            .store
            .list_products(t, Some(ProductStatus::Published), 100, None)
            .await?
        {
            let mut prices = Vec::new();
            for price in state.store.prices_for_product(t, &product.id).await? {
                if price.is_recurring() && !price.is_metered() {
                    let price = ensure_stripe_price(state, t, &product, price).await?;
                    prices.extend(price.stripe_price_id);
                }
            }
            if prices.is_empty() {
                continue;
            }
            let product = state.store.product(t, &product.id).await?;
            if let Some(stripe_product) = product.stripe_product_id {
                switch_to.push((stripe_product, prices));
            }
        }
    }
    let mut hasher = sha2::Sha256::new();
    hasher.update(serde_json::to_string(settings).unwrap_or_default());
    hasher.update(format!("{switch_to:?}"));
    let hash = hex::encode(hasher.finalize());
    if let (Some(id), Some(known)) = (
        &tenant.stripe_portal_configuration_id,
        &tenant.stripe_portal_configuration_hash,
    ) && known == &hash
    {
        return Ok(id.clone());
    }
    let id = state
        .stripe
        .create_portal_configuration(
            &PortalConfig {
                cancel: settings.cancel,
                update_payment_method: settings.update_payment_method,
                switch_to,
                headline: settings.headline.clone(),
                metadata: metadata(&[("tenant_id", t.as_str())]),
            },
            &format!("tg-portal-{t}-{}", &hash[..32]),
        )
        .await?;
    state.store.set_portal_configuration(t, &id, &hash).await?;
    state.forget_keys();
    state.forget_tenants();
    Ok(id)
}
