//! `/v1/purchases` (history with cursors or pages, refunds) and `/v1/orders`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;
use tollgate_domain::status::PurchaseStatus;
use tollgate_domain::{CustomerId, OrderId, ProductId, PurchaseId};
use tollgate_store::{PurchaseFilter, StoreError, Tenant};

use super::{Json, Query, limit, list, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::usecases::refund_purchase;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/purchases", get(list_purchases))
        .route("/v1/purchases/{id}", get(retrieve))
        .route("/v1/purchases/{id}/refund", post(refund))
        .route("/v1/orders", get(list_orders))
        .route("/v1/orders/{id}", get(retrieve_order))
}

#[derive(Deserialize)]
struct PurchaseQuery {
    customer: Option<String>,
    product: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    starting_after: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
}

async fn list_purchases(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<PurchaseQuery>,
) -> ApiResult<Response> {
    let filter = PurchaseFilter {
        customer_id: q.customer.as_deref().map(|c| CustomerId::parse(c).ok_or_else(|| ApiError::not_found("customer", c).with_param("customer"))).transpose()?,
        product_id: q.product.as_deref().map(|p| ProductId::parse(p).ok_or_else(|| ApiError::not_found("product", p).with_param("product"))).transpose()?,
        status: match &q.status {
            Some(s) => Some(PurchaseStatus::parse(s).ok_or_else(|| ApiError::invalid("status", "invalid_status", "status must be pending, completed, refunded, partially_refunded or failed."))?.as_str().to_owned()),
            None => None,
        },
    };
    if q.page.is_some() || q.page_size.is_some() {
        if q.starting_after.is_some() {
            return Err(ApiError::invalid(
                "page",
                "parameter_conflict",
                "Use page/page_size or starting_after, not both.",
            ));
        }
        let page = q.page.unwrap_or(1);
        let page_size = q.page_size.unwrap_or(20);
        if page < 1 {
            return Err(ApiError::invalid(
                "page",
                "invalid_page",
                "page starts at 1.",
            ));
        }
        if !(1..=100).contains(&page_size) {
            return Err(ApiError::invalid(
                "page_size",
                "invalid_page_size",
                "page_size must be between 1 and 100.",
            ));
        }
        let offset = (page - 1)
            .checked_mul(page_size)
            .ok_or_else(|| ApiError::invalid("page", "invalid_page", "page is too large."))?;
        let (rows, total) = state
            .store
            .list_purchases(&tenant.id, &filter, page_size, offset, None)
            .await?;
        let total_pages = (total + page_size - 1) / page_size;
        return Ok(ok(json!({
            "object": "list", "data": rows, "url": "/v1/purchases",
            "page": page, "page_size": page_size, "total_count": total, "total_pages": total_pages, "has_more": page < total_pages,
        })));
    }
    let limit = limit(q.limit)?;
    let after = q
        .starting_after
        .as_deref()
        .map(|s| {
            PurchaseId::parse(s)
                .ok_or_else(|| ApiError::not_found("purchase", s).with_param("starting_after"))
        })
        .transpose()?;
    let (mut rows, total) = state
        .store
        .list_purchases(&tenant.id, &filter, limit + 1, 0, after.as_ref())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::not_found("purchase", q.starting_after.as_deref().unwrap_or_default())
                    .with_param("starting_after")
            }
            other => other.into(),
        })?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let _ = total;
    Ok(list(rows, has_more, "/v1/purchases"))
}

async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let pid = PurchaseId::parse(&id).ok_or_else(|| ApiError::not_found("purchase", &id))?;
    let purchase = state
        .store
        .purchase(&tenant.id, &pid)
        .await
        .map_err(|_| ApiError::not_found("purchase", &id))?;
    let refunds = state.store.refunds_for_purchase(&tenant.id, &pid).await?;
    let mut body = serde_json::to_value(&purchase).map_err(|_| ApiError::internal())?;
    body["object"] = "purchase".into();
    body["refunds"] = serde_json::to_value(refunds).map_err(|_| ApiError::internal())?;
    Ok(ok(body))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RefundInput {
    amount: Option<i64>,
    reason: Option<String>,
}

async fn refund(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<RefundInput>,
) -> ApiResult<Response> {
    let pid = PurchaseId::parse(&id).ok_or_else(|| ApiError::not_found("purchase", &id))?;
    let after = refund_purchase(&state, &tenant, &pid, input.amount, input.reason.as_deref())
        .await
        .map_err(|e| {
            if e.code == "resource_missing" {
                ApiError::not_found("purchase", &id)
            } else {
                e
            }
        })?;
    Ok(ok(after))
}

#[derive(Deserialize)]
struct OrderQuery {
    customer: Option<String>,
    limit: Option<i64>,
    starting_after: Option<String>,
}

async fn list_orders(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<OrderQuery>,
) -> ApiResult<Response> {
    let limit = limit(q.limit)?;
    let customer = q
        .customer
        .as_deref()
        .map(|c| {
            CustomerId::parse(c)
                .ok_or_else(|| ApiError::not_found("customer", c).with_param("customer"))
        })
        .transpose()?;
    let after = q
        .starting_after
        .as_deref()
        .map(|s| {
            OrderId::parse(s)
                .ok_or_else(|| ApiError::not_found("order", s).with_param("starting_after"))
        })
        .transpose()?;
    let mut rows = state
        .store
        .list_orders(&tenant.id, customer.as_ref(), limit + 1, after.as_ref())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::not_found("order", q.starting_after.as_deref().unwrap_or_default())
                    .with_param("starting_after")
            }
            other => other.into(),
        })?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(list(rows, has_more, "/v1/orders"))
}

async fn retrieve_order(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let oid = OrderId::parse(&id).ok_or_else(|| ApiError::not_found("order", &id))?;
    let order = state
        .store
        .order(&tenant.id, &oid)
        .await
        .map_err(|_| ApiError::not_found("order", &id))?;
    let bookings = state.store.bookings_for_order(&tenant.id, &oid).await?;
    let purchases = state.store.purchases_for_order(&tenant.id, &oid).await?;
    let mut body = serde_json::to_value(&order).map_err(|_| ApiError::internal())?;
    body["object"] = "order".into();
    body["bookings"] = serde_json::to_value(bookings).map_err(|_| ApiError::internal())?;
    body["purchases"] = serde_json::to_value(purchases).map_err(|_| ApiError::internal())?;
    Ok(ok(body))
}
