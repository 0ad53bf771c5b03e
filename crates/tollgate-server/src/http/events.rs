//! `/v1/events`: the tenant's view of the Stripe events received for it, with dead
//! letters and a replay.

use axum::extract::State;
use serde::Deserialize;
use tollgate_domain::StripeEventId;
use tollgate_domain::status::InboxStatus;
use tollgate_store::InboxFilter;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, PathParam, Query, TenantExt, from_cursor, limit, page};
use crate::error::Error;
use crate::state::AppState;
use crate::usecases::events;
use crate::views::{EventView, List};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(replay))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Only events in this state (`dead` for dead letters).
    status: Option<InboxStatus>,
    /// Only events of this Stripe type (`checkout.session.completed`, ...).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// 1 to 100 (default 10).
    limit: Option<i64>,
    /// A Stripe event id: the page after it.
    #[param(value_type = Option<StripeEventId>)]
    starting_after: Option<String>,
}

fn event_id(param: &str, s: &str) -> Result<StripeEventId, Error> {
    StripeEventId::parse(s).map_err(|e| Error::bad_id(param, e))
}

/// The Stripe events received for this tenant, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, description = "A page of events", body = List<EventView>)))]
async fn list_events(
    State(state): State<AppState>,
    tenant: TenantExt,
    Query(q): Query<EventQuery>,
) -> Answer<List<EventView>> {
    let limit = limit(q.limit)?;
    let after = q
        .starting_after
        .as_deref()
        .map(|s| event_id("starting_after", s))
        .transpose()?;
    if let Some(k) = &q.event_type {
        crate::usecases::validate::token("type", k, 100)?;
    }
    let filter = InboxFilter {
        tenant_id: Some(tenant.id.clone()),
        status: q.status,
        event_type: q.event_type.clone(),
    };
    let rows = from_cursor(
        state
            .store
            .inbox_list(&filter, limit + 1, after.as_ref())
            .await,
        "event",
        q.starting_after.as_deref(),
    )?;
    let (rows, has_more) = page(rows, limit);
    Ok(axum::Json(List::new(
        rows.iter().map(EventView::of).collect(),
        has_more,
        "/v1/events",
    )))
}

/// Puts a stored event back in the queue: a dead letter, or any event to apply again.
#[utoipa::path(post, path = "/v1/events/{stripe_event_id}/replay", tag = "events",
    params(("stripe_event_id" = StripeEventId, Path, description = "Stripe's event id")),
    responses((status = 200, description = "The event, queued again", body = EventView)))]
async fn replay(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<EventView> {
    let eid = event_id("stripe_event_id", &raw)?;
    match events::replay(&state, Some(&tenant.id), &eid).await? {
        Some(e) => Ok(axum::Json(EventView::of(&e))),
        None => Err(Error::not_found("event", eid.as_str())),
    }
}
