//! Stripe's error object, as the sandbox answers it: `{"error": {"type", "code", "message", "param", ...}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::params::ParamError;

/// One error answer. Built with the constructors below so that the status and the `type`
/// always agree the way Stripe's do.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
    pub decline_code: Option<&'static str>,
    /// Extra fields on the error object (for example `payment_intent` on card errors).
    /// Boxed: rare, and it would make every `Result` carrying an error twice as large.
    pub extra: Option<Box<Map<String, Value>>>,
    /// Set on injected faults: the `Stripe-Should-Retry` header.
    pub should_retry: Option<bool>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            message: message.into(),
            param: None,
            decline_code: None,
            extra: None,
            should_retry: None,
        }
    }

    /// `invalid_request_error`, 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// `invalid_request_error` naming the parameter at fault.
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(message).with_param(param)
    }

    /// `invalid_request_error` with `code: resource_missing`, 404.
    pub fn missing(kind: &str, id: &str, param: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No such {kind}: '{id}'"),
        );
        e.code = Some("resource_missing");
        e.param = Some(param.to_owned());
        e
    }

    /// No route for this method and path.
    pub fn unrecognized(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
            ),
        )
    }

    /// A card was declined: `card_error`, 402.
    pub fn card(code: &'static str, decline_code: Option<&'static str>, message: &str) -> Self {
        let mut e = Self::new(StatusCode::PAYMENT_REQUIRED, "card_error", message);
        e.code = Some(code);
        e.decline_code = decline_code;
        e
    }

    /// 401 for a missing or malformed key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
    }

    /// Same idempotency key, other parameters.
    pub fn idempotency(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "idempotency_error", message)
    }

    /// Injected 429.
    pub fn rate_limited() -> Self {
        // Stripe's changelog 2015-09-08: rate-limited requests answer 429 and "no longer return a `rate_limit` error code"; `type` stays one of the spec's four.
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        );
        e.should_retry = Some(true);
        e
    }

    /// Injected 500.
    pub fn server_error() -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "An unknown error occurred while processing your request (sandbox fault injection).",
        );
        e.should_retry = Some(true);
        e
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra
            .get_or_insert_default()
            .insert(key.to_owned(), value);
        self
    }

    /// The JSON body, `{"error": {...}}`.
    pub fn body(&self) -> Value {
        let mut err = Map::new();
        err.insert("type".into(), json!(self.kind));
        err.insert("message".into(), json!(self.message));
        if let Some(code) = self.code {
            err.insert("code".into(), json!(code));
            err.insert(
                "doc_url".into(),
                json!(format!(
                    "https://stripe.com/docs/error-codes/{}",
                    code.replace('_', "-")
                )),
            );
        }
        if let Some(param) = &self.param {
            err.insert("param".into(), json!(param));
        }
        if let Some(decline) = self.decline_code {
            err.insert("decline_code".into(), json!(decline));
        }
        for (k, v) in self.extra.iter().flat_map(|m| m.iter()) {
            err.insert(k.clone(), v.clone());
        }
        json!({ "error": err })
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        let mut out = Self::invalid(e.message);
        out.param = e.param;
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(retry) = self.should_retry {
            res.headers_mut().insert(
                "stripe-should-retry",
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        res
    }
}

pub type ApiResult<T = Value> = Result<T, ApiError>;
