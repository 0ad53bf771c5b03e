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

use tollgate_domain::status::{CouponDuration, PauseBehavior, SubscriptionStatus};
use tollgate_domain::{
    Amount, Currency, StripeCouponId, StripeCustomerId, StripeInvoiceId, StripeMeterId,
    StripePortalConfigurationId, StripePriceId, StripeProductId, StripePromotionCodeId,
    StripeSubscriptionId, StripeSubscriptionItemId, Timestamp,
};

use crate::gateway::{Gateway, GatewayError, Metadata, Result, key};
use crate::map;

/// Metadata keys Tollgate keeps on a subscription after a downgrade: the price paid for
/// until the period ends, and when that is. Kept in Stripe, so that the downgrade is part
/// of the state every read of the subscription returns.
pub const PREVIOUS_PRICE_KEY: &str = "tg_previous_price";
pub const PREVIOUS_UNTIL_KEY: &str = "tg_previous_until";

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionItemState {
    pub id: StripeSubscriptionItemId,
    pub stripe_price_id: StripePriceId,
    pub quantity: i64,
    pub current_period_start: Timestamp,
    pub current_period_end: Timestamp,
}

/// A subscription's latest invoice, as far as dunning needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceState {
    pub id: StripeInvoiceId,
    /// Finalized and waiting to be paid (Stripe's `open`).
    pub open: bool,
    pub created: Timestamp,
    pub finalized_at: Option<Timestamp>,
}

/// A subscription as Stripe has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub id: StripeSubscriptionId,
    pub customer: StripeCustomerId,
    pub status: SubscriptionStatus,
    pub currency: Currency,
    pub items: Vec<SubscriptionItemState>,
    pub trial_start: Option<Timestamp>,
    pub trial_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<Timestamp>,
    pub canceled_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub pause_behavior: Option<PauseBehavior>,
    pub pause_resumes_at: Option<Timestamp>,
    pub metadata: Metadata,
    pub latest_invoice: Option<InvoiceState>,
}

impl SubscriptionState {
    /// The item that makes the plan (the first).
    pub fn plan_item(&self) -> Option<&SubscriptionItemState> {
        self.items.first()
    }

    /// When the failed payment that made it past due was attempted: the open latest
    /// invoice's finalization, when Stripe first tries to collect it.
    pub fn past_due_since(&self) -> Option<Timestamp> {
        if self.status != SubscriptionStatus::PastDue {
            return None;
        }
        self.latest_invoice
            .as_ref()
            .filter(|i| i.open)
            .map(|i| i.finalized_at.unwrap_or(i.created))
    }

    /// The downgrade recorded in the metadata: the price paid for, and until when.
    pub fn previous(&self) -> Option<(StripePriceId, Option<Timestamp>)> {
        let price = self
            .metadata
            .get(PREVIOUS_PRICE_KEY)
            .filter(|p| !p.is_empty())?;
        let until = self
            .metadata
            .get(PREVIOUS_UNTIL_KEY)
            .and_then(|u| u.parse::<i64>().ok())
            .map(Timestamp::from_secs);
        Some((StripePriceId::from_stripe(price.as_str()), until))
    }
}

fn state_of(s: stripe_shared::Subscription) -> Result<SubscriptionState> {
    let of = format!("subscription {}", s.id);
    let items = s
        .items
        .data
        .into_iter()
        .map(|i| SubscriptionItemState {
            id: StripeSubscriptionItemId::from_stripe(i.id.as_str()),
            stripe_price_id: StripePriceId::from_stripe(i.price.id.as_str()),
            quantity: i
                .quantity
                .map_or(1, |q| i64::try_from(q).unwrap_or(i64::MAX)),
            current_period_start: map::ts(i.current_period_start),
            current_period_end: map::ts(i.current_period_end),
        })
        .collect();
    let latest_invoice = match s.latest_invoice {
        Some(stripe_types::Expandable::Object(inv)) => inv.id.map(|id| InvoiceState {
            id: StripeInvoiceId::from_stripe(id.as_str()),
            open: inv.status.as_ref().map(|x| x.as_str()) == Some("open"),
            created: map::ts(inv.created),
            finalized_at: map::opt_ts(inv.status_transitions.finalized_at),
        }),
        Some(stripe_types::Expandable::Id(id)) => id.map(|id| InvoiceState {
            id: StripeInvoiceId::from_stripe(id.as_str()),
            open: false,
            created: Timestamp::from_secs(0),
            finalized_at: None,
        }),
        None => None,
    };
    let pause_behavior = s
        .pause_collection
        .as_ref()
        .map(|p| map::pause_behavior(&p.behavior, &of))
        .transpose()?;
    Ok(SubscriptionState {
        id: StripeSubscriptionId::from_stripe(s.id.as_str()),
        customer: StripeCustomerId::from_stripe(s.customer.id().as_str()),
        status: map::subscription_status(&s.status, &of)?,
        currency: map::currency(&s.currency, &of)?,
        items,
        trial_start: map::opt_ts(s.trial_start),
        trial_end: map::opt_ts(s.trial_end),
        cancel_at_period_end: s.cancel_at_period_end,
        cancel_at: map::opt_ts(s.cancel_at),
        canceled_at: map::opt_ts(s.canceled_at),
        ended_at: map::opt_ts(s.ended_at),
        pause_behavior,
        pause_resumes_at: s.pause_collection.and_then(|p| p.resumes_at).map(map::ts),
        metadata: s.metadata,
        latest_invoice,
    })
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
        item: StripeSubscriptionItemId,
        price: StripePriceId,
        quantity: Option<u64>,
        prorate_now: bool,
        previous: Option<(StripePriceId, Timestamp)>,
    },
    /// Pause collection.
    Pause {
        behavior: PauseBehavior,
        resumes_at: Option<Timestamp>,
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
    pub switch_to: Vec<(StripeProductId, Vec<StripePriceId>)>,
    pub headline: Option<String>,
    pub metadata: Metadata,
}

/// What a coupon takes off, in Stripe's terms.
#[derive(Debug, Clone)]
pub enum StripeDiscount {
    /// Basis points (2000 = 20%).
    PercentOffBps(i64),
    AmountOff(Amount, Currency),
}

/// A coupon as Stripe takes it.
#[derive(Debug, Clone)]
pub struct NewStripeCoupon {
    pub name: Option<String>,
    pub discount: StripeDiscount,
    pub duration: CouponDuration,
    pub duration_in_months: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub redeem_by: Option<Timestamp>,
    /// The Stripe products it discounts; `None`: any (Stripe's `applies_to[products]`).
    pub applies_to_products: Option<Vec<StripeProductId>>,
    pub metadata: Metadata,
}

impl Gateway {
    /// The subscription as Stripe has it now, with its latest invoice.
    pub async fn retrieve_subscription(
        &self,
        id: &StripeSubscriptionId,
    ) -> Result<SubscriptionState> {
        let s = RetrieveSubscription::new(id.as_str())
            .expand(vec!["latest_invoice".to_owned()])
            .send(&self.client)
            .await?;
        state_of(s)
    }

    /// Makes a change; answers the subscription as it is after it.
    pub async fn update_subscription(
        &self,
        id: &StripeSubscriptionId,
        change: &SubscriptionChange,
        idempotency_key: &str,
    ) -> Result<SubscriptionState> {
        let strategy = key(idempotency_key)?;
        let expand = vec!["latest_invoice".to_owned()];
        let id = id.as_str();
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
                it.id = Some(item.to_string());
                it.price = Some(price.to_string());
                it.quantity = *quantity;
                // Stripe removes a metadata key set to the empty string.
                let metadata: HashMap<String, String> = match previous {
                    Some((from, until)) => [
                        (PREVIOUS_PRICE_KEY.to_owned(), from.to_string()),
                        (PREVIOUS_UNTIL_KEY.to_owned(), until.secs().to_string()),
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
                let behavior = match behavior {
                    PauseBehavior::KeepAsDraft => {
                        UpdateSubscriptionPauseCollectionBehavior::KeepAsDraft
                    }
                    PauseBehavior::MarkUncollectible => {
                        UpdateSubscriptionPauseCollectionBehavior::MarkUncollectible
                    }
                    PauseBehavior::Void => UpdateSubscriptionPauseCollectionBehavior::Void,
                };
                let mut pause = UpdateSubscriptionPauseCollection::new(behavior);
                pause.resumes_at = resumes_at.map(Timestamp::secs);
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
        state_of(s)
    }

    /// Ends a subscription now.
    pub async fn cancel_subscription(
        &self,
        id: &StripeSubscriptionId,
        idempotency_key: &str,
    ) -> Result<SubscriptionState> {
        let s = CancelSubscription::new(id.as_str())
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
        id: &StripeSubscriptionId,
        idempotency_key: &str,
    ) -> Result<SubscriptionState> {
        let s = ResumeSubscription::new(id.as_str())
            .expand(vec!["latest_invoice".to_owned()])
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        state_of(s)
    }

    /// A portal session for a customer; answers its URL.
    pub async fn create_portal_session(
        &self,
        customer: &StripeCustomerId,
        return_url: Option<&str>,
        configuration: &StripePortalConfigurationId,
    ) -> Result<String> {
        let mut req = CreateBillingPortalSession::new()
            .customer(customer.as_str())
            .configuration(configuration.as_str());
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
    ) -> Result<StripePortalConfigurationId> {
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
                        SubscriptionUpdateProductParam::new(
                            prices.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                            product.to_string(),
                        )
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
        Ok(StripePortalConfigurationId::from_stripe(config.id.as_str()))
    }

    pub async fn create_coupon(
        &self,
        c: &NewStripeCoupon,
        idempotency_key: &str,
    ) -> Result<StripeCouponId> {
        let duration = match c.duration {
            CouponDuration::Once => stripe_shared::CouponDuration::Once,
            CouponDuration::Repeating => stripe_shared::CouponDuration::Repeating,
            CouponDuration::Forever => stripe_shared::CouponDuration::Forever,
        };
        let mut req = CreateCoupon::new()
            .duration(duration)
            .metadata(c.metadata.clone());
        match &c.discount {
            StripeDiscount::PercentOffBps(bps) => {
                // Stripe takes a percentage with up to two decimals: basis points over 100
                // are exact in a float of this size.
                req = req.percent_off(*bps as f64 / 100.0);
            }
            StripeDiscount::AmountOff(amount, currency) => {
                req = req
                    .amount_off(amount.get())
                    .currency(map::stripe_currency(currency));
            }
        }
        if let Some(products) = &c.applies_to_products {
            req = req.applies_to(stripe_product::coupon::CreateCouponAppliesTo {
                products: Some(products.iter().map(|p| p.to_string()).collect()),
            });
        }
        if let Some(m) = c.duration_in_months {
            req = req.duration_in_months(m);
        }
        if let Some(m) = c.max_redemptions {
            req = req.max_redemptions(m);
        }
        if let Some(t) = c.redeem_by {
            req = req.redeem_by(t.secs());
        }
        if let Some(n) = &c.name {
            req = req.name(n);
        }
        let coupon = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(StripeCouponId::from_stripe(coupon.id.as_str()))
    }

    pub async fn create_promotion_code(
        &self,
        coupon: &StripeCouponId,
        code: &str,
        max_redemptions: Option<i64>,
        expires_at: Option<Timestamp>,
        metadata: Metadata,
        idempotency_key: &str,
    ) -> Result<StripePromotionCodeId> {
        let mut promotion =
            CreatePromotionCodePromotion::new(CreatePromotionCodePromotionType::Coupon);
        promotion.coupon = Some(coupon.to_string());
        let mut req = CreatePromotionCode::new(promotion)
            .code(code)
            .metadata(metadata);
        if let Some(m) = max_redemptions {
            req = req.max_redemptions(m);
        }
        if let Some(t) = expires_at {
            req = req.expires_at(t.secs());
        }
        let promo = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(StripePromotionCodeId::from_stripe(promo.id.as_str()))
    }

    pub async fn set_promotion_code_active(
        &self,
        id: &StripePromotionCodeId,
        active: bool,
    ) -> Result<()> {
        UpdatePromotionCode::new(id.as_str())
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
    ) -> Result<StripeMeterId> {
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
        Ok(StripeMeterId::from_stripe(meter.id.as_str()))
    }

    /// Reports usage to a meter. `identifier` makes a repeat a no-op: Stripe refuses a
    /// second event with it (within 24 hours), which is reported here as success.
    pub async fn report_meter_event(
        &self,
        event_name: &str,
        stripe_customer: &StripeCustomerId,
        value: i64,
        timestamp: Timestamp,
        identifier: &str,
    ) -> Result<()> {
        let payload: HashMap<String, String> = [
            ("stripe_customer_id".to_owned(), stripe_customer.to_string()),
            ("value".to_owned(), value.to_string()),
        ]
        .into();
        let sent = CreateBillingMeterEvent::new(event_name, payload)
            .identifier(identifier)
            .timestamp(timestamp.secs())
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
