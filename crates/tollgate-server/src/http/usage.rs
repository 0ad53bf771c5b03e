//! `/v1/usage`: metered usage, recorded once per `Idempotency-Key` and reported to
//! Stripe's billing meter in the background.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use tollgate_domain::CustomerId;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, Json, Query, TenantExt, id, limit, page};
use crate::state::AppState;
use crate::usecases::usage::{self, UsageInput};
use crate::views::{List, UsageRecordView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report, list_usage))
}

/// Reports usage of a metered price; counted once per `Idempotency-Key` (required).
#[utoipa::path(post, path = "/v1/usage", tag = "usage", request_body = UsageInput,
    responses((status = 200, description = "The usage record", body = UsageRecordView)))]
async fn report(
    State(state): State<AppState>,
    tenant: TenantExt,
    headers: HeaderMap,
    Json(input): Json<UsageInput>,
) -> Answer<UsageRecordView> {
    let key = headers.get("idempotency-key").and_then(|k| k.to_str().ok());
    let (record, created) = usage::record_usage(&state, &tenant, input, key).await?;
    let mut view = UsageRecordView::of(&record);
    view.created = Some(created);
    Ok(axum::Json(view))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this customer's usage.
    #[param(value_type = Option<CustomerId>)]
    customer: Option<String>,
    /// 1 to 100 (default 10).
    limit: Option<i64>,
}

/// Usage, newest first.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(ListQuery),
    responses((status = 200, description = "Usage records", body = List<UsageRecordView>)))]
async fn list_usage(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<ListQuery>,
) -> Answer<List<UsageRecordView>> {
    let limit = limit(q.limit)?;
    let customer = q
        .customer
        .as_deref()
        .map(|c| id("customer", c, CustomerId::parse))
        .transpose()?;
    let rows = state
        .store
        .list_usage(&tenant.id, customer.as_ref(), limit + 1)
        .await?;
    let (rows, has_more) = page(rows, limit);
    Ok(axum::Json(List::new(
        rows.iter().map(UsageRecordView::of).collect(),
        has_more,
        "/v1/usage",
    )))
}
