//! Coupons and promotion codes: made through Tollgate per tenant, synced to Stripe, and
//! applied at checkout by the tenant's code.
//!
//! Stripe's promotion codes are one namespace per account, so the code Stripe holds is
//! the tenant's code with a tag of the tenant after it (`LAUNCH25-K3F9QX`): every tenant
//! may use any code, and a code held by another tenant neither blocks nor shows.

use serde::Deserialize;
use sha2::Digest;
use tollgate_domain::status::CouponDuration;
use tollgate_domain::{
    Amount, CouponId, Currency, PromotionCodeId, StripePromotionCodeId, TenantId, Timestamp,
};
use tollgate_store::{
    Coupon, Discount, NewCoupon, NewPromotionCode, PromotionCode, StoreError, Tenant,
};
use tollgate_stripe::{NewStripeCoupon, StripeDiscount};
use utoipa::ToSchema;

use super::{metadata, validate};
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// A coupon as the API takes it: `percent_off_bps` or `amount_off`, one of them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponInput {
    /// Up to 40 characters (Stripe's limit); shown on the Checkout page.
    pub name: Option<String>,
    /// A share off in basis points: 2000 is 20% (1 to 10000).
    pub percent_off_bps: Option<i64>,
    /// An amount off in minor units (with `currency`, default the tenant's).
    pub amount_off: Option<Amount>,
    pub currency: Option<Currency>,
    /// `once` (default), `repeating` (with `duration_in_months`) or `forever`.
    pub duration: Option<CouponDuration>,
    /// 1 to 36, with `duration=repeating`.
    pub duration_in_months: Option<i64>,
    pub max_redemptions: Option<i64>,
    /// After this moment the coupon cannot be redeemed (Unix seconds, in the future).
    pub expires_at: Option<Timestamp>,
}

/// Validates a coupon, creates it in Stripe (under Tollgate's id, with an idempotency
/// key) and then records it: a failure at Stripe leaves nothing behind here.
pub async fn create_coupon(state: &AppState, tenant: &Tenant, c: CouponInput) -> Result<Coupon> {
    let duration = c.duration.unwrap_or(CouponDuration::Once);
    if (duration == CouponDuration::Repeating) != c.duration_in_months.is_some()
        || c.duration_in_months.is_some_and(|m| !(1..=36).contains(&m))
    {
        return Err(Error::param(
            "duration_in_months",
            "duration_in_months (1 to 36) goes with duration=repeating, and only with it.",
        ));
    }
    let discount = match (c.percent_off_bps, c.amount_off) {
        (Some(bps), None) if (1..=10_000).contains(&bps) => Discount::PercentOffBps(bps),
        (Some(_), None) => {
            return Err(Error::param(
                "percent_off_bps",
                "percent_off_bps is 1 to 10000 (0.01% to 100%).",
            ));
        }
        (None, Some(amount)) if !amount.is_zero() && amount <= Amount::STRIPE_MAX => {
            Discount::AmountOff(
                amount,
                c.currency
                    .clone()
                    .unwrap_or_else(|| tenant.default_currency.clone()),
            )
        }
        (None, Some(_)) => {
            return Err(Error::invalid(
                "amount_off",
                Code::AmountTooLarge,
                format!("amount_off is 1 to {} minor units.", Amount::STRIPE_MAX),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "amount_off",
                Code::ParameterConflict,
                "Pass percent_off_bps or amount_off, not both.",
            ));
        }
        (None, None) => {
            return Err(Error::missing(
                "percent_off_bps",
                "Pass percent_off_bps (1 to 10000) or amount_off.",
            ));
        }
    };
    if c.currency.is_some() && matches!(discount, Discount::PercentOffBps(_)) {
        return Err(Error::invalid(
            "currency",
            Code::ParameterConflict,
            "currency goes with amount_off.",
        ));
    }
    if c.max_redemptions.is_some_and(|m| m <= 0) {
        return Err(Error::param(
            "max_redemptions",
            "max_redemptions must be positive.",
        ));
    }
    let name = validate::opt_text("name", c.name.as_deref(), 40)?;
    let expires_at = c
        .expires_at
        .map(|t| validate::future("expires_at", t))
        .transpose()?;
    let new = NewCoupon {
        name,
        discount,
        duration,
        duration_in_months: c.duration_in_months,
        max_redemptions: c.max_redemptions,
        redeem_by: expires_at,
    };
    let id = CouponId::generate();
    let stripe_id = state
        .stripe
        .create_coupon(
            &NewStripeCoupon {
                name: new.name.clone(),
                discount: match &new.discount {
                    Discount::PercentOffBps(bps) => StripeDiscount::PercentOffBps(*bps),
                    Discount::AmountOff(a, cur) => StripeDiscount::AmountOff(*a, cur.clone()),
                },
                duration: new.duration,
                duration_in_months: new.duration_in_months,
                max_redemptions: new.max_redemptions,
                redeem_by: new.redeem_by,
                applies_to_products: None,
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

/// One of the tenant's coupons; 404 when there is none.
pub async fn find_coupon(state: &AppState, tenant: &Tenant, id: &CouponId) -> Result<Coupon> {
    match state.store.coupon(&tenant.id, id).await {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound) => Err(Error::not_found("coupon", id.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// Stops new redemptions (its promotion codes stop working); discounts given stay.
pub async fn delete_coupon(state: &AppState, tenant: &Tenant, id: &CouponId) -> Result<Coupon> {
    find_coupon(state, tenant, id).await?;
    for code in state
        .store
        .list_promotion_codes(&tenant.id, Some(id), 1000)
        .await?
        .into_iter()
        .filter(|c| c.active)
    {
        set_promotion_code_active(state, tenant, &code, false).await?;
    }
    match state.store.delete_coupon(&tenant.id, id).await {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound) => Err(Error::not_found("coupon", id.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// A promotion code as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionCodeInput {
    #[schema(value_type = CouponId)]
    pub coupon: String,
    /// What the customer types: 1 to 100 letters, digits and dashes, unique within the
    /// tenant whatever its case.
    pub code: String,
    pub max_redemptions: Option<i64>,
    /// After this moment the code no longer works (Unix seconds, in the future).
    pub expires_at: Option<Timestamp>,
}

/// Letters, digits and dashes, as Stripe takes codes.
fn check_code(code: &str) -> Result<()> {
    if (1..=100).contains(&code.len())
        && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        Ok(())
    } else {
        Err(Error::param(
            "code",
            "code is 1 to 100 letters, digits and dashes.",
        ))
    }
}

/// The code Stripe holds for a tenant's code: the code and a tag of the tenant, so that
/// tenants' codes never meet in Stripe's one namespace.
pub fn stripe_code(tenant: &TenantId, code: &str) -> String {
    let tag = sha2::Sha256::digest(tenant.as_str().as_bytes());
    let tag: String = tag
        .iter()
        .take(6)
        .map(|b| char::from(b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789"[usize::from(b % 32)]))
        .collect();
    format!("{}-{tag}", code.to_ascii_uppercase())
}

pub async fn create_promotion_code(
    state: &AppState,
    tenant: &Tenant,
    p: PromotionCodeInput,
) -> Result<PromotionCode> {
    let t = &tenant.id;
    check_code(&p.code)?;
    let coupon_id = CouponId::parse(&p.coupon).map_err(|e| Error::bad_id("coupon", e))?;
    let coupon = match state.store.coupon(t, &coupon_id).await {
        Ok(c) if c.deleted_at.is_none() => c,
        Ok(_) | Err(StoreError::NotFound) => {
            return Err(Error::not_found("coupon", &p.coupon).with_param("coupon"));
        }
        Err(e) => return Err(e.into()),
    };
    if p.max_redemptions.is_some_and(|m| m <= 0) {
        return Err(Error::param(
            "max_redemptions",
            "max_redemptions must be positive.",
        ));
    }
    let expires_at = p
        .expires_at
        .map(|t| validate::future("expires_at", t))
        .transpose()?;
    match state.store.promotion_code_by_code(t, &p.code).await {
        Ok(_) => {
            return Err(Error::conflict(
                Code::CodeTaken,
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
        .ok_or_else(|| Error::conflict(Code::Conflict, "The coupon is not in Stripe yet."))?;
    let stripe_id = state
        .stripe
        .create_promotion_code(
            &stripe_coupon,
            &stripe_code(t, &p.code),
            p.max_redemptions,
            expires_at,
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
                expires_at,
            },
        )
        .await?;
    state
        .store
        .set_stripe_promotion_code(t, &code.id, &stripe_id)
        .await?;
    Ok(state.store.promotion_code(t, &code.id).await?)
}

/// One of the tenant's promotion codes; 404 when there is none.
pub async fn find_code(
    state: &AppState,
    tenant: &Tenant,
    id: &PromotionCodeId,
) -> Result<PromotionCode> {
    match state.store.promotion_code(&tenant.id, id).await {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound) => Err(Error::not_found("promotion code", id.as_str())),
        Err(e) => Err(e.into()),
    }
}

pub async fn set_promotion_code_active(
    state: &AppState,
    tenant: &Tenant,
    code: &PromotionCode,
    active: bool,
) -> Result<PromotionCode> {
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
pub async fn redeemable_code(
    state: &AppState,
    tenant: &Tenant,
    code_or_id: &str,
) -> Result<StripePromotionCodeId> {
    let t = &tenant.id;
    let found = match PromotionCodeId::parse(code_or_id) {
        Ok(id) => state.store.promotion_code(t, &id).await,
        Err(_) => {
            check_code(code_or_id).map_err(|e| e.with_param("promotion_code"))?;
            state.store.promotion_code_by_code(t, code_or_id).await
        }
    };
    let code = match found {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            return Err(Error::not_found("promotion code", code_or_id).with_param("promotion_code"));
        }
        Err(e) => return Err(e.into()),
    };
    if !code.active || code.expires_at.is_some_and(|e| e <= Timestamp::now()) {
        return Err(Error::invalid(
            "promotion_code",
            Code::PromotionCodeInactive,
            "The promotion code is no longer active.",
        ));
    }
    code.stripe_promotion_code_id
        .ok_or_else(|| Error::conflict(Code::Conflict, "The promotion code is not in Stripe yet."))
}
