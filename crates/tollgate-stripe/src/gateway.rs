//! The Stripe calls Tollgate makes. Each create carries an idempotency key derived from
//! Tollgate's own ids, so a retry after a timeout never makes a second object; each call
//! has a timeout; errors are sorted into "Stripe is unavailable" (unreachable, timed out or
//! rate limited: retry later), "Stripe failed" (a 5xx from Stripe: retry later) and "Stripe
//! refused" (a 4xx: retrying the same call will not help).

use std::collections::HashMap;
use std::time::Duration;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionAutomaticTax, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionTaxIdCollection,
    ExpireCheckoutSession, ListLineItemsCheckoutSession, RetrieveCheckoutSession,
};
use stripe_core::customer::CreateCustomer;
use stripe_core::dispute::ListDispute;
use stripe_core::refund::{CreateRefund, CreateRefundReason, ListRefund};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, UpdatePrice,
};
use stripe_product::product::{CreateProduct, UpdateProduct};

/// How long one Stripe call may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// Stripe could not be reached, timed out or rate limited us.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe answered with a server error (its `api_error`).
    #[error("Stripe failed ({status}): {message}")]
    Failed { status: u16, message: String },
    /// Stripe answered with a client error.
    #[error("Stripe refused the request ({status}): {message}")]
    Rejected {
        status: u16,
        code: Option<String>,
        message: String,
    },
}

impl GatewayError {
    /// Worth trying again later with the same idempotency key.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GatewayError::Unavailable(_) | GatewayError::Failed { .. }
        )
    }

    /// Stripe's error code (`resource_missing`, ...), for refusals.
    pub fn code(&self) -> Option<&str> {
        match self {
            GatewayError::Rejected { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl From<StripeError> for GatewayError {
    fn from(e: StripeError) -> Self {
        match e {
            StripeError::Stripe(err, 429) => GatewayError::Unavailable(format!(
                "rate limited: {}",
                err.message.unwrap_or_default()
            )),
            StripeError::Stripe(err, status) if status >= 500 => GatewayError::Failed {
                status,
                message: err.message.unwrap_or_else(|| "no message".into()),
            },
            StripeError::Stripe(err, status) => GatewayError::Rejected {
                status,
                code: err.code.map(|c| c.as_str().to_owned()),
                message: err.message.unwrap_or_else(|| "no message".into()),
            },
            StripeError::Timeout => GatewayError::Unavailable("timed out".into()),
            StripeError::ClientError(m) => GatewayError::Unavailable(m),
            StripeError::JSONDeserialize(m) => GatewayError::Rejected {
                status: 502,
                code: None,
                message: format!("unreadable answer: {m}"),
            },
            StripeError::ConfigError(m) => GatewayError::Rejected {
                status: 500,
                code: None,
                message: m,
            },
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, GatewayError>;

/// A Stripe account to talk to.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) client: Client,
    test_mode: bool,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the secret key: never print it.
        f.write_str("Gateway { .. }")
    }
}

pub(crate) fn key(k: &str) -> Result<RequestStrategy> {
    IdempotencyKey::new(k)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| GatewayError::Rejected {
            status: 400,
            code: None,
            message: format!("bad idempotency key: {e}"),
        })
}

/// One line of a Checkout Session.
#[derive(Debug, Clone)]
pub struct CheckoutLine {
    pub stripe_price_id: String,
    /// `None` for a metered price (usage decides what is billed).
    pub quantity: Option<u64>,
}

/// What Tollgate asks Stripe Checkout for.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub subscription: bool,
    pub lines: Vec<CheckoutLine>,
    pub stripe_customer_id: Option<String>,
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub metadata: HashMap<String, String>,
    pub allow_promotion_codes: bool,
    pub automatic_tax: bool,
    pub tax_id_collection: bool,
    pub trial_days: Option<u32>,
    /// A Stripe promotion code to apply (instead of letting the customer enter one).
    pub promotion_code: Option<String>,
    pub idempotency_key: String,
}

#[derive(Debug, Clone)]
pub struct CreatedSession {
    pub id: String,
    pub url: Option<String>,
    pub expires_at: i64,
}

/// One line of a session as Stripe reports it.
#[derive(Debug, Clone)]
pub struct SessionLine {
    pub stripe_price_id: Option<String>,
    pub quantity: i64,
    /// What the line cost after discounts, tax included.
    pub amount_total: i64,
    pub amount_tax: i64,
}

/// A session's state as Stripe has it now.
#[derive(Debug, Clone)]
pub struct SessionState {
    pub id: String,
    /// `open`, `complete` or `expired`.
    pub status: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    pub payment_intent: Option<String>,
    pub amount_total: Option<i64>,
    pub metadata: HashMap<String, String>,
    /// Every line item, all pages.
    pub lines: Vec<SessionLine>,
    /// `payment` or `subscription`.
    pub mode: String,
    /// The subscription a subscription-mode session started.
    pub subscription: Option<String>,
}

impl SessionState {
    /// Paid for: the only state that completes an order.
    pub fn is_paid(&self) -> bool {
        self.status == "complete"
            && matches!(self.payment_status.as_str(), "paid" | "no_payment_required")
    }
}

#[derive(Debug, Clone)]
pub struct RefundInfo {
    pub id: String,
    pub amount: i64,
    /// `metadata.purchase_id`, on refunds Tollgate made.
    pub purchase_id: Option<String>,
    /// `succeeded`, `pending`, `failed`, `canceled`, ...
    pub status: String,
}

/// A dispute as Stripe has it now.
#[derive(Debug, Clone)]
pub struct DisputeInfo {
    pub id: String,
    /// `warning_needs_response`, `needs_response`, `under_review`, `won`, `lost`, ...
    pub status: String,
}

impl DisputeInfo {
    /// A dispute that is over and left the money with the merchant.
    pub fn settled_for_merchant(&self) -> bool {
        matches!(self.status.as_str(), "won" | "warning_closed")
    }
}

#[derive(Debug, Clone)]
pub struct NewStripePrice<'a> {
    pub stripe_product_id: &'a str,
    pub currency: &'a str,
    pub unit_amount: i64,
    /// `day`, `week`, `month` or `year`, with its count.
    pub recurring: Option<(&'a str, u64)>,
    /// For a metered price: the Stripe billing meter whose usage it bills.
    pub meter: Option<&'a str>,
    pub metadata: HashMap<String, String>,
    pub idempotency_key: String,
}

impl Gateway {
    /// A gateway for one secret key; `api_base` points it elsewhere (the sandbox).
    pub fn new(secret_key: &str, api_base: Option<&str>) -> Result<Self> {
        let mut builder = ClientBuilder::new(secret_key).timeout(TIMEOUT);
        if let Some(base) = api_base {
            builder = builder.url(base);
        }
        let client = builder.build().map_err(GatewayError::from)?;
        Ok(Self {
            client,
            test_mode: secret_key.starts_with("sk_test_") || secret_key.starts_with("rk_test_"),
        })
    }

    /// Whether the key is a test-mode key (test clocks and test cards work only there).
    pub fn is_test_mode(&self) -> bool {
        self.test_mode
    }

    /// Creates a customer; `test_clock` attaches it to a test clock (test mode only).
    pub async fn create_customer(
        &self,
        email: Option<&str>,
        name: Option<&str>,
        metadata: HashMap<String, String>,
        test_clock: Option<&str>,
        idempotency_key: &str,
    ) -> Result<String> {
        let mut req = CreateCustomer::new().metadata(metadata);
        if let Some(clock) = test_clock {
            req = req.test_clock(clock);
        }
        if let Some(e) = email {
            req = req.email(e);
        }
        if let Some(n) = name {
            req = req.name(n);
        }
        let c = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(c.id.to_string())
    }

    pub async fn create_product(
        &self,
        name: &str,
        description: Option<&str>,
        metadata: HashMap<String, String>,
        idempotency_key: &str,
    ) -> Result<String> {
        let mut req = CreateProduct::new(name).metadata(metadata);
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            req = req.description(d);
        }
        let p = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(p.id.to_string())
    }

    pub async fn create_price(&self, p: NewStripePrice<'_>) -> Result<String> {
        // Currency's FromStr never fails: unknown codes become `Unknown` and pass through.
        let currency = p
            .currency
            .parse::<stripe_types::Currency>()
            .unwrap_or(stripe_types::Currency::Unknown(p.currency.to_owned()));
        let mut req = CreatePrice::new(currency)
            .product(p.stripe_product_id)
            .unit_amount(p.unit_amount)
            .metadata(p.metadata);
        if let Some((interval, count)) = p.recurring {
            let interval = match interval {
                "day" => CreatePriceRecurringInterval::Day,
                "week" => CreatePriceRecurringInterval::Week,
                "year" => CreatePriceRecurringInterval::Year,
                _ => CreatePriceRecurringInterval::Month,
            };
            let mut r = CreatePriceRecurring::new(interval);
            r.interval_count = Some(count);
            if let Some(meter) = p.meter {
                r.usage_type = Some(stripe_product::price::CreatePriceRecurringUsageType::Metered);
                r.meter = Some(meter.to_owned());
            }
            req = req.recurring(r);
        }
        let price = req
            .customize()
            .request_strategy(key(&p.idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(price.id.to_string())
    }

    pub async fn create_checkout_session(&self, r: &CheckoutRequest) -> Result<CreatedSession> {
        let lines: Vec<CreateCheckoutSessionLineItems> = r
            .lines
            .iter()
            .map(|l| {
                let mut item = CreateCheckoutSessionLineItems::new();
                item.price = Some(l.stripe_price_id.clone());
                item.quantity = l.quantity;
                item
            })
            .collect();
        let mode = if r.subscription {
            stripe_shared::CheckoutSessionMode::Subscription
        } else {
            stripe_shared::CheckoutSessionMode::Payment
        };
        let mut req = CreateCheckoutSession::new()
            .mode(mode)
            .line_items(lines)
            .success_url(&r.success_url)
            .metadata(r.metadata.clone());
        if let Some(u) = &r.cancel_url {
            req = req.cancel_url(u);
        }
        match (&r.stripe_customer_id, &r.customer_email) {
            (Some(c), _) => req = req.customer(c),
            (None, Some(e)) => req = req.customer_email(e),
            (None, None) => {}
        }
        if let Some(code) = &r.promotion_code {
            req = req.discounts(vec![
                stripe_checkout::checkout_session::CreateCheckoutSessionDiscounts {
                    coupon: None,
                    promotion_code: Some(code.clone()),
                },
            ]);
        } else if r.allow_promotion_codes {
            req = req.allow_promotion_codes(true);
        }
        if r.automatic_tax {
            req = req.automatic_tax(CreateCheckoutSessionAutomaticTax::new(true));
        }
        if r.tax_id_collection {
            req = req.tax_id_collection(CreateCheckoutSessionTaxIdCollection::new(true));
        }
        if r.subscription {
            // The subscription carries the same metadata, so its events (and its invoices')
            // name the tenant, the customer and the order.
            req = req.subscription_data(
                stripe_checkout::checkout_session::CreateCheckoutSessionSubscriptionData {
                    trial_period_days: r.trial_days,
                    metadata: Some(r.metadata.clone()),
                    ..Default::default()
                },
            );
        } else {
            // The payment intent carries the same metadata, so its charge's events name the order.
            let mut pid = CreateCheckoutSessionPaymentIntentData::new();
            pid.metadata = Some(r.metadata.clone());
            req = req.payment_intent_data(pid);
        }
        let s = req
            .customize()
            .request_strategy(key(&r.idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(CreatedSession {
            id: s.id.to_string(),
            url: s.url,
            expires_at: s.expires_at,
        })
    }

    /// Expires an open session so it can no longer be paid. Stripe refuses when the session
    /// is not open any more (paid or expired already); callers read its state after.
    pub async fn expire_session(&self, id: &str) -> Result<()> {
        ExpireCheckoutSession::new(id).send(&self.client).await?;
        Ok(())
    }

    /// The session as Stripe has it now, with every one of its line items.
    pub async fn retrieve_session(&self, id: &str) -> Result<SessionState> {
        let s = RetrieveCheckoutSession::new(id)
            .expand(vec!["line_items".to_owned()])
            .send(&self.client)
            .await?;
        let to_line = |li: stripe_shared::CheckoutSessionItem| SessionLine {
            stripe_price_id: li.price.map(|p| p.id.to_string()),
            quantity: li
                .quantity
                .map_or(0, |q| i64::try_from(q).unwrap_or(i64::MAX)),
            amount_total: li.amount_total,
            amount_tax: li.amount_tax,
        };
        let mut lines = Vec::new();
        let mut more = false;
        let mut last: Option<String> = None;
        if let Some(list) = s.line_items {
            more = list.has_more;
            last = list.data.last().map(|li| li.id.to_string());
            lines.extend(list.data.into_iter().map(to_line));
        }
        // The expansion holds the first page only; a large cart has more.
        while more {
            let mut page = ListLineItemsCheckoutSession::new(id).limit(100);
            if let Some(after) = &last {
                page = page.starting_after(after);
            }
            let list = page.send(&self.client).await?;
            more = list.has_more && !list.data.is_empty();
            last = list.data.last().map(|li| li.id.to_string());
            lines.extend(list.data.into_iter().map(to_line));
        }
        Ok(SessionState {
            id: s.id.to_string(),
            status: s.status.map(|x| x.as_str().to_owned()).unwrap_or_default(),
            payment_status: s.payment_status.as_str().to_owned(),
            payment_intent: s.payment_intent.map(|p| p.id().to_string()),
            amount_total: s.amount_total,
            metadata: s.metadata.unwrap_or_default(),
            lines,
            mode: s.mode.as_str().to_owned(),
            subscription: s.subscription.map(|x| x.id().to_string()),
        })
    }

    /// Every dispute of a payment intent, as Stripe has them now.
    pub async fn list_disputes(&self, payment_intent: &str) -> Result<Vec<DisputeInfo>> {
        let list = ListDispute::new()
            .payment_intent(payment_intent)
            .limit(100)
            .send(&self.client)
            .await?;
        Ok(list
            .data
            .into_iter()
            .map(|d| DisputeInfo {
                id: d.id.to_string(),
                status: d.status.as_str().to_owned(),
            })
            .collect())
    }

    /// Updates a product's name, description and whether it can be bought.
    pub async fn update_product(
        &self,
        id: &str,
        name: &str,
        description: Option<&str>,
        active: bool,
    ) -> Result<()> {
        let mut req = UpdateProduct::new(id).name(name).active(active);
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            req = req.description(d);
        }
        req.send(&self.client).await?;
        Ok(())
    }

    /// Archives or restores a price (Stripe prices cannot change their amount).
    pub async fn set_price_active(&self, id: &str, active: bool) -> Result<()> {
        UpdatePrice::new(id)
            .active(active)
            .send(&self.client)
            .await?;
        Ok(())
    }

    pub async fn create_refund(
        &self,
        payment_intent: &str,
        amount: i64,
        reason: Option<&str>,
        metadata: HashMap<String, String>,
        idempotency_key: &str,
    ) -> Result<RefundInfo> {
        let mut req = CreateRefund::new()
            .payment_intent(payment_intent)
            .amount(amount)
            .metadata(metadata);
        match reason {
            Some("duplicate") => req = req.reason(CreateRefundReason::Duplicate),
            Some("fraudulent") => req = req.reason(CreateRefundReason::Fraudulent),
            Some("requested_by_customer") => {
                req = req.reason(CreateRefundReason::RequestedByCustomer)
            }
            _ => {}
        }
        let r = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(RefundInfo {
            id: r.id.to_string(),
            amount: r.amount,
            purchase_id: None,
            status: r.status.unwrap_or_default(),
        })
    }

    /// Every refund of a payment intent (first 100, which is more than any purchase sees).
    pub async fn list_refunds(&self, payment_intent: &str) -> Result<Vec<RefundInfo>> {
        let list = ListRefund::new()
            .payment_intent(payment_intent)
            .limit(100)
            .send(&self.client)
            .await?;
        Ok(list
            .data
            .into_iter()
            .map(|r| RefundInfo {
                id: r.id.to_string(),
                amount: r.amount,
                purchase_id: r
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get("purchase_id").cloned()),
                status: r.status.unwrap_or_default(),
            })
            .collect())
    }
}
