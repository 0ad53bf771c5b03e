//! The catalogue: products and their prices, checked against what Stripe accepts and
//! synced to Stripe.

use serde::Deserialize;
use tollgate_domain::status::{ProductKind, ProductStatus, RecurringInterval, UsageType};
use tollgate_domain::{Amount, Currency, ProductId};
use tollgate_store::{
    NewPrice, NewProduct, Price, Product, ProductUpdate, Recurring, StoreError, Tenant,
};
use utoipa::ToSchema;

use super::stripe_objects::{ensure_stripe_price, sync_product};
use super::validate;
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// The longest product title: Stripe takes product names of up to 250 characters.
pub const MAX_TITLE: usize = 250;
/// The longest description Tollgate takes (Stripe's limit is larger; Checkout shows less).
pub const MAX_DESCRIPTION: usize = 5000;
/// The most seats an event may have.
pub const MAX_CAPACITY: i64 = 1_000_000;
/// Free trial days a price may give (Stripe's limit).
pub const MAX_TRIAL_DAYS: i64 = 730;

/// A price as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    /// In minor units; at most 99999999 (Stripe's limit).
    pub unit_amount: Amount,
    /// Default: the tenant's currency.
    pub currency: Option<Currency>,
    /// Makes the price recurring (a plan's price).
    pub recurring_interval: Option<RecurringInterval>,
    /// Intervals per period (default 1; at most a year in all).
    pub recurring_interval_count: Option<i64>,
    /// Free trial days for new subscriptions (1 to 730).
    pub trial_days: Option<i64>,
    /// A name for the price that stays when the price is replaced (1 to 160 characters).
    pub lookup_key: Option<String>,
    /// `licensed` (default) or `metered`: usage reported to `POST /v1/usage` is billed.
    pub usage_type: Option<UsageType>,
    /// For a metered price: the usage event name it bills.
    pub meter_event_name: Option<String>,
}

/// A product as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    pub kind: ProductKind,
    /// 1 to 250 characters.
    pub title: String,
    /// Up to 5000 characters.
    pub description: Option<String>,
    /// Default `draft`.
    pub status: Option<ProductStatus>,
    /// Who gets the creator's share of the split.
    pub creator_id: Option<String>,
    /// Seats, for events only.
    pub capacity: Option<i64>,
    /// Up to 50 string values.
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// A first price.
    pub price: Option<PriceInput>,
}

/// Changes to a product; what is left out stays as it is.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdateInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<ProductStatus>,
    pub capacity: Option<i64>,
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A usage event name: what Stripe's meter is named by (with the tenant in front).
fn check_event_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::param(
            "meter_event_name",
            "meter_event_name is 1 to 64 letters, digits, '_', '-' or '.'.",
        ))
    }
}

fn check_capacity(kind: ProductKind, capacity: Option<i64>) -> Result<()> {
    match capacity {
        None => Ok(()),
        Some(_) if !kind.has_capacity() => {
            Err(Error::param("capacity", "Only events have a capacity."))
        }
        Some(c) if !(0..=MAX_CAPACITY).contains(&c) => Err(Error::param(
            "capacity",
            format!("capacity is 0 to {MAX_CAPACITY} seats."),
        )),
        Some(_) => Ok(()),
    }
}

fn check_creator(creator: Option<&str>) -> Result<Option<String>> {
    creator
        .map(|c| {
            validate::token("creator_id", c, 255)?;
            Ok(c.to_owned())
        })
        .transpose()
}

/// Checks a price against what Stripe accepts.
pub fn new_price(p: &PriceInput, tenant: &Tenant) -> Result<NewPrice> {
    if p.unit_amount > Amount::STRIPE_MAX {
        return Err(Error::invalid(
            "unit_amount",
            Code::AmountTooLarge,
            format!("unit_amount is at most {} minor units.", Amount::STRIPE_MAX),
        ));
    }
    let recurring = match p.recurring_interval {
        Some(interval) => {
            let count = p.recurring_interval_count.unwrap_or(1);
            if !(1..=interval.max_count()).contains(&count) {
                return Err(Error::param(
                    "recurring_interval_count",
                    "A period is at most one year.",
                ));
            }
            if p.trial_days
                .is_some_and(|d| !(1..=MAX_TRIAL_DAYS).contains(&d))
            {
                return Err(Error::param(
                    "trial_days",
                    format!("trial_days is 1 to {MAX_TRIAL_DAYS}."),
                ));
            }
            let usage_type = p.usage_type.unwrap_or(UsageType::Licensed);
            match (usage_type, &p.meter_event_name) {
                (UsageType::Licensed, None) => {}
                (UsageType::Metered, Some(name)) => check_event_name(name)?,
                (UsageType::Metered, None) => {
                    return Err(Error::missing(
                        "meter_event_name",
                        "A metered price names its meter_event_name.",
                    ));
                }
                (UsageType::Licensed, Some(_)) => {
                    return Err(Error::invalid(
                        "meter_event_name",
                        Code::ParameterConflict,
                        "meter_event_name goes with usage_type=metered.",
                    ));
                }
            }
            Some(Recurring {
                interval,
                interval_count: count,
                trial_days: p.trial_days,
                usage_type,
                meter_event_name: p.meter_event_name.clone(),
            })
        }
        None => {
            let recurring_only = [
                (
                    "recurring_interval_count",
                    p.recurring_interval_count.is_some(),
                ),
                ("trial_days", p.trial_days.is_some()),
                ("usage_type", p.usage_type.is_some()),
                ("meter_event_name", p.meter_event_name.is_some()),
            ];
            if let Some((param, _)) = recurring_only.iter().find(|(_, set)| *set) {
                return Err(Error::missing(
                    "recurring_interval",
                    format!("{param} needs a recurring_interval."),
                ));
            }
            None
        }
    };
    if let Some(k) = &p.lookup_key {
        validate::lookup_key("lookup_key", k)?;
    }
    Ok(NewPrice {
        currency: p
            .currency
            .clone()
            .unwrap_or_else(|| tenant.default_currency.clone()),
        unit_amount: p.unit_amount,
        recurring,
        lookup_key: p.lookup_key.clone(),
    })
}

/// Syncs a price to Stripe now; if Stripe is down the checkout will try again.
async fn sync_best_effort(state: &AppState, tenant: &Tenant, product: &Product, price: Price) {
    if let Err(e) = ensure_stripe_price(state, &tenant.id, product, price).await {
        tracing::warn!(error = %e.message, product = %product.id, "price not synced to Stripe yet");
    }
}

pub async fn create_product(
    state: &AppState,
    tenant: &Tenant,
    input: ProductInput,
) -> Result<Product> {
    let title = validate::text("title", &input.title, MAX_TITLE)?;
    let description =
        validate::opt_text("description", input.description.as_deref(), MAX_DESCRIPTION)?;
    check_capacity(input.kind, input.capacity)?;
    let creator_id = check_creator(input.creator_id.as_deref())?;
    let metadata = input.metadata.unwrap_or_default();
    validate::metadata("metadata", &metadata)?;
    let price = input
        .price
        .as_ref()
        .map(|p| new_price(p, tenant))
        .transpose()?;
    let product = state
        .store
        .create_product(
            &tenant.id,
            &NewProduct {
                kind: input.kind,
                title,
                description,
                status: input.status.unwrap_or(ProductStatus::Draft),
                creator_id,
                capacity: input.capacity,
                metadata,
            },
        )
        .await?;
    if let Some(p) = price {
        let price = state
            .store
            .create_price(&tenant.id, &product.id, &p)
            .await?;
        sync_best_effort(state, tenant, &product, price).await;
    }
    Ok(state.store.product(&tenant.id, &product.id).await?)
}

/// One of the tenant's products that is not deleted; 404 otherwise.
pub async fn live_product(state: &AppState, tenant: &Tenant, id: &ProductId) -> Result<Product> {
    match state.store.product(&tenant.id, id).await {
        Ok(p) if p.deleted_at.is_none() => Ok(p),
        Ok(_) | Err(StoreError::NotFound) => Err(Error::not_found("product", id.as_str())),
        Err(e) => Err(e.into()),
    }
}

pub async fn update_product(
    state: &AppState,
    tenant: &Tenant,
    id: &ProductId,
    input: ProductUpdateInput,
) -> Result<Product> {
    let product = live_product(state, tenant, id).await?;
    let title = validate::opt_text("title", input.title.as_deref(), MAX_TITLE)?;
    let description =
        validate::opt_text("description", input.description.as_deref(), MAX_DESCRIPTION)?;
    check_capacity(product.kind, input.capacity)?;
    if let Some(m) = &input.metadata {
        validate::metadata("metadata", m)?;
    }
    // Stripe first: a failure there leaves both as they were, and setting the same
    // values again on a retry is harmless.
    let mut next = product.clone();
    if let Some(t) = &title {
        next.title = t.clone();
    }
    if let Some(d) = &description {
        next.description = Some(d.clone());
    }
    if let Some(s) = input.status {
        next.status = s;
    }
    sync_product(state, &next).await?;
    Ok(state
        .store
        .update_product(
            &tenant.id,
            &product.id,
            &ProductUpdate {
                title,
                description,
                status: input.status,
                capacity: input.capacity,
                metadata: input.metadata,
            },
        )
        .await?)
}

/// Soft delete: the product can no longer be sold; its buyers keep access.
pub async fn delete_product(state: &AppState, tenant: &Tenant, id: &ProductId) -> Result<Product> {
    let product = live_product(state, tenant, id).await?;
    let mut gone = product.clone();
    gone.deleted_at = Some(tollgate_domain::Timestamp::now());
    sync_product(state, &gone).await?;
    Ok(state.store.delete_product(&tenant.id, &product.id).await?)
}

pub async fn add_price(
    state: &AppState,
    tenant: &Tenant,
    product: &ProductId,
    input: PriceInput,
) -> Result<Price> {
    let product = live_product(state, tenant, product).await?;
    let p = new_price(&input, tenant)?;
    let price = state
        .store
        .create_price(&tenant.id, &product.id, &p)
        .await?;
    sync_best_effort(state, tenant, &product, price.clone()).await;
    Ok(state.store.price(&tenant.id, &price.id).await?)
}
