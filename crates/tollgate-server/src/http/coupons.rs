//! `/v1/coupons` and `/v1/promotion_codes`: discounts made through Tollgate and synced to
//! Stripe, applied at checkout by code.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use tollgate_domain::{CouponId, PromotionCodeId};
use tollgate_store::{StoreError, Tenant};

use super::{Json, Query, limit, list, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::usecases::{self, CouponInput, PromotionCodeInput};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/coupons", post(create_coupon).get(list_coupons))
        .route(
            "/v1/coupons/{id}",
            get(retrieve_coupon).delete(delete_coupon),
        )
        .route("/v1/promotion_codes", post(create_code).get(list_codes))
        .route(
            "/v1/promotion_codes/{id}",
            get(retrieve_code).post(update_code),
        )
}

async fn create_coupon(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Json(input): Json<CouponInput>,
) -> ApiResult<Response> {
    Ok(ok(usecases::create_coupon(&state, &tenant, input).await?))
}

fn coupon_id(id: &str) -> ApiResult<CouponId> {
    CouponId::parse(id).ok_or_else(|| ApiError::not_found("coupon", id))
}

async fn retrieve_coupon(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match state.store.coupon(&tenant.id, &coupon_id(&id)?).await {
        Ok(c) => Ok(ok(c)),
        Err(StoreError::NotFound) => Err(ApiError::not_found("coupon", &id)),
        Err(e) => Err(e.into()),
    }
}

/// Stops new redemptions (its promotion codes stop working); discounts given stay.
async fn delete_coupon(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let cid = coupon_id(&id)?;
    for code in state
        .store
        .list_promotion_codes(&tenant.id, Some(&cid), 100)
        .await?
        .into_iter()
        .filter(|c| c.active)
    {
        usecases::set_promotion_code_active(&state, &tenant, &code, false).await?;
    }
    match state.store.delete_coupon(&tenant.id, &cid).await {
        Ok(c) => Ok(ok(c)),
        Err(StoreError::NotFound) => Err(ApiError::not_found("coupon", &id)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    starting_after: Option<String>,
    coupon: Option<String>,
}

async fn list_coupons(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = limit(q.limit)?;
    let after = match &q.starting_after {
        Some(s) => Some(coupon_id(s).map_err(|e| e.with_param("starting_after"))?),
        None => None,
    };
    let mut rows = state
        .store
        .list_coupons(&tenant.id, limit + 1, after.as_ref())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::not_found("coupon", "starting_after").with_param("starting_after")
            }
            other => other.into(),
        })?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(list(rows, has_more, "/v1/coupons"))
}

async fn create_code(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Json(input): Json<PromotionCodeInput>,
) -> ApiResult<Response> {
    Ok(ok(
        usecases::create_promotion_code(&state, &tenant, input).await?
    ))
}

async fn find_code(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> ApiResult<tollgate_store::PromotionCode> {
    let missing = || ApiError::not_found("promotion code", id);
    let pid = PromotionCodeId::parse(id).ok_or_else(missing)?;
    match state.store.promotion_code(&tenant.id, &pid).await {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound) => Err(missing()),
        Err(e) => Err(e.into()),
    }
}

async fn retrieve_code(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ok(find_code(&state, &tenant, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateCode {
    active: bool,
}

async fn update_code(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<UpdateCode>,
) -> ApiResult<Response> {
    let code = find_code(&state, &tenant, &id).await?;
    Ok(ok(usecases::set_promotion_code_active(
        &state,
        &tenant,
        &code,
        input.active,
    )
    .await?))
}

async fn list_codes(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = limit(q.limit)?;
    let coupon = match &q.coupon {
        Some(c) => Some(coupon_id(c).map_err(|e| e.with_param("coupon"))?),
        None => None,
    };
    let rows = state
        .store
        .list_promotion_codes(&tenant.id, coupon.as_ref(), limit)
        .await?;
    Ok(list(rows, false, "/v1/promotion_codes"))
}
