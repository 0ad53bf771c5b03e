//! `/v1/subscriptions`: the mirror of customers' subscriptions, and the changes the API
//! makes to them in Stripe (cancel, resume, change of price, pause).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use tollgate_domain::status::{PauseBehavior, SubscriptionStatus};
use tollgate_domain::{CustomerId, SubscriptionId};
use tollgate_store::{StoreError, Subscription, SubscriptionFilter, Tenant};

use super::{Json, Query, limit, list, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::usecases;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/subscriptions", get(list_subscriptions))
        .route("/v1/subscriptions/{id}", get(retrieve))
        .route("/v1/subscriptions/{id}/cancel", post(cancel))
        .route("/v1/subscriptions/{id}/resume", post(resume))
        .route("/v1/subscriptions/{id}/change_price", post(change_price))
        .route("/v1/subscriptions/{id}/pause", post(pause))
        .route("/v1/subscriptions/{id}/unpause", post(unpause))
}

/// A subscription as the API shows it: the mirror plus what access it gives now.
fn render(state: &AppState, tenant: &Tenant, s: &Subscription) -> serde_json::Value {
    let mut body = serde_json::to_value(s).unwrap_or_default();
    body["object"] = "subscription".into();
    // What the customer may use of the plan now (from the access index, like /v1/access).
    let access = s.product_id.as_ref().map(|p| {
        state
            .access
            .check_product(&tenant.id, &s.customer_id, p, tollgate_store::now_ms())
    });
    body["has_access"] = access.as_ref().is_some_and(|a| a.has_access).into();
    body["access_expires_at"] = access.and_then(|a| a.expires_at).into();
    body
}

async fn find(state: &AppState, tenant: &Tenant, id: &str) -> ApiResult<Subscription> {
    let missing = || ApiError::not_found("subscription", id);
    let sid = SubscriptionId::parse(id).ok_or_else(missing)?;
    match state.store.subscription(&tenant.id, &sid).await {
        Ok(s) => Ok(s),
        Err(StoreError::NotFound) => Err(missing()),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    customer: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    starting_after: Option<String>,
}

async fn list_subscriptions(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = limit(q.limit)?;
    if let Some(s) = &q.status
        && SubscriptionStatus::parse(s).is_none()
    {
        return Err(ApiError::invalid(
            "status",
            "invalid_status",
            "status must be one of Stripe's subscription statuses (active, trialing, past_due, ...).",
        ));
    }
    let customer = match &q.customer {
        Some(c) => Some(
            CustomerId::parse(c)
                .ok_or_else(|| ApiError::not_found("customer", c).with_param("customer"))?,
        ),
        None => None,
    };
    let after = match &q.starting_after {
        Some(s) => Some(
            find(&state, &tenant, s)
                .await
                .map_err(|e| e.with_param("starting_after"))?
                .id,
        ),
        None => None,
    };
    let mut rows = state
        .store
        .list_subscriptions(
            &tenant.id,
            &SubscriptionFilter {
                customer_id: customer,
                status: q.status.clone(),
            },
            limit + 1,
            after.as_ref(),
        )
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data: Vec<_> = rows.iter().map(|s| render(&state, &tenant, s)).collect();
    Ok(list(data, has_more, "/v1/subscriptions"))
}

#[derive(Deserialize)]
struct RetrieveQuery {
    sync: Option<bool>,
}

/// `?sync=true` reads Stripe's state first (as the webhook would).
async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Query(q): Query<RetrieveQuery>,
) -> ApiResult<Response> {
    let mut sub = find(&state, &tenant, &id).await?;
    if q.sync == Some(true) {
        sub =
            usecases::sync_subscription(&state, &tenant, &sub.stripe_subscription_id, None).await?;
    }
    Ok(ok(render(&state, &tenant, &sub)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelInput {
    /// `true` (the default): at the end of the period; `false`: now.
    at_period_end: Option<bool>,
}

async fn cancel(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<CancelInput>,
) -> ApiResult<Response> {
    let sub = find(&state, &tenant, &id).await?;
    let after =
        usecases::cancel_subscription(&state, &tenant, &sub, input.at_period_end.unwrap_or(true))
            .await?;
    Ok(ok(render(&state, &tenant, &after)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoInput {}

async fn resume(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(_): Json<NoInput>,
) -> ApiResult<Response> {
    let sub = find(&state, &tenant, &id).await?;
    let after = usecases::resume_subscription(&state, &tenant, &sub).await?;
    Ok(ok(render(&state, &tenant, &after)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePriceInput {
    /// A price id or one of the tenant's lookup keys.
    price: String,
    quantity: Option<i64>,
}

async fn change_price(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<ChangePriceInput>,
) -> ApiResult<Response> {
    let sub = find(&state, &tenant, &id).await?;
    let price = usecases::find_price(&state, &tenant.id, &input.price, "price").await?;
    let changed = usecases::change_price(&state, &tenant, &sub, price, input.quantity).await?;
    let mut body = render(&state, &tenant, &changed.subscription);
    body["change"] = serde_json::to_value(changed.change).unwrap_or_default();
    body["effective_at"] = changed.effective_at.into();
    Ok(ok(body))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseInput {
    /// What becomes of invoices meanwhile: `void` (default), `keep_as_draft` or
    /// `mark_uncollectible`.
    behavior: Option<String>,
    /// When collection resumes on its own (Unix seconds).
    resumes_at: Option<i64>,
}

async fn pause(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<PauseInput>,
) -> ApiResult<Response> {
    let sub = find(&state, &tenant, &id).await?;
    let behavior = input.behavior.unwrap_or_else(|| "void".into());
    if PauseBehavior::parse(&behavior).is_none() {
        return Err(ApiError::invalid(
            "behavior",
            "invalid_behavior",
            "behavior must be void, keep_as_draft or mark_uncollectible.",
        ));
    }
    let after =
        usecases::pause_subscription(&state, &tenant, &sub, &behavior, input.resumes_at).await?;
    Ok(ok(render(&state, &tenant, &after)))
}

async fn unpause(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(_): Json<NoInput>,
) -> ApiResult<Response> {
    let sub = find(&state, &tenant, &id).await?;
    let after = usecases::unpause_subscription(&state, &tenant, &sub).await?;
    Ok(ok(render(&state, &tenant, &after)))
}
