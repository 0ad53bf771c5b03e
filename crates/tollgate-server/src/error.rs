//! One error type for the API, rendered as `{"error": {"type", "code", "message", "param"}}`.
//! 5xx answers say what kind of failure it was and nothing about the inside.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tollgate_store::StoreError;
use tollgate_stripe::GatewayError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// The failure may pass: the same work is worth trying again later (Stripe or the
    /// database was unavailable). The webhook worker retries these.
    pub transient: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
            transient: false,
        }
    }

    /// 400: a parameter is missing or wrong.
    pub fn invalid(param: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::new(StatusCode::BAD_REQUEST, code, message)
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "resource_missing",
            format!("No such {what}: '{id}'"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side.",
        )
    }

    fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    /// The error object's `type`, from the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            502 | 503 => "upstream_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "type": self.kind(), "code": self.code, "message": self.message, "param": self.param } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "resource_missing", "No such object.")
            }
            StoreError::Conflict(what) => {
                // The constraint's name says how the database is built: log it, don't answer it.
                tracing::info!(constraint = %what, "request conflicts with stored state");
                ApiError::conflict(
                    "conflict",
                    "The request conflicts with the current state of the object; fetch it and try again.",
                )
            }
            StoreError::Unavailable(detail) => {
                tracing::error!(error = %detail, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "The database is unavailable; try again shortly.",
                )
                .transient()
            }
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::internal().transient()
            }
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "Stripe unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stripe_unavailable",
                    "Stripe is unavailable; try again shortly.",
                )
                .transient()
            }
            GatewayError::Failed { status, message } => {
                tracing::warn!(stripe_status = status, error = %message, "Stripe failed");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "stripe_error",
                    "Stripe failed to handle the request; try again shortly.",
                )
                .transient()
            }
            GatewayError::Rejected {
                status, message, ..
            } => {
                tracing::warn!(stripe_status = status, error = %message, "Stripe refused a request");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "stripe_error",
                    format!("Stripe refused the request: {message}"),
                )
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
