//! Coupons and promotion codes (Tollgate's, synced to Stripe), metered usage, and price
//! migrations.

use tollgate_domain::{CouponId, Currency, CustomerId, PromotionCodeId};
use tollgate_store::{
    Coupon, NewCoupon, NewPromotionCode, NewUsage, Price, PriceMigration, PromotionCode,
    StoreError, Tenant, UsageRecord,
};
use tollgate_stripe::{NewStripeCoupon, SubscriptionChange};

use super::{ensure_stripe_price, metadata, sync_product};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A coupon as the API takes it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponInput {
    pub name: Option<String>,
    /// A share off in basis points: 2000 is 20%.
    pub percent_off_bps: Option<i64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub duration: Option<String>,
    pub duration_in_months: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub redeem_by: Option<i64>,
}

/// Validates a coupon, creates it in Stripe (under Tollgate's id, with an idempotency key)
/// and then records it: a failure at Stripe leaves nothing behind here.
pub async fn create_coupon(state: &AppState, tenant: &Tenant, c: CouponInput) -> ApiResult<Coupon> {
    let duration = c.duration.clone().unwrap_or_else(|| "once".into());
    if !matches!(duration.as_str(), "once" | "repeating" | "forever") {
        return Err(ApiError::invalid(
            "duration",
            "invalid_duration",
            "duration must be once, repeating or forever.",
        ));
    }
    if (duration == "repeating") != c.duration_in_months.is_some()
        || c.duration_in_months.is_some_and(|m| !(1..=36).contains(&m))
    {
        return Err(ApiError::invalid(
            "duration_in_months",
            "invalid_duration",
            "duration_in_months (1 to 36) goes with duration=repeating, and only with it.",
        ));
    }
    let currency = match (&c.percent_off_bps, &c.amount_off) {
        (Some(bps), None) if (1..=10_000).contains(bps) => None,
        (None, Some(amount)) if *amount > 0 => Some(
            Currency::parse(c.currency.as_deref().unwrap_or(&tenant.default_currency))
                .map_err(|_| {
                    ApiError::invalid(
                        "currency",
                        "invalid_currency",
                        "currency must be an ISO code.",
                    )
                })?
                .as_str()
                .to_owned(),
        ),
        _ => {
            return Err(ApiError::invalid(
                "percent_off_bps",
                "invalid_discount",
                "Pass percent_off_bps (1 to 10000) or a positive amount_off, one of them.",
            ));
        }
    };
    if c.max_redemptions.is_some_and(|m| m <= 0) {
        return Err(ApiError::invalid(
            "max_redemptions",
            "invalid_max_redemptions",
            "max_redemptions must be positive.",
        ));
    }
    if c.name.as_ref().is_some_and(|n| n.len() > 40) {
        return Err(ApiError::invalid(
            "name",
            "invalid_name",
            "name is at most 40 characters.",
        ));
    }
    let new = NewCoupon {
        name: c.name,
        percent_off_bps: c.percent_off_bps,
        amount_off: c.amount_off,
        currency,
        duration,
        duration_in_months: c.duration_in_months,
        max_redemptions: c.max_redemptions,
        redeem_by: c.redeem_by,
    };
    let id = CouponId::generate();
    let stripe_id = state
        .stripe
        .create_coupon(
            &NewStripeCoupon {
                name: new.name.clone(),
                percent_off_bps: new.percent_off_bps,
                amount_off: new.amount_off,
                currency: new.currency.clone(),
                duration: new.duration.clone(),
                duration_in_months: new.duration_in_months,
                max_redemptions: new.max_redemptions,
                redeem_by: new.redeem_by,
                metadata: metadata(&[
                    ("tenant_id", tenant.id.as_str()),
                    ("coupon_id", id.as_str()),
                ]),
            },
            &format!("tg-coupon-{id}"),
        )
        .await?;
    let coupon = state.store.create_coupon(&tenant.id, &id, &new).await?;
    state
        .store
        .set_stripe_coupon(&tenant.id, &coupon.id, &stripe_id)
        .await?;
    Ok(state.store.coupon(&tenant.id, &coupon.id).await?)
}

/// A promotion code as the API takes it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionCodeInput {
    pub coupon: String,
    pub code: String,
    pub max_redemptions: Option<i64>,
    pub expires_at: Option<i64>,
}

/// Letters, digits and dashes, as Stripe takes codes.
fn valid_code(code: &str) -> bool {
    (1..=100).contains(&code.len()) && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

pub async fn create_promotion_code(
    state: &AppState,
    tenant: &Tenant,
    p: PromotionCodeInput,
) -> ApiResult<PromotionCode> {
    let t = &tenant.id;
    if !valid_code(&p.code) {
        return Err(ApiError::invalid(
            "code",
            "invalid_code",
            "code is 1 to 100 letters, digits and dashes.",
        ));
    }
    let coupon = match CouponId::parse(&p.coupon) {
        Some(id) => state.store.coupon(t, &id).await.ok(),
        None => None,
    }
    .filter(|c| c.deleted_at.is_none())
    .ok_or_else(|| ApiError::not_found("coupon", &p.coupon).with_param("coupon"))?;
    if p.max_redemptions.is_some_and(|m| m <= 0) {
        return Err(ApiError::invalid(
            "max_redemptions",
            "invalid_max_redemptions",
            "max_redemptions must be positive.",
        ));
    }
    match state.store.promotion_code_by_code(t, &p.code).await {
        Ok(_) => {
            return Err(ApiError::conflict(
                "code_taken",
                format!("The code '{}' exists already.", p.code),
            )
            .with_param("code"));
        }
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let stripe_coupon = coupon
        .stripe_coupon_id
        .clone()
        .ok_or_else(|| ApiError::conflict("coupon_not_synced", "The coupon is not in Stripe."))?;
    let stripe_id = state
        .stripe
        .create_promotion_code(
            &stripe_coupon,
            &p.code,
            p.max_redemptions,
            p.expires_at,
            metadata(&[("tenant_id", t.as_str()), ("coupon_id", coupon.id.as_str())]),
            &format!("tg-promo-{t}-{}", p.code.to_ascii_lowercase()),
        )
        .await?;
    let code = state
        .store
        .create_promotion_code(
            t,
            &NewPromotionCode {
                coupon_id: coupon.id.clone(),
                code: p.code.clone(),
                max_redemptions: p.max_redemptions,
                expires_at: p.expires_at,
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(
                "code_taken",
                format!("The code '{}' exists already.", p.code),
            ),
            other => other.into(),
        })?;
    state
        .store
        .set_stripe_promotion_code(t, &code.id, &stripe_id)
        .await?;
    Ok(state.store.promotion_code(t, &code.id).await?)
}

pub async fn set_promotion_code_active(
    state: &AppState,
    tenant: &Tenant,
    code: &PromotionCode,
    active: bool,
) -> ApiResult<PromotionCode> {
    if let Some(stripe_id) = &code.stripe_promotion_code_id {
        state
            .stripe
            .set_promotion_code_active(stripe_id, active)
            .await?;
    }
    Ok(state
        .store
        .set_promotion_code_active(&tenant.id, &code.id, active)
        .await?)
}

/// The Stripe id of one of the tenant's promotion codes (named by its code or its id),
/// if it can be redeemed now.
pub async fn stripe_promotion_code(
    state: &AppState,
    tenant: &Tenant,
    code_or_id: &str,
) -> ApiResult<String> {
    let t = &tenant.id;
    let found = match PromotionCodeId::parse(code_or_id) {
        Some(id) => state.store.promotion_code(t, &id).await,
        None => state.store.promotion_code_by_code(t, code_or_id).await,
    };
    let code = match found {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            return Err(
                ApiError::not_found("promotion code", code_or_id).with_param("promotion_code")
            );
        }
        Err(e) => return Err(e.into()),
    };
    let now = tollgate_store::now_ms() / 1000;
    if !code.active || code.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::invalid(
            "promotion_code",
            "promotion_code_inactive",
            "The promotion code is no longer active.",
        ));
    }
    code.stripe_promotion_code_id.ok_or_else(|| {
        ApiError::conflict(
            "promotion_code_not_synced",
            "The promotion code is not in Stripe.",
        )
    })
}

/// Usage as the API takes it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageInput {
    pub customer: String,
    /// The usage event name of a metered price.
    pub event_name: String,
    pub value: i64,
    /// When it happened (Unix seconds); now by default.
    pub timestamp: Option<i64>,
}

/// How far back usage may be dated (Stripe takes meter events up to 35 days old).
const USAGE_MAX_AGE_SECS: i64 = 35 * 86_400;
/// How far ahead (Stripe takes them up to 5 minutes in the future).
const USAGE_MAX_AHEAD_SECS: i64 = 300;

/// Records usage once per idempotency key; the reporter sends it to Stripe. Answers the
/// record and whether it is new.
pub async fn record_usage(
    state: &AppState,
    tenant: &Tenant,
    u: UsageInput,
    idempotency_key: Option<&str>,
) -> ApiResult<(UsageRecord, bool)> {
    let t = &tenant.id;
    let key = idempotency_key.ok_or_else(|| {
        ApiError::invalid(
            "Idempotency-Key",
            "idempotency_key_required",
            "Usage is counted once per Idempotency-Key: send one with every report.",
        )
    })?;
    let customer = CustomerId::parse(&u.customer)
        .ok_or_else(|| ApiError::not_found("customer", &u.customer).with_param("customer"))?;
    if !state.customer_exists(t, &customer).await? {
        return Err(ApiError::not_found("customer", &u.customer).with_param("customer"));
    }
    let meter = match state.store.meter_by_event(t, &u.event_name).await {
        Ok(m) => m,
        Err(StoreError::NotFound) => {
            return Err(
                ApiError::not_found("metered price for event", &u.event_name)
                    .with_param("event_name"),
            );
        }
        Err(e) => return Err(e.into()),
    };
    if u.value < 0 {
        return Err(ApiError::invalid(
            "value",
            "invalid_value",
            "value must not be negative.",
        ));
    }
    let now = tollgate_store::now_ms() / 1000;
    let at = u.timestamp.unwrap_or(now);
    if at < now - USAGE_MAX_AGE_SECS || at > now + USAGE_MAX_AHEAD_SECS {
        return Err(ApiError::invalid(
            "timestamp",
            "invalid_timestamp",
            "timestamp must be within the past 35 days and at most 5 minutes ahead.",
        ));
    }
    let recorded = state
        .store
        .record_usage(
            t,
            &NewUsage {
                customer_id: customer,
                meter_id: meter.id,
                value: u.value,
                occurred_at: at,
                idempotency_key: key.to_owned(),
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(
                "idempotency_key_reused",
                "This Idempotency-Key reported other usage.",
            ),
            other => other.into(),
        })?;
    if recorded.1 {
        state.usage_signal.notify_one();
    }
    Ok(recorded)
}

/// What a price migration is asked to do.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationInput {
    /// The price that takes the old one's place.
    pub to_price: String,
    /// When existing subscriptions move onto it (Unix seconds; they pay it from their next
    /// renewal on), or `null` to leave them on the old price.
    pub move_existing_at: Option<i64>,
}

/// Puts `to` in `from`'s place for new sign-ups (the old price is archived here and in
/// Stripe, its lookup key moves) and schedules existing subscriptions' move if asked.
pub async fn migrate_price(
    state: &AppState,
    tenant: &Tenant,
    from: Price,
    to: Price,
    move_existing_at: Option<i64>,
) -> ApiResult<PriceMigration> {
    let t = &tenant.id;
    if !from.is_recurring() || !to.is_recurring() {
        return Err(ApiError::invalid(
            "to_price",
            "invalid_price",
            "Migrations move subscriptions between recurring prices.",
        ));
    }
    if from.id == to.id || !to.active || !from.active {
        return Err(ApiError::invalid(
            "to_price",
            "invalid_price",
            "Migrate from an active price to another active price.",
        ));
    }
    if from.currency != to.currency || from.product_id != to.product_id {
        return Err(ApiError::invalid(
            "to_price",
            "invalid_price",
            "The new price must be of the same product and currency.",
        ));
    }
    let product = state.store.product(t, &to.product_id).await?;
    ensure_stripe_price(state, t, &product, to.clone()).await?;
    if let Some(stripe_id) = &from.stripe_price_id {
        state.stripe.set_price_active(stripe_id, false).await?;
    }
    state.store.replace_price(t, &from.id, &to.id).await?;
    sync_product(state, &product).await?;
    let migration = state
        .store
        .create_price_migration(
            t,
            &from.id,
            &to.id,
            move_existing_at.map(|s| s.saturating_mul(1000)),
        )
        .await?;
    tracing::info!(tenant = %t, migration = %migration.id, from = %from.id, to = %to.id, "price replaced");
    Ok(migration)
}

/// How long one instance holds a migration while it moves subscriptions.
const MIGRATION_LEASE_MS: i64 = 10 * 60 * 1000;

/// Moves every live subscription of a due migration onto the new price, without
/// proration: each pays the new price from its next renewal. Idempotent per subscription;
/// the migration is done once none is left on the old price.
pub async fn run_price_migration(
    state: &AppState,
    tenant: &Tenant,
    m: &PriceMigration,
) -> ApiResult<PriceMigration> {
    let t = &tenant.id;
    if !state
        .store
        .claim_price_migration(t, &m.id, MIGRATION_LEASE_MS)
        .await?
    {
        return Ok(state.store.price_migration(t, &m.id).await?);
    }
    let to = state.store.price(t, &m.to_price_id).await?;
    let product = state.store.product(t, &to.product_id).await?;
    let to = ensure_stripe_price(state, t, &product, to).await?;
    let stripe_price = to.stripe_price_id.clone().unwrap_or_default();
    let (mut moved, mut failed) = (0, 0);
    for sub in state
        .store
        .live_subscriptions_on_price(t, &m.from_price_id)
        .await?
    {
        let seq = state.store.next_sync_seq().await?;
        let result = state
            .stripe
            .update_subscription(
                &sub.stripe_subscription_id,
                &SubscriptionChange::ChangePrice {
                    item: sub.stripe_item_id.clone(),
                    price: stripe_price.clone(),
                    quantity: None,
                    prorate_now: false,
                    previous: None,
                },
                &format!("tg-migrate-{}-{}", m.id, sub.id),
            )
            .await;
        match result {
            Ok(answer) => {
                super::subscriptions::store_answer(state, tenant, seq, answer).await?;
                moved += 1;
            }
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
