//! The Stripe calls behind subscriptions: reading and changing subscriptions, the customer
//! portal, coupons and promotion codes, and billing meters. As in the rest of the gateway,
//! every create or change carries an idempotency key from Tollgate's ids, and answers come
//! back in Tollgate's own types.

use std::collections::HashMap;

use stripe::{RequestStrategy, StripeRequest};
use stripe_billing::billing_meter::{CreateBillingMeter, CreateBillingMeterDefaultAggregation};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_portal_configuration::{
    CreateBillingPortalConfiguration, CreateBillingPortalConfigurationBusinessProfile,
    CreateBillingPortalConfigurationFeatures,
    CreateBillingPortalConfigurationFeaturesSubscriptionCancel,
    CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdate,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdateDefaultAllowedUpdates,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdateProrationBehavior,
    PaymentMethodUpdateParam, SubscriptionUpdateProductParam,
};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{
    CancelSubscription, ResumeSubscription, RetrieveSubscription, UpdateSubscription,
    UpdateSubscriptionItems, UpdateSubscriptionPauseCollection,
    UpdateSubscriptionPauseCollectionBehavior, UpdateSubscriptionProrationBehavior,
};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_product::coupon::CreateCoupon;
use stripe_product::promotion_code::{
    CreatePromotionCode, CreatePromotionCodePromotion, CreatePromotionCodePromotionType,
    UpdatePromotionCode,
};

use crate::gateway::{Gateway, GatewayError, Result, key};

/// Metadata keys Tollgate keeps on a subscription after a downgrade: the price paid for
/// until the period ends, and when that is. Kept in Stripe, so that the downgrade is part
/// of the state every read of the subscription returns.
pub const PREVIOUS_PRICE_KEY: &str = "tg_previous_price";
pub const PREVIOUS_UNTIL_KEY: &str = "tg_previous_until";

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionItemState {
    pub id: String,
    pub stripe_price_id: String,
    pub quantity: i64,
    pub unit_amount: Option<i64>,
    pub interval: Option<String>,
    pub interval_count: i64,
    pub current_period_start: i64,
    pub current_period_end: i64,
}

/// A subscription's latest invoice, as far as dunning needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceState {
    pub id: String,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    pub status: String,
    pub created: i64,
    pub finalized_at: Option<i64>,
    pub attempt_count: u64,
}

/// A subscription as Stripe has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub currency: String,
    pub items: Vec<SubscriptionItemState>,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub pause_behavior: Option<String>,
    pub pause_resumes_at: Option<i64>,
    pub metadata: HashMap<String, String>,
    pub latest_invoice: Option<InvoiceState>,
}

impl SubscriptionState {
    /// The item that makes the plan (the first).
    pub fn plan_item(&self) -> Option<&SubscriptionItemState> {
        self.items.first()
    }

    /// When the failed payment that made it past due was attempted: the open latest
    /// invoice's finalization, when Stripe first tries to collect it.
    pub fn past_due_since(&self) -> Option<i64> {
        if self.status != "past_due" {
            return None;
        }
        self.latest_invoice
            .as_ref()
            .filter(|i| i.status == "open")
            .map(|i| i.finalized_at.unwrap_or(i.created))
    }
}

fn state_of(s: stripe_shared::Subscription) -> SubscriptionState {
    let items = s
        .items
        .data
        .into_iter()
        .map(|i| SubscriptionItemState {
            id: i.id.to_string(),
            stripe_price_id: i.price.id.to_string(),
            quantity: i
                .quantity
                .map_or(1, |q| i64::try_from(q).unwrap_or(i64::MAX)),
            unit_amount: i.price.unit_amount,
            interval: i
                .price
                .recurring
                .as_ref()
                .map(|r| r.interval.as_str().to_owned()),
            interval_count: i
                .price
                .recurring
                .as_ref()
                .map_or(1, |r| i64::try_from(r.interval_count).unwrap_or(1)),
            current_period_start: i.current_period_start,
            current_period_end: i.current_period_end,
        })
        .collect();
    let latest_invoice = match s.latest_invoice {
        Some(stripe_types::Expandable::Object(inv)) => Some(InvoiceState {
            id: inv.id.map(|i| i.to_string()).unwrap_or_default(),
            status: inv
                .status
                .map(|x| x.as_str().to_owned())
                .unwrap_or_default(),
            created: inv.created,
            finalized_at: inv.status_transitions.finalized_at,
            attempt_count: inv.attempt_count,
        }),
        Some(stripe_types::Expandable::Id(id)) => Some(InvoiceState {
            id: id.map(|i| i.to_string()).unwrap_or_default(),
            status: String::new(),
            created: 0,
            finalized_at: None,
            attempt_count: 0,
        }),
        None => None,
    };
    SubscriptionState {
        id: s.id.to_string(),
        customer: s.customer.id().to_string(),
        status: s.status.as_str().to_owned(),
        currency: s.currency.to_string(),
        items,
        trial_start: s.trial_start,
        trial_end: s.trial_end,
        cancel_at_period_end: s.cancel_at_period_end,
        cancel_at: s.cancel_at,
        canceled_at: s.canceled_at,
        ended_at: s.ended_at,
        pause_behavior: s
            .pause_collection
            .as_ref()
            .map(|p| p.behavior.as_str().to_owned()),
        pause_resumes_at: s.pause_collection.and_then(|p| p.resumes_at),
        metadata: s.metadata,
        latest_invoice,
    }
}

/// A change to make to a subscription.
#[derive(Debug, Clone)]
pub enum SubscriptionChange {
    /// Cancel when the period ends (`true`), or take that back (`false`).
    CancelAtPeriodEnd(bool),
    /// Move the plan item to another price: with the difference prorated and invoiced at
    /// once (`prorate_now`, an upgrade), or with no proration so that the next renewal
    /// bills the new price (a downgrade, a price migration). `previous` records the price
    /// paid for and until when (a downgrade keeps its plan until then); `None` clears it.
    ChangePrice {
        item: String,
        price: String,
        quantity: Option<u64>,
        prorate_now: bool,
        previous: Option<(String, i64)>,
    },
    /// Pause collection (`void`, `keep_as_draft` or `mark_uncollectible`).
    Pause {
        behavior: String,
        resumes_at: Option<i64>,
    },
    /// Collect again.
    Unpause,
}

/// What the customer portal offers (Tollgate's tenant settings, in Stripe's terms).
#[derive(Debug, Clone)]
pub struct PortalConfig {
    pub cancel: bool,
    pub update_payment_method: bool,
    /// Plans a customer may switch between: `(Stripe product, its Stripe prices)`; empty
    /// turns switching off.
    pub switch_to: Vec<(String, Vec<String>)>,
    pub headline: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// A coupon as Stripe takes it.
#[derive(Debug, Clone)]
pub struct NewStripeCoupon {
    pub name: Option<String>,
    pub percent_off_bps: Option<i64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub duration: String,
    pub duration_in_months: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub redeem_by: Option<i64>,
    pub metadata: HashMap<String, String>,
}

impl Gateway {
    /// The subscription as Stripe has it now, with its latest invoice.
    pub async fn retrieve_subscription(&self, id: &str) -> Result<SubscriptionState> {
        let s = RetrieveSubscription::new(id)
            .expand(vec!["latest_invoice".to_owned()])
            .send(&self.client)
            .await?;
        Ok(state_of(s))
    }

    /// Makes a change; answers the subscription as it is after it.
    pub async fn update_subscription(
        &self,
        id: &str,
        change: &SubscriptionChange,
        idempotency_key: &str,
    ) -> Result<SubscriptionState> {
        let strategy = key(idempotency_key)?;
        let expand = vec!["latest_invoice".to_owned()];
        let s = match change {
            SubscriptionChange::CancelAtPeriodEnd(v) => {
                UpdateSubscription::new(id)
                    .cancel_at_period_end(*v)
                    .expand(expand)
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client)
                    .await?
            }
            SubscriptionChange::ChangePrice {
                item,
                price,
                quantity,
                prorate_now,
                previous,
            } => {
                let mut it = UpdateSubscriptionItems::new();
                it.id = Some(item.clone());
                it.price = Some(price.clone());
                it.quantity = *quantity;
                // Stripe removes a metadata key set to the empty string.
                let metadata: HashMap<String, String> = match previous {
                    Some((from, until)) => [
                        (PREVIOUS_PRICE_KEY.to_owned(), from.clone()),
                        (PREVIOUS_UNTIL_KEY.to_owned(), until.to_string()),
                    ]
                    .into(),
                    None => [
                        (PREVIOUS_PRICE_KEY.to_owned(), String::new()),
                        (PREVIOUS_UNTIL_KEY.to_owned(), String::new()),
                    ]
                    .into(),
                };
                let proration = if *prorate_now {
                    UpdateSubscriptionProrationBehavior::AlwaysInvoice
                } else {
                    UpdateSubscriptionProrationBehavior::None
                };
                UpdateSubscription::new(id)
                    .items(vec![it])
                    .proration_behavior(proration)
                    .metadata(metadata)
                    .expand(expand)
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client)
                    .await?
            }
            SubscriptionChange::Pause {
                behavior,
                resumes_at,
            } => {
                let behavior = match behavior.as_str() {
                    "keep_as_draft" => UpdateSubscriptionPauseCollectionBehavior::KeepAsDraft,
                    "mark_uncollectible" => {
                        UpdateSubscriptionPauseCollectionBehavior::MarkUncollectible
                    }
                    _ => UpdateSubscriptionPauseCollectionBehavior::Void,
                };
                let mut pause = UpdateSubscriptionPauseCollection::new(behavior);
                pause.resumes_at = *resumes_at;
                UpdateSubscription::new(id)
                    .pause_collection(pause)
                    .expand(expand)
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client)
                    .await?
            }
            SubscriptionChange::Unpause => {
                // Stripe clears pause_collection when it is sent empty; async-stripe's typed
                // request has no way to send an empty value, so this one is built by hand.
                #[derive(serde::Serialize)]
                struct Unpause {
                    pause_collection: &'static str,
                    expand: [&'static str; 1],
                }
                RequestBuilder::new(StripeMethod::Post, format!("/subscriptions/{id}"))
                    .form(&Unpause {
                        pause_collection: "",
                        expand: ["latest_invoice"],
                    })
                    .customize::<stripe_shared::Subscription>()
                    .request_strategy(strategy)
                    .send(&self.client)
                    .await?
            }
        };
        Ok(state_of(s))
    }

    /// Ends a subscription now.
    pub async fn cancel_subscription(
        &self,
        id: &str,
        idempotency_key: &str,
    ) -> Result<SubscriptionState> {
        let s = CancelSubscription::new(id)
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        // The cancel answer does not expand; the state to store comes from a fresh read.
        let _ = s;
        self.retrieve_subscription(id).await
    }

    /// Resumes a subscription whose status is `paused` (a trial that ended without a card).
    pub async fn resume_subscription(
        &self,
        id: &str,
        idempotency_key: &str,
    ) -> Result<SubscriptionState> {
        let s = ResumeSubscription::new(id)
            .expand(vec!["latest_invoice".to_owned()])
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(state_of(s))
    }

    /// A portal session for a customer; answers its URL.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: Option<&str>,
        configuration: &str,
    ) -> Result<String> {
        let mut req = CreateBillingPortalSession::new()
            .customer(customer)
            .configuration(configuration);
        if let Some(u) = return_url {
            req = req.return_url(u);
        }
        Ok(req.send(&self.client).await?.url)
    }

    /// A portal configuration; answers its id.
    pub async fn create_portal_configuration(
        &self,
        c: &PortalConfig,
        idempotency_key: &str,
    ) -> Result<String> {
        let mut features = CreateBillingPortalConfigurationFeatures::new();
        let mut cancel = CreateBillingPortalConfigurationFeaturesSubscriptionCancel::new(c.cancel);
        cancel.mode =
            Some(CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd);
        features.subscription_cancel = Some(cancel);
        features.payment_method_update =
            Some(PaymentMethodUpdateParam::new(c.update_payment_method));
        let mut update = CreateBillingPortalConfigurationFeaturesSubscriptionUpdate::new(
            !c.switch_to.is_empty(),
        );
        if !c.switch_to.is_empty() {
            update.default_allowed_updates = Some(vec![
                CreateBillingPortalConfigurationFeaturesSubscriptionUpdateDefaultAllowedUpdates::Price,
            ]);
            update.products = Some(
                c.switch_to
                    .iter()
                    .map(|(product, prices)| {
                        SubscriptionUpdateProductParam::new(prices.clone(), product.clone())
                    })
                    .collect(),
            );
            update.proration_behavior = Some(
                CreateBillingPortalConfigurationFeaturesSubscriptionUpdateProrationBehavior::AlwaysInvoice,
            );
        }
        features.subscription_update = Some(update);
        let mut req = CreateBillingPortalConfiguration::new(features).metadata(c.metadata.clone());
        if let Some(h) = &c.headline {
            let mut profile = CreateBillingPortalConfigurationBusinessProfile::new();
            profile.headline = Some(h.clone());
            req = req.business_profile(profile);
        }
        let config = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(config.id.to_string())
    }

    pub async fn create_coupon(
        &self,
        c: &NewStripeCoupon,
        idempotency_key: &str,
    ) -> Result<String> {
        let duration = match c.duration.as_str() {
            "once" => stripe_shared::CouponDuration::Once,
            "repeating" => stripe_shared::CouponDuration::Repeating,
            _ => stripe_shared::CouponDuration::Forever,
        };
        let mut req = CreateCoupon::new()
            .duration(duration)
            .metadata(c.metadata.clone());
        if let Some(bps) = c.percent_off_bps {
            // Stripe takes a percentage with up to two decimals: basis points over 100 are
            // exact in a float of this size.
            req = req.percent_off(bps as f64 / 100.0);
        }
        if let (Some(amount), Some(currency)) = (c.amount_off, &c.currency) {
            let currency = currency
                .parse::<stripe_types::Currency>()
                .unwrap_or(stripe_types::Currency::Unknown(currency.clone()));
            req = req.amount_off(amount).currency(currency);
        }
        if let Some(m) = c.duration_in_months {
            req = req.duration_in_months(m);
        }
        if let Some(m) = c.max_redemptions {
            req = req.max_redemptions(m);
        }
        if let Some(t) = c.redeem_by {
            req = req.redeem_by(t);
        }
        if let Some(n) = &c.name {
            req = req.name(n);
        }
        let coupon = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(coupon.id.to_string())
    }

    pub async fn create_promotion_code(
        &self,
        coupon: &str,
        code: &str,
        max_redemptions: Option<i64>,
        expires_at: Option<i64>,
        metadata: HashMap<String, String>,
        idempotency_key: &str,
    ) -> Result<String> {
        let mut promotion =
            CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
        promotion.coupon = Some(coupon.to_owned());
        let mut req = CreatePromotionCode::new(promotion)
            .code(code)
            .metadata(metadata);
        if let Some(m) = max_redemptions {
            req = req.max_redemptions(m);
        }
        if let Some(t) = expires_at {
            req = req.expires_at(t);
        }
        let promo = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(promo.id.to_string())
    }

    pub async fn set_promotion_code_active(&self, id: &str, active: bool) -> Result<()> {
        UpdatePromotionCode::new(id)
            .active(active)
            .send(&self.client)
            .await?;
        Ok(())
    }

    /// A billing meter summing the `value` of events named `event_name`; answers its id.
    pub async fn create_meter(
        &self,
        display_name: &str,
        event_name: &str,
        idempotency_key: &str,
    ) -> Result<String> {
        let meter = CreateBillingMeter::new(
            CreateBillingMeterDefaultAggregation::new(
                stripe_billing::billing_meter::CreateBillingMeterDefaultAggregationFormula::Sum,
            ),
            display_name,
            event_name,
        )
        .customize()
        .request_strategy(key(idempotency_key)?)
        .send(&self.client)
        .await?;
        Ok(meter.id.to_string())
    }

    /// Reports usage to a meter. `identifier` makes a repeat a no-op: Stripe refuses a
    /// second event with it (within 24 hours), which is reported here as success.
    pub async fn report_meter_event(
        &self,
        event_name: &str,
        stripe_customer: &str,
        value: i64,
        timestamp: i64,
        identifier: &str,
    ) -> Result<()> {
        let payload: HashMap<String, String> = [
            ("stripe_customer_id".to_owned(), stripe_customer.to_owned()),
            ("value".to_owned(), value.to_string()),
        ]
        .into();
        let sent = CreateBillingMeterEvent::new(event_name, payload)
            .identifier(identifier)
            .timestamp(timestamp)
            .customize()
            // The identifier is the idempotency: Stripe drops the repeat itself.
            .request_strategy(RequestStrategy::Once)
            .send(&self.client)
            .await;
        match sent.map_err(GatewayError::from) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("duplicate_meter_event") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
