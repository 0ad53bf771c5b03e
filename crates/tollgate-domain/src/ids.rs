//! Typed ids. Tollgate's own ids carry prefixes that no Stripe object uses (`cust_`, not
//! Stripe's `cus_`), and Stripe's ids have types of their own, so that neither can be
//! passed where the other is meant: not in the code, and not through the API, where a
//! Stripe id sent in place of a Tollgate id is refused with a message naming both.
//!
//! | Tollgate object | prefix | | Tollgate object | prefix |
//! |---|---|---|---|---|
//! | tenant | `ten_` | | refund | `rf_` |
//! | API key | `key_` | | subscription | `subs_` |
//! | customer | `cust_` | | entitlement | `entl_` |
//! | product | `prd_` | | meter | `meter_` |
//! | price | `prc_` | | coupon | `cpn_` |
//! | order | `ord_` | | promotion code | `pcode_` |
//! | order item | `oi_` | | usage record | `ur_` |
//! | booking | `bk_` | | price migration | `pmig_` |
//! | purchase | `pur_` | | dispute | `dsp_` |
//! | refund request | `rreq_` | | | |

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;

/// `n` random letters and digits.
fn random_tail(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// An unguessable token (leases, claims): 32 random letters and digits.
pub fn random_token() -> String {
    random_tail(32)
}

/// Why a string is not an id of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IdError {
    message: String,
}

impl IdError {
    fn new(what: &str, prefix: &str, found: &str) -> Self {
        let shown: String = found.chars().take(80).collect();
        let hint = match stripe_kind(found) {
            Some(kind) => format!(
                "; '{shown}' is a Stripe {kind} id: pass Tollgate's {what} id (it is in the `id` field; Stripe's is in the `stripe_..._id` field)"
            ),
            None => match tollgate_kind(found) {
                Some(kind) if kind != what => format!("; '{shown}' is a Tollgate {kind} id"),
                _ => format!(", not '{shown}'"),
            },
        };
        Self {
            message: format!("Expected a Tollgate {what} id ({prefix}_...){hint}."),
        }
    }

    fn stripe(what: &str, prefixes: &[&str], found: &str) -> Self {
        let shown: String = found.chars().take(80).collect();
        let expected = prefixes
            .iter()
            .map(|p| format!("{p}_..."))
            .collect::<Vec<_>>()
            .join(" or ");
        let hint = match tollgate_kind(found) {
            Some(kind) => format!("; '{shown}' is a Tollgate {kind} id"),
            None => format!(", not '{shown}'"),
        };
        Self {
            message: format!("Expected a Stripe {what} id ({expected}){hint}."),
        }
    }
}

/// True for the tail of an id: 1 to 64 letters, digits and underscores.
fn valid_tail(rest: &str) -> bool {
    (1..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The kinds of Stripe object whose ids start with a prefix, for messages.
const STRIPE_PREFIXES: &[(&str, &str)] = &[
    ("cus", "customer"),
    ("prod", "product"),
    ("price", "price"),
    ("sub", "subscription"),
    ("si", "subscription item"),
    ("cs", "Checkout Session"),
    ("pi", "payment intent"),
    ("ch", "charge"),
    ("py", "payment"),
    ("re", "refund"),
    ("pyr", "refund"),
    ("in", "invoice"),
    ("promo", "promotion code"),
    ("evt", "event"),
    ("dp", "dispute"),
    ("du", "dispute"),
    ("mtr", "billing meter"),
    ("clock", "test clock"),
    ("bpc", "portal configuration"),
    ("bps", "portal session"),
    ("pm", "payment method"),
    ("we", "webhook endpoint"),
    ("acct", "account"),
    ("ent", "entitlement"),
];

fn stripe_kind(s: &str) -> Option<&'static str> {
    let (prefix, _) = s.split_once('_')?;
    STRIPE_PREFIXES
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, kind)| *kind)
}

macro_rules! tollgate_ids {
    ($($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal;)+) => {
        /// What a Tollgate id names, by its prefix.
        fn tollgate_kind(s: &str) -> Option<&'static str> {
            let (prefix, _) = s.split_once('_')?;
            match prefix {
                $($prefix => Some($what),)+
                _ => None,
            }
        }

        $(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// What it names, for messages: `customer`, `price migration`.
            pub const WHAT: &'static str = $what;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, random_tail(24)))
            }

            /// Reads an id from a request; the error says what was expected and, for a
            /// Stripe id or another kind of Tollgate id, what was sent.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                match s.strip_prefix(concat!($prefix, "_")) {
                    Some(rest) if valid_tail(rest) => Ok(Self(s.to_owned())),
                    _ => Err(IdError::new($what, $prefix, s)),
                }
            }

            /// Wraps a stored id without checking it (ids the database handed back).
            pub fn from_db(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema(concat!("A Tollgate ", $what, " id."), &[$prefix]).into()
            }
        }

        impl utoipa::ToSchema for $name {}
        )+
    };
}

tollgate_ids! {
    /// A tenant: one platform customer of Tollgate.
    TenantId, "ten", "tenant";
    /// A tenant API key's id (not the secret).
    ApiKeyId, "key", "API key";
    /// A tenant's customer.
    CustomerId, "cust", "customer";
    /// A product in a tenant's catalogue.
    ProductId, "prd", "product";
    /// A price of a product.
    PriceId, "prc", "price";
    /// An order: one checkout of one or more items.
    OrderId, "ord", "order";
    /// One line of an order.
    OrderItemId, "oi", "order item";
    /// A seat booking for an event product.
    BookingId, "bk", "booking";
    /// A purchase: one paid order item, with its revenue split.
    PurchaseId, "pur", "purchase";
    /// A refund of a purchase.
    RefundId, "rf", "refund";
    /// A customer's subscription to a plan, mirrored from Stripe.
    SubscriptionId, "subs", "subscription";
    /// Something a plan grants besides itself.
    EntitlementId, "entl", "entitlement";
    /// A tenant's billing meter for one usage event name.
    MeterId, "meter", "meter";
    /// A coupon: a discount that promotion codes carry.
    CouponId, "cpn", "coupon";
    /// A customer-facing code for a coupon.
    PromotionCodeId, "pcode", "promotion code";
    /// One report of metered usage.
    UsageRecordId, "ur", "usage record";
    /// A new price put in place of an old one.
    PriceMigrationId, "pmig", "price migration";
    /// A dispute of a payment, as the ledger records it.
    DisputeId, "dsp", "dispute";
    /// A refund asked for through the API, recorded before Stripe is asked.
    RefundRequestId, "rreq", "refund request";
}

fn id_schema(description: &str, prefixes: &[&str]) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let pattern = format!("^({})_[A-Za-z0-9_]{{1,64}}$", prefixes.join("|"));
    let example = format!(
        "{}_{}",
        prefixes.first().copied().unwrap_or("x"),
        "A1b2C3d4E5f6G7h8I9j0K1l2"
    );
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .max_length(Some(80))
        .examples([serde_json::Value::String(example)])
        .build()
}

/// Stripe's ids. Each kind accepts the prefixes Stripe gives it; ids Stripe hands back are
/// taken as they come (`from_stripe`), ids from a request are checked (`parse`).
pub mod stripe {
    use super::*;

    macro_rules! stripe_ids {
        ($($(#[$doc:meta])* $name:ident, [$($prefix:literal),*], $what:literal;)+) => {$(
            $(#[$doc])*
            #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
            #[serde(transparent)]
            pub struct $name(String);

            impl $name {
                pub const PREFIXES: &'static [&'static str] = &[$($prefix),*];

                /// An id Stripe handed back, taken as it is.
                pub fn from_stripe(s: impl Into<String>) -> Self {
                    Self(s.into())
                }

                /// Wraps a stored id without checking it.
                pub fn from_db(s: String) -> Self {
                    Self(s)
                }

                /// Reads an id from a request: one of Stripe's prefixes for this kind.
                pub fn parse(s: &str) -> Result<Self, IdError> {
                    let ok = Self::PREFIXES.is_empty() && (1..=200).contains(&s.len())
                        && s.bytes().all(|b| b.is_ascii_graphic())
                        || Self::PREFIXES.iter().any(|p| {
                            s.strip_prefix(p)
                                .and_then(|r| r.strip_prefix('_'))
                                .is_some_and(|r| (1..=200).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                        });
                    if ok {
                        Ok(Self(s.to_owned()))
                    } else {
                        Err(IdError::stripe($what, Self::PREFIXES, s))
                    }
                }

                pub fn as_str(&self) -> &str {
                    &self.0
                }
            }

            impl fmt::Display for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(&self.0)
                }
            }

            impl utoipa::PartialSchema for $name {
                fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                    use utoipa::openapi::schema::{ObjectBuilder, Type};
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some(concat!("Stripe's ", $what, " id.")))
                        .build()
                        .into()
                }
            }

            impl utoipa::ToSchema for $name {}
        )+};
    }

    stripe_ids! {
        /// A Stripe customer.
        StripeCustomerId, ["cus"], "customer";
        /// A Stripe product.
        StripeProductId, ["prod"], "product";
        /// A Stripe price (prices made in the Dashboard long ago may be `plan_`s).
        StripePriceId, ["price", "plan"], "price";
        /// A Stripe subscription.
        StripeSubscriptionId, ["sub"], "subscription";
        /// One item of a Stripe subscription.
        StripeSubscriptionItemId, ["si"], "subscription item";
        /// A Stripe Checkout Session.
        StripeCheckoutSessionId, ["cs"], "Checkout Session";
        /// A Stripe payment intent.
        StripePaymentIntentId, ["pi"], "payment intent";
        /// A Stripe refund.
        StripeRefundId, ["re", "pyr"], "refund";
        /// A Stripe dispute.
        StripeDisputeId, ["dp", "du"], "dispute";
        /// A Stripe invoice.
        StripeInvoiceId, ["in"], "invoice";
        /// A Stripe coupon (coupon ids are chosen freely).
        StripeCouponId, [], "coupon";
        /// A Stripe promotion code.
        StripePromotionCodeId, ["promo"], "promotion code";
        /// A Stripe billing meter.
        StripeMeterId, ["mtr"], "billing meter";
        /// A Stripe event.
        StripeEventId, ["evt"], "event";
        /// A Stripe customer portal configuration.
        StripePortalConfigurationId, ["bpc"], "portal configuration";
        /// A Stripe test clock.
        StripeTestClockId, ["clock"], "test clock";
    }
}

#[cfg(test)]
mod tests {
    use super::stripe::*;
    use super::*;

    #[test]
    fn a_generated_id_parses_back_and_a_foreign_prefix_does_not() {
        let id = PurchaseId::generate();
        assert_eq!(PurchaseId::parse(id.as_str()), Ok(id.clone()));
        assert!(PurchaseId::parse("ord_abc").is_err());
        assert!(PurchaseId::parse("pur_").is_err());
        assert!(PurchaseId::parse("pur_a'b").is_err());
        assert!(PurchaseId::parse("purchase_abc").is_err());
        assert!(PurchaseId::parse("pur_a\0b").is_err());
    }

    #[test]
    fn a_stripe_id_in_place_of_a_tollgate_id_is_named_as_such() {
        let e = CustomerId::parse("cus_Nffrfe1a2b3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Stripe customer id"), "{e}");
        assert!(e.contains("cust_"), "{e}");
        let e = ProductId::parse("cust_abc").unwrap_err().to_string();
        assert!(e.contains("Tollgate customer id"), "{e}");
    }

    #[test]
    fn no_tollgate_prefix_is_one_that_stripe_uses() {
        for tollgate in [
            TenantId::PREFIX,
            ApiKeyId::PREFIX,
            CustomerId::PREFIX,
            ProductId::PREFIX,
            PriceId::PREFIX,
            OrderId::PREFIX,
            OrderItemId::PREFIX,
            BookingId::PREFIX,
            PurchaseId::PREFIX,
            RefundId::PREFIX,
            SubscriptionId::PREFIX,
            EntitlementId::PREFIX,
            MeterId::PREFIX,
            CouponId::PREFIX,
            PromotionCodeId::PREFIX,
            UsageRecordId::PREFIX,
            PriceMigrationId::PREFIX,
            DisputeId::PREFIX,
            RefundRequestId::PREFIX,
        ] {
            assert!(
                STRIPE_PREFIXES.iter().all(|(p, _)| *p != tollgate),
                "{tollgate} is one of Stripe's prefixes"
            );
        }
    }

    #[test]
    fn stripe_ids_from_requests_need_their_prefix() {
        assert!(StripeTestClockId::parse("clock_1abc").is_ok());
        assert!(StripeTestClockId::parse("cus_1abc").is_err());
        assert!(StripeCouponId::parse("SUMMER25").is_ok());
        assert!(StripeCouponId::parse("").is_err());
        let e = StripeCustomerId::parse("cust_abc").unwrap_err().to_string();
        assert!(e.contains("Tollgate customer id"), "{e}");
    }
}
