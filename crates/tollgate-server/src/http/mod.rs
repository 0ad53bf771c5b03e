//! The HTTP API: one router per resource over one shared state, tenant authentication and
//! `Idempotency-Key` as layers, and our error format for every failure, including malformed
//! JSON, oversized bodies and unknown routes.

pub(crate) mod access;
mod admin;

pub use admin::settings_from_cli as admin_settings;
mod catalog;
mod checkout;
mod coupons;
mod customers;
mod events;
mod ledger;
mod plans;
mod subscriptions;
mod usage;
mod webhooks;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest;
use tollgate_store::IdempotencyOutcome;

use crate::error::ApiError;
use crate::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let tenant_api = Router::new()
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
        .layer(middleware::from_fn_with_state(state.clone(), idempotency))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate_tenant,
        ));
    Router::new()
        .merge(tenant_api)
        .merge(admin::router(state.clone()))
        .merge(webhooks::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "No such route.")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This route does not take that method.",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.store.ping().await {
        "ready".into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "The database does not answer.",
        )
        .into_response()
    }
}

/// The bearer token, if the request has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Who an `Idempotency-Key` belongs to: a tenant's id, or `operator`. The authenticating
/// layer sets it; keys of different scopes never meet.
#[derive(Clone)]
pub struct IdempotencyScope(pub String);

/// Resolves the tenant from `Authorization: Bearer tg_sk_...`; never from the body.
async fn authenticate_tenant(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(secret) = bearer(req.headers()).filter(|s| s.starts_with("tg_sk_")) else {
        return ApiError::unauthorized("Pass a tenant API key: Authorization: Bearer tg_sk_...")
            .into_response();
    };
    match state.tenant_for_key(secret).await {
        Ok(Some(tenant)) => {
            req.extensions_mut()
                .insert(IdempotencyScope(tenant.id.to_string()));
            req.extensions_mut().insert(tenant);
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized("Invalid or revoked API key.").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// How long a request holds its key while it runs. A request that dies with the process
/// holds it this long; one whose client goes away gives it up at once.
const IDEMPOTENCY_LOCK_MS: i64 = 120_000;

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
async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let key = match req.headers().get("idempotency-key").map(|k| k.to_str()) {
        None => return next.run(req).await,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        Some(_) => {
            return ApiError::invalid(
                "Idempotency-Key",
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible characters.",
            )
            .into_response();
        }
    };
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(IdempotencyScope(scope)) = req.extensions().get::<IdempotencyScope>().cloned() else {
        // Only authenticated routes carry this layer; nothing to scope by is our mistake.
        return ApiError::internal().into_response();
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("The body is larger than {MAX_BODY} bytes."),
            )
            .into_response();
        }
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
        .idempotency_begin(&scope, &key, &hash, IDEMPOTENCY_LOCK_MS)
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
            return ApiError::conflict(
                "idempotency_key_reused",
                format!("Idempotency-Key '{key}' was used with a different request."),
            )
            .into_response();
        }
        Ok(IdempotencyOutcome::InProgress) => {
            return ApiError::conflict(
                "idempotency_key_in_use",
                format!("A request with Idempotency-Key '{key}' is still running."),
            )
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
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

/// A JSON body whose rejections answer in our error format.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("The body is larger than {MAX_BODY} bytes."),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
            }
        })?;
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map(Json).map_err(|e| {
            let code = if e.is_data() {
                "invalid_parameter"
            } else {
                "invalid_json"
            };
            ApiError::new(
                StatusCode::BAD_REQUEST,
                code,
                format!("The JSON body is not valid: {e}"),
            )
        })
    }
}

/// Renders a value as a JSON answer.
pub fn ok<T: serde::Serialize>(value: T) -> Response {
    axum::Json(value).into_response()
}

/// A list in Stripe's shape.
pub fn list<T: serde::Serialize>(data: Vec<T>, has_more: bool, url: &str) -> Response {
    ok(serde_json::json!({ "object": "list", "data": data, "has_more": has_more, "url": url }))
}

/// `limit` from a query: 1 to 100, default 10.
pub fn limit(value: Option<i64>) -> Result<i64, ApiError> {
    let l = value.unwrap_or(10);
    if (1..=100).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::invalid(
            "limit",
            "invalid_limit",
            "limit must be between 1 and 100",
        ))
    }
}

/// Query strings answer in our error format too.
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))
    }
}
