//! Subscriptions: mirroring Stripe's state, and the changes Tollgate's API makes (cancel,
//! resume, change of plan, pause), each one a Stripe call with an idempotency key followed
//! by storing the state Stripe answers with. Also the customer portal.
//!
//! Every write of the mirror is a read of Stripe numbered before it was made, so whatever
//! order events and API calls land in, the newest read wins.

use sha2::Digest;
use tollgate_domain::status::SubscriptionStatus;
use tollgate_domain::subscription::{Change, Rate, change};
use tollgate_domain::{CustomerId, OrderId};
use tollgate_store::{InboxEvent, Price, StoreError, Subscription, SubscriptionRecord, Tenant};
use tollgate_stripe::{
    PREVIOUS_PRICE_KEY, PREVIOUS_UNTIL_KEY, PortalConfig, SubscriptionChange, SubscriptionState,
};

use super::{ensure_stripe_customer, ensure_stripe_price, metadata};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Reads a subscription from Stripe and stores it; `mark_event` is marked processed with
/// the write. The webhook worker, `?sync=true` and checkout completion come here.
pub async fn sync_subscription(
    state: &AppState,
    tenant: &Tenant,
    stripe_id: &str,
    mark_event: Option<&InboxEvent>,
) -> ApiResult<Subscription> {
    let seq = state.store.next_sync_seq().await?;
    let s = state.stripe.retrieve_subscription(stripe_id).await?;
    store_state(state, tenant, seq, s, mark_event).await
}

/// Maps Stripe's state to the mirror's record and stores it under `seq`.
async fn store_state(
    state: &AppState,
    tenant: &Tenant,
    seq: i64,
    s: SubscriptionState,
    mark_event: Option<&InboxEvent>,
) -> ApiResult<Subscription> {
    let t = &tenant.id;
    let customer = match state.store.customer_by_stripe_id(t, &s.customer).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            return Err(ApiError::not_found("customer for subscription", &s.id));
        }
        Err(e) => return Err(e.into()),
    };
    let item = s
        .plan_item()
        .ok_or_else(|| ApiError::conflict("no_items", "The subscription has no items."))?;
    let previous = match s.metadata.get(PREVIOUS_PRICE_KEY).filter(|p| !p.is_empty()) {
        Some(p) => known_price(state, tenant, p).await?,
        None => None,
    };
    let previous_until = s
        .metadata
        .get(PREVIOUS_UNTIL_KEY)
        .and_then(|u| u.parse::<i64>().ok());
    let order_id = match s.metadata.get("order_id").and_then(|o| OrderId::parse(o)) {
        Some(o) if state.store.order(t, &o).await.is_ok() => Some(o),
        _ => None,
    };
    let mut items = Vec::with_capacity(s.items.len());
    // The plan item is the first: its price is read once, here.
    let mut price = None;
    for (n, i) in s.items.iter().enumerate() {
        let local = known_price(state, tenant, &i.stripe_price_id).await?;
        items.push(serde_json::json!({
            "stripe_item_id": i.id,
            "stripe_price_id": i.stripe_price_id,
            "price_id": local.as_ref().map(|p| p.id.clone()),
            "quantity": i.quantity,
        }));
        if n == 0 {
            price = local;
        }
    }
    let record = SubscriptionRecord {
        customer_id: customer.id.clone(),
        stripe_subscription_id: s.id.clone(),
        stripe_customer_id: s.customer.clone(),
        status: SubscriptionStatus::parse(&s.status).unwrap_or(SubscriptionStatus::Incomplete),
        product_id: price.as_ref().map(|p| p.product_id.clone()),
        price_id: price.as_ref().map(|p| p.id.clone()),
        stripe_price_id: item.stripe_price_id.clone(),
        stripe_item_id: item.id.clone(),
        quantity: item.quantity,
        items: serde_json::Value::Array(items),
        currency: s.currency.clone(),
        current_period_start: item.current_period_start,
        current_period_end: item.current_period_end,
        trial_start: s.trial_start,
        trial_end: s.trial_end,
        cancel_at_period_end: s.cancel_at_period_end,
        cancel_at: s.cancel_at,
        canceled_at: s.canceled_at,
        ended_at: s.ended_at,
        pause_behavior: s.pause_behavior.clone(),
        pause_resumes_at: s.pause_resumes_at,
        past_due_since: s.past_due_since(),
        previous_price_id: previous.as_ref().map(|p| p.id.clone()),
        previous_product_id: previous.as_ref().map(|p| p.product_id.clone()),
        previous_until: previous.as_ref().and(previous_until),
        latest_invoice_id: s.latest_invoice.as_ref().map(|i| i.id.clone()),
        order_id,
    };
    let (stored, written) = state
        .store
        .upsert_subscription(t, &record, seq, mark_event)
        .await?;
    if written {
        state.access_changed(t, &stored.customer_id).await;
        tracing::info!(tenant = %t, subscription = %stored.id, status = %stored.status, "subscription mirrored");
    }
    Ok(stored)
}

/// Stores a state Stripe answered a change with, read under `seq`.
pub(crate) async fn store_answer(
    state: &AppState,
    tenant: &Tenant,
    seq: i64,
    s: SubscriptionState,
) -> ApiResult<Subscription> {
    store_state(state, tenant, seq, s, None).await
}

/// The tenant's price Stripe knows by this id, if it is one of the tenant's.
async fn known_price(
    state: &AppState,
    tenant: &Tenant,
    stripe_id: &str,
) -> ApiResult<Option<Price>> {
    match state.store.price_by_stripe_id(&tenant.id, stripe_id).await {
        Ok(p) => Ok(Some(p)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes one change in Stripe (keyed by the subscription, the change and the state it was
/// asked of) and stores the state Stripe answers with.
async fn apply(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
    change: &SubscriptionChange,
    name: &str,
) -> ApiResult<Subscription> {
    let seq = state.store.next_sync_seq().await?;
    let key = format!("tg-{name}-{}-{}", sub.id, sub.synced_seq);
    let answer = state
        .stripe
        .update_subscription(&sub.stripe_subscription_id, change, &key)
        .await?;
    store_state(state, tenant, seq, answer, None).await
}

fn ended(sub: &Subscription) -> ApiResult<()> {
    if matches!(
        sub.status(),
        SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
    ) {
        return Err(ApiError::conflict(
            "subscription_ended",
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
) -> ApiResult<Subscription> {
    ended(sub)?;
    if at_period_end {
        if sub.cancel_at_period_end {
            return Ok(sub.clone());
        }
        return apply(
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
    store_state(state, tenant, seq, answer, None).await
}

/// Takes back a cancellation at period end; or resumes a subscription whose status is
/// `paused` (a trial that ended without a card).
pub async fn resume_subscription(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
) -> ApiResult<Subscription> {
    ended(sub)?;
    if sub.status() == SubscriptionStatus::Paused {
        let seq = state.store.next_sync_seq().await?;
        let answer = state
            .stripe
            .resume_subscription(
                &sub.stripe_subscription_id,
                &format!("tg-resume-{}-{}", sub.id, sub.synced_seq),
            )
            .await?;
        return store_state(state, tenant, seq, answer, None).await;
    }
    if !sub.cancel_at_period_end {
        return Err(ApiError::conflict(
            "not_canceling",
            "The subscription is not set to cancel; there is nothing to resume.",
        ));
    }
    apply(
        state,
        tenant,
        sub,
        &SubscriptionChange::CancelAtPeriodEnd(false),
        "uncancel",
    )
    .await
}

/// What a change of plan came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanChange {
    pub subscription: Subscription,
    pub change: Change,
    /// When the new price takes effect (Unix seconds): now for an upgrade, the end of the
    /// period for a downgrade.
    pub effective_at: i64,
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
    to: Price,
    quantity: Option<i64>,
) -> ApiResult<PlanChange> {
    ended(sub)?;
    let t = &tenant.id;
    if !to.is_recurring() || !to.active {
        return Err(ApiError::invalid(
            "price",
            "invalid_price",
            "Subscriptions change to an active recurring price.",
        ));
    }
    if to.currency != sub.currency {
        return Err(ApiError::invalid(
            "price",
            "currency_mismatch",
            format!("The subscription is billed in {}.", sub.currency),
        ));
    }
    let quantity = quantity.unwrap_or(sub.quantity);
    if !(1..=100).contains(&quantity) {
        return Err(ApiError::invalid(
            "quantity",
            "invalid_quantity",
            "quantity must be between 1 and 100.",
        ));
    }
    if sub.price_id.as_ref() == Some(&to.id) && quantity == sub.quantity {
        return Err(ApiError::invalid(
            "price",
            "same_price",
            "The subscription is on this price already.",
        ));
    }
    let from = match &sub.price_id {
        Some(p) => state.store.price(t, p).await?,
        None => {
            return Err(ApiError::conflict(
                "unknown_price",
                "The subscription's price was not made through Tollgate; change it in Stripe.",
            ));
        }
    };
    let product = state.store.product(t, &to.product_id).await?;
    let to = ensure_stripe_price(state, t, &product, to).await?;
    let same_interval = from.recurring_interval == to.recurring_interval
        && from.recurring_interval_count == to.recurring_interval_count;
    let kind = if same_interval && sub.status() != SubscriptionStatus::Trialing {
        change(rate(&from, sub.quantity), rate(&to, quantity))
    } else {
        Change::Upgrade
    };
    let stripe_price = to.stripe_price_id.clone().unwrap_or_default();
    let previous = match kind {
        // The plan paid for so far stays until the period it was paid for ends (a second
        // downgrade in one period keeps the first plan paid for).
        Change::Downgrade => Some(match sub.carried_over() {
            Some(_) => (
                state
                    .store
                    .price(t, sub.previous_price_id.as_ref().unwrap_or(&from.id))
                    .await?
                    .stripe_price_id
                    .unwrap_or_else(|| sub.stripe_price_id.clone()),
                sub.previous_until.unwrap_or(sub.current_period_end),
            ),
            None => (sub.stripe_price_id.clone(), sub.current_period_end),
        }),
        Change::Upgrade => None,
    };
    let effective_at = match kind {
        Change::Downgrade => sub.current_period_end,
        Change::Upgrade => tollgate_store::now_ms() / 1000,
    };
    let changed = apply(
        state,
        tenant,
        sub,
        &SubscriptionChange::ChangePrice {
            item: sub.stripe_item_id.clone(),
            price: stripe_price.clone(),
            quantity: u64::try_from(quantity).ok(),
            prorate_now: kind == Change::Upgrade,
            previous,
        },
        &format!("change-{stripe_price}-{quantity}"),
    )
    .await?;
    tracing::info!(tenant = %t, subscription = %sub.id, change = ?kind, price = %to.id, "plan changed");
    Ok(PlanChange {
        subscription: changed,
        change: kind,
        effective_at,
    })
}

fn rate(p: &Price, quantity: i64) -> Rate<'_> {
    Rate {
        unit_amount: p.unit_amount,
        quantity,
        interval: p.recurring_interval.as_deref().unwrap_or("month"),
        interval_count: p.recurring_interval_count.unwrap_or(1),
    }
}

/// Pauses collection: invoices are voided (or kept as drafts, or marked uncollectible)
/// and access is withheld until collection resumes (`resumes_at`, or `unpause`).
pub async fn pause_subscription(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
    behavior: &str,
    resumes_at: Option<i64>,
) -> ApiResult<Subscription> {
    ended(sub)?;
    apply(
        state,
        tenant,
        sub,
        &SubscriptionChange::Pause {
            behavior: behavior.to_owned(),
            resumes_at,
        },
        &format!("pause-{behavior}-{}", resumes_at.unwrap_or(0)),
    )
    .await
}

pub async fn unpause_subscription(
    state: &AppState,
    tenant: &Tenant,
    sub: &Subscription,
) -> ApiResult<Subscription> {
    ended(sub)?;
    if sub.pause_behavior.is_none() {
        return Err(ApiError::conflict(
            "not_paused",
            "The subscription's collection is not paused.",
        ));
    }
    apply(state, tenant, sub, &SubscriptionChange::Unpause, "unpause").await
}

/// A customer portal session with the tenant's return URL and portal configuration;
/// answers its URL.
pub async fn portal_session(
    state: &AppState,
    tenant: &Tenant,
    customer: &CustomerId,
    return_url: Option<String>,
) -> ApiResult<String> {
    let t = &tenant.id;
    let customer = match state.store.customer(t, customer).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            return Err(ApiError::not_found("customer", customer.as_str()));
        }
        Err(e) => return Err(e.into()),
    };
    let return_url = return_url
        .or_else(|| {
            tenant
                .portal_return_url_template
                .as_ref()
                .map(|u| u.replace("{CUSTOMER_ID}", customer.id.as_str()))
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "return_url",
                "parameter_missing",
                "Pass return_url, or set the tenant's portal return URL template.",
            )
        })?;
    super::checkout::check_url("return_url", &return_url)?;
    let customer = ensure_stripe_customer(state, t, customer, None).await?;
    let configuration = portal_configuration(state, tenant).await?;
    state
        .stripe
        .create_portal_session(
            customer.stripe_customer_id.as_deref().unwrap_or_default(),
            Some(&return_url),
            &configuration,
        )
        .await
        .map_err(ApiError::from)
}

/// The Stripe portal configuration for the tenant's settings and plans, made anew when
/// either changes (configurations are keyed by a hash of what they are made from).
async fn portal_configuration(state: &AppState, tenant: &Tenant) -> ApiResult<String> {
    let t = &tenant.id;
    let settings = &tenant.portal;
    // The plans a customer may switch between: the tenant's published products with
    // active recurring prices, each price known to Stripe.
    let mut switch_to: Vec<(String, Vec<String>)> = Vec::new();
    if settings.switch_plan {
        for product in state
            .store
            .list_products(t, Some("published"), 100, None)
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
    Ok(id)
}
