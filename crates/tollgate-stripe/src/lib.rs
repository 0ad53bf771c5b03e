//! Tollgate's Stripe gateway: every Stripe call Tollgate makes, with timeouts and
//! idempotency keys, answering in Tollgate's own types (Stripe's statuses mapped in
//! [`map`](crate::map) alone) so that Stripe's types never leak past this crate; and the
//! verification of Stripe's webhook signatures.

mod account;
mod billing;
mod gateway;
mod map;
mod webhook;

pub use account::WebhookEndpointInfo;
pub use billing::{
    InvoiceState, NewStripeCoupon, PREVIOUS_PRICE_KEY, PREVIOUS_UNTIL_KEY, PortalConfig,
    StripeDiscount, SubscriptionChange, SubscriptionItemState, SubscriptionState,
};

pub use gateway::{
    CheckoutLine, CheckoutRequest, CreatedSession, DisputeInfo, Gateway, GatewayError, Metadata,
    NewStripePrice, Payer, PaymentOutcome, RefundInfo, SessionLine, SessionState,
};
pub use webhook::{VerifyError, WebhookEnvelope, parse_envelope, verify_signature};
