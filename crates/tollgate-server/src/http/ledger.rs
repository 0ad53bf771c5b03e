//! `/v1/purchases` (history with cursors or pages, refunds) and `/v1/orders`.

use axum::extract::State;
use serde::Deserialize;
use tollgate_domain::status::{DisputeStatus, PurchaseStatus};
use tollgate_domain::{CustomerId, DisputeId, OrderId, ProductId, PurchaseId};
use tollgate_store::{PurchaseFilter, StoreError};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, Json, PathParam, Query, TenantExt, from_cursor, id, limit, page};
use crate::error::{Code, Error};
use crate::state::AppState;
use crate::usecases::refunds::{self, RefundInput};
use crate::views::{
    BookingView, DisputeView, List, OrderView, PurchasePage, PurchaseView, RefundView,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_purchases))
        .routes(routes!(retrieve))
        .routes(routes!(refund))
        .routes(routes!(list_orders))
        .routes(routes!(retrieve_order))
        .routes(routes!(list_disputes))
        .routes(routes!(retrieve_dispute))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PurchaseQuery {
    /// Only this customer's purchases.
    #[param(value_type = Option<CustomerId>)]
    customer: Option<String>,
    /// Only purchases of this product.
    #[param(value_type = Option<ProductId>)]
    product: Option<String>,
    status: Option<PurchaseStatus>,
    /// Only purchases whose creator's share goes to this creator.
    creator_id: Option<String>,
    /// Only disputed (`true`) or undisputed (`false`) purchases.
    disputed: Option<bool>,
    /// 1 to 100 (default 10), with `starting_after`.
    limit: Option<i64>,
    /// A purchase id: the page after it.
    #[param(value_type = Option<PurchaseId>)]
    starting_after: Option<String>,
    /// A page number from 1, instead of a cursor (with `page_size`).
    page: Option<i64>,
    /// 1 to 100 (default 20).
    page_size: Option<i64>,
}

/// The ledger, newest first: by cursor (`limit`, `starting_after`), or by page (`page`,
/// `page_size`, answering `total_count` and `total_pages`).
#[utoipa::path(get, path = "/v1/purchases", tag = "ledger", params(PurchaseQuery),
    responses((status = 200, description = "A page of purchases", body = PurchasePage)))]
async fn list_purchases(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<PurchaseQuery>,
) -> Answer<PurchasePage> {
    if let Some(c) = &q.creator_id {
        crate::usecases::validate::token("creator_id", c, 255)?;
    }
    let filter = PurchaseFilter {
        customer_id: q
            .customer
            .as_deref()
            .map(|c| id("customer", c, CustomerId::parse))
            .transpose()?,
        product_id: q
            .product
            .as_deref()
            .map(|p| id("product", p, ProductId::parse))
            .transpose()?,
        status: q.status,
        creator_id: q.creator_id.clone(),
        disputed: q.disputed,
    };
    if q.page.is_some() || q.page_size.is_some() {
        if q.starting_after.is_some() || q.limit.is_some() {
            return Err(Error::invalid(
                "page",
                Code::ParameterConflict,
                "Use page/page_size or limit/starting_after, not both.",
            ));
        }
        let page = q.page.unwrap_or(1);
        let page_size = q.page_size.unwrap_or(20);
        if !(1..=1_000_000).contains(&page) {
            return Err(Error::param("page", "page is 1 to 1000000."));
        }
        if !(1..=100).contains(&page_size) {
            return Err(Error::param(
                "page_size",
                "page_size must be between 1 and 100.",
            ));
        }
        let offset = (page - 1) * page_size;
        let (rows, total) = state
            .store
            .list_purchases(&tenant.id, &filter, page_size, offset, None)
            .await?;
        let total_pages = (total + page_size - 1) / page_size;
        return Ok(axum::Json(PurchasePage {
            object: "list",
            data: rows.iter().map(PurchaseView::of).collect(),
            has_more: page < total_pages,
            url: "/v1/purchases".into(),
            page,
            page_size,
            total_count: total,
            total_pages,
        }));
    }
    let limit = limit(q.limit)?;
    let after = q
        .starting_after
        .as_deref()
        .map(|s| id("starting_after", s, PurchaseId::parse))
        .transpose()?;
    let (rows, total) = from_cursor(
        state
            .store
            .list_purchases(&tenant.id, &filter, limit + 1, 0, after.as_ref())
            .await,
        "purchase",
        q.starting_after.as_deref(),
    )?;
    let (rows, has_more) = page(rows, limit);
    Ok(axum::Json(PurchasePage {
        object: "list",
        data: rows.iter().map(PurchaseView::of).collect(),
        has_more,
        url: "/v1/purchases".into(),
        page: 1,
        page_size: limit,
        total_count: total,
        total_pages: (total + limit - 1) / limit,
    }))
}

/// A purchase with its refunds.
#[utoipa::path(get, path = "/v1/purchases/{id}", tag = "ledger",
    params(("id" = PurchaseId, Path, description = "The purchase's id")),
    responses((status = 200, description = "The purchase", body = PurchaseView)))]
async fn retrieve(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<PurchaseView> {
    let pid = id("id", &raw, PurchaseId::parse)?;
    let purchase = refunds::find(&state, &tenant, &pid).await?;
    let records = state.store.refunds_for_purchase(&tenant.id, &pid).await?;
    let mut view = PurchaseView::of(&purchase);
    view.refunds = Some(records.iter().map(RefundView::of).collect());
    Ok(axum::Json(view))
}

/// Refunds a purchase in full or in part; the split is reversed in proportion, and a full
/// refund revokes access.
#[utoipa::path(post, path = "/v1/purchases/{id}/refund", tag = "ledger",
    params(("id" = PurchaseId, Path, description = "The purchase's id")),
    request_body = RefundInput,
    responses((status = 200, description = "The purchase after the refund", body = PurchaseView)))]
async fn refund(
    State(state): State<AppState>,
    tenant: TenantExt,
    headers: axum::http::HeaderMap,
    PathParam(raw): PathParam,
    Json(input): Json<RefundInput>,
) -> Answer<PurchaseView> {
    let pid = id("id", &raw, PurchaseId::parse)?;
    // The key names the refund itself, beyond this request: a retry after an unknown
    // outcome resumes the same refund rather than asking Stripe for another.
    let key = headers.get("idempotency-key").and_then(|k| k.to_str().ok());
    let after = refunds::refund_purchase(&state, &tenant, &pid, input, key).await?;
    Ok(axum::Json(PurchaseView::of(&after)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DisputeQuery {
    status: Option<DisputeStatus>,
    /// 1 to 100 (default 10).
    limit: Option<i64>,
    /// A dispute id: the page after it.
    #[param(value_type = Option<DisputeId>)]
    starting_after: Option<String>,
}

/// Disputes of the tenant's payments, newest first.
#[utoipa::path(get, path = "/v1/disputes", tag = "ledger", params(DisputeQuery),
    responses((status = 200, description = "A page of disputes", body = List<DisputeView>)))]
async fn list_disputes(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<DisputeQuery>,
) -> Answer<List<DisputeView>> {
    let limit = limit(q.limit)?;
    let after = q
        .starting_after
        .as_deref()
        .map(|s| id("starting_after", s, DisputeId::parse))
        .transpose()?;
    let rows = from_cursor(
        state
            .store
            .list_disputes(&tenant.id, q.status, limit + 1, after.as_ref())
            .await,
        "dispute",
        q.starting_after.as_deref(),
    )?;
    let (rows, has_more) = page(rows, limit);
    let intents: Vec<_> = rows.iter().map(|d| &d.stripe_payment_intent_id).collect();
    let purchases = state
        .store
        .purchase_ids_for_payment_intents(&tenant.id, &intents)
        .await?;
    // Cloned, not taken: one payment may be disputed more than once.
    let data = rows
        .iter()
        .map(|d| {
            let ids = purchases.get(d.stripe_payment_intent_id.as_str());
            DisputeView::of(d, ids.cloned().unwrap_or_default())
        })
        .collect();
    Ok(axum::Json(List::new(data, has_more, "/v1/disputes")))
}

async fn dispute_view(
    state: &AppState,
    tenant: &TenantExt,
    d: &tollgate_store::Dispute,
) -> crate::error::Result<DisputeView> {
    let purchases = state
        .store
        .purchases_for_payment_intent(&tenant.id, &d.stripe_payment_intent_id)
        .await?;
    Ok(DisputeView::of(
        d,
        purchases.iter().map(|p| p.id.clone()).collect(),
    ))
}

#[utoipa::path(get, path = "/v1/disputes/{id}", tag = "ledger",
    params(("id" = DisputeId, Path, description = "The dispute's id")),
    responses((status = 200, description = "The dispute", body = DisputeView)))]
async fn retrieve_dispute(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<DisputeView> {
    let did = id("id", &raw, DisputeId::parse)?;
    let d = crate::usecases::disputes::find(&state, &tenant, &did).await?;
    Ok(axum::Json(dispute_view(&state, &tenant, &d).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OrderQuery {
    /// Only this customer's orders.
    #[param(value_type = Option<CustomerId>)]
    customer: Option<String>,
    /// 1 to 100 (default 10).
    limit: Option<i64>,
    /// An order id: the page after it.
    #[param(value_type = Option<OrderId>)]
    starting_after: Option<String>,
}

/// Orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "ledger", params(OrderQuery),
    responses((status = 200, description = "A page of orders", body = List<OrderView>)))]
async fn list_orders(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<OrderQuery>,
) -> Answer<List<OrderView>> {
    let limit = limit(q.limit)?;
    let customer = q
        .customer
        .as_deref()
        .map(|c| id("customer", c, CustomerId::parse))
        .transpose()?;
    let after = q
        .starting_after
        .as_deref()
        .map(|s| id("starting_after", s, OrderId::parse))
        .transpose()?;
    let rows = from_cursor(
        state
            .store
            .list_orders(&tenant.id, customer.as_ref(), limit + 1, after.as_ref())
            .await,
        "order",
        q.starting_after.as_deref(),
    )?;
    let (rows, has_more) = page(rows, limit);
    Ok(axum::Json(List::new(
        rows.iter().map(OrderView::of).collect(),
        has_more,
        "/v1/orders",
    )))
}

/// An order with its items, bookings and purchases.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "ledger",
    params(("id" = OrderId, Path, description = "The order's id")),
    responses((status = 200, description = "The order", body = OrderView)))]
async fn retrieve_order(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<OrderView> {
    let oid = id("id", &raw, OrderId::parse)?;
    let order = match state.store.order(&tenant.id, &oid).await {
        Ok(o) => o,
        Err(StoreError::NotFound) => return Err(Error::not_found("order", oid.as_str())),
        Err(e) => return Err(e.into()),
    };
    let bookings = state.store.bookings_for_order(&tenant.id, &oid).await?;
    let purchases = state.store.purchases_for_order(&tenant.id, &oid).await?;
    let mut view = OrderView::of(&order);
    view.bookings = Some(bookings.iter().map(BookingView::of).collect());
    view.purchases = Some(purchases.iter().map(PurchaseView::of).collect());
    Ok(axum::Json(view))
}
