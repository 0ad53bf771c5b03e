//! Tollgate's domain: typed ids (Tollgate's and Stripe's), time in Unix seconds, money in
//! minor units, the revenue split and its reversal on refunds, the statuses Tollgate keeps,
//! and the access rules of subscriptions. Pure: no I/O, no Stripe types.

pub mod fees;
pub mod ids;
pub mod money;
pub mod status;
pub mod subscription;
pub mod time;

pub use fees::{FeeSchedule, Split};
pub use ids::stripe::*;
pub use ids::{
    ApiKeyId, BookingId, CouponId, CustomerId, DisputeId, EntitlementId, MeterId, OrderId,
    OrderItemId, PriceId, PriceMigrationId, ProductId, PromotionCodeId, PurchaseId, RefundId,
    RefundRequestId, SubscriptionId, TenantId, UsageRecordId,
};
pub use ids::{IdError, random_token};
pub use money::{Amount, Currency, Email, MoneyError};
pub use time::Timestamp;
