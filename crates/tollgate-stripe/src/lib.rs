//! Tollgate's Stripe gateway: every Stripe call Tollgate makes, with timeouts and
//! idempotency keys, answering in Tollgate's own types so that Stripe's never leak past
//! this crate; and the verification of Stripe's webhook signatures.

mod billing;
mod gateway;
mod webhook;

pub use billing::{
    InvoiceState, NewStripeCoupon, PREVIOUS_PRICE_KEY, PREVIOUS_UNTIL_KEY, PortalConfig,
    SubscriptionChange, SubscriptionItemState, SubscriptionState,
};

pub use gateway::{
    CheckoutLine, CheckoutRequest, CreatedSession, DisputeInfo, Gateway, GatewayError,
    NewStripePrice, RefundInfo, SessionLine, SessionState,
};
pub use webhook::{VerifyError, WebhookEnvelope, parse_envelope, verify_signature};
