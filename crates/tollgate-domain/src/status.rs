//! The states Tollgate keeps. Stripe's statuses map onto these in the gateway alone.

use serde::Serialize;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(/// What a product is.
    ProductKind { Content = "content", Course = "course", DigitalProduct = "digital_product", Event = "event", Plan = "plan" });
string_enum!(/// Whether a product can be sold.
    ProductStatus { Draft = "draft", Published = "published", Archived = "archived" });
string_enum!(/// An order's life: created pending, then completed, failed or expired.
    OrderStatus { Pending = "pending", Completed = "completed", Failed = "failed", Expired = "expired" });
string_enum!(/// A purchase's state (seed 002's column).
    PurchaseStatus { Pending = "pending", Completed = "completed", Refunded = "refunded", PartiallyRefunded = "partially_refunded", Failed = "failed" });
string_enum!(/// An event booking's state.
    BookingStatus { Pending = "pending", Confirmed = "confirmed", Canceled = "canceled" });
string_enum!(/// What became of a received Stripe event.
    InboxStatus { Pending = "pending", Processed = "processed", Ignored = "ignored", Dead = "dead" });
string_enum!(/// A subscription's status, as Stripe names them.
    SubscriptionStatus { Incomplete = "incomplete", IncompleteExpired = "incomplete_expired", Trialing = "trialing", Active = "active", PastDue = "past_due", Canceled = "canceled", Unpaid = "unpaid", Paused = "paused" });
string_enum!(/// What becomes of invoices while a subscription's collection is paused.
    PauseBehavior { Void = "void", KeepAsDraft = "keep_as_draft", MarkUncollectible = "mark_uncollectible" });
