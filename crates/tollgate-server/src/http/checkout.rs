//! `/v1/checkout_sessions`: create one for an item or a cart, and read one back, with
//! `?sync=true` re-fetching it from Stripe and completing the order if it is paid.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;
use tollgate_store::{StoreError, Tenant};

use super::{Json, Query, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::usecases::{CheckoutInput, Completion, complete_from_stripe, create_checkout};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/checkout_sessions", post(create))
        .route("/v1/checkout_sessions/{id}", get(retrieve))
}

async fn create(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Json(input): Json<CheckoutInput>,
) -> ApiResult<Response> {
    let out = create_checkout(&state, &tenant, input).await?;
    Ok(ok(
        json!({ "object": "checkout_session", "id": out.id, "url": out.url, "order_id": out.order_id, "expires_at": out.expires_at }),
    ))
}

#[derive(Deserialize)]
struct RetrieveQuery {
    sync: Option<bool>,
}

async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Query(q): Query<RetrieveQuery>,
) -> ApiResult<Response> {
    let missing = || ApiError::not_found("checkout session", &id);
    if q.sync == Some(true) {
        // Only this tenant's sessions are looked up in Stripe.
        match state.store.order_by_session(&tenant.id, &id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(missing()),
            Err(e) => return Err(e.into()),
        }
        let (order, completion) = complete_from_stripe(&state, &tenant, &id, None)
            .await
            .map_err(|e| if e.status == 404 { missing() } else { e })?;
        let (payment_status, purchases, subscription) = match completion {
            Completion::Completed(p) => ("paid".to_owned(), p, None),
            Completion::Subscribed(s) => ("paid".to_owned(), vec![], Some(s)),
            Completion::NotPaid { payment_status, .. } => (payment_status, vec![], None),
        };
        return Ok(ok(
            json!({ "object": "checkout_session", "id": id, "order_id": order.id, "status": order.status, "payment_status": payment_status, "order": order, "purchases": purchases, "subscription": subscription }),
        ));
    }
    let order = match state.store.order_by_session(&tenant.id, &id).await {
        Ok(o) => o,
        Err(StoreError::NotFound) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let purchases = state
        .store
        .purchases_for_order(&tenant.id, &order.id)
        .await?;
    Ok(ok(
        json!({ "object": "checkout_session", "id": id, "order_id": order.id, "status": order.status, "order": order, "purchases": purchases }),
    ))
}
