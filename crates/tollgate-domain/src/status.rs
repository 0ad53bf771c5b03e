//! The states and kinds Tollgate keeps, as enums with the rules that go with them ("grants
//! access", "is refundable"). Stripe's statuses map onto these in the gateway alone.

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        // The wire names are the variants in snake_case, as `as_str` spells them (a test
        // holds the two together); `rename_all` rather than a rename per variant, which
        // the OpenAPI derive would not see through this macro.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }

            /// The values, for messages: `a, b or c`.
            pub fn choices() -> String {
                let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                match all.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                    _ => all.join(""),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(test)]
        impl $name {
            /// Panics unless every value's wire name is its `as_str`.
            fn check_wire_names() {
                for v in Self::ALL {
                    assert_eq!(
                        serde_json::to_value(v).ok(),
                        Some(serde_json::Value::String(v.as_str().into())),
                        "{}",
                        stringify!($name)
                    );
                    assert_eq!(Self::parse(v.as_str()), Some(*v));
                }
            }
        }
    };
}

/// `'a', 'b'`: a list of statuses for an SQL `IN (...)`, written from the enum so that a
/// rule lives in one place.
pub fn sql_list<T: Copy>(values: &[T], as_str: fn(T) -> &'static str) -> String {
    values
        .iter()
        .map(|v| format!("'{}'", as_str(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

string_enum!(/// What a product is.
    ProductKind { Content = "content", Course = "course", DigitalProduct = "digital_product", Event = "event", Plan = "plan" });

impl ProductKind {
    /// Event tickets may be bought again and again; anything else is owned once.
    pub fn owned_once(self) -> bool {
        self != ProductKind::Event
    }

    /// Only events have seats.
    pub fn has_capacity(self) -> bool {
        self == ProductKind::Event
    }
}

string_enum!(/// Whether a product can be sold.
    ProductStatus { Draft = "draft", Published = "published", Archived = "archived" });

string_enum!(/// An order's life: created pending, then completed, failed or expired.
    OrderStatus { Pending = "pending", Completed = "completed", Failed = "failed", Expired = "expired" });

string_enum!(/// What an order pays for: items once, or the first period of a subscription.
    CheckoutMode { Payment = "payment", Subscription = "subscription" });

string_enum!(/// A purchase's state (seed 002's column).
    PurchaseStatus { Pending = "pending", Completed = "completed", Refunded = "refunded", PartiallyRefunded = "partially_refunded", Failed = "failed" });

impl PurchaseStatus {
    /// The statuses of a purchase that is owned: paid and not wholly refunded.
    pub const OWNED: &'static [PurchaseStatus] =
        &[PurchaseStatus::Completed, PurchaseStatus::PartiallyRefunded];

    /// Owned: the customer holds the product (unless a dispute freezes it).
    pub fn is_owned(self) -> bool {
        Self::OWNED.contains(&self)
    }

    /// Money is left to refund through the API.
    pub fn is_refundable(self) -> bool {
        self.is_owned()
    }

    /// `'completed', 'partially_refunded'`, for SQL.
    pub fn owned_sql() -> String {
        sql_list(Self::OWNED, Self::as_str)
    }
}

string_enum!(/// Why a purchase was refunded. The first three are Stripe's reasons, which the API
/// takes; the others are Tollgate's own notes.
    RefundReason {
        Duplicate = "duplicate",
        Fraudulent = "fraudulent",
        RequestedByCustomer = "requested_by_customer",
        /// The customer owned the product already: a second payment was refunded.
        DuplicatePurchase = "duplicate_purchase",
        /// Refunded in Stripe (the Dashboard, say), not through Tollgate's API.
        RefundedInStripe = "refunded_in_stripe",
        /// A lost dispute took the money back.
        DisputeLost = "dispute_lost",
    });

impl RefundReason {
    /// The reasons a refund requested through the API may give (Stripe's).
    pub fn is_stripe_reason(self) -> bool {
        matches!(
            self,
            RefundReason::Duplicate | RefundReason::Fraudulent | RefundReason::RequestedByCustomer
        )
    }
}

string_enum!(/// A refund asked for through the API: recorded before Stripe is asked, then settled.
    RefundRequestStatus { Pending = "pending", Succeeded = "succeeded", Failed = "failed" });

string_enum!(/// An event booking's state.
    BookingStatus { Pending = "pending", Confirmed = "confirmed", Canceled = "canceled" });

impl BookingStatus {
    /// Seats a booking in these statuses takes.
    pub const HOLDING: &'static [BookingStatus] =
        &[BookingStatus::Pending, BookingStatus::Confirmed];

    pub fn holding_sql() -> String {
        sql_list(Self::HOLDING, Self::as_str)
    }
}

string_enum!(/// What became of a received Stripe event.
    InboxStatus { Pending = "pending", Processed = "processed", Ignored = "ignored", Dead = "dead" });

string_enum!(/// A subscription's status, as Stripe names them.
    SubscriptionStatus { Incomplete = "incomplete", IncompleteExpired = "incomplete_expired", Trialing = "trialing", Active = "active", PastDue = "past_due", Canceled = "canceled", Unpaid = "unpaid", Paused = "paused" });

impl SubscriptionStatus {
    /// Statuses of a live subscription: it grants access now, or may again without a new
    /// checkout.
    pub const LIVE: &'static [SubscriptionStatus] = &[
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Paused,
        SubscriptionStatus::Unpaid,
        SubscriptionStatus::Incomplete,
    ];

    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }

    /// Statuses in which a subscription may grant access (whether it does, and until
    /// when, is [`crate::subscription::Standing::grant`]'s to say).
    pub const MAY_GRANT: &'static [SubscriptionStatus] = &[
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
    ];

    pub fn may_grant_sql() -> String {
        sql_list(Self::MAY_GRANT, Self::as_str)
    }

    /// Over for good: a change needs a new subscription.
    pub fn has_ended(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
        )
    }

    pub fn live_sql() -> String {
        sql_list(Self::LIVE, Self::as_str)
    }
}

string_enum!(/// What becomes of invoices while a subscription's collection is paused.
    PauseBehavior { Void = "void", KeepAsDraft = "keep_as_draft", MarkUncollectible = "mark_uncollectible" });

string_enum!(/// How often a recurring price bills.
    RecurringInterval { Day = "day", Week = "week", Month = "month", Year = "year" });

impl RecurringInterval {
    /// The most intervals one period may span (Stripe: at most one year).
    pub fn max_count(self) -> i64 {
        match self {
            RecurringInterval::Day => 365,
            RecurringInterval::Week => 52,
            RecurringInterval::Month => 12,
            RecurringInterval::Year => 1,
        }
    }
}

string_enum!(/// Whether a recurring price bills a quantity bought or usage reported.
    UsageType { Licensed = "licensed", Metered = "metered" });

string_enum!(/// How long a coupon's discount lasts on a subscription.
    CouponDuration { Once = "once", Repeating = "repeating", Forever = "forever" });

string_enum!(/// A usage record's reporting to Stripe.
    UsageStatus { Pending = "pending", Reported = "reported", Failed = "failed" });

string_enum!(/// A price migration's progress.
    MigrationStatus { Scheduled = "scheduled", Done = "done", NewSignupsOnly = "new_signups_only" });

string_enum!(/// A Checkout Session's status in Stripe.
    SessionStatus { Open = "open", Complete = "complete", Expired = "expired" });

string_enum!(/// Whether a Checkout Session's payment went through.
    PaymentStatus { Paid = "paid", Unpaid = "unpaid", NoPaymentRequired = "no_payment_required" });

string_enum!(/// A Stripe refund's status.
    RefundStatus { Pending = "pending", RequiresAction = "requires_action", Succeeded = "succeeded", Failed = "failed", Canceled = "canceled" });

impl RefundStatus {
    /// The refund took, or is on its way: it counts against the payment.
    pub fn counts(self) -> bool {
        matches!(
            self,
            RefundStatus::Pending | RefundStatus::RequiresAction | RefundStatus::Succeeded
        )
    }
}

string_enum!(/// A Stripe dispute's status.
DisputeStatus {
    WarningNeedsResponse = "warning_needs_response",
    WarningUnderReview = "warning_under_review",
    WarningClosed = "warning_closed",
    NeedsResponse = "needs_response",
    UnderReview = "under_review",
    Won = "won",
    Lost = "lost",
    Prevented = "prevented",
});

impl DisputeStatus {
    /// Over, and the money stayed with the merchant.
    pub fn settled_for_merchant(self) -> bool {
        matches!(
            self,
            DisputeStatus::Won | DisputeStatus::WarningClosed | DisputeStatus::Prevented
        )
    }

    /// Over, and the money went back to the cardholder.
    pub fn is_lost(self) -> bool {
        self == DisputeStatus::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_reads_back_and_sql_lists_come_from_the_rules() {
        ProductKind::check_wire_names();
        ProductStatus::check_wire_names();
        OrderStatus::check_wire_names();
        CheckoutMode::check_wire_names();
        PurchaseStatus::check_wire_names();
        RefundReason::check_wire_names();
        BookingStatus::check_wire_names();
        InboxStatus::check_wire_names();
        SubscriptionStatus::check_wire_names();
        PauseBehavior::check_wire_names();
        RecurringInterval::check_wire_names();
        UsageType::check_wire_names();
        CouponDuration::check_wire_names();
        UsageStatus::check_wire_names();
        MigrationStatus::check_wire_names();
        SessionStatus::check_wire_names();
        PaymentStatus::check_wire_names();
        RefundStatus::check_wire_names();
        DisputeStatus::check_wire_names();
        RefundRequestStatus::check_wire_names();
        assert_eq!(
            PurchaseStatus::owned_sql(),
            "'completed', 'partially_refunded'"
        );
        assert_eq!(ProductStatus::choices(), "draft, published or archived");
        assert!(!ProductKind::Event.owned_once());
        assert!(PurchaseStatus::PartiallyRefunded.is_refundable());
        assert!(!PurchaseStatus::Refunded.is_owned());
    }
}
