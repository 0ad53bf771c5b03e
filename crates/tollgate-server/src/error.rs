//! The one error type of Tollgate's use cases, and the one list of error codes clients
//! can meet. Each code belongs to a [`Kind`]; the HTTP layer turns kinds into statuses
//! (`http::error`), and the webhook worker turns them into "retry or dead-letter"
//! ([`Error::is_transient`]). Nothing here knows about HTTP.

use tollgate_domain::IdError;
use tollgate_store::{Constraint, StoreError};
use tollgate_stripe::GatewayError;

/// What sort of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is wrong; sending it again will not help.
    InvalidRequest,
    /// No valid key.
    Authentication,
    /// The object does not exist for this tenant.
    NotFound,
    /// The route does not take that method.
    MethodNotAllowed,
    /// The request conflicts with the state of an object.
    Conflict,
    /// The body is too large.
    TooLarge,
    /// Too many requests; slow down.
    RateLimited,
    /// Stripe refused or failed a request Tollgate made.
    Stripe,
    /// Stripe or the database is unavailable; try again shortly.
    Unavailable,
    /// Tollgate failed.
    Internal,
}

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal, $kind:ident;)+) => {
        /// Every error code Tollgate answers with. The list is served in the OpenAPI
        /// document and the README; a code, once published, keeps its meaning.
        // Wire names are the variants in snake_case (a test holds them to `as_str`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum Code {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)+ }
            }

            pub fn kind(self) -> Kind {
                match self { $(Code::$variant => Kind::$kind,)+ }
            }

            /// What the code means (its doc comment), for the published list.
            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => concat!($($doc),+).trim_ascii(),)+ }
            }
        }
    };
}

error_codes! {
    /// A required parameter is missing.
    ParameterMissing = "parameter_missing", InvalidRequest;
    /// A parameter's value is not acceptable; `param` names it.
    ParameterInvalid = "parameter_invalid", InvalidRequest;
    /// The request has a parameter (body field or query parameter) this route does not take.
    ParameterUnknown = "parameter_unknown", InvalidRequest;
    /// Two parameters that cannot be used together.
    ParameterConflict = "parameter_conflict", InvalidRequest;
    /// A parameter the caller may not set (such as the platform fee, set by the operator).
    ParameterNotAllowed = "parameter_not_allowed", InvalidRequest;
    /// The body is not valid JSON.
    InvalidJson = "invalid_json", InvalidRequest;
    /// An id is not of the kind the parameter takes (a Stripe id where a Tollgate id belongs, say).
    InvalidId = "invalid_id", InvalidRequest;
    /// Not a valid email address.
    InvalidEmail = "invalid_email", InvalidRequest;
    /// Not an absolute http(s) URL.
    InvalidUrl = "invalid_url", InvalidRequest;
    /// Not a currency Stripe charges in.
    InvalidCurrency = "invalid_currency", InvalidRequest;
    /// A quantity outside what the product allows.
    InvalidQuantity = "invalid_quantity", InvalidRequest;
    /// An amount larger than Stripe accepts, or than is left.
    AmountTooLarge = "amount_too_large", InvalidRequest;
    /// A time outside what the parameter allows (in the past, say).
    InvalidTime = "invalid_time", InvalidRequest;
    /// The `Idempotency-Key` header is malformed.
    InvalidIdempotencyKey = "invalid_idempotency_key", InvalidRequest;
    /// This route counts each request once and needs an `Idempotency-Key`.
    IdempotencyKeyRequired = "idempotency_key_required", InvalidRequest;
    /// The checkout has no items.
    CartEmpty = "cart_empty", InvalidRequest;
    /// The cart holds more items than a checkout takes.
    TooManyItems = "too_many_items", InvalidRequest;
    /// A product appears twice in a cart.
    DuplicateItem = "duplicate_item", InvalidRequest;
    /// The price is zero: free products are not checked out.
    FreeProduct = "free_product", InvalidRequest;
    /// Items or prices in different currencies.
    CurrencyMismatch = "currency_mismatch", InvalidRequest;
    /// One-time items and a subscription in one cart.
    MixedCart = "mixed_cart", InvalidRequest;
    /// More than one plan in a subscription checkout.
    OnePlanPerCheckout = "one_plan_per_checkout", InvalidRequest;
    /// The checkout needs a customer (guests buy one-time items only).
    CustomerRequired = "customer_required", InvalidRequest;
    /// The parameter is for Stripe's test mode only.
    TestModeOnly = "test_mode_only", InvalidRequest;
    /// The promotion code is not active, expired or used up.
    PromotionCodeInactive = "promotion_code_inactive", InvalidRequest;
    /// The subscription is on that price already.
    SamePrice = "same_price", InvalidRequest;
    /// The product is not a plan.
    NotAPlan = "not_a_plan", InvalidRequest;
    /// The webhook's `Stripe-Signature` does not verify.
    InvalidSignature = "invalid_signature", InvalidRequest;
    /// The webhook's body is not a Stripe event.
    InvalidEvent = "invalid_event", InvalidRequest;
    /// No valid API key was given.
    InvalidApiKey = "invalid_api_key", Authentication;
    /// No such object (for this tenant).
    ResourceMissing = "resource_missing", NotFound;
    /// No such product, or it is not for sale.
    ProductNotFound = "product_not_found", NotFound;
    /// No such price for the product.
    PriceNotFound = "price_not_found", NotFound;
    /// No such route.
    RouteNotFound = "route_not_found", NotFound;
    /// The route does not take that method.
    MethodNotAllowed = "method_not_allowed", MethodNotAllowed;
    /// The customer owns the product already.
    AlreadyPurchased = "already_purchased", Conflict;
    /// The event has no seats left.
    SoldOut = "sold_out", Conflict;
    /// The customer has a live subscription to the plan; change it instead.
    AlreadySubscribed = "already_subscribed", Conflict;
    /// The `Idempotency-Key` was used with another request.
    IdempotencyKeyReused = "idempotency_key_reused", Conflict;
    /// A request with this `Idempotency-Key` is still running.
    IdempotencyKeyInUse = "idempotency_key_in_use", Conflict;
    /// Another price of the tenant has that lookup key.
    LookupKeyTaken = "lookup_key_taken", Conflict;
    /// The promotion code exists already.
    CodeTaken = "code_taken", Conflict;
    /// The plan grants that already.
    EntitlementExists = "entitlement_exists", Conflict;
    /// The purchase cannot be refunded in its state.
    NotRefundable = "not_refundable", Conflict;
    /// The purchase is disputed: the dispute decides.
    Disputed = "disputed", Conflict;
    /// Another refund of the purchase is running.
    RefundInProgress = "refund_in_progress", Conflict;
    /// The subscription has ended; start a new one.
    SubscriptionEnded = "subscription_ended", Conflict;
    /// The subscription is not set to cancel.
    NotCanceling = "not_canceling", Conflict;
    /// The subscription's collection is not paused.
    NotPaused = "not_paused", Conflict;
    /// The subscription's price was not made through Tollgate.
    UnknownPrice = "unknown_price", Conflict;
    /// The Checkout Session does not belong to the order.
    SessionMismatch = "session_mismatch", Conflict;
    /// The request conflicts with the current state of an object.
    Conflict = "conflict", Conflict;
    /// The body is larger than the route takes.
    BodyTooLarge = "body_too_large", TooLarge;
    /// Too many requests; slow down.
    RateLimited = "rate_limited", RateLimited;
    /// Stripe refused or failed a request Tollgate made.
    StripeError = "stripe_error", Stripe;
    /// Stripe reports the refund failed.
    RefundFailed = "refund_failed", Stripe;
    /// Stripe is unavailable; try again shortly.
    StripeUnavailable = "stripe_unavailable", Unavailable;
    /// The database is unavailable; try again shortly.
    DatabaseUnavailable = "database_unavailable", Unavailable;
    /// Tollgate failed; try again.
    InternalError = "internal_error", Internal;
}

/// A use case's failure: a code, a message for the caller, and the parameter at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}", code = self.code.as_str())]
pub struct Error {
    pub code: Code,
    pub message: String,
    pub param: Option<String>,
    /// Worth trying the same work again later (Stripe or the database was unavailable,
    /// or an answer could not be read). The webhook worker retries these.
    pub transient: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            transient: matches!(code.kind(), Kind::Unavailable | Kind::Internal),
        }
    }

    /// 400-class: `param` is wrong.
    pub fn invalid(param: &str, code: Code, message: impl Into<String>) -> Self {
        Self::new(code, message).with_param(param)
    }

    /// `param`'s value is not acceptable.
    pub fn param(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(param, Code::ParameterInvalid, message)
    }

    /// `param` is missing.
    pub fn missing(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(param, Code::ParameterMissing, message)
    }

    /// The id in `param` is not of the kind it should be.
    pub fn bad_id(param: &str, e: IdError) -> Self {
        Self::invalid(param, Code::InvalidId, e.to_string())
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(Code::ResourceMissing, format!("No such {what}: '{id}'"))
    }

    pub fn conflict(code: Code, message: impl Into<String>) -> Self {
        Self::new(code, message)
    }

    pub fn internal() -> Self {
        Self::new(Code::InternalError, "Something went wrong on our side.")
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    pub fn kind(&self) -> Kind {
        self.code.kind()
    }

    /// Worth trying again later.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The object the request named does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == Kind::NotFound
    }

    fn transient(mut self) -> Self {
        self.transient = true;
        self
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::new(Code::ResourceMissing, "No such object."),
            StoreError::Conflict(c) => conflict_on(c),
            StoreError::SoldOut(product) => {
                Error::conflict(Code::SoldOut, format!("'{product}' has no seats left."))
                    .with_param("items")
            }
            StoreError::Refused(detail) => {
                // A value the database would not store got past validation: the caller's
                // request is at fault, and the detail is ours.
                tracing::warn!(detail = %detail, "the database refused a value");
                Error::new(
                    Code::ParameterInvalid,
                    "A value in the request cannot be stored.",
                )
            }
            StoreError::Unavailable(detail) => {
                tracing::error!(error = %detail, "database unavailable");
                Error::new(
                    Code::DatabaseUnavailable,
                    "The database is unavailable; try again shortly.",
                )
            }
            other => {
                let transient = other.is_transient();
                tracing::error!(error = %other, "database error");
                let e = Error::internal();
                if transient { e.transient() } else { e }
            }
        }
    }
}

/// A unique constraint a request ran into, as the caller should hear it.
fn conflict_on(c: Constraint) -> Error {
    match c {
        Constraint::PricesTenantLookupKey => Error::conflict(
            Code::LookupKeyTaken,
            "Another price of this tenant uses that lookup_key.",
        )
        .with_param("lookup_key"),
        Constraint::PromotionCodesTenantCode => {
            Error::conflict(Code::CodeTaken, "The code exists already.").with_param("code")
        }
        Constraint::EntitlementsPlanProduct | Constraint::EntitlementsPlanFeature => {
            Error::conflict(Code::EntitlementExists, "The plan grants that already.")
        }
        Constraint::UsageRecordsTenantKey => Error::conflict(
            Code::IdempotencyKeyReused,
            "This Idempotency-Key reported other usage.",
        ),
        Constraint::PurchasesOneActivePerCustomerProduct => Error::conflict(
            Code::AlreadyPurchased,
            "The customer owns the product already.",
        ),
        other => {
            tracing::info!(
                constraint = other.name(),
                "request conflicts with stored state"
            );
            Error::conflict(
                Code::Conflict,
                "The request conflicts with the current state of the object; fetch it and try again.",
            )
        }
    }
}

impl From<GatewayError> for Error {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "Stripe unavailable");
                Error::new(
                    Code::StripeUnavailable,
                    "Stripe is unavailable; try again shortly.",
                )
            }
            GatewayError::Failed { status, message } => {
                tracing::warn!(stripe_status = status, error = %message, "Stripe failed");
                Error::new(
                    Code::StripeError,
                    "Stripe failed to handle the request; try again shortly.",
                )
                .transient()
            }
            GatewayError::Undecodable(detail) => {
                tracing::error!(error = %detail, "Stripe's answer could not be read");
                Error::new(
                    Code::StripeError,
                    "Stripe's answer could not be read; try again shortly.",
                )
                .transient()
            }
            GatewayError::Rejected {
                status,
                code,
                message,
            } => {
                // Stripe's words may name other tenants' objects: logged, never answered.
                tracing::warn!(stripe_status = status, stripe_code = code.as_deref().unwrap_or("-"), error = %message, "Stripe refused a request");
                Error::new(Code::StripeError, "Stripe refused the request.")
            }
        }
    }
}

impl From<IdError> for Error {
    fn from(e: IdError) -> Self {
        Error::new(Code::InvalidId, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_distinct_documented_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{} twice", c.as_str());
            assert!(!c.description().is_empty());
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.as_str().into())
            );
        }
    }

    #[test]
    fn the_readme_lists_every_code_with_its_status() {
        let readme = include_str!("../../../README.md");
        for c in Code::ALL {
            let row = format!(
                "| `{}` | {} |",
                c.as_str(),
                crate::http::error::status(c.kind()).as_u16()
            );
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }

    #[test]
    fn a_database_outage_is_transient_and_never_not_found() {
        let e = Error::from(StoreError::Unavailable("pool timed out".into()));
        assert_eq!(e.kind(), Kind::Unavailable);
        assert!(e.is_transient());
        let e = Error::from(GatewayError::Rejected {
            status: 400,
            code: Some("resource_already_exists".into()),
            message: "An active promotion code with code: SECRET already exists.".into(),
        });
        assert!(!e.message.contains("SECRET"), "{}", e.message);
        assert!(!e.is_transient());
    }
}
