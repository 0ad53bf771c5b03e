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
    static PROCESS: LazyLock<[u8; 12]> = LazyLock::new(|| {
        let mut chars = [0; 12];
        for (c, drawn) in chars
            .iter_mut()
            .zip(rand::rng().sample_iter(rand::distr::Alphanumeric))
        {
            *c = drawn;
        }
        chars
    });
    static COUNT: AtomicU64 = AtomicU64::new(0);
    request_id(&PROCESS, COUNT.fetch_add(1, Ordering::Relaxed))
}

/// `req_`, `process` and `n` in at least 12 digits. Written into a buffer by hand: on an
/// access check, `format!` cost more than the whole lookup.
fn request_id(process: &[u8; 12], n: u64) -> HeaderValue {
    // 4 + 12 + the 20 digits of u64::MAX.
    let mut id = [b'0'; 36];
    id[..4].copy_from_slice(b"req_");
    id[4..16].copy_from_slice(process);
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1).max(12);
    let end = 16 + digits;
    let mut rest = n;
    for d in id[16..end].iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    HeaderValue::from_bytes(&id[..end]).unwrap_or_else(|_| HeaderValue::from_static("req_unnamed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_carry_the_count_in_at_least_twelve_digits() {
        let process = *b"AbCdEf012345";
        let made = |n| request_id(&process, n).to_str().unwrap().to_owned();
        assert_eq!(made(0), "req_AbCdEf012345000000000000");
        assert_eq!(made(42), "req_AbCdEf012345000000000042");
        assert_eq!(made(999_999_999_999), "req_AbCdEf012345999999999999");
        assert_eq!(made(1_000_000_000_000), "req_AbCdEf0123451000000000000");
        assert_eq!(made(u64::MAX), format!("req_AbCdEf012345{}", u64::MAX));
    }

    #[test]
    fn made_request_ids_differ_and_are_printable() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let id = id.to_str().unwrap();
            assert!(id.starts_with("req_") && id.len() == 28, "{id}");
            assert!(id[4..].bytes().all(|c| c.is_ascii_alphanumeric()), "{id}");
        }
    }
}
