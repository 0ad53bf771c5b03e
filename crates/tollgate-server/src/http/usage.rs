//! `/v1/usage`: metered usage, recorded once per `Idempotency-Key` and reported to Stripe's
//! billing meter in the background.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;
use tollgate_domain::CustomerId;
use tollgate_store::Tenant;

use super::{Json, Query, limit, list, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::usecases::{self, UsageInput};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/usage", post(report).get(list_usage))
}

async fn report(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
    Json(input): Json<UsageInput>,
) -> ApiResult<Response> {
    let key = headers.get("idempotency-key").and_then(|k| k.to_str().ok());
    let (record, created) = usecases::record_usage(&state, &tenant, input, key).await?;
    let mut body = serde_json::to_value(&record).map_err(|_| ApiError::internal())?;
    body["object"] = "usage_record".into();
    body["created"] = created.into();
    Ok(ok(body))
}

#[derive(Deserialize)]
struct ListQuery {
    customer: Option<String>,
    limit: Option<i64>,
}

async fn list_usage(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = limit(q.limit)?;
    let customer = match &q.customer {
        Some(c) => Some(
            CustomerId::parse(c)
                .ok_or_else(|| ApiError::not_found("customer", c).with_param("customer"))?,
        ),
        None => None,
    };
    let rows = state
        .store
        .list_usage(&tenant.id, customer.as_ref(), limit)
        .await?;
    Ok(list(rows, false, "/v1/usage"))
}
