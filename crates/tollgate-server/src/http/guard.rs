//! The guard in front of the routes: the query check, the key, and `Idempotency-Key` on
//! POST, in one layer around the router. It finds each request's operation itself (the
//! same route templates, matched by the same matcher as axum's router), so that it wraps
//! the router once instead of every route.
//!
//! Written by hand rather than with `axum::middleware::from_fn`, which boxes the rest of
//! the stack and its own future on every request: a read whose key is in the cache (every
//! access check, at thousands a second) goes through to its handler without an
//! allocation of the guard's own. Only a POST, a key not cached yet and a refusal take
//! the boxed path.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest;
use tollgate_store::{IdempotencyOutcome, Tenant};

use super::{MAX_BODY, extract};
use crate::error::{Code, Error};
use crate::state::AppState;

/// The routes a guard stands in front of: axum's `Route`, or anything served like it.
pub(crate) trait Route:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> Route for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// Which key a guarded route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// A tenant's API key (`tg_sk_...`); the tenant goes to the handler as [`super::TenantExt`].
    Tenant,
    /// The operator key (`TOLLGATE_ADMIN_KEY`).
    Operator,
    /// None: the route checks what it receives itself (Stripe's signature on webhooks).
    None,
}

/// Puts a [`Guarded`] in front of a router.
#[derive(Clone)]
pub(crate) struct Guard {
    door: Door,
}

impl Guard {
    /// Fails if two operations' routes cannot be told apart (axum refuses the same).
    pub(crate) fn new(state: AppState, operations: Operations) -> anyhow::Result<Self> {
        let mut routes = matchit::Router::new();
        for (path, ops) in operations.0 {
            routes
                .insert(path.clone(), ops)
                .map_err(|e| anyhow::anyhow!("guarding {path}: {e}"))?;
        }
        Ok(Self {
            door: Door {
                state,
                routes: Arc::new(routes),
            },
        })
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            door: self.door.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Guarded<S> {
    inner: S,
    door: Door,
}

pin_project_lite::pin_project! {
    /// A guarded request: straight to the route, or through the guard's own work.
    #[project = PassingProj]
    pub(crate) enum Passing<F> {
        Through { #[pin] future: F },
        Guarded { future: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

impl<F> Passing<F> {
    /// The guard's own work, boxed: a POST, a key not cached yet, a refusal.
    fn guarded(future: impl Future<Output = Response> + Send + 'static) -> Self {
        Passing::Guarded {
            future: Box::pin(future),
        }
    }

    fn refused(e: Error) -> Self {
        Self::guarded(std::future::ready(e.into_response()))
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Passing<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            PassingProj::Through { future } => future.poll(cx),
            PassingProj::Guarded { future } => future.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<S: Route> tower::Service<Request> for Guarded<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = Passing<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // A route or method no operation has (a 404 or a 405) goes on to be answered so.
        let Some(op) = self.door.operation(req.method(), req.uri().path()) else {
            return Passing::Through {
                future: self.inner.call(req),
            };
        };
        if let Err(e) = check_query(&op.query, &req) {
            return Passing::refused(e);
        }
        let key = op.key;
        let state = &self.door.state;
        // Whose keys of `Idempotency-Key` a POST uses: the tenant's, or the operator's.
        let tenant = match key {
            Key::None => {
                return Passing::Through {
                    future: self.inner.call(req),
                };
            }
            Key::Operator => match operator(state, req.headers()) {
                Ok(()) => {
                    req.extensions_mut().insert(Operator);
                    None
                }
                Err(e) => return Passing::refused(e),
            },
            Key::Tenant => {
                let Some(secret) = bearer(req.headers()).filter(|s| s.starts_with("tg_sk_")) else {
                    return Passing::refused(Error::new(
                        Code::InvalidApiKey,
                        "Pass a tenant API key: Authorization: Bearer tg_sk_...",
                    ));
                };
                match state.cached_tenant(secret) {
                    Some(tenant) => {
                        let_in(&mut req, &tenant);
                        Some(tenant)
                    }
                    None => {
                        // Not cached: looked up, then on as below.
                        let (secret, state) = (secret.to_owned(), state.clone());
                        let inner = self.inner.clone();
                        return Passing::guarded(async move {
                            match state.tenant_for_key(&secret).await {
                                Ok(Some(tenant)) => {
                                    let_in(&mut req, &tenant);
                                    pass(state, scope(Some(&tenant)), req, inner).await
                                }
                                Ok(None) => {
                                    Error::new(Code::InvalidApiKey, "Invalid or revoked API key.")
                                        .into_response()
                                }
                                Err(e) => Error::from(e).into_response(),
                            }
                        });
                    }
                }
            }
        };
        if req.method() == Method::POST {
            let scope = scope(tenant.as_ref());
            Passing::guarded(idempotency(state.clone(), scope, req, self.inner.clone()))
        } else {
            Passing::Through {
                future: self.inner.call(req),
            }
        }
    }
}

/// Proof that the guard checked the operator key, which every operator handler takes. A
/// handler on a route the guard does not know (one left out of the OpenAPI document)
/// then answers 500 instead of serving without the key, as a tenant handler does without
/// its [`super::TenantExt`].
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Operator {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Error> {
        parts.extensions.get::<Operator>().copied().ok_or_else(|| {
            tracing::error!("an operator route was reached without the guard");
            Error::internal()
        })
    }
}

/// Hands the tenant to the handler, and names it in the request's span.
fn let_in(req: &mut Request, tenant: &Arc<Tenant>) {
    tracing::Span::current().record("tenant", tenant.id.as_str());
    req.extensions_mut().insert(tenant.clone());
}

/// The scope of a request's `Idempotency-Key`: its tenant's id, or `operator` (keys of
/// different scopes never meet).
fn scope(tenant: Option<&Arc<Tenant>>) -> String {
    tenant.map_or_else(|| "operator".to_owned(), |t| t.id.as_str().to_owned())
}

/// Checks the operator key. Hashes are compared, so that the comparison says nothing
/// about the key through its timing.
fn operator(state: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    let Some(expected) = &state.admin_key_hash else {
        return Err(Error::new(
            Code::InvalidApiKey,
            "Operator routes are off: set TOLLGATE_ADMIN_KEY to use them.",
        ));
    };
    match bearer(headers) {
        Some(key) if &tollgate_store::hash_secret(key) == expected => Ok(()),
        _ => Err(Error::new(
            Code::InvalidApiKey,
            "Pass the operator key: Authorization: Bearer tg_admin_...",
        )),
    }
}

/// Runs an authenticated request: a POST through [`idempotency`], under `scope`; other
/// methods straight on, since only a POST may carry an `Idempotency-Key`.
async fn pass<S: Route>(state: AppState, scope: String, req: Request, inner: S) -> Response {
    if req.method() == Method::POST {
        idempotency(state, scope, req, inner).await
    } else {
        run(inner, req).await
    }
}

/// Runs the route.
async fn run<S: Route>(mut inner: S, req: Request) -> Response {
    if let Err(never) = std::future::poll_fn(|cx| inner.poll_ready(cx)).await {
        match never {}
    }
    match inner.call(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    }
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

/// What the guard needs: the state, and each operation it guards by route template.
#[derive(Clone)]
struct Door {
    state: AppState,
    routes: Arc<matchit::Router<Vec<Operation>>>,
}

impl Door {
    fn operation(&self, method: &Method, path: &str) -> Option<&Operation> {
        // HEAD is answered by the GET route.
        let method = match method {
            &Method::HEAD => &Method::GET,
            m => m,
        };
        let ops = self.routes.at(path).ok()?.value;
        ops.iter().find(|op| op.method == method)
    }
}

/// Refuses a query parameter the operation does not declare, with 400 `parameter_unknown`
/// naming it, on every operation (those without a query string too): a typo such as
/// `?customer_id=` must not silently widen a list to every record. Checked before the
/// key, as it says what is wrong with the request whoever sends it.
fn check_query(allowed: &[String], req: &Request) -> Result<(), Error> {
    let Some(query) = req.uri().query().filter(|q| !q.is_empty()) else {
        return Ok(());
    };
    for (raw, _) in extract::raw_pairs(query) {
        // Names are plain words; only an encoded one is decoded.
        let name = if raw.bytes().any(|b| b == b'%' || b == b'+') {
            form_urlencoded::parse(raw.as_bytes())
                .next()
                .map(|(name, _)| name)
                .unwrap_or_default()
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        if !allowed.iter().any(|a| *a == name) {
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

/// One operation of the OpenAPI document, as the guard sees it.
pub(crate) struct Operation {
    method: Method,
    key: Key,
    /// The query parameters it declares: a handful, found faster by a scan than by hashing.
    query: Vec<String>,
}

/// The operations of the routes the guard stands in front of, by route template.
#[derive(Default)]
pub(crate) struct Operations(HashMap<String, Vec<Operation>>);

impl Operations {
    /// Adds every operation of `api`, each taking `key`.
    pub(crate) fn add(&mut self, api: &utoipa::openapi::OpenApi, key: Key) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
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
                let query = op
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
                self.0
                    .entry(path.clone())
                    .or_default()
                    .push(Operation { method, key, query });
            }
        }
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
async fn idempotency<S: Route>(state: AppState, scope: String, req: Request, inner: S) -> Response {
    let key = match req.headers().get("idempotency-key").map(|k| k.to_str()) {
        None => return run(inner, req).await,
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
    let res = run(inner, Request::from_parts(parts, Body::from(bytes))).await;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tower::ServiceExt;

    async fn status(req: Request) -> StatusCode {
        let app = axum::Router::new().route("/x", axum::routing::get(|_: Operator| async { "ok" }));
        app.oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn an_operator_handler_runs_only_behind_the_guard() {
        let plain = Request::builder().uri("/x").body(Body::empty()).unwrap();
        assert_eq!(status(plain).await, StatusCode::INTERNAL_SERVER_ERROR);
        let mut passed = Request::builder().uri("/x").body(Body::empty()).unwrap();
        passed.extensions_mut().insert(Operator);
        assert_eq!(status(passed).await, StatusCode::OK);
    }
}
