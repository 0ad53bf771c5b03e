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
mod ledger;
mod openapi;
mod plans;
mod subscriptions;
mod usage;

mod webhooks;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest;
use tollgate_store::{IdempotencyOutcome, Tenant};
use utoipa_axum::router::OpenApiRouter;

use crate::error::{Code, Error};
use crate::state::AppState;

pub use extract::{Json, PathParam, PathParams, Query};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The tenant a request is authenticated as.
pub type TenantExt = axum::Extension<Arc<Tenant>>;

/// The routes and their OpenAPI document.
pub fn routes(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let door = Door {
        state: state.clone(),
        query: Arc::new(OnceLock::new()),
    };
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
        .merge(admin::own_router())
        .layer(middleware::from_fn_with_state(
            door.clone(),
            authenticate_tenant,
        ));
    let operator_api = admin::operator_router().layer(middleware::from_fn_with_state(
        door.clone(),
        admin::authenticate_operator,
    ));
    let webhooks = webhooks::router().route_layer(middleware::from_fn_with_state(
        door.clone(),
        refuse_unknown_query,
    ));
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(tenant_api)
        .merge(operator_api)
        .merge(webhooks)
        .split_for_parts();
    let api = openapi::finish(api);
    // Known only now, before the first request: the document is built from the routes.
    let _ = door.query.set(QueryParams::of(&api));
    let document = Arc::new(serde_json::to_vec(&api).unwrap_or_default());
    let router = router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document.as_ref().clone(),
                    )
                }
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
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
        .layer(front::FrontLayer);
    (router, api)
}

/// What the layers in front of the routes need: the state, and the query parameters each
/// operation declares. Each authenticating layer also checks the query, so that a read
/// pays for one layer, not two.
#[derive(Clone)]
pub(crate) struct Door {
    pub state: AppState,
    /// Set once the OpenAPI document is built from the routes, before any request.
    query: Arc<OnceLock<QueryParams>>,
}

impl Door {
    /// Refuses a query parameter the route does not declare, with 400 `parameter_unknown`
    /// naming it, on every route (those without a query string too): a typo such as
    /// `?customer_id=` must not silently widen a list to every record. Checked before
    /// the key, as it says what is wrong with the request whoever sends it.
    pub(crate) fn check_query(
        &self,
        matched: Option<&axum::extract::MatchedPath>,
        req: &Request,
    ) -> Result<(), Error> {
        let Some(query) = req.uri().query().filter(|q| !q.is_empty()) else {
            return Ok(());
        };
        // HEAD is answered by the GET route.
        let method = match req.method() {
            &Method::HEAD => &Method::GET,
            m => m,
        };
        let allowed = self
            .query
            .get()
            .zip(matched)
            .and_then(|(known, path)| known.0.get(path.as_str()))
            .and_then(|ops| ops.iter().find(|(m, _)| m == method))
            .map(|(_, names)| names);
        for (name, _) in form_urlencoded::parse(query.as_bytes()) {
            if !allowed.is_some_and(|a| a.contains(name.as_ref())) {
                let name: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
                return Err(Error::invalid(
                    &name,
                    Code::ParameterUnknown,
                    format!("This request takes no parameter {name}."),
                ));
            }
        }
        Ok(())
    }
}

/// The query parameters each operation of the OpenAPI document declares, by route
/// template and method.
struct QueryParams(HashMap<String, Vec<(Method, HashSet<String>)>>);

impl QueryParams {
    fn of(api: &utoipa::openapi::OpenApi) -> Self {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        let mut known = HashMap::new();
        for (path, item) in &api.paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                let names = op
                    .parameters
                    .iter()
                    .flatten()
                    .filter_map(|p| match p {
                        RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query) => {
                            Some(p.name.clone())
                        }
                        _ => None,
                    })
                    .collect();
                known
                    .entry(path.clone())
                    .or_insert_with(Vec::new)
                    .push((method, names));
            }
        }
        Self(known)
    }
}

/// [`Door::check_query`] as a layer, for the routes no key guards (Stripe's webhooks).
async fn refuse_unknown_query(
    State(door): State<Door>,
    matched: Option<axum::extract::MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    match door.check_query(matched.as_ref(), &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The router alone.
pub fn router(state: AppState) -> Router {
    routes(state).0
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

/// The bearer token, if the request has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Runs the request: a POST through [`idempotency`], under `scope` (a tenant's id, or
/// `operator`: keys of different scopes never meet); other methods straight on, since
/// only a POST may carry an `Idempotency-Key`. Called by the authenticating layers, so
/// that a read pays for no layer of its own.
pub(crate) async fn run_authenticated(
    state: AppState,
    scope: &str,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == Method::POST {
        idempotency(state, scope.to_owned(), req, next).await
    } else {
        next.run(req).await
    }
}

fn unauthorized(message: &str) -> Response {
    Error::new(Code::InvalidApiKey, message).into_response()
}

/// Resolves the tenant from `Authorization: Bearer tg_sk_...`; never from the body.
async fn authenticate_tenant(
    State(door): State<Door>,
    matched: Option<axum::extract::MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Err(e) = door.check_query(matched.as_ref(), &req) {
        return e.into_response();
    }
    let state = door.state;
    let Some(secret) = bearer(req.headers()).filter(|s| s.starts_with("tg_sk_")) else {
        return unauthorized("Pass a tenant API key: Authorization: Bearer tg_sk_...");
    };
    match state.tenant_for_key(secret).await {
        Ok(Some(tenant)) => {
            tracing::Span::current().record("tenant", tenant.id.as_str());
            req.extensions_mut().insert(tenant.clone());
            run_authenticated(state, tenant.id.as_str(), req, next).await
        }
        Ok(None) => unauthorized("Invalid or revoked API key."),
        Err(e) => Error::from(e).into_response(),
    }
}

/// How long a request holds its key while it runs. A request that dies with the process
/// holds it this long; one whose client goes away gives it up at once.
const IDEMPOTENCY_LOCK: std::time::Duration = std::time::Duration::from_secs(120);

/// Holds an `Idempotency-Key` while its request runs, and gives it up if the request never
/// finishes (the client went away and the handler was dropped), so that a retry can run.
struct HeldKey {
    state: AppState,
    scope: String,
    key: String,
    settled: bool,
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (state, scope, key) = (
            self.state.clone(),
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
        );
        tokio::spawn(async move {
            if let Err(e) = state.store.idempotency_release(&scope, &key).await {
                tracing::warn!(error = %e, "releasing an abandoned idempotency key failed; it runs out on its own");
            }
        });
    }
}

/// `Idempotency-Key` on POST: the same key and body replays the first answer; the same key
/// with another body, or while the first request runs, is a 409. As Stripe does, answers
/// that say nothing about the request itself are not kept (5xx: our failure; 429: turned
/// away before running), so a retry runs again.
async fn idempotency(state: AppState, scope: String, req: Request, next: Next) -> Response {
    let key = match req.headers().get("idempotency-key").map(|k| k.to_str()) {
        None => return next.run(req).await,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        Some(_) => {
            return Error::invalid(
                "Idempotency-Key",
                Code::InvalidIdempotencyKey,
                "Idempotency-Key must be 1 to 255 visible characters.",
            )
            .into_response();
        }
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return extract::too_large(MAX_BODY).into_response(),
    };
    let mut hasher = sha2::Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(parts.uri.to_string());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let hash = hex::encode(hasher.finalize());
    match state
        .store
        .idempotency_begin(&scope, &key, &hash, IDEMPOTENCY_LOCK)
        .await
    {
        Ok(IdempotencyOutcome::Proceed) => {}
        Ok(IdempotencyOutcome::Replay { status, body }) => {
            let mut res =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            res.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/json"),
            );
            res.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            return res;
        }
        Ok(IdempotencyOutcome::Mismatch) => {
            return Error::conflict(
                Code::IdempotencyKeyReused,
                format!("Idempotency-Key '{key}' was used with a different request."),
            )
            .into_response();
        }
        Ok(IdempotencyOutcome::InProgress) => {
            return Error::conflict(
                Code::IdempotencyKeyInUse,
                format!("A request with Idempotency-Key '{key}' is still running."),
            )
            .into_response();
        }
        Err(e) => return Error::from(e).into_response(),
    }
    let mut held = HeldKey {
        state: state.clone(),
        scope,
        key,
        settled: false,
    };
    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (res_parts, res_body) = res.into_parts();
    let body = axum::body::to_bytes(res_body, usize::MAX)
        .await
        .unwrap_or_default();
    let status = res_parts.status;
    let kept = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        state
            .store
            .idempotency_release(&held.scope, &held.key)
            .await
    } else {
        state
            .store
            .idempotency_finish(
                &held.scope,
                &held.key,
                status.as_u16(),
                &String::from_utf8_lossy(&body),
            )
            .await
    };
    held.settled = true;
    if let Err(e) = kept {
        tracing::error!(error = %e, "recording an idempotent answer failed");
    }
    Response::from_parts(res_parts, Body::from(body))
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
