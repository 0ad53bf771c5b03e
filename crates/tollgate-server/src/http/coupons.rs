//! `/v1/coupons` and `/v1/promotion_codes`: discounts made through Tollgate and synced to
//! Stripe, applied at checkout by code.

use axum::extract::State;
use serde::Deserialize;
use tollgate_domain::{CouponId, PromotionCodeId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, Json, PathParam, Query, TenantExt, from_cursor, id, limit, page};
use crate::state::AppState;
use crate::usecases::coupons::{self, CouponInput, PromotionCodeInput};
use crate::views::{CouponView, List, PromotionCodeView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_coupon, list_coupons))
        .routes(routes!(retrieve_coupon, delete_coupon))
        .routes(routes!(create_code, list_codes))
        .routes(routes!(retrieve_code, update_code))
}

#[utoipa::path(post, path = "/v1/coupons", tag = "coupons", request_body = CouponInput,
    responses((status = 200, description = "The coupon", body = CouponView)))]
async fn create_coupon(
    State(state): State<AppState>,
    tenant: TenantExt,
    Json(input): Json<CouponInput>,
) -> Answer<CouponView> {
    let c = coupons::create_coupon(&state, &tenant, input).await?;
    Ok(axum::Json(CouponView::of(&c)))
}

#[utoipa::path(get, path = "/v1/coupons/{id}", tag = "coupons",
    params(("id" = CouponId, Path, description = "The coupon's id")),
    responses((status = 200, description = "The coupon", body = CouponView)))]
async fn retrieve_coupon(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<CouponView> {
    let cid = id("id", &raw, CouponId::parse)?;
    let c = coupons::find_coupon(&state, &tenant, &cid).await?;
    Ok(axum::Json(CouponView::of(&c)))
}

/// Stops new redemptions (its promotion codes stop working); discounts given stay.
#[utoipa::path(delete, path = "/v1/coupons/{id}", tag = "coupons",
    params(("id" = CouponId, Path, description = "The coupon's id")),
    responses((status = 200, description = "The coupon, deleted", body = CouponView)))]
async fn delete_coupon(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<CouponView> {
    let cid = id("id", &raw, CouponId::parse)?;
    let c = coupons::delete_coupon(&state, &tenant, &cid).await?;
    Ok(axum::Json(CouponView::of(&c)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CouponQuery {
    /// 1 to 100 (default 10).
    limit: Option<i64>,
    /// A coupon id: the page after it.
    #[param(value_type = Option<CouponId>)]
    starting_after: Option<String>,
}

/// Live coupons, newest first.
#[utoipa::path(get, path = "/v1/coupons", tag = "coupons", params(CouponQuery),
    responses((status = 200, description = "A page of coupons", body = List<CouponView>)))]
async fn list_coupons(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<CouponQuery>,
) -> Answer<List<CouponView>> {
    let limit = limit(q.limit)?;
    let after = q
        .starting_after
        .as_deref()
        .map(|s| id("starting_after", s, CouponId::parse))
        .transpose()?;
    let rows = from_cursor(
        state
            .store
            .list_coupons(&tenant.id, limit + 1, after.as_ref())
            .await,
        "coupon",
        q.starting_after.as_deref(),
    )?;
    let (rows, has_more) = page(rows, limit);
    Ok(axum::Json(List::new(
        rows.iter().map(CouponView::of).collect(),
        has_more,
        "/v1/coupons",
    )))
}

#[utoipa::path(post, path = "/v1/promotion_codes", tag = "coupons", request_body = PromotionCodeInput,
    responses((status = 200, description = "The promotion code", body = PromotionCodeView)))]
async fn create_code(
    State(state): State<AppState>,
    tenant: TenantExt,
    Json(input): Json<PromotionCodeInput>,
) -> Answer<PromotionCodeView> {
    let c = coupons::create_promotion_code(&state, &tenant, input).await?;
    Ok(axum::Json(PromotionCodeView::of(&c)))
}

#[utoipa::path(get, path = "/v1/promotion_codes/{id}", tag = "coupons",
    params(("id" = PromotionCodeId, Path, description = "The promotion code's id")),
    responses((status = 200, description = "The promotion code", body = PromotionCodeView)))]
async fn retrieve_code(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<PromotionCodeView> {
    let pid = id("id", &raw, PromotionCodeId::parse)?;
    let c = coupons::find_code(&state, &tenant, &pid).await?;
    Ok(axum::Json(PromotionCodeView::of(&c)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCode {
    /// Switch the code on or off.
    active: bool,
}

#[utoipa::path(post, path = "/v1/promotion_codes/{id}", tag = "coupons",
    params(("id" = PromotionCodeId, Path, description = "The promotion code's id")),
    request_body = UpdateCode,
    responses((status = 200, description = "The promotion code after the change", body = PromotionCodeView)))]
async fn update_code(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<UpdateCode>,
) -> Answer<PromotionCodeView> {
    let pid = id("id", &raw, PromotionCodeId::parse)?;
    let code = coupons::find_code(&state, &tenant, &pid).await?;
    let c = coupons::set_promotion_code_active(&state, &tenant, &code, input.active).await?;
    Ok(axum::Json(PromotionCodeView::of(&c)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CodeQuery {
    /// 1 to 100 (default 10).
    limit: Option<i64>,
    /// Only the codes of this coupon.
    #[param(value_type = Option<CouponId>)]
    coupon: Option<String>,
}

#[utoipa::path(get, path = "/v1/promotion_codes", tag = "coupons", params(CodeQuery),
    responses((status = 200, description = "Promotion codes, newest first", body = List<PromotionCodeView>)))]
async fn list_codes(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<CodeQuery>,
) -> Answer<List<PromotionCodeView>> {
    let limit = limit(q.limit)?;
    let coupon = q
        .coupon
        .as_deref()
        .map(|c| id("coupon", c, CouponId::parse))
        .transpose()?;
    let rows = state
        .store
        .list_promotion_codes(&tenant.id, coupon.as_ref(), limit + 1)
        .await?;
    let (rows, has_more) = page(rows, limit);
    Ok(axum::Json(List::new(
        rows.iter().map(PromotionCodeView::of).collect(),
        has_more,
        "/v1/promotion_codes",
    )))
}
