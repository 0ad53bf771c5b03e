//! `/v1/customers`: get-or-create by external user id, with exactly one Stripe customer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use tollgate_domain::{CustomerId, Email};
use tollgate_store::Tenant;

use super::{Json, Query, limit, list, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::usecases::{ensure_stripe_customer, portal_session as open_portal};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/customers", post(get_or_create).get(list_customers))
        .route("/v1/customers/{id}", get(retrieve))
        .route("/v1/customers/{id}/portal_sessions", post(portal_session))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerInput {
    external_user_id: String,
    email: Option<String>,
    name: Option<String>,
    /// Test mode only: create the Stripe customer on this test clock.
    test_clock: Option<String>,
}

async fn get_or_create(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Json(input): Json<CustomerInput>,
) -> ApiResult<Response> {
    let external = input.external_user_id.trim();
    if external.is_empty() || external.len() > 255 {
        return Err(ApiError::invalid(
            "external_user_id",
            "invalid_external_user_id",
            "external_user_id must be 1 to 255 characters.",
        ));
    }
    let email = match &input.email {
        Some(e) => Some(Email::parse(e).map_err(|_| {
            ApiError::invalid(
                "email",
                "invalid_email",
                "email is not a valid email address.",
            )
        })?),
        None => None,
    };
    let (customer, created) = state
        .store
        .get_or_create_customer(
            &tenant.id,
            external,
            email.as_ref().map(Email::as_str),
            input.name.as_deref(),
        )
        .await?;
    let customer =
        ensure_stripe_customer(&state, &tenant.id, customer, input.test_clock.as_deref()).await?;
    let mut body = serde_json::to_value(&customer).map_err(|_| ApiError::internal())?;
    body["object"] = "customer".into();
    body["created"] = created.into();
    Ok(ok(body))
}

async fn retrieve(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let cid = CustomerId::parse(&id).ok_or_else(|| ApiError::not_found("customer", &id))?;
    let customer = state
        .store
        .customer(&tenant.id, &cid)
        .await
        .map_err(|_| ApiError::not_found("customer", &id))?;
    Ok(ok(customer))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    starting_after: Option<String>,
}

async fn list_customers(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = limit(q.limit)?;
    let after = match &q.starting_after {
        Some(s) => Some(
            CustomerId::parse(s)
                .ok_or_else(|| ApiError::not_found("customer", s).with_param("starting_after"))?,
        ),
        None => None,
    };
    let mut rows = state
        .store
        .list_customers(&tenant.id, limit + 1, after.as_ref())
        .await
        .map_err(|e| match e {
            tollgate_store::StoreError::NotFound => {
                ApiError::not_found("customer", q.starting_after.as_deref().unwrap_or_default())
                    .with_param("starting_after")
            }
            other => other.into(),
        })?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(list(rows, has_more, "/v1/customers"))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PortalInput {
    /// Where the portal's "return" goes (default: the tenant's portal return URL template,
    /// with `{CUSTOMER_ID}` filled in).
    return_url: Option<String>,
}

/// A customer portal session: the page where the customer cancels, renews, switches plan
/// and changes card, as the tenant's portal settings allow.
async fn portal_session(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<PortalInput>,
) -> ApiResult<Response> {
    let cid = CustomerId::parse(&id).ok_or_else(|| ApiError::not_found("customer", &id))?;
    let url = open_portal(&state, &tenant, &cid, input.return_url).await?;
    Ok(ok(
        serde_json::json!({ "object": "billing_portal.session", "customer": cid, "url": url }),
    ))
}
