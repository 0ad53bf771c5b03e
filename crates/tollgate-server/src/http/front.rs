//! The front door of every request: its id (the caller's `X-Request-Id` when it is short
//! and printable, otherwise one made here), answered in `Request-Id` as Stripe names it; a
//! span that every line logged while serving the request carries (its id, method, path
//! and, once known, tenant); and one access line when it is answered.
//!
//! Written by hand, in place of `axum::middleware::from_fn` and tower-http's `TraceLayer`:
//! the first boxes the rest of the stack and its own future on every request, the second
//! wraps every body to watch its end, and both sit on the path of every access check.
//! Here the request costs one small future that is not boxed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use tracing::Span;

/// Where a caller (or a proxy in front) may pass its own request id.
const INCOMING_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Where the answer carries it, as Stripe names it.
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Puts [`Front`] in front of a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrontLayer;

impl<S> tower::Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Front<S> {
        Front { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Front<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Front<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let id = req
            .headers()
            .get(INCOMING_REQUEST_ID)
            .filter(|v| {
                !v.is_empty() && v.len() <= 200 && v.as_bytes().iter().all(u8::is_ascii_graphic)
            })
            .cloned()
            .unwrap_or_else(new_request_id);
        let span = span_for(&req, &id);
        let future = span.in_scope(|| self.inner.call(req));
        Answered {
            future,
            span,
            id,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request under way, in its span; answered with its id.
    pub struct Answered<F> {
        #[pin]
        future: F,
        span: Span,
        id: HeaderValue,
        start: Instant,
    }
}

impl<F, E> Future for Answered<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let span: &Span = this.span;
        let _entered = span.enter();
        let mut res = match ready!(this.future.poll(cx)) {
            Ok(res) => res,
            Err(e) => return Poll::Ready(Err(e)),
        };
        res.headers_mut().insert(REQUEST_ID, this.id.clone());
        let status = res.status().as_u16();
        let latency = format_args!("{} ms", this.start.elapsed().as_millis());
        if res.status().is_server_error() {
            // Our failure: logged whatever the request's level.
            tracing::error!(parent: span, status, latency = %latency, "request failed");
        } else if !span.is_disabled() {
            // The line belongs to its request's span: none when that is off.
            tracing::info!(parent: span, status, latency = %latency, "finished processing request");
        }
        Poll::Ready(Ok(res))
    }
}

/// The request's span. Access checks and Stripe's webhook deliveries, the two paths that
/// see thousands of requests a second, are logged at debug level: an info line each would
/// cost more than the work (the inbox keeps every delivery, and failures are logged at
/// warn or above).
fn span_for(req: &Request, id: &HeaderValue) -> Span {
    let id = id.to_str().unwrap_or("-");
    let (method, path) = (req.method(), req.uri().path());
    // Not `method`/`path`: async-stripe records fields of those names into the current
    // span, which is this one when its own spans are filtered.
    if matches!(
        (method, path),
        (&Method::GET, "/v1/access") | (&Method::POST, "/webhooks/stripe")
    ) {
        tracing::debug_span!(
            "request",
            request_id = %id,
            http_method = %method,
            http_path = %path,
            tenant = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            "request",
            request_id = %id,
            http_method = %method,
            http_path = %path,
            tenant = tracing::field::Empty,
        )
    }
}

/// `req_`, 12 random characters drawn once per process, and a count: unique across
/// instances and restarts, and made without a random draw per request.
fn new_request_id() -> HeaderValue {
    use rand::Rng;
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: LazyLock<String> = LazyLock::new(|| {
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(12)
            .map(char::from)
            .collect()
    });
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("req_{}{n:012}", *PROCESS))
        .unwrap_or_else(|_| HeaderValue::from_static("req_unnamed"))
}
