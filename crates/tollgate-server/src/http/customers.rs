//! `/v1/customers`: get-or-create by the tenant's user id, with exactly one Stripe
//! customer; lookups by `external_user_id` or `email`; portal sessions.

use axum::extract::State;
use serde::Deserialize;
use tollgate_domain::CustomerId;
use tollgate_store::CustomerFilter;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, Json, PathParam, Query, TenantExt, id, limit, page};
use crate::state::AppState;
use crate::usecases::{customers, portal};
use crate::views::{CustomerView, List, PortalSessionView, PurchaseView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_or_create, list_customers))
        .routes(routes!(retrieve))
        .routes(routes!(portal_session))
        .routes(routes!(claim_guest_purchases))
}

/// Links the tenant's guest purchases made with an email address the tenant has verified
/// to be the customer's: they become the customer's, and access follows. A guest purchase
/// of a product the customer owns already stays a guest's.
#[utoipa::path(post, path = "/v1/customers/{id}/claim_guest_purchases", tag = "customers",
    params(("id" = CustomerId, Path, description = "The customer's id")),
    request_body = customers::GuestClaimInput,
    responses((status = 200, description = "The purchases linked", body = List<PurchaseView>)))]
async fn claim_guest_purchases(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<customers::GuestClaimInput>,
) -> Answer<List<PurchaseView>> {
    let cid = id("id", &raw, CustomerId::parse)?;
    let linked = customers::claim_guest_purchases(&state, &tenant, &cid, input).await?;
    Ok(axum::Json(List::new(
        linked.iter().map(PurchaseView::of).collect(),
        false,
        format!("/v1/customers/{cid}/claim_guest_purchases"),
    )))
}

/// Get-or-create a customer by `external_user_id`: one customer, and one Stripe
/// customer, per tenant and user, even under concurrent calls.
#[utoipa::path(post, path = "/v1/customers", tag = "customers",
    request_body = customers::CustomerInput,
    responses((status = 200, description = "The customer", body = CustomerView)))]
async fn get_or_create(
    State(state): State<AppState>,
    tenant: TenantExt,
    Json(input): Json<customers::CustomerInput>,
) -> Answer<CustomerView> {
    let (customer, created) = customers::get_or_create(&state, &tenant, input).await?;
    let mut view = CustomerView::of(&customer);
    view.created = Some(created);
    Ok(axum::Json(view))
}

#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = CustomerId, Path, description = "The customer's id")),
    responses((status = 200, description = "The customer", body = CustomerView)))]
async fn retrieve(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<CustomerView> {
    let cid = id("id", &raw, CustomerId::parse)?;
    let customer = customers::find(&state, &tenant, &cid, None).await?;
    Ok(axum::Json(CustomerView::of(&customer)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// 1 to 100 (default 10).
    limit: Option<i64>,
    /// A customer id: the page after it.
    #[param(value_type = Option<CustomerId>)]
    starting_after: Option<String>,
    /// Only the customer with this user id of the tenant's.
    external_user_id: Option<String>,
    /// Only customers with this email (any case).
    email: Option<String>,
}

/// The tenant's customers, newest first; `external_user_id` or `email` find one without
/// creating it.
#[utoipa::path(get, path = "/v1/customers", tag = "customers", params(ListQuery),
    responses((status = 200, description = "A page of customers", body = List<CustomerView>)))]
async fn list_customers(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<ListQuery>,
) -> Answer<List<CustomerView>> {
    let limit = limit(q.limit)?;
    let after = q
        .starting_after
        .as_deref()
        .map(|s| id("starting_after", s, CustomerId::parse))
        .transpose()?;
    if let Some(a) = &after {
        customers::find(&state, &tenant, a, Some("starting_after")).await?;
    }
    let filter = CustomerFilter {
        external_user_id: q.external_user_id,
        email: q
            .email
            .as_deref()
            .map(|e| customers::email("email", e))
            .transpose()?,
    };
    let rows = state
        .store
        .list_customers(&tenant.id, &filter, limit + 1, after.as_ref())
        .await
        .map_err(crate::error::Error::from)?;
    let (rows, has_more) = page(rows, limit);
    Ok(axum::Json(List::new(
        rows.iter().map(CustomerView::of).collect(),
        has_more,
        "/v1/customers",
    )))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalInput {
    /// Where the portal's "return" goes (default: the tenant's portal return URL template,
    /// with `{CUSTOMER_ID}` filled in).
    return_url: Option<String>,
}

/// A customer portal session: the page where the customer cancels, renews, switches plan
/// and changes card, as the tenant's portal settings allow.
#[utoipa::path(post, path = "/v1/customers/{id}/portal_sessions", tag = "customers",
    params(("id" = CustomerId, Path, description = "The customer's id")),
    request_body = PortalInput,
    responses((status = 200, description = "The portal session", body = PortalSessionView)))]
async fn portal_session(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<PortalInput>,
) -> Answer<PortalSessionView> {
    let cid = id("id", &raw, CustomerId::parse)?;
    let url = portal::portal_session(&state, &tenant, &cid, input.return_url).await?;
    Ok(axum::Json(PortalSessionView {
        object: "billing_portal.session",
        customer_id: cid,
        url,
    }))
}
