//! Errors as the API answers them: `{"error": {"type", "code", "message", "param"}}` with
//! the status of the code's kind. The one place where use-case errors meet HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Code, Error, Kind};

/// The HTTP status for each kind of error.
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::InvalidRequest => StatusCode::BAD_REQUEST,
        Kind::Authentication => StatusCode::UNAUTHORIZED,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Kind::Stripe => StatusCode::BAD_GATEWAY,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error object's `type`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    RateLimitError,
    UpstreamError,
    ApiError,
}

fn error_type(kind: Kind) -> ErrorType {
    match kind {
        Kind::Authentication => ErrorType::AuthenticationError,
        Kind::RateLimited => ErrorType::RateLimitError,
        Kind::Stripe | Kind::Unavailable => ErrorType::UpstreamError,
        Kind::Internal => ErrorType::ApiError,
        Kind::InvalidRequest
        | Kind::NotFound
        | Kind::MethodNotAllowed
        | Kind::Conflict
        | Kind::TooLarge => ErrorType::InvalidRequestError,
    }
}

/// What went wrong. A 5xx says what kind of failure it was and nothing about the inside.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// One of the documented codes; see `Code`.
    pub code: Code,
    /// For a person: what to change.
    pub message: String,
    /// The parameter at fault (`items[0][price]`, `Idempotency-Key`), when there is one.
    pub param: Option<String>,
}

/// Every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn of(e: &Error) -> Self {
        ErrorBody {
            error: ErrorDetail {
                kind: error_type(e.kind()),
                code: e.code,
                message: e.message.clone(),
                param: e.param.clone(),
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (status(self.kind()), axum::Json(ErrorBody::of(&self))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_answers_with_a_status_of_its_kind() {
        for c in Code::ALL {
            let s = status(c.kind());
            assert!(s.is_client_error() || s.is_server_error(), "{}", c.as_str());
        }
        assert_eq!(
            status(Code::DatabaseUnavailable.kind()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(Code::SoldOut.kind()), StatusCode::CONFLICT);
        assert_eq!(
            status(Code::ParameterInvalid.kind()),
            StatusCode::BAD_REQUEST
        );
    }
}
