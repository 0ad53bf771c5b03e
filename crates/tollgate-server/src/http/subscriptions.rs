//! `/v1/subscriptions`: the mirror of customers' subscriptions, and the changes the API
//! makes to them in Stripe (cancel, resume, change of price, pause).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use tollgate_domain::status::SubscriptionStatus;
use tollgate_domain::{CustomerId, SubscriptionId, Timestamp};
use tollgate_store::{Subscription, SubscriptionFilter};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, Json, PathParam, Query, TenantExt, id, limit, page};
use crate::state::AppState;
use crate::usecases::subscriptions::{self as subs, ChangePriceInput, PauseInput, Synced};
use crate::views::{List, SubscriptionView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_subscriptions))
        .routes(routes!(retrieve))
        .routes(routes!(cancel))
        .routes(routes!(resume))
        .routes(routes!(change_price))
        .routes(routes!(pause))
        .routes(routes!(unpause))
}

/// A subscription as shown: the mirror plus what access its plan gives now (from the
/// access index, like `/v1/access`).
pub(super) fn view(state: &AppState, s: &Subscription) -> SubscriptionView {
    let access = s.product_id.as_ref().map(|p| {
        state
            .access
            .check_product(&s.tenant_id, &s.customer_id, p, Timestamp::now())
    });
    SubscriptionView::of(s, access.as_ref())
}

async fn find(
    state: &AppState,
    tenant: &TenantExt,
    raw: &str,
) -> crate::error::Result<Subscription> {
    let sid = id("id", raw, SubscriptionId::parse)?;
    subs::find(state, tenant, &sid).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this customer's subscriptions.
    #[param(value_type = Option<CustomerId>)]
    customer: Option<String>,
    status: Option<SubscriptionStatus>,
    /// 1 to 100 (default 10).
    limit: Option<i64>,
    /// A subscription id: the page after it.
    #[param(value_type = Option<SubscriptionId>)]
    starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", params(ListQuery),
    responses((status = 200, description = "A page of subscriptions", body = List<SubscriptionView>)))]
async fn list_subscriptions(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<ListQuery>,
) -> Answer<List<SubscriptionView>> {
    let limit = limit(q.limit)?;
    let customer = q
        .customer
        .as_deref()
        .map(|c| id("customer", c, CustomerId::parse))
        .transpose()?;
    let after = match &q.starting_after {
        Some(s) => {
            let sid = id("starting_after", s, SubscriptionId::parse)?;
            Some(
                subs::find(&state, &tenant, &sid)
                    .await
                    .map_err(|e| e.with_param("starting_after"))?
                    .id,
            )
        }
        None => None,
    };
    let rows = state
        .store
        .list_subscriptions(
            &tenant.id,
            &SubscriptionFilter {
                customer_id: customer,
                status: q.status,
            },
            limit + 1,
            after.as_ref(),
        )
        .await?;
    let (rows, has_more) = page(rows, limit);
    Ok(axum::Json(List::new(
        rows.iter().map(|s| view(&state, s)).collect(),
        has_more,
        "/v1/subscriptions",
    )))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RetrieveQuery {
    /// Read Stripe's state first (as a webhook would).
    sync: Option<bool>,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = SubscriptionId, Path, description = "The subscription's id"), RetrieveQuery),
    responses((status = 200, description = "The subscription", body = SubscriptionView)))]
async fn retrieve(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Query(q): Query<RetrieveQuery>,
) -> Answer<SubscriptionView> {
    let mut sub = find(&state, &tenant, &raw).await?;
    if q.sync == Some(true)
        && let Synced::Mirrored(s) =
            subs::sync_subscription(&state, &tenant, &sub.stripe_subscription_id, &[]).await?
    {
        sub = *s;
    }
    Ok(axum::Json(view(&state, &sub)))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    /// `true` (the default): at the end of the period, keeping access until then;
    /// `false`: now.
    at_period_end: Option<bool>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/cancel", tag = "subscriptions",
    params(("id" = SubscriptionId, Path, description = "The subscription's id")),
    request_body = CancelInput,
    responses((status = 200, description = "The subscription after the change", body = SubscriptionView)))]
async fn cancel(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<CancelInput>,
) -> Answer<SubscriptionView> {
    let sub = find(&state, &tenant, &raw).await?;
    let after =
        subs::cancel_subscription(&state, &tenant, &sub, input.at_period_end.unwrap_or(true))
            .await?;
    Ok(axum::Json(view(&state, &after)))
}

/// Nothing to send.
#[derive(Deserialize, Default, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

/// Takes back a cancellation at period end (or resumes a `paused` subscription).
#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", tag = "subscriptions",
    params(("id" = SubscriptionId, Path, description = "The subscription's id")),
    request_body = NoInput,
    responses((status = 200, description = "The subscription after the change", body = SubscriptionView)))]
async fn resume(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(_no_input): Json<NoInput>,
) -> Answer<SubscriptionView> {
    let sub = find(&state, &tenant, &raw).await?;
    let after = subs::resume_subscription(&state, &tenant, &sub).await?;
    Ok(axum::Json(view(&state, &after)))
}

/// A dearer rate moves now and invoices the prorated difference; a cheaper one is billed
/// from the next renewal and the plan paid for lasts until the period ends.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/change_price", tag = "subscriptions",
    params(("id" = SubscriptionId, Path, description = "The subscription's id")),
    request_body = ChangePriceInput,
    responses((status = 200, description = "The subscription after the change, with `change` and `effective_at`", body = SubscriptionView)))]
async fn change_price(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<ChangePriceInput>,
) -> Answer<SubscriptionView> {
    let sub = find(&state, &tenant, &raw).await?;
    let changed = subs::change_price(&state, &tenant, &sub, input).await?;
    let mut v = view(&state, &changed.subscription);
    v.change = Some(changed.change);
    v.effective_at = Some(changed.effective_at);
    Ok(axum::Json(v))
}

/// Pauses collection; a paused subscription grants no access.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", tag = "subscriptions",
    params(("id" = SubscriptionId, Path, description = "The subscription's id")),
    request_body = PauseInput,
    responses((status = 200, description = "The subscription after the change", body = SubscriptionView)))]
async fn pause(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<PauseInput>,
) -> Answer<SubscriptionView> {
    let sub = find(&state, &tenant, &raw).await?;
    let after = subs::pause_subscription(&state, &tenant, &sub, input).await?;
    Ok(axum::Json(view(&state, &after)))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/unpause", tag = "subscriptions",
    params(("id" = SubscriptionId, Path, description = "The subscription's id")),
    request_body = NoInput,
    responses((status = 200, description = "The subscription after the change", body = SubscriptionView)))]
async fn unpause(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(_no_input): Json<NoInput>,
) -> Answer<SubscriptionView> {
    let sub = find(&state, &tenant, &raw).await?;
    let after = subs::unpause_subscription(&state, &tenant, &sub).await?;
    Ok(axum::Json(view(&state, &after)))
}
