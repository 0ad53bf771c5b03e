//! The HTTP API: one router per resource over one shared state, tenant authentication and
//! `Idempotency-Key` as layers, our error format for every failure (malformed JSON,
//! oversized bodies, unknown routes and query parameters included), and the OpenAPI
//! document, generated from the same routes so that it cannot drift from them.

mod access;
mod admin;
mod catalog;
mod checkout;
mod coupons;
mod customers;
pub mod error;
mod events;
pub mod extract;
mod front;
mod guard;
mod ledger;
mod openapi;
mod plans;
mod subscriptions;
mod usage;

mod webhooks;

use std::sync::Arc;

use std::convert::Infallible;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tollgate_store::Tenant;
use utoipa_axum::router::OpenApiRouter;

use crate::error::{Code, Error};
use crate::state::AppState;

pub use extract::{Json, PathParam, PathParams, Query};
use guard::{Guard, Key, Operations};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The tenant a request is authenticated as.
pub type TenantExt = axum::Extension<Arc<Tenant>>;

/// What answers every request: the routes behind the front door, the body limit and the
/// guard. All three wrap the router once: `Router::layer` would wrap each route again,
/// and each wrapping costs a clone of a boxed service and a boxed future on every
/// request. Fails if the guard cannot tell the routes apart (it refuses to start rather
/// than leave a route unguarded).
pub fn service(
    state: AppState,
) -> anyhow::Result<
    impl tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static,
> {
    use tower::Layer;
    let tenant_api = OpenApiRouter::new()
        .merge(customers::router())
        .merge(catalog::router())
        .merge(checkout::router())
        .merge(ledger::router())
        .merge(access::router())
        .merge(events::router())
        .merge(subscriptions::router())
        .merge(plans::router())
        .merge(coupons::router())
        .merge(usage::router())
        .merge(admin::own_router());
    let operator_api = admin::operator_router();
    let webhooks = webhooks::router();
    // Each documented operation, with the key its router takes.
    let mut operations = Operations::default();
    operations.add(tenant_api.get_openapi(), Key::Tenant);
    operations.add(operator_api.get_openapi(), Key::Operator);
    operations.add(webhooks.get_openapi(), Key::None);
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(tenant_api)
        .merge(operator_api)
        .merge(webhooks)
        .split_for_parts();
    let document =
        axum::body::Bytes::from(serde_json::to_vec(&openapi::finish(api)).unwrap_or_default());
    let router = router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { json_bytes(document) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { Error::new(Code::RouteNotFound, "No such route.") })
        .method_not_allowed_fallback(|| async {
            Error::new(
                Code::MethodNotAllowed,
                "This route does not take that method.",
            )
        })
        .with_state(state.clone());
    let guard = Guard::new(state, operations)?;
    Ok(front::FrontLayer
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY).layer(guard.layer(router))))
}

/// Ready when the database answers and Stripe answers this instance's key (Stripe's
/// answer is cached a few seconds); otherwise a 503 in the error format naming which.
async fn ready(State(state): State<AppState>) -> Response {
    if !state.store.ping().await {
        return Error::new(Code::DatabaseUnavailable, "The database does not answer.")
            .into_response();
    }
    if state.stripe_reachable().await.is_err() {
        return Error::new(Code::StripeUnavailable, "Stripe does not answer.").into_response();
    }
    axum::Json(serde_json::json!({ "status": "ready", "database": "ok", "stripe": "ok" }))
        .into_response()
}

/// `limit` from a query: 1 to 100, default 10.
pub fn limit(value: Option<i64>) -> Result<i64, Error> {
    let l = value.unwrap_or(10);
    if (1..=100).contains(&l) {
        Ok(l)
    } else {
        Err(Error::param("limit", "limit must be between 1 and 100."))
    }
}

/// The first `limit` of rows a list read as `limit + 1`, and whether more follow.
pub fn page<T>(mut rows: Vec<T>, limit: i64) -> (Vec<T>, bool) {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    (rows, has_more)
}

/// A list read from a `starting_after` cursor: a cursor that names nothing of the
/// tenant's is a 404 naming the parameter.
pub fn from_cursor<T>(
    read: Result<T, tollgate_store::StoreError>,
    kind: &str,
    cursor: Option<&str>,
) -> Result<T, Error> {
    match read {
        Err(tollgate_store::StoreError::NotFound) => {
            Err(Error::not_found(kind, cursor.unwrap_or_default()).with_param("starting_after"))
        }
        other => other.map_err(Error::from),
    }
}

/// Parses a Tollgate id from a path or query parameter, naming it when it is wrong.
pub fn id<T>(
    param: &str,
    s: &str,
    parse: fn(&str) -> Result<T, tollgate_domain::IdError>,
) -> Result<T, Error> {
    parse(s).map_err(|e| Error::bad_id(param, e))
}

/// An answer rendered as JSON.
pub type Answer<T> = Result<axum::Json<T>, Error>;

/// A 200 whose body is JSON written already.
pub fn json_bytes(body: impl Into<axum::body::Body>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}
