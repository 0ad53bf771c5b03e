//! `/v1/products` and their prices: the tenant's catalogue, synced to Stripe.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;
use tollgate_domain::status::{ProductKind, ProductStatus};
use tollgate_domain::{Currency, PriceId, ProductId};
use tollgate_store::{NewPrice, NewProduct, Product, ProductUpdate, StoreError, Tenant};

use super::{Json, Query, limit, list, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::usecases::{ensure_stripe_price, sync_product};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", post(create).get(list_products))
        .route(
            "/v1/products/{id}",
            get(retrieve).post(update).delete(delete),
        )
        .route("/v1/products/{id}/prices", post(add_price))
        .route("/v1/prices/{id}", get(retrieve_price))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceInput {
    unit_amount: i64,
    currency: Option<String>,
    recurring_interval: Option<String>,
    recurring_interval_count: Option<i64>,
    trial_days: Option<i64>,
    lookup_key: Option<String>,
    /// `licensed` (default) or `metered`: usage reported to `POST /v1/usage` is billed.
    usage_type: Option<String>,
    /// For a metered price: the usage event name it bills.
    meter_event_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductInput {
    kind: String,
    title: String,
    description: Option<String>,
    status: Option<String>,
    creator_id: Option<String>,
    capacity: Option<i64>,
    metadata: Option<serde_json::Value>,
    price: Option<PriceInput>,
}

fn parse_kind(kind: &str) -> ApiResult<ProductKind> {
    ProductKind::parse(kind).ok_or_else(|| {
        ApiError::invalid(
            "kind",
            "invalid_kind",
            "kind must be content, course, digital_product, event or plan.",
        )
    })
}

fn parse_status(status: &str) -> ApiResult<ProductStatus> {
    ProductStatus::parse(status).ok_or_else(|| {
        ApiError::invalid(
            "status",
            "invalid_status",
            "status must be draft, published or archived.",
        )
    })
}

fn check_metadata(m: &serde_json::Value) -> ApiResult<()> {
    let obj = m.as_object().ok_or_else(|| {
        ApiError::invalid(
            "metadata",
            "invalid_metadata",
            "metadata must be an object of strings.",
        )
    })?;
    if obj.len() > 50
        || obj
            .iter()
            .any(|(k, v)| k.len() > 40 || v.as_str().is_none_or(|s| s.len() > 500))
    {
        return Err(ApiError::invalid(
            "metadata",
            "invalid_metadata",
            "metadata holds up to 50 string values, keys up to 40 and values up to 500 characters.",
        ));
    }
    Ok(())
}

/// A usage event name: what Stripe's meter is named by (with the tenant in front).
fn valid_event_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn validate_price(p: &PriceInput, default_currency: &str) -> ApiResult<NewPrice> {
    if p.unit_amount < 0 {
        return Err(ApiError::invalid(
            "unit_amount",
            "invalid_amount",
            "unit_amount must not be negative.",
        ));
    }
    let currency =
        Currency::parse(p.currency.as_deref().unwrap_or(default_currency)).map_err(|_| {
            ApiError::invalid(
                "currency",
                "invalid_currency",
                "currency must be a three-letter ISO code such as usd.",
            )
        })?;
    if let Some(i) = &p.recurring_interval {
        let max = match i.as_str() {
            "day" => 365,
            "week" => 52,
            "month" => 12,
            "year" => 1,
            _ => {
                return Err(ApiError::invalid(
                    "recurring_interval",
                    "invalid_interval",
                    "recurring_interval must be day, week, month or year.",
                ));
            }
        };
        if !(1..=max).contains(&p.recurring_interval_count.unwrap_or(1)) {
            return Err(ApiError::invalid(
                "recurring_interval_count",
                "invalid_interval",
                "the interval may be at most one year.",
            ));
        }
    } else if p.recurring_interval_count.is_some() || p.trial_days.is_some() {
        return Err(ApiError::invalid(
            "recurring_interval",
            "parameter_missing",
            "recurring_interval_count and trial_days need a recurring_interval.",
        ));
    }
    if p.trial_days.is_some_and(|d| !(1..=730).contains(&d)) {
        return Err(ApiError::invalid(
            "trial_days",
            "invalid_trial",
            "trial_days must be between 1 and 730.",
        ));
    }
    let usage_type = p.usage_type.clone().unwrap_or_else(|| "licensed".into());
    match (usage_type.as_str(), &p.meter_event_name) {
        ("licensed", None) => {}
        ("metered", Some(name)) if p.recurring_interval.is_some() => {
            if !valid_event_name(name) {
                return Err(ApiError::invalid(
                    "meter_event_name",
                    "invalid_event_name",
                    "meter_event_name is 1 to 64 letters, digits, '_', '-' or '.'.",
                ));
            }
        }
        ("metered", _) => {
            return Err(ApiError::invalid(
                "meter_event_name",
                "parameter_missing",
                "A metered price is recurring and names its meter_event_name.",
            ));
        }
        ("licensed", Some(_)) => {
            return Err(ApiError::invalid(
                "meter_event_name",
                "parameter_unexpected",
                "meter_event_name goes with usage_type=metered.",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "usage_type",
                "invalid_usage_type",
                "usage_type must be licensed or metered.",
            ));
        }
    }
    if p.lookup_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 200)
    {
        return Err(ApiError::invalid(
            "lookup_key",
            "invalid_lookup_key",
            "lookup_key is 1 to 200 characters.",
        ));
    }
    Ok(NewPrice {
        usage_type,
        meter_event_name: p.meter_event_name.clone(),
        currency: currency.as_str().to_owned(),
        unit_amount: p.unit_amount,
        recurring_interval: p.recurring_interval.clone(),
        recurring_interval_count: p
            .recurring_interval
            .as_ref()
            .map(|_| p.recurring_interval_count.unwrap_or(1)),
        trial_days: p.trial_days,
        lookup_key: p.lookup_key.clone(),
    })
}

async fn render(
    state: &AppState,
    tenant: &Tenant,
    product: &Product,
) -> ApiResult<serde_json::Value> {
    let prices = state
        .store
        .prices_for_product(&tenant.id, &product.id)
        .await?;
    let mut body = serde_json::to_value(product).map_err(|_| ApiError::internal())?;
    body["object"] = "product".into();
    body["prices"] = serde_json::to_value(prices).map_err(|_| ApiError::internal())?;
    if product.kind == "plan" {
        let entitlements = state
            .store
            .entitlements_for_plan(&tenant.id, &product.id)
            .await?;
        body["entitlements"] =
            serde_json::to_value(entitlements).map_err(|_| ApiError::internal())?;
    }
    Ok(body)
}

/// Syncs a price to Stripe now; if Stripe is down the checkout will try again.
async fn sync_best_effort(
    state: &AppState,
    tenant: &Tenant,
    product: &Product,
    price: tollgate_store::Price,
) {
    if let Err(e) = ensure_stripe_price(state, &tenant.id, product, price).await {
        tracing::warn!(error = %e.message, product = %product.id, "price not synced to Stripe yet");
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Json(input): Json<ProductInput>,
) -> ApiResult<Response> {
    let kind = parse_kind(&input.kind)?;
    let status = parse_status(input.status.as_deref().unwrap_or("draft"))?;
    let title = input.title.trim();
    if title.is_empty() || title.len() > 500 {
        return Err(ApiError::invalid(
            "title",
            "invalid_title",
            "title must be 1 to 500 characters.",
        ));
    }
    if input.capacity.is_some() && kind != ProductKind::Event {
        return Err(ApiError::invalid(
            "capacity",
            "capacity_not_allowed",
            "Only events have a capacity.",
        ));
    }
    if input.capacity.is_some_and(|c| c < 0) {
        return Err(ApiError::invalid(
            "capacity",
            "invalid_capacity",
            "capacity must not be negative.",
        ));
    }
    let metadata = input.metadata.clone().unwrap_or_else(|| json!({}));
    check_metadata(&metadata)?;
    let price = input
        .price
        .as_ref()
        .map(|p| validate_price(p, &tenant.default_currency))
        .transpose()?;
    let product = state
        .store
        .create_product(
            &tenant.id,
            &NewProduct {
                kind: kind.as_str().into(),
                title: title.into(),
                description: input.description.clone(),
                status: status.as_str().into(),
                creator_id: input.creator_id.clone(),
                capacity: input.capacity,
                metadata,
            },
        )
        .await?;
    if let Some(p) = price {
        let price = state
            .store
            .create_price(&tenant.id, &product.id, &p)
            .await
            .map_err(lookup_key_conflict)?;
        sync_best_effort(&state, &tenant, &product, price).await;
    }
    let product = state.store.product(&tenant.id, &product.id).await?;
    Ok(ok(render(&state, &tenant, &product).await?))
}

pub(super) fn lookup_key_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => ApiError::conflict(
            "lookup_key_taken",
            "Another price of this tenant uses that lookup_key.",
        )
        .with_param("lookup_key"),
        other => other.into(),
    }
}

pub(super) async fn live_product(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> ApiResult<Product> {
    let pid = ProductId::parse(id).ok_or_else(|| ApiError::not_found("product", id))?;
    match state.store.product(&tenant.id, &pid).await {
        Ok(p) if p.deleted_at.is_none() => Ok(p),
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::not_found("product", id)),
        Err(e) => Err(e.into()),
    }
}

async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let product = live_product(&state, &tenant, &id).await?;
    Ok(ok(render(&state, &tenant, &product).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateInput {
    title: Option<String>,
    description: Option<String>,
    status: Option<String>,
    capacity: Option<i64>,
    metadata: Option<serde_json::Value>,
}

async fn update(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<UpdateInput>,
) -> ApiResult<Response> {
    let product = live_product(&state, &tenant, &id).await?;
    if let Some(s) = &input.status {
        parse_status(s)?;
    }
    if let Some(m) = &input.metadata {
        check_metadata(m)?;
    }
    if input.capacity.is_some() && product.kind != "event" {
        return Err(ApiError::invalid(
            "capacity",
            "capacity_not_allowed",
            "Only events have a capacity.",
        ));
    }
    // Stripe first: a failure there leaves both as they were, and setting the same
    // values again on a retry is harmless.
    let mut next = product.clone();
    if let Some(t) = &input.title {
        next.title = t.clone();
    }
    if let Some(d) = &input.description {
        next.description = Some(d.clone());
    }
    if let Some(s) = &input.status {
        next.status = s.clone();
    }
    sync_product(&state, &next).await?;
    let updated = state
        .store
        .update_product(
            &tenant.id,
            &product.id,
            &ProductUpdate {
                title: input.title,
                description: input.description,
                status: input.status,
                capacity: input.capacity,
                metadata: input.metadata,
            },
        )
        .await?;
    Ok(ok(render(&state, &tenant, &updated).await?))
}

async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let product = live_product(&state, &tenant, &id).await?;
    let mut gone = product.clone();
    gone.deleted_at = Some(tollgate_store::now_ms());
    sync_product(&state, &gone).await?;
    state.store.delete_product(&tenant.id, &product.id).await?;
    Ok(ok(
        json!({ "id": product.id, "object": "product", "deleted": true }),
    ))
}

async fn add_price(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<PriceInput>,
) -> ApiResult<Response> {
    let product = live_product(&state, &tenant, &id).await?;
    let p = validate_price(&input, &tenant.default_currency)?;
    let price = state
        .store
        .create_price(&tenant.id, &product.id, &p)
        .await
        .map_err(lookup_key_conflict)?;
    sync_best_effort(&state, &tenant, &product, price.clone()).await;
    Ok(ok(state.store.price(&tenant.id, &price.id).await?))
}

async fn retrieve_price(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let pid = PriceId::parse(&id).ok_or_else(|| ApiError::not_found("price", &id))?;
    let price = state
        .store
        .price(&tenant.id, &pid)
        .await
        .map_err(|_| ApiError::not_found("price", &id))?;
    Ok(ok(price))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    starting_after: Option<String>,
}

async fn list_products(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    if let Some(s) = &q.status {
        parse_status(s)?;
    }
    let limit = limit(q.limit)?;
    let after = match &q.starting_after {
        Some(s) => Some(
            live_product(&state, &tenant, s)
                .await
                .map_err(|e| e.with_param("starting_after"))?
                .id,
        ),
        None => None,
    };
    let mut rows = state
        .store
        .list_products(&tenant.id, q.status.as_deref(), limit + 1, after.as_ref())
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut data = Vec::with_capacity(rows.len());
    for p in &rows {
        data.push(render(&state, &tenant, p).await?);
    }
    Ok(list(data, has_more, "/v1/products"))
}
