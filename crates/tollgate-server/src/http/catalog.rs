//! `/v1/products` and their prices: the tenant's catalogue, synced to Stripe.

use axum::extract::State;
use serde::Deserialize;
use tollgate_domain::status::{ProductKind, ProductStatus};
use tollgate_domain::{PriceId, ProductId};
use tollgate_store::{Product, StoreError, Tenant};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, Json, PathParam, Query, TenantExt, id, limit, page};
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::usecases::catalog::{self, PriceInput, ProductInput, ProductUpdateInput};
use crate::views::{Deleted, List, PriceView, ProductView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list_products))
        .routes(routes!(retrieve, update, delete))
        .routes(routes!(add_price))
        .routes(routes!(retrieve_price))
}

/// A product as shown: with its active prices and, for a plan, its entitlements.
async fn render(state: &AppState, tenant: &Tenant, product: &Product) -> Result<ProductView> {
    let prices = state
        .store
        .prices_for_product(&tenant.id, &product.id)
        .await?;
    let entitlements = if product.kind == ProductKind::Plan {
        Some(
            state
                .store
                .entitlements_for_plan(&tenant.id, &product.id)
                .await?,
        )
    } else {
        None
    };
    Ok(ProductView::of(product, &prices, entitlements.as_deref()))
}

#[utoipa::path(post, path = "/v1/products", tag = "catalog", request_body = ProductInput,
    responses((status = 200, description = "The product", body = ProductView)))]
async fn create(
    State(state): State<AppState>,
    tenant: TenantExt,
    Json(input): Json<ProductInput>,
) -> Answer<ProductView> {
    let product = catalog::create_product(&state, &tenant, input).await?;
    Ok(axum::Json(render(&state, &tenant, &product).await?))
}

#[utoipa::path(get, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = ProductId, Path, description = "The product's id")),
    responses((status = 200, description = "The product", body = ProductView)))]
async fn retrieve(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<ProductView> {
    let pid = id("id", &raw, ProductId::parse)?;
    let product = catalog::live_product(&state, &tenant, &pid).await?;
    Ok(axum::Json(render(&state, &tenant, &product).await?))
}

#[utoipa::path(post, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = ProductId, Path, description = "The product's id")),
    request_body = ProductUpdateInput,
    responses((status = 200, description = "The product after the change", body = ProductView)))]
async fn update(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<ProductUpdateInput>,
) -> Answer<ProductView> {
    let pid = id("id", &raw, ProductId::parse)?;
    let product = catalog::update_product(&state, &tenant, &pid, input).await?;
    Ok(axum::Json(render(&state, &tenant, &product).await?))
}

/// A soft delete: the product can no longer be sold; its buyers keep access.
#[utoipa::path(delete, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = ProductId, Path, description = "The product's id")),
    responses((status = 200, description = "Deleted", body = Deleted<ProductId>)))]
async fn delete(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<Deleted<ProductId>> {
    let pid = id("id", &raw, ProductId::parse)?;
    let product = catalog::delete_product(&state, &tenant, &pid).await?;
    Ok(axum::Json(Deleted {
        id: product.id,
        object: "product",
        deleted: true,
    }))
}

#[utoipa::path(post, path = "/v1/products/{id}/prices", tag = "catalog",
    params(("id" = ProductId, Path, description = "The product's id")),
    request_body = PriceInput,
    responses((status = 200, description = "The price", body = PriceView)))]
async fn add_price(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<PriceInput>,
) -> Answer<PriceView> {
    let pid = id("id", &raw, ProductId::parse)?;
    let price = catalog::add_price(&state, &tenant, &pid, input).await?;
    Ok(axum::Json(PriceView::of(&price)))
}

#[utoipa::path(get, path = "/v1/prices/{id}", tag = "catalog",
    params(("id" = PriceId, Path, description = "The price's id")),
    responses((status = 200, description = "The price", body = PriceView)))]
async fn retrieve_price(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<PriceView> {
    let pid = id("id", &raw, PriceId::parse)?;
    match state.store.price(&tenant.id, &pid).await {
        Ok(p) => Ok(axum::Json(PriceView::of(&p))),
        Err(StoreError::NotFound) => Err(Error::not_found("price", pid.as_str())),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only products of this status.
    status: Option<ProductStatus>,
    /// 1 to 100 (default 10).
    limit: Option<i64>,
    /// A product id: the page after it.
    #[param(value_type = Option<ProductId>)]
    starting_after: Option<String>,
}

/// The tenant's live products, newest first.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", params(ListQuery),
    responses((status = 200, description = "A page of products", body = List<ProductView>)))]
async fn list_products(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<ListQuery>,
) -> Answer<List<ProductView>> {
    let limit = limit(q.limit)?;
    let after = match &q.starting_after {
        Some(s) => {
            let pid = id("starting_after", s, ProductId::parse)?;
            Some(
                catalog::live_product(&state, &tenant, &pid)
                    .await
                    .map_err(|e| e.with_param("starting_after"))?
                    .id,
            )
        }
        None => None,
    };
    let rows = state
        .store
        .list_products(&tenant.id, q.status, limit + 1, after.as_ref())
        .await
        .map_err(Error::from)?;
    let (rows, has_more) = page(rows, limit);
    let mut data = Vec::with_capacity(rows.len());
    for p in &rows {
        data.push(render(&state, &tenant, p).await?);
    }
    Ok(axum::Json(List::new(data, has_more, "/v1/products")))
}
