//! Stripe's statuses and enums, mapped to Tollgate's own types in this one place. A value
//! Tollgate does not know (a newer API version's) is an [`GatewayError::Undecodable`]
//! where the decision depends on it, never a silent default.

use tollgate_domain::status::{
    CheckoutMode, DisputeStatus, PauseBehavior, PaymentStatus, RefundStatus, SessionStatus,
    SubscriptionStatus,
};
use tollgate_domain::{Amount, Currency, Timestamp};

use crate::gateway::{GatewayError, Result};

/// A value Stripe sent that Tollgate has no mapping for.
fn unknown(what: &str, of: &str, value: &str) -> GatewayError {
    GatewayError::Undecodable(format!(
        "{what} '{value}' of {of} is not one Tollgate knows (a newer Stripe API version?)"
    ))
}

/// Maps one of Stripe's string enums onto one of Tollgate's by their shared spelling.
fn by_name<T>(what: &str, of: &str, value: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(value).ok_or_else(|| unknown(what, of, value))
}

pub(crate) fn subscription_status(
    s: &stripe_shared::SubscriptionStatus,
    of: &str,
) -> Result<SubscriptionStatus> {
    by_name("status", of, s.as_str(), SubscriptionStatus::parse)
}

pub(crate) fn pause_behavior(
    b: &stripe_shared::SubscriptionsResourcePauseCollectionBehavior,
    of: &str,
) -> Result<PauseBehavior> {
    by_name("pause behavior", of, b.as_str(), PauseBehavior::parse)
}

pub(crate) fn session_status(
    s: &stripe_shared::CheckoutSessionStatus,
    of: &str,
) -> Result<SessionStatus> {
    by_name("status", of, s.as_str(), SessionStatus::parse)
}

pub(crate) fn payment_status(
    s: &stripe_shared::CheckoutSessionPaymentStatus,
    of: &str,
) -> Result<PaymentStatus> {
    by_name("payment status", of, s.as_str(), PaymentStatus::parse)
}

/// A session's mode; `setup` sessions are not Tollgate's and read as unknown.
pub(crate) fn checkout_mode(
    m: &stripe_shared::CheckoutSessionMode,
    of: &str,
) -> Result<CheckoutMode> {
    by_name("mode", of, m.as_str(), CheckoutMode::parse)
}

pub(crate) fn refund_status(s: Option<&str>, of: &str) -> Result<RefundStatus> {
    // Stripe documents the status as always present; a refund without one has not
    // settled into any state Tollgate can count.
    by_name("status", of, s.unwrap_or("(none)"), RefundStatus::parse)
}

pub(crate) fn dispute_status(s: &stripe_shared::DisputeStatus, of: &str) -> Result<DisputeStatus> {
    by_name("status", of, s.as_str(), DisputeStatus::parse)
}

pub(crate) fn currency(c: &stripe_types::Currency, of: &str) -> Result<Currency> {
    let code = c.to_string();
    Currency::parse(&code).map_err(|_| unknown("currency", of, &code))
}

/// An amount Stripe reports; a negative one is not an amount Tollgate can record.
pub(crate) fn amount(v: i64, what: &str, of: &str) -> Result<Amount> {
    Amount::new(v).map_err(|_| unknown(what, of, &v.to_string()))
}

pub(crate) fn ts(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

pub(crate) fn opt_ts(secs: Option<i64>) -> Option<Timestamp> {
    secs.map(Timestamp::from_secs)
}

/// Stripe's currency type for one of Tollgate's (Tollgate's are all Stripe's).
pub(crate) fn stripe_currency(c: &Currency) -> stripe_types::Currency {
    c.as_str()
        .parse::<stripe_types::Currency>()
        .unwrap_or_else(|_| stripe_types::Currency::Unknown(c.as_str().to_owned()))
}
