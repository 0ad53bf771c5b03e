//! Price migrations: a new price takes an old one's place for new sign-ups (and its lookup
//! key, here and in Stripe), and existing subscriptions move onto it at a set time.

use std::time::Duration;

use serde::Deserialize;
use tollgate_domain::{PriceMigrationId, Timestamp};
use tollgate_store::{PriceMigration, StoreError, Tenant};
use utoipa::ToSchema;

use super::stripe_objects::{ensure_stripe_price, stripe_lookup_key, sync_product};
use super::subscriptions::move_to_price;
use super::{PriceRef, find_price, validate};
use crate::error::{Error, Result};
use crate::state::AppState;

/// What a price migration is asked to do.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationInput {
    /// The price that takes the old one's place (an id or lookup key).
    pub to_price: String,
    /// When existing subscriptions move onto it (they pay it from their next renewal on),
    /// or `null` to leave them on the old price.
    pub move_existing_at: Option<Timestamp>,
}

/// How long one instance holds a migration while it moves subscriptions.
const MIGRATION_LEASE: Duration = Duration::from_secs(10 * 60);

/// One of the tenant's price migrations; 404 when there is none.
pub async fn find(
    state: &AppState,
    tenant: &Tenant,
    id: &PriceMigrationId,
) -> Result<PriceMigration> {
    match state.store.price_migration(&tenant.id, id).await {
        Ok(m) => Ok(m),
        Err(StoreError::NotFound) => Err(Error::not_found("price migration", id.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// Puts `to` in `from`'s place for new sign-ups (the old price is archived here and in
/// Stripe, its lookup key moves) and schedules existing subscriptions' move if asked.
/// A move due now starts at once.
pub async fn migrate_price(
    state: &AppState,
    tenant: &Tenant,
    from: &PriceRef,
    input: MigrationInput,
) -> Result<PriceMigration> {
    let t = &tenant.id;
    let from = find_price(state, t, from, "id").await?;
    let to = find_price(
        state,
        t,
        &PriceRef::parse("to_price", &input.to_price)?,
        "to_price",
    )
    .await?;
    let move_at = input
        .move_existing_at
        .map(|at| validate::future("move_existing_at", at))
        .transpose()?;
    if !from.is_recurring() || !to.is_recurring() {
        return Err(Error::param(
            "to_price",
            "Migrations move subscriptions between recurring prices.",
        ));
    }
    if from.id == to.id || !to.active || !from.active {
        return Err(Error::param(
            "to_price",
            "Migrate from an active price to another active price.",
        ));
    }
    if from.currency != to.currency || from.product_id != to.product_id {
        return Err(Error::param(
            "to_price",
            "The new price must be of the same product and currency.",
        ));
    }
    let product = state.store.product(t, &to.product_id).await?;
    let to = ensure_stripe_price(state, t, &product, to).await?;
    // In Stripe: the lookup key moves to the new price first, then the old one is archived.
    if let (Some(key), Some(to_stripe)) = (&from.lookup_key, &to.stripe_price_id) {
        state
            .stripe
            .update_price(to_stripe, true, Some(&stripe_lookup_key(t, key)))
            .await?;
    }
    if let Some(stripe_id) = &from.stripe_price_id {
        state.stripe.update_price(stripe_id, false, None).await?;
    }
    state.store.replace_price(t, &from.id, &to.id).await?;
    sync_product(state, &product).await?;
    let migration = state
        .store
        .create_price_migration(t, &from.id, &to.id, move_at)
        .await?;
    tracing::info!(tenant = %t, migration = %migration.id, from = %from.id, to = %to.id, "price replaced");
    if move_at.is_some_and(|at| at <= Timestamp::now()) {
        let (state, tenant, m) = (state.clone(), tenant.clone(), migration.clone());
        tokio::spawn(async move {
            if let Err(e) = run_price_migration(&state, &tenant, &m).await {
                tracing::warn!(error = %e.message, migration = %m.id, "price migration failed; the sweep tries again");
            }
        });
    }
    Ok(migration)
}

/// Moves every live subscription of a due migration onto the new price, without
/// proration: each pays the new price from its next renewal. Idempotent per subscription;
/// the migration is done once none is left on the old price.
pub async fn run_price_migration(
    state: &AppState,
    tenant: &Tenant,
    m: &PriceMigration,
) -> Result<PriceMigration> {
    let t = &tenant.id;
    if !state
        .store
        .claim_price_migration(t, &m.id, MIGRATION_LEASE)
        .await?
    {
        return Ok(state.store.price_migration(t, &m.id).await?);
    }
    let to = state.store.price(t, &m.to_price_id).await?;
    let product = state.store.product(t, &to.product_id).await?;
    let to = ensure_stripe_price(state, t, &product, to).await?;
    let stripe_price = to.stripe_price_id.clone().ok_or_else(Error::internal)?;
    let (mut moved, mut failed) = (0, 0);
    for sub in state
        .store
        .live_subscriptions_on_price(t, &m.from_price_id)
        .await?
    {
        let key = format!("tg-migrate-{}-{}", m.id, sub.id);
        match move_to_price(state, tenant, &sub, &stripe_price, &key).await {
            Ok(_) => moved += 1,
            Err(e) => {
                tracing::warn!(error = %e, subscription = %sub.id, migration = %m.id, "moving a subscription failed");
                failed += 1;
            }
        }
    }
    // Subscriptions that failed stay on the old price and are tried again next sweep.
    Ok(state
        .store
        .record_price_migration(t, &m.id, moved, failed, failed == 0)
        .await?)
}
