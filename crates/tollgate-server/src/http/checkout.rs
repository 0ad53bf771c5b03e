//! `/v1/checkout_sessions`: create one for an item or a cart, and read one back, with
//! `?sync=true` re-fetching it from Stripe and completing the order if it is paid.

use axum::extract::State;
use serde::Deserialize;
use tollgate_domain::StripeCheckoutSessionId;
use tollgate_store::StoreError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, Json, PathParam, Query, TenantExt};
use crate::error::Error;
use crate::state::AppState;
use crate::usecases::checkout::{CheckoutInput, create_checkout};
use crate::usecases::completion::{Completion, complete_from_stripe};
use crate::views::{CheckoutSessionView, CheckoutStateView, OrderView, PurchaseView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(retrieve))
}

/// A Checkout Session for one item or a cart; send the payer to `url`. Nothing is granted
/// until Stripe says it is paid.
#[utoipa::path(post, path = "/v1/checkout_sessions", tag = "checkout", request_body = CheckoutInput,
    responses((status = 200, description = "The session", body = CheckoutSessionView)))]
async fn create(
    State(state): State<AppState>,
    tenant: TenantExt,
    Json(input): Json<CheckoutInput>,
) -> Answer<CheckoutSessionView> {
    let out = create_checkout(&state, &tenant, input).await?;
    Ok(axum::Json(CheckoutSessionView {
        object: "checkout_session",
        order_id: out.order_id,
        stripe_checkout_session_id: out.stripe_checkout_session_id,
        url: out.url,
        expires_at: out.expires_at,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RetrieveQuery {
    /// Re-read the session from Stripe and complete the order if it is paid (for the
    /// success page).
    sync: Option<bool>,
}

/// A session's order, by Stripe's Checkout Session id (what the success URL carries).
#[utoipa::path(get, path = "/v1/checkout_sessions/{stripe_checkout_session_id}", tag = "checkout",
    params(("stripe_checkout_session_id" = StripeCheckoutSessionId, Path, description = "Stripe's Checkout Session id"), RetrieveQuery),
    responses((status = 200, description = "The session's order", body = CheckoutStateView)))]
async fn retrieve(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Query(q): Query<RetrieveQuery>,
) -> Answer<CheckoutStateView> {
    let sid = StripeCheckoutSessionId::parse(&raw)
        .map_err(|e| Error::bad_id("stripe_checkout_session_id", e))?;
    let missing = || Error::not_found("checkout session", sid.as_str());
    // Only this tenant's sessions are looked up, in Stripe or here.
    let order = match state.store.order_by_session(&tenant.id, &sid).await {
        Ok(o) => o,
        Err(StoreError::NotFound) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if q.sync == Some(true) {
        let Some((order, completion)) = complete_from_stripe(&state, &tenant, &sid, &[]).await?
        else {
            return Err(missing());
        };
        let purchases = state
            .store
            .purchases_for_order(&tenant.id, &order.id)
            .await?;
        let (payment_status, subscription) = match completion {
            Completion::Completed(_) => (tollgate_domain::status::PaymentStatus::Paid, None),
            Completion::Subscribed(s) => (
                tollgate_domain::status::PaymentStatus::Paid,
                Some(super::subscriptions::view(&state, &s)),
            ),
            Completion::NotPaid { payment_status, .. } => (payment_status, None),
        };
        return Ok(axum::Json(CheckoutStateView {
            object: "checkout_session",
            stripe_checkout_session_id: sid,
            order_id: order.id.clone(),
            status: order.status,
            payment_status: Some(payment_status),
            order: OrderView::of(&order),
            purchases: purchases.iter().map(PurchaseView::of).collect(),
            subscription,
        }));
    }
    let purchases = state
        .store
        .purchases_for_order(&tenant.id, &order.id)
        .await?;
    let subscription = state
        .store
        .subscription_for_order(&tenant.id, &order.id)
        .await?
        .map(|s| super::subscriptions::view(&state, &s));
    Ok(axum::Json(CheckoutStateView {
        object: "checkout_session",
        stripe_checkout_session_id: sid,
        order_id: order.id.clone(),
        status: order.status,
        payment_status: None,
        order: OrderView::of(&order),
        purchases: purchases.iter().map(PurchaseView::of).collect(),
        subscription,
    }))
}
