//! Subscriptions: mirroring Stripe's state, and the changes Tollgate's API makes (cancel,
//! resume, change of plan, pause), each one a Stripe call with an idempotency key followed
//! by storing the state Stripe answers with.
//!
//! Every write of the mirror is a read of Stripe numbered before it was made, so whatever
//! order events and API calls land in, the newest read wins.

use serde::Deserialize;
use tollgate_domain::status::{PauseBehavior, RecurringInterval, SubscriptionStatus};
use tollgate_domain::subscription::{Change, Rate, change};
use tollgate_domain::{
    CustomerId, OrderId, PriceId, ProductId, StripeCustomerId, StripePriceId, StripeSubscriptionId,
    SubscriptionId, TenantId, Timestamp,
};
use tollgate_store::{
    Claimed, Price, StoreError, Subscription, SubscriptionItem, SubscriptionRecord, Tenant,
};
use tollgate_stripe::{SubscriptionChange, SubscriptionState};
use utoipa::ToSchema;

use super::stripe_objects::ensure_stripe_price;
use super::validate;
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// What reading a subscription from Stripe came to.
#[derive(Debug)]
pub enum Synced {
    /// Stored (or an older read than the stored one: the stored state stands).
    Mirrored(Box<Subscription>),
    /// Not one of the tenant's customers' (made outside Tollgate): nothing to mirror.
    NotOurs,
}

/// One of the tenant's subscriptions; 404 when there is none.
pub async fn find(state: &AppState, tenant: &Tenant, id: &SubscriptionId) -> Result<Subscription> {
    match state.store.subscription(&tenant.id, id).await {
        Ok(s) => Ok(s),
        Err(StoreError::NotFound) => Err(Error::not_found("subscription", id.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// Reads a subscription from Stripe and stores it; `marks` are marked processed with
/// the write. The webhook worker, `?sync=true` and checkout completion come here.
pub async fn sync_subscription(
    state: &AppState,
    tenant: &Tenant,
    stripe_id: &StripeSubscriptionId,
    marks: &[Claimed],
) -> Result<Synced> {
    let seq = state.store.next_sync_seq().await?;
    let s = state.stripe.retrieve_subscription(stripe_id).await?;
    store_state(state, tenant, seq, s, marks).await
}

/// Maps Stripe's state to the mirror's record and stores it under `seq`.
async fn store_state(
    state: &AppState,
    tenant: &Tenant,
    seq: i64,
    s: SubscriptionState,
    marks: &[Claimed],
) -> Result<Synced> {
    let t = &tenant.id;
    let Some(customer_id) = known_customer(state, t, &s.customer).await? else {
        return Ok(Synced::NotOurs);
    };
    let item = s
        .plan_item()
        .ok_or_else(|| Error::conflict(Code::Conflict, "The subscription has no items."))?;
    let (previous, previous_until) = match s.previous() {
        Some((price, until)) => (known_price(state, tenant, &price).await?, until),
        None => (None, None),
    };
    let order_id = match s
        .metadata
        .get("order_id")
        .and_then(|o| OrderId::parse(o).ok())
    {
        Some(o) if known_order(state, t, &o).await => Some(o),
        _ => None,
    };
    let mut items = Vec::with_capacity(s.items.len());
    // The plan item is the first: its price is read once, here.
    let mut price = None;
    for (n, i) in s.items.iter().enumerate() {
        let local = known_price(state, tenant, &i.stripe_price_id).await?;
        items.push(SubscriptionItem {
            stripe_item_id: i.id.clone(),
            stripe_price_id: i.stripe_price_id.clone(),
            price_id: local.as_ref().map(|(price, _)| price.clone()),
            quantity: i.quantity,
        });
        if n == 0 {
            price = local;
        }
    }
    let record = SubscriptionRecord {
        customer_id,
        stripe_subscription_id: s.id.clone(),
        stripe_customer_id: s.customer.clone(),
        status: s.status,
        product_id: price.as_ref().map(|(_, product)| product.clone()),
        price_id: price.as_ref().map(|(price, _)| price.clone()),
        stripe_price_id: item.stripe_price_id.clone(),
        stripe_item_id: item.id.clone(),
        quantity: item.quantity,
        items,
        currency: s.currency.clone(),
        current_period_start: item.current_period_start,
        current_period_end: item.current_period_end,
        trial_start: s.trial_start,
        trial_end: s.trial_end,
        cancel_at_period_end: s.cancel_at_period_end,
        cancel_at: s.cancel_at,
        canceled_at: s.canceled_at,
        ended_at: s.ended_at,
        pause_behavior: s.pause_behavior,
        pause_resumes_at: s.pause_resumes_at,
        past_due_since: s.past_due_since(),
        previous_price_id: previous.as_ref().map(|(price, _)| price.clone()),
        previous_product_id: previous.as_ref().map(|(_, product)| product.clone()),
        previous_until: previous.as_ref().and(previous_until),
        latest_invoice_id: s.latest_invoice.as_ref().map(|i| i.id.clone()),
        order_id,
    };
    let (stored, changes) = match state
        .store
        .upsert_subscription(t, &record, seq, marks)
        .await
    {
        Ok(done) => done,
        // Mirrored under another tenant: never this tenant's to see or change.
        Err(StoreError::NotFound) => return Ok(Synced::NotOurs),
        Err(e) => return Err(e.into()),
    };
    if !changes.is_empty() {
        tracing::info!(tenant = %t, subscription = %stored.id, status = %stored.status, "subscription mirrored");
    }
    state.apply(changes).await;
    Ok(Synced::Mirrored(Box::new(stored)))
}

/// Mirrors a change Stripe answered: reads the subscription once more and stores that.
/// The read began after Stripe made the change and is numbered above every read that may
/// have begun before it, so an older state read by a worker at the same time cannot undo
/// the change once it is answered, and a newer one (another change made meanwhile) wins.
/// Should the read fail, the answer is stored, numbered before the call as a read is
/// numbered before it begins, so that the read for the change's own event has the last
/// word.
async fn store_answer(
    state: &AppState,
    tenant: &Tenant,
    seq: i64,
    s: SubscriptionState,
) -> Result<Subscription> {
    match sync_subscription(state, tenant, &s.id, &[]).await {
        Ok(Synced::Mirrored(sub)) => {
            // The read's write is dropped when a worker stored a newer read first, and that
            // worker may not have refreshed the customer's access yet: the answer shows the
            // stored state's access, so it is read into the index before answering.
            state
                .refresh_customer(tenant.id.clone(), sub.customer_id.clone())
                .await;
            Ok(*sub)
        }
        Ok(Synced::NotOurs) => Err(not_ours()),
        Err(e) => {
            tracing::warn!(subscription = %s.id, error = %e.message, "reading a subscription after changing it failed; storing Stripe's answer, and its event brings the rest");
            store_answer_only(state, tenant, seq, s).await
        }
    }
}

/// Stores the state Stripe answered a change with, numbered before the call.
async fn store_answer_only(
    state: &AppState,
    tenant: &Tenant,
    seq: i64,
    s: SubscriptionState,
) -> Result<Subscription> {
    match store_state(state, tenant, seq, s, &[]).await? {
        Synced::Mirrored(sub) => Ok(*sub),
        Synced::NotOurs => Err(not_ours()),
    }
}

fn not_ours() -> Error {
    Error::conflict(
        Code::Conflict,
        "The subscription no longer belongs to a customer of this tenant.",
    )
}

/// The tenant's price Stripe knows by this id, if it is one of the tenant's.
/// The tenant's price (and its product) for a Stripe price, if it is one of theirs.
async fn known_price(
    state: &AppState,
    tenant: &Tenant,
    stripe_id: &StripePriceId,
) -> Result<Option<(PriceId, ProductId)>> {
    let key = (tenant.id.clone(), stripe_id.clone());
    if let Some(found) = state.prices_by_stripe.get(&key) {
        return Ok(Some(found));
    }
    match state.store.price_by_stripe_id(&tenant.id, stripe_id).await {
        Ok(p) => {
            let found = (p.id, p.product_id);
            state.prices_by_stripe.insert(key, found.clone());
            Ok(Some(found))
        }
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The tenant's customer for a Stripe customer, if it is one of theirs.
async fn known_customer(
    state: &AppState,
    tenant: &TenantId,
    stripe_id: &StripeCustomerId,
) -> Result<Option<CustomerId>> {
    let key = (tenant.clone(), stripe_id.clone());
    if let Some(found) = state.customers_by_stripe.get(&key) {
        return Ok(Some(found));
    }
    match state.store.customer_by_stripe_id(tenant, stripe_id).await {
        Ok(c) => {
            state.customers_by_stripe.insert(key, c.id.clone());
            Ok(Some(c.id))
        }
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether the tenant has this order.
async fn known_order(state: &AppState, tenant: &TenantId, order: &OrderId) -> bool {
    let key = (tenant.clone(), order.clone());
    if state.known_orders.get(&key).is_some() {
        return true;
    }
    let found = state.store.order(tenant, order).await.is_ok();
    if found {
        state.known_orders.insert(key, ());
    }
    found
}

/// Makes one change in Stripe (keyed by the subscription, the change and the state it was
/// asked of) and stores the state Stripe answers with.
async fn apply_change(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
    change: &SubscriptionChange,
    name: &str,
) -> Result<Subscription> {
    let seq = state.store.next_sync_seq().await?;
    let key = format!("tg-{name}-{}-{}", sub.id, sub.synced_seq);
    let answer = state
        .stripe
        .update_subscription(&sub.stripe_subscription_id, change, &key)
        .await?;
    store_answer(state, tenant, seq, answer).await
}

fn not_ended(sub: &Subscription) -> Result<()> {
    if sub.status.has_ended() {
        return Err(Error::conflict(
            Code::SubscriptionEnded,
            format!(
                "The subscription is {}; start a new one instead.",
                sub.status
            ),
        ));
    }
    Ok(())
}

/// Cancels at the end of the period (the default: the customer keeps what they paid
/// for), or now.
pub async fn cancel_subscription(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
    at_period_end: bool,
) -> Result<Subscription> {
    not_ended(sub)?;
    if at_period_end {
        if sub.cancel_at_period_end {
            return Ok(sub.clone());
        }
        return apply_change(
            state,
            tenant,
            sub,
            &SubscriptionChange::CancelAtPeriodEnd(true),
            "cancel",
        )
        .await;
    }
    let seq = state.store.next_sync_seq().await?;
    let answer = state
        .stripe
        .cancel_subscription(
            &sub.stripe_subscription_id,
            &format!("tg-cancel-now-{}", sub.id),
        )
        .await?;
    store_answer(state, tenant, seq, answer).await
}

/// Takes back a cancellation at period end; or resumes a subscription whose status is
/// `paused` (a trial that ended without a card).
pub async fn resume_subscription(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
) -> Result<Subscription> {
    not_ended(sub)?;
    if sub.status == SubscriptionStatus::Paused {
        let seq = state.store.next_sync_seq().await?;
        let answer = state
            .stripe
            .resume_subscription(
                &sub.stripe_subscription_id,
                &format!("tg-resume-{}-{}", sub.id, sub.synced_seq),
            )
            .await?;
        return store_answer(state, tenant, seq, answer).await;
    }
    if !sub.cancel_at_period_end {
        return Err(Error::conflict(
            Code::NotCanceling,
            "The subscription is not set to cancel; there is nothing to resume.",
        ));
    }
    apply_change(
        state,
        tenant,
        sub,
        &SubscriptionChange::CancelAtPeriodEnd(false),
        "uncancel",
    )
    .await
}

/// A change of plan as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePriceInput {
    /// A price id or one of the tenant's lookup keys.
    pub price: String,
    /// Seats (1 to 100; default: as now).
    pub quantity: Option<i64>,
}

/// What a change of plan came to.
#[derive(Debug, Clone)]
pub struct PlanChange {
    pub subscription: Subscription,
    pub change: Change,
    /// When the new price takes effect: now for an upgrade, the end of the period for a
    /// downgrade.
    pub effective_at: Timestamp,
}

/// Moves a subscription to another of the tenant's recurring prices: an upgrade (costs
/// more a year) takes effect now with the difference prorated and charged at once; a
/// downgrade is billed from the next renewal and the customer keeps the plan they paid
/// for until the period ends. A change of interval takes effect now (Stripe restarts the
/// billing cycle).
pub async fn change_price(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
    input: ChangePriceInput,
) -> Result<PlanChange> {
    not_ended(sub)?;
    let t = &tenant.id;
    let reference = super::PriceRef::parse("price", &input.price)?;
    let to = super::find_price(state, t, &reference, "price").await?;
    if !to.is_recurring() || !to.active {
        return Err(Error::param(
            "price",
            "Subscriptions change to an active recurring price.",
        ));
    }
    if to.currency != sub.currency {
        return Err(Error::invalid(
            "price",
            Code::CurrencyMismatch,
            format!("The subscription is billed in {}.", sub.currency),
        ));
    }
    let quantity = input.quantity.unwrap_or(sub.quantity);
    if !(1..=100).contains(&quantity) {
        return Err(Error::invalid(
            "quantity",
            Code::InvalidQuantity,
            "quantity must be between 1 and 100.",
        ));
    }
    if sub.price_id.as_ref() == Some(&to.id) && quantity == sub.quantity {
        return Err(Error::invalid(
            "price",
            Code::SamePrice,
            "The subscription is on this price already.",
        ));
    }
    let from = match &sub.price_id {
        Some(p) => state.store.price(t, p).await?,
        None => {
            return Err(Error::conflict(
                Code::UnknownPrice,
                "The subscription's price was not made through Tollgate; change it in Stripe.",
            ));
        }
    };
    let product = state.store.product(t, &to.product_id).await?;
    let to = ensure_stripe_price(state, t, &product, to).await?;
    let to_stripe = to.stripe_price_id.clone().ok_or_else(Error::internal)?;
    let same_interval = from
        .recurring
        .as_ref()
        .map(|r| (r.interval, r.interval_count))
        == to
            .recurring
            .as_ref()
            .map(|r| (r.interval, r.interval_count));
    let kind = if same_interval && sub.status != SubscriptionStatus::Trialing {
        change(rate(&from, sub.quantity), rate(&to, quantity))
    } else {
        Change::Upgrade
    };
    let previous = match kind {
        // The plan paid for so far stays until the period it was paid for ends (a second
        // downgrade in one period keeps the first plan paid for).
        Change::Downgrade => Some(match sub.carried_over() {
            Some(_) => {
                let paid = state
                    .store
                    .price(t, sub.previous_price_id.as_ref().unwrap_or(&from.id))
                    .await?;
                (
                    paid.stripe_price_id
                        .unwrap_or_else(|| sub.stripe_price_id.clone()),
                    sub.previous_until.unwrap_or(sub.current_period_end),
                )
            }
            None => (sub.stripe_price_id.clone(), sub.current_period_end),
        }),
        Change::Upgrade => None,
    };
    let effective_at = match kind {
        Change::Downgrade => sub.current_period_end,
        Change::Upgrade => Timestamp::now(),
    };
    let changed = apply_change(
        state,
        tenant,
        sub,
        &SubscriptionChange::ChangePrice {
            item: sub.stripe_item_id.clone(),
            price: to_stripe.clone(),
            quantity: u64::try_from(quantity).ok(),
            prorate_now: kind == Change::Upgrade,
            previous,
        },
        &format!("change-{to_stripe}-{quantity}"),
    )
    .await?;
    tracing::info!(tenant = %t, subscription = %sub.id, change = ?kind, price = %to.id, "plan changed");
    Ok(PlanChange {
        subscription: changed,
        change: kind,
        effective_at,
    })
}

fn rate(p: &Price, quantity: i64) -> Rate {
    Rate {
        unit_amount: p.unit_amount.get(),
        quantity,
        interval: p
            .recurring
            .as_ref()
            .map_or(RecurringInterval::Month, |r| r.interval),
        interval_count: p.recurring.as_ref().map_or(1, |r| r.interval_count),
    }
}

/// A pause as the API takes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseInput {
    /// What becomes of invoices meanwhile: `void` (default), `keep_as_draft` or
    /// `mark_uncollectible`.
    pub behavior: Option<PauseBehavior>,
    /// When collection resumes on its own (Unix seconds, in the future).
    pub resumes_at: Option<Timestamp>,
}

/// Pauses collection: invoices are voided (or kept as drafts, or marked uncollectible)
/// and access is withheld until collection resumes (`resumes_at`, or `unpause`).
pub async fn pause_subscription(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
    input: PauseInput,
) -> Result<Subscription> {
    not_ended(sub)?;
    let behavior = input.behavior.unwrap_or(PauseBehavior::Void);
    let resumes_at = input
        .resumes_at
        .map(|t| validate::future("resumes_at", t))
        .transpose()?;
    apply_change(
        state,
        tenant,
        sub,
        &SubscriptionChange::Pause {
            behavior,
            resumes_at,
        },
        &format!("pause-{behavior}-{}", resumes_at.map_or(0, Timestamp::secs)),
    )
    .await
}

pub async fn unpause_subscription(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
) -> Result<Subscription> {
    not_ended(sub)?;
    if sub.pause_behavior.is_none() {
        return Err(Error::conflict(
            Code::NotPaused,
            "The subscription's collection is not paused.",
        ));
    }
    apply_change(state, tenant, sub, &SubscriptionChange::Unpause, "unpause").await
}

/// Moves a subscription onto another Stripe price from its next renewal, without
/// proration (a price migration); stores Stripe's answer.
pub async fn move_to_price(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
    price: &StripePriceId,
    idempotency_key: &str,
) -> Result<Subscription> {
    let seq = state.store.next_sync_seq().await?;
    let answer = state
        .stripe
        .update_subscription(
            &sub.stripe_subscription_id,
            &SubscriptionChange::ChangePrice {
                item: sub.stripe_item_id.clone(),
                price: price.clone(),
                quantity: None,
                prorate_now: false,
                previous: None,
            },
            idempotency_key,
        )
        .await?;
    // A migration moves many subscriptions at once and changes nothing before their renewal:
    // the answer stands, and each one's event brings the rest, without a read of each.
    store_answer_only(state, tenant, seq, answer).await
}
