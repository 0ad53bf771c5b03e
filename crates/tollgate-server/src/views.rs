//! What the API shows: view types of their own, apart from the store's rows. The naming
//! rules hold everywhere: Tollgate's ids are `id` and `<thing>_id`; Stripe's are
//! `stripe_<thing>_id`; every time is Unix seconds in a field ending in `_at`; money is an
//! integer amount of minor units beside its `currency`.

use serde::Serialize;
use tollgate_domain::status::{
    BookingStatus, CheckoutMode, CouponDuration, DisputeStatus, InboxStatus, MigrationStatus,
    OrderStatus, PauseBehavior, PaymentStatus, ProductKind, ProductStatus, PurchaseStatus,
    RecurringInterval, RefundReason, SubscriptionStatus, UsageStatus,
};
use tollgate_domain::subscription::Change;
use tollgate_domain::{
    Amount, ApiKeyId, BookingId, CouponId, Currency, CustomerId, DisputeId, EntitlementId, OrderId,
    OrderItemId, PriceId, PriceMigrationId, ProductId, PromotionCodeId, PurchaseId, RefundId,
    StripeCheckoutSessionId, StripeCouponId, StripeCustomerId, StripeDisputeId, StripeEventId,
    StripeInvoiceId, StripePaymentIntentId, StripePriceId, StripeProductId, StripePromotionCodeId,
    StripeRefundId, StripeSubscriptionId, StripeSubscriptionItemId, SubscriptionId, TenantId,
    Timestamp, UsageRecordId,
};
use tollgate_store::{
    ApiKey, Booking, Coupon, Customer, Discount, Entitlement, InboxEvent, Order, OrderItem,
    PortalSettings, Price, PriceMigration, Product, PromotionCode, Purchase, RefundRecord,
    Subscription, Tenant, UsageRecord,
};
use utoipa::ToSchema;

/// Metadata: string keys to string values.
pub type Metadata = std::collections::HashMap<String, String>;

fn metadata_of(m: &serde_json::Map<String, serde_json::Value>) -> Metadata {
    m.iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
        .collect()
}

/// A list in Stripe's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T: ToSchema> {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<T>,
    /// More items follow the last one: pass its id as `starting_after`.
    pub has_more: bool,
    pub url: String,
}

impl<T: ToSchema> List<T> {
    pub fn new(data: Vec<T>, has_more: bool, url: impl Into<String>) -> Self {
        Self {
            object: "list",
            data,
            has_more,
            url: url.into(),
        }
    }
}

/// What deleting answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted<I: ToSchema> {
    pub id: I,
    pub object: &'static str,
    pub deleted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerView {
    /// Always `customer`.
    pub object: &'static str,
    pub id: CustomerId,
    pub external_user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub stripe_customer_id: Option<StripeCustomerId>,
    pub created_at: Timestamp,
    /// On `POST /v1/customers` only: whether this call made the customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

impl CustomerView {
    pub fn of(c: &Customer) -> Self {
        Self {
            object: "customer",
            id: c.id.clone(),
            external_user_id: c.external_user_id.clone(),
            email: c.email.as_ref().map(|e| e.to_string()),
            name: c.name.clone(),
            stripe_customer_id: c.stripe_customer_id.clone(),
            created_at: c.created_at,
            created: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    /// Always `price`.
    pub object: &'static str,
    pub id: PriceId,
    pub product_id: ProductId,
    pub currency: Currency,
    pub unit_amount: Amount,
    /// `null` for a one-time price.
    pub recurring_interval: Option<RecurringInterval>,
    pub recurring_interval_count: Option<i64>,
    pub trial_days: Option<i64>,
    pub usage_type: Option<tollgate_domain::status::UsageType>,
    pub meter_event_name: Option<String>,
    pub lookup_key: Option<String>,
    pub active: bool,
    pub stripe_price_id: Option<StripePriceId>,
    pub created_at: Timestamp,
}

impl PriceView {
    pub fn of(p: &Price) -> Self {
        let r = p.recurring.as_ref();
        Self {
            object: "price",
            id: p.id.clone(),
            product_id: p.product_id.clone(),
            currency: p.currency.clone(),
            unit_amount: p.unit_amount,
            recurring_interval: r.map(|r| r.interval),
            recurring_interval_count: r.map(|r| r.interval_count),
            trial_days: r.and_then(|r| r.trial_days),
            usage_type: r.map(|r| r.usage_type),
            meter_event_name: r.and_then(|r| r.meter_event_name.clone()),
            lookup_key: p.lookup_key.clone(),
            active: p.active,
            stripe_price_id: p.stripe_price_id.clone(),
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementView {
    /// Always `entitlement`.
    pub object: &'static str,
    pub id: EntitlementId,
    pub plan_id: ProductId,
    /// A product the plan grants, or ...
    pub product_id: Option<ProductId>,
    /// ... a feature it grants.
    pub feature: Option<String>,
    pub created_at: Timestamp,
}

impl EntitlementView {
    pub fn of(e: &Entitlement) -> Self {
        Self {
            object: "entitlement",
            id: e.id.clone(),
            plan_id: e.plan_id.clone(),
            product_id: e.product_id.clone(),
            feature: e.feature.clone(),
            created_at: e.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    /// Always `product`.
    pub object: &'static str,
    pub id: ProductId,
    pub kind: ProductKind,
    pub title: String,
    pub description: Option<String>,
    pub status: ProductStatus,
    pub creator_id: Option<String>,
    pub capacity: Option<i64>,
    pub metadata: Metadata,
    pub stripe_product_id: Option<StripeProductId>,
    /// Its active prices, the default first.
    pub prices: Vec<PriceView>,
    /// What a plan grants besides itself (plans only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<Vec<EntitlementView>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ProductView {
    pub fn of(p: &Product, prices: &[Price], entitlements: Option<&[Entitlement]>) -> Self {
        Self {
            object: "product",
            id: p.id.clone(),
            kind: p.kind,
            title: p.title.clone(),
            description: p.description.clone(),
            status: p.status,
            creator_id: p.creator_id.clone(),
            capacity: p.capacity,
            metadata: metadata_of(&p.metadata),
            stripe_product_id: p.stripe_product_id.clone(),
            prices: prices.iter().map(PriceView::of).collect(),
            entitlements: entitlements.map(|e| e.iter().map(EntitlementView::of).collect()),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A created Checkout Session: send the payer to `url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutSessionView {
    /// Always `checkout_session`.
    pub object: &'static str,
    /// The order the session pays for.
    pub order_id: OrderId,
    pub stripe_checkout_session_id: StripeCheckoutSessionId,
    /// Stripe's hosted page.
    pub url: Option<String>,
    pub expires_at: Timestamp,
}

/// A Checkout Session's order as Tollgate has it (after `?sync=true`, as Stripe has it).
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutStateView {
    /// Always `checkout_session`.
    pub object: &'static str,
    pub stripe_checkout_session_id: StripeCheckoutSessionId,
    pub order_id: OrderId,
    /// The order's status.
    pub status: OrderStatus,
    /// With `?sync=true`: whether Stripe calls the session paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<PaymentStatus>,
    pub order: OrderView,
    pub purchases: Vec<PurchaseView>,
    /// A subscription checkout's subscription, once paid.
    pub subscription: Option<SubscriptionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemView {
    pub id: OrderItemId,
    pub product_id: ProductId,
    pub price_id: PriceId,
    pub title: String,
    pub quantity: i64,
    pub unit_amount: Amount,
    pub amount: Amount,
}

impl OrderItemView {
    fn of(i: &OrderItem) -> Self {
        Self {
            id: i.id.clone(),
            product_id: i.product_id.clone(),
            price_id: i.price_id.clone(),
            title: i.title.clone(),
            quantity: i.quantity,
            unit_amount: i.unit_amount,
            amount: i.amount,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BookingView {
    pub id: BookingId,
    pub product_id: ProductId,
    pub customer_id: Option<CustomerId>,
    pub quantity: i64,
    pub status: BookingStatus,
}

impl BookingView {
    pub fn of(b: &Booking) -> Self {
        Self {
            id: b.id.clone(),
            product_id: b.product_id.clone(),
            customer_id: b.customer_id.clone(),
            quantity: b.quantity,
            status: b.status,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    /// Always `order`.
    pub object: &'static str,
    pub id: OrderId,
    pub customer_id: Option<CustomerId>,
    pub email: Option<String>,
    pub status: OrderStatus,
    pub mode: CheckoutMode,
    pub currency: Currency,
    /// What the items cost before discounts and tax.
    pub amount_total: Amount,
    pub items: Vec<OrderItemView>,
    pub stripe_checkout_session_id: Option<StripeCheckoutSessionId>,
    pub stripe_payment_intent_id: Option<StripePaymentIntentId>,
    pub checkout_url: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub failure_reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// On `GET /v1/orders/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bookings: Option<Vec<BookingView>>,
    /// On `GET /v1/orders/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchases: Option<Vec<PurchaseView>>,
}

impl OrderView {
    pub fn of(o: &Order) -> Self {
        Self {
            object: "order",
            id: o.id.clone(),
            customer_id: o.customer_id.clone(),
            email: o.email.as_ref().map(|e| e.to_string()),
            status: o.status,
            mode: o.mode,
            currency: o.currency.clone(),
            amount_total: o.amount_total,
            items: o.items.iter().map(OrderItemView::of).collect(),
            stripe_checkout_session_id: o.stripe_checkout_session_id.clone(),
            stripe_payment_intent_id: o.stripe_payment_intent_id.clone(),
            checkout_url: o.checkout_url.clone(),
            expires_at: o.expires_at,
            failure_reason: o.failure_reason.clone(),
            created_at: o.created_at,
            updated_at: o.updated_at,
            completed_at: o.completed_at,
            bookings: None,
            purchases: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub id: RefundId,
    pub purchase_id: PurchaseId,
    pub amount: Amount,
    pub platform_fee: Amount,
    pub organization_fee: Amount,
    pub creator_payout: Amount,
    pub reason: Option<RefundReason>,
    pub stripe_refund_id: Option<StripeRefundId>,
    /// When a lost dispute took the money back: the dispute.
    pub stripe_dispute_id: Option<StripeDisputeId>,
    pub created_at: Timestamp,
    /// When Stripe reported the refund failed: its money is the merchant's again, and it
    /// no longer counts in the purchase's refunded amounts.
    pub reversed_at: Option<Timestamp>,
}

impl RefundView {
    pub fn of(r: &RefundRecord) -> Self {
        Self {
            id: r.id.clone(),
            purchase_id: r.purchase_id.clone(),
            amount: r.amount,
            platform_fee: r.split.platform,
            organization_fee: r.split.organization,
            creator_payout: r.split.creator,
            reason: r.reason,
            stripe_refund_id: r.stripe_refund_id.clone(),
            stripe_dispute_id: r.stripe_dispute_id.clone(),
            created_at: r.created_at,
            reversed_at: r.reversed_at,
        }
    }
}

/// A purchase: one paid order item, with its revenue split and what was refunded of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseView {
    /// Always `purchase`.
    pub object: &'static str,
    pub id: PurchaseId,
    pub order_id: OrderId,
    pub customer_id: Option<CustomerId>,
    pub email: Option<String>,
    pub product_id: ProductId,
    pub creator_id: Option<String>,
    pub currency: Currency,
    /// What was paid; `platform_fee + organization_fee + creator_payout`.
    pub amount: Amount,
    pub platform_fee: Amount,
    pub organization_fee: Amount,
    pub creator_payout: Amount,
    pub status: PurchaseStatus,
    pub refunded_amount: Amount,
    pub refunded_platform_fee: Amount,
    pub refunded_organization_fee: Amount,
    pub refunded_creator_payout: Amount,
    pub refund_reason: Option<RefundReason>,
    /// A dispute is open or was lost: the purchase grants nothing meanwhile.
    pub disputed: bool,
    pub stripe_payment_intent_id: Option<StripePaymentIntentId>,
    pub stripe_checkout_session_id: Option<StripeCheckoutSessionId>,
    pub purchased_at: Option<Timestamp>,
    pub refunded_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// On `GET /v1/purchases/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundView>>,
}

impl PurchaseView {
    pub fn of(p: &Purchase) -> Self {
        Self {
            object: "purchase",
            id: p.id.clone(),
            order_id: p.order_id.clone(),
            customer_id: p.customer_id.clone(),
            email: p.email.as_ref().map(|e| e.to_string()),
            product_id: p.product_id.clone(),
            creator_id: p.creator_id.clone(),
            currency: p.currency.clone(),
            amount: p.amount,
            platform_fee: p.split.platform,
            organization_fee: p.split.organization,
            creator_payout: p.split.creator,
            status: p.status,
            refunded_amount: p.refunded_amount(),
            refunded_platform_fee: p.refunded.platform,
            refunded_organization_fee: p.refunded.organization,
            refunded_creator_payout: p.refunded.creator,
            refund_reason: p.refund_reason,
            disputed: p.disputed,
            stripe_payment_intent_id: p.stripe_payment_intent_id.clone(),
            stripe_checkout_session_id: p.stripe_checkout_session_id.clone(),
            purchased_at: p.purchased_at,
            refunded_at: p.refunded_at,
            created_at: p.created_at,
            updated_at: p.updated_at,
            refunds: None,
        }
    }
}

/// A dispute of one of the tenant's payments.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeView {
    /// Always `dispute`.
    pub object: &'static str,
    pub id: DisputeId,
    pub status: DisputeStatus,
    /// Stripe's code for why the cardholder disputed (`fraudulent`, `product_not_received`, ...).
    pub reason: String,
    pub amount: Amount,
    pub currency: Currency,
    /// Stripe's dispute fee.
    pub fee: Amount,
    /// When evidence is due at Stripe.
    pub evidence_due_at: Option<Timestamp>,
    /// When the loss was written into the ledger (a lost dispute only).
    pub loss_recorded_at: Option<Timestamp>,
    /// The purchases the disputed payment paid for.
    pub purchase_ids: Vec<PurchaseId>,
    pub stripe_dispute_id: StripeDisputeId,
    pub stripe_payment_intent_id: StripePaymentIntentId,
    /// When the cardholder disputed.
    pub disputed_at: Timestamp,
    pub updated_at: Timestamp,
}

impl DisputeView {
    pub fn of(d: &tollgate_store::Dispute, purchase_ids: Vec<PurchaseId>) -> Self {
        Self {
            object: "dispute",
            id: d.id.clone(),
            status: d.status,
            reason: d.reason.clone(),
            amount: d.amount,
            currency: d.currency.clone(),
            fee: d.fee,
            evidence_due_at: d.evidence_due_at,
            loss_recorded_at: d.loss_recorded_at,
            purchase_ids,
            stripe_dispute_id: d.stripe_dispute_id.clone(),
            stripe_payment_intent_id: d.stripe_payment_intent_id.clone(),
            disputed_at: d.stripe_created_at,
            updated_at: d.updated_at,
        }
    }
}

/// Purchases by page, with counts (seed 002's shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct PurchasePage {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<PurchaseView>,
    pub has_more: bool,
    pub url: String,
    pub page: i64,
    pub page_size: i64,
    pub total_count: i64,
    pub total_pages: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionItemView {
    pub stripe_subscription_item_id: StripeSubscriptionItemId,
    pub stripe_price_id: StripePriceId,
    /// The tenant's price, when the Stripe price is one of the tenant's.
    pub price_id: Option<PriceId>,
    pub quantity: i64,
}

/// A subscription as mirrored from Stripe, with what access it gives now.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Always `subscription`.
    pub object: &'static str,
    pub id: SubscriptionId,
    pub customer_id: CustomerId,
    pub status: SubscriptionStatus,
    /// The plan (`null` when its price was not made through Tollgate).
    pub product_id: Option<ProductId>,
    pub price_id: Option<PriceId>,
    pub quantity: i64,
    pub items: Vec<SubscriptionItemView>,
    pub currency: Currency,
    pub current_period_starts_at: Timestamp,
    pub current_period_ends_at: Timestamp,
    pub trial_starts_at: Option<Timestamp>,
    pub trial_ends_at: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<Timestamp>,
    pub canceled_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Collection is paused with this behaviour.
    pub pause_behavior: Option<PauseBehavior>,
    pub pause_resumes_at: Option<Timestamp>,
    /// When the failed payment that made it past_due was attempted.
    pub payment_failed_at: Option<Timestamp>,
    /// After a downgrade: the plan paid for, kept until `previous_plan_ends_at`.
    pub previous_price_id: Option<PriceId>,
    pub previous_product_id: Option<ProductId>,
    pub previous_plan_ends_at: Option<Timestamp>,
    /// What the customer may use of the plan now.
    pub has_access: bool,
    pub access_expires_at: Option<Timestamp>,
    pub order_id: Option<OrderId>,
    pub stripe_subscription_id: StripeSubscriptionId,
    pub stripe_customer_id: StripeCustomerId,
    pub stripe_price_id: StripePriceId,
    pub latest_stripe_invoice_id: Option<StripeInvoiceId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// After `change_price`: which way the change went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// After `change_price`: when the new price takes effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<Timestamp>,
}

impl SubscriptionView {
    pub fn of(s: &Subscription, access: Option<&crate::access::AccessAnswer>) -> Self {
        Self {
            object: "subscription",
            id: s.id.clone(),
            customer_id: s.customer_id.clone(),
            status: s.status,
            product_id: s.product_id.clone(),
            price_id: s.price_id.clone(),
            quantity: s.quantity,
            items: s
                .items
                .iter()
                .map(|i| SubscriptionItemView {
                    stripe_subscription_item_id: i.stripe_item_id.clone(),
                    stripe_price_id: i.stripe_price_id.clone(),
                    price_id: i.price_id.clone(),
                    quantity: i.quantity,
                })
                .collect(),
            currency: s.currency.clone(),
            current_period_starts_at: s.current_period_start,
            current_period_ends_at: s.current_period_end,
            trial_starts_at: s.trial_start,
            trial_ends_at: s.trial_end,
            cancel_at_period_end: s.cancel_at_period_end,
            cancel_at: s.cancel_at,
            canceled_at: s.canceled_at,
            ended_at: s.ended_at,
            pause_behavior: s.pause_behavior,
            pause_resumes_at: s.pause_resumes_at,
            payment_failed_at: s.past_due_since,
            previous_price_id: s.previous_price_id.clone(),
            previous_product_id: s.previous_product_id.clone(),
            previous_plan_ends_at: s.previous_until,
            has_access: access.is_some_and(|a| a.has_access),
            access_expires_at: access.and_then(|a| a.expires_at),
            order_id: s.order_id.clone(),
            stripe_subscription_id: s.stripe_subscription_id.clone(),
            stripe_customer_id: s.stripe_customer_id.clone(),
            stripe_price_id: s.stripe_price_id.clone(),
            latest_stripe_invoice_id: s.latest_invoice_id.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            change: None,
            effective_at: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponView {
    /// Always `coupon`.
    pub object: &'static str,
    pub id: CouponId,
    pub name: Option<String>,
    /// A share off in basis points (2000 = 20%), or ...
    pub percent_off_bps: Option<i64>,
    /// ... an amount off in minor units of `currency`.
    pub amount_off: Option<Amount>,
    pub currency: Option<Currency>,
    pub duration: CouponDuration,
    pub duration_in_months: Option<i64>,
    pub max_redemptions: Option<i64>,
    /// After this moment it cannot be redeemed.
    pub expires_at: Option<Timestamp>,
    pub stripe_coupon_id: Option<StripeCouponId>,
    pub created_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

impl CouponView {
    pub fn of(c: &Coupon) -> Self {
        let (percent_off_bps, amount_off, currency) = match &c.discount {
            Discount::PercentOffBps(bps) => (Some(*bps), None, None),
            Discount::AmountOff(a, cur) => (None, Some(*a), Some(cur.clone())),
        };
        Self {
            object: "coupon",
            id: c.id.clone(),
            name: c.name.clone(),
            percent_off_bps,
            amount_off,
            currency,
            duration: c.duration,
            duration_in_months: c.duration_in_months,
            max_redemptions: c.max_redemptions,
            expires_at: c.redeem_by,
            stripe_coupon_id: c.stripe_coupon_id.clone(),
            created_at: c.created_at,
            deleted_at: c.deleted_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromotionCodeView {
    /// Always `promotion_code`.
    pub object: &'static str,
    pub id: PromotionCodeId,
    pub coupon_id: CouponId,
    /// What the customer types.
    pub code: String,
    pub active: bool,
    pub max_redemptions: Option<i64>,
    pub expires_at: Option<Timestamp>,
    pub stripe_promotion_code_id: Option<StripePromotionCodeId>,
    pub created_at: Timestamp,
}

impl PromotionCodeView {
    pub fn of(p: &PromotionCode) -> Self {
        Self {
            object: "promotion_code",
            id: p.id.clone(),
            coupon_id: p.coupon_id.clone(),
            code: p.code.clone(),
            active: p.active,
            max_redemptions: p.max_redemptions,
            expires_at: p.expires_at,
            stripe_promotion_code_id: p.stripe_promotion_code_id.clone(),
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRecordView {
    /// Always `usage_record`.
    pub object: &'static str,
    pub id: UsageRecordId,
    pub customer_id: CustomerId,
    pub value: i64,
    pub occurred_at: Timestamp,
    /// `pending` (not reported to Stripe yet), `reported`, or `failed`.
    pub status: UsageStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub reported_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// On `POST /v1/usage` only: whether this call recorded it (`false`: a replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

impl UsageRecordView {
    pub fn of(u: &UsageRecord) -> Self {
        Self {
            object: "usage_record",
            id: u.id.clone(),
            customer_id: u.customer_id.clone(),
            value: u.value,
            occurred_at: u.occurred_at,
            status: u.status,
            attempts: u.attempts,
            last_error: u.last_error.clone(),
            reported_at: u.reported_at,
            created_at: u.created_at,
            created: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceMigrationView {
    /// Always `price_migration`.
    pub object: &'static str,
    pub id: PriceMigrationId,
    pub from_price_id: PriceId,
    pub to_price_id: PriceId,
    /// When existing subscriptions move; `null`: they keep their price.
    pub move_existing_at: Option<Timestamp>,
    pub status: MigrationStatus,
    pub moved: i64,
    pub failed: i64,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

impl PriceMigrationView {
    pub fn of(m: &PriceMigration) -> Self {
        Self {
            object: "price_migration",
            id: m.id.clone(),
            from_price_id: m.from_price_id.clone(),
            to_price_id: m.to_price_id.clone(),
            move_existing_at: m.move_existing_at,
            status: m.status,
            moved: m.moved,
            failed: m.failed,
            created_at: m.created_at,
            completed_at: m.completed_at,
        }
    }
}

/// What the customer portal offers.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalSettingsView {
    pub cancel: bool,
    pub switch_plan: bool,
    pub update_payment_method: bool,
    pub headline: Option<String>,
}

impl PortalSettingsView {
    fn of(p: &PortalSettings) -> Self {
        Self {
            cancel: p.cancel,
            switch_plan: p.switch_plan,
            update_payment_method: p.update_payment_method,
            headline: p.headline.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// Always `tenant`.
    pub object: &'static str,
    pub id: TenantId,
    pub name: String,
    pub default_currency: Currency,
    pub success_url_template: Option<String>,
    pub cancel_url_template: Option<String>,
    pub portal_return_url_template: Option<String>,
    /// The platform's cut, set by the operator.
    pub platform_fee_bps: u32,
    pub organization_fee_bps: u32,
    pub grace_period_days: i64,
    pub portal: PortalSettingsView,
    pub created_at: Timestamp,
}

impl TenantView {
    pub fn of(t: &Tenant) -> Self {
        Self {
            object: "tenant",
            id: t.id.clone(),
            name: t.name.clone(),
            default_currency: t.default_currency.clone(),
            success_url_template: t.success_url_template.clone(),
            cancel_url_template: t.cancel_url_template.clone(),
            portal_return_url_template: t.portal_return_url_template.clone(),
            platform_fee_bps: t.fees.platform_bps(),
            organization_fee_bps: t.fees.organization_bps(),
            grace_period_days: t.grace_period_days,
            portal: PortalSettingsView::of(&t.portal),
            created_at: t.created_at,
        }
    }
}

/// A new API key: the secret is shown here once; only its hash is kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKeyView {
    pub tenant_id: TenantId,
    pub api_key: String,
    pub api_key_id: ApiKeyId,
    /// On `POST /v1/tenants` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// Always `api_key`.
    pub object: &'static str,
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    /// The secret's last four characters.
    pub last4: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKeyView {
    pub fn of(k: &ApiKey) -> Self {
        Self {
            object: "api_key",
            id: k.id.clone(),
            tenant_id: k.tenant_id.clone(),
            last4: k.last4.clone(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A Stripe event as Tollgate received it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Always `stripe_event`.
    pub object: &'static str,
    pub stripe_event_id: StripeEventId,
    /// Stripe's event type (`checkout.session.completed`, ...).
    #[serde(rename = "type")]
    pub event_type: String,
    pub tenant_id: Option<TenantId>,
    /// `pending`, `processed`, `ignored` or `dead` (a dead letter: replay it).
    pub status: InboxStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When Stripe made the event.
    pub stripe_created_at: Timestamp,
    pub received_at: Timestamp,
    pub next_attempt_at: Timestamp,
    pub processed_at: Option<Timestamp>,
}

impl EventView {
    pub fn of(e: &InboxEvent) -> Self {
        Self {
            object: "stripe_event",
            stripe_event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            tenant_id: e.tenant_id.clone(),
            status: e.status,
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            stripe_created_at: e.event_created,
            received_at: e.received_at,
            next_attempt_at: e.next_attempt_at,
            processed_at: e.processed_at,
        }
    }
}

/// A customer portal session: send the customer to `url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalSessionView {
    /// Always `billing_portal.session`.
    pub object: &'static str,
    pub customer_id: CustomerId,
    pub url: String,
}

/// One answer of a batch of access checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessCheckView {
    pub customer: CustomerId,
    pub product: Option<ProductId>,
    pub feature: Option<String>,
    #[serde(flatten)]
    pub answer: crate::access::AccessAnswer,
}

/// The answers of a batch, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessBatchView {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<AccessCheckView>,
}

/// What the webhook endpoint answers Stripe.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    pub received: bool,
    /// The event was stored already (a repeated delivery).
    pub duplicate: bool,
}
