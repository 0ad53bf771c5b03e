//! `/v1/events`: the tenant's view of the Stripe events received for it, with dead letters
//! and a replay.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use tollgate_store::{InboxFilter, Tenant};

use super::{Query, limit, list, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}/replay", post(replay))
}

#[derive(Deserialize)]
struct EventQuery {
    status: Option<String>,
    limit: Option<i64>,
}

async fn list_events(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<EventQuery>,
) -> ApiResult<Response> {
    if let Some(s) = &q.status
        && tollgate_domain::status::InboxStatus::parse(s).is_none()
    {
        return Err(ApiError::invalid(
            "status",
            "invalid_status",
            "status must be pending, processed, ignored or dead.",
        ));
    }
    let limit = limit(q.limit)?;
    let rows = state
        .store
        .inbox_list(
            &InboxFilter {
                tenant_id: Some(tenant.id.to_string()),
                status: q.status,
            },
            limit,
        )
        .await?;
    Ok(list(rows, false, "/v1/events"))
}

async fn replay(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match state.store.inbox_event(&id).await? {
        Some(e) if e.tenant_id.as_deref() == Some(tenant.id.as_str()) => {
            state.store.inbox_replay(&id).await?;
            state.inbox_signal.notify_waiters();
            Ok(ok(state.store.inbox_event(&id).await?))
        }
        _ => Err(ApiError::not_found("event", &id)),
    }
}
