//! The Stripe calls Tollgate makes. Each create carries an idempotency key derived from
//! Tollgate's own ids, so a retry after a timeout never makes a second object; each call
//! has a timeout; errors are sorted into "Stripe is unavailable" (unreachable, timed out or
//! rate limited: retry later), "Stripe failed" (a 5xx from Stripe: retry later) and "Stripe
//! refused" (a 4xx: retrying the same call will not help).

use std::collections::HashMap;
use std::time::Duration;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionAutomaticTax, CreateCheckoutSessionCustomerUpdate,
    CreateCheckoutSessionCustomerUpdateAddress, CreateCheckoutSessionCustomerUpdateName,
    CreateCheckoutSessionLineItems, CreateCheckoutSessionPaymentIntentData,
    CreateCheckoutSessionTaxIdCollection, ExpireCheckoutSession, ListLineItemsCheckoutSession,
    RetrieveCheckoutSession,
};
use stripe_core::customer::CreateCustomer;
use stripe_core::dispute::ListDispute;
use stripe_core::refund::{CreateRefund, CreateRefundReason, ListRefund};
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, UpdatePrice,
};
use stripe_product::product::{CreateProduct, UpdateProduct};
use tollgate_domain::status::{
    CheckoutMode, DisputeStatus, PaymentStatus, RecurringInterval, RefundReason, RefundStatus,
    SessionStatus,
};
use tollgate_domain::{
    Amount, Currency, Email, PurchaseId, RefundRequestId, StripeCheckoutSessionId,
    StripeCustomerId, StripeDisputeId, StripeMeterId, StripePaymentIntentId, StripePriceId,
    StripeProductId, StripeRefundId, StripeSubscriptionId, StripeTestClockId, Timestamp,
};

use crate::map;

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
    #[error("Stripe refused the request ({status}, {}): {message}", code.as_deref().unwrap_or("no code"))]
    Rejected {
        status: u16,
        code: Option<String>,
        /// Stripe's own words: for logs, never for Tollgate's clients.
        message: String,
    },
    /// Stripe answered, but with something Tollgate cannot read (a field or a value of a
    /// newer API version). The request may well have been carried out.
    #[error("Stripe's answer could not be read: {0}")]
    Undecodable(String),
}

impl GatewayError {
    /// Worth trying again later with the same idempotency key.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GatewayError::Unavailable(_)
                | GatewayError::Failed { .. }
                | GatewayError::Undecodable(_)
        )
    }

    /// Stripe's error code (`resource_missing`, ...), for refusals.
    pub fn code(&self) -> Option<&str> {
        match self {
            GatewayError::Rejected { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Stripe says the object does not exist.
    pub fn is_missing(&self) -> bool {
        self.code() == Some("resource_missing")
    }
}

/// Stripe's id of a request (`req_...`), from the `request_log_url` of its error object
/// (`https://dashboard.stripe.com/test/logs/req_...?t=...`): what Stripe's support asks for.
pub(crate) fn request_id_of(log_url: &str) -> Option<&str> {
    let path = log_url.split(['?', '#']).next()?;
    path.rsplit('/')
        .next()
        .filter(|id| id.starts_with("req_") && id.len() > 4)
}

/// Logs a call Stripe answered with an error, with Stripe's request id. Every failed call
/// passes here, since every error is converted once.
///
/// Successful calls are not logged with their id: Stripe sends it in the `Request-Id`
/// response header, and async-stripe's client returns only the body (its `send_inner`
/// drops the headers), so having it would mean writing the HTTP client by hand.
fn log_failure(err: &stripe_shared::ApiErrors, status: u16) {
    let request_id = err
        .request_log_url
        .as_deref()
        .and_then(request_id_of)
        .unwrap_or("-");
    let code = err.code.as_ref().map(|c| c.as_str()).unwrap_or("-");
    if status >= 500 || status == 429 {
        tracing::warn!(
            stripe_request_id = %request_id,
            status,
            code = %code,
            "Stripe call failed"
        );
    } else {
        tracing::info!(
            stripe_request_id = %request_id,
            status,
            code = %code,
            "Stripe refused a call"
        );
    }
}

impl From<StripeError> for GatewayError {
    fn from(e: StripeError) -> Self {
        if let StripeError::Stripe(err, status) = &e {
            log_failure(err, *status);
        }
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
            StripeError::JSONDeserialize(m) => GatewayError::Undecodable(m),
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
    live_mode: bool,
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

/// Metadata as Stripe takes it.
pub type Metadata = HashMap<String, String>;

/// One line of a Checkout Session.
#[derive(Debug, Clone)]
pub struct CheckoutLine {
    pub stripe_price_id: StripePriceId,
    /// `None` for a metered price (usage decides what is billed).
    pub quantity: Option<u64>,
}

/// Who pays for a Checkout Session.
#[derive(Debug, Clone)]
pub enum Payer {
    /// A Stripe customer Tollgate made.
    Customer(StripeCustomerId),
    /// A guest, by email (Stripe makes or finds no customer object of ours).
    Guest(Email),
}

/// What Tollgate asks Stripe Checkout for.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub mode: CheckoutMode,
    pub lines: Vec<CheckoutLine>,
    pub payer: Payer,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub metadata: Metadata,
    pub allow_promotion_codes: bool,
    pub automatic_tax: bool,
    pub tax_id_collection: bool,
    pub trial_days: Option<u32>,
    /// A Stripe promotion code to apply (instead of letting the customer enter one).
    pub promotion_code: Option<tollgate_domain::StripePromotionCodeId>,
    pub idempotency_key: String,
}

#[derive(Debug, Clone)]
pub struct CreatedSession {
    pub id: StripeCheckoutSessionId,
    pub url: Option<String>,
    pub expires_at: Timestamp,
}

/// One line of a session as Stripe reports it.
#[derive(Debug, Clone)]
pub struct SessionLine {
    pub stripe_price_id: Option<StripePriceId>,
    pub quantity: i64,
    /// What the line cost after discounts, tax included.
    pub amount_total: Amount,
    pub amount_tax: Amount,
}

/// A session's state as Stripe has it now.
#[derive(Debug, Clone)]
pub struct SessionState {
    pub id: StripeCheckoutSessionId,
    pub status: SessionStatus,
    pub payment_status: PaymentStatus,
    pub payment_intent: Option<StripePaymentIntentId>,
    pub amount_total: Option<Amount>,
    pub metadata: Metadata,
    /// Every line item, all pages.
    pub lines: Vec<SessionLine>,
    pub mode: CheckoutMode,
    /// The subscription a subscription-mode session started.
    pub subscription: Option<StripeSubscriptionId>,
}

impl SessionState {
    /// Paid for: the only state that completes an order.
    pub fn is_paid(&self) -> bool {
        self.status == SessionStatus::Complete
            && matches!(
                self.payment_status,
                PaymentStatus::Paid | PaymentStatus::NoPaymentRequired
            )
    }
}

/// A refund as Stripe has it now.
#[derive(Debug, Clone)]
pub struct RefundInfo {
    pub id: StripeRefundId,
    pub amount: Amount,
    /// `metadata.purchase_id`, on refunds Tollgate made.
    pub purchase_id: Option<PurchaseId>,
    /// `metadata.refund_request_id`, on refunds Tollgate made through its API.
    pub request_id: Option<RefundRequestId>,
    pub status: RefundStatus,
}

/// A dispute as Stripe has it now.
#[derive(Debug, Clone)]
pub struct DisputeInfo {
    pub id: StripeDisputeId,
    pub status: DisputeStatus,
    pub amount: Amount,
    pub currency: Currency,
    /// Stripe's code for why the cardholder disputed (`fraudulent`, `product_not_received`, ...).
    pub reason: String,
    pub evidence_due_by: Option<Timestamp>,
    /// Stripe's dispute fee (what its balance transactions took beyond the amount).
    pub fee: Amount,
    pub created: Timestamp,
}

/// Whether a payment can still succeed, as its payment intent says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    Succeeded,
    /// Still under way (an asynchronous method, a step for the payer).
    Pending,
    /// It failed or was canceled: nothing will be paid on it.
    Failed,
}

#[derive(Debug, Clone)]
pub struct NewStripePrice<'a> {
    pub stripe_product_id: &'a StripeProductId,
    pub currency: &'a Currency,
    pub unit_amount: Amount,
    pub recurring: Option<(RecurringInterval, u64)>,
    /// For a metered price: the Stripe billing meter whose usage it bills.
    pub meter: Option<&'a StripeMeterId>,
    pub lookup_key: Option<&'a str>,
    pub metadata: Metadata,
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
            live_mode: secret_key.starts_with("sk_live_") || secret_key.starts_with("rk_live_"),
        })
    }

    /// Whether the key is a test-mode key (test clocks and test cards work only there).
    pub fn is_test_mode(&self) -> bool {
        self.test_mode
    }

    /// Whether the key is a live-mode key: real charges, real money.
    pub fn is_live_mode(&self) -> bool {
        self.live_mode
    }

    /// Creates a customer; `test_clock` attaches it to a test clock (test mode only).
    pub async fn create_customer(
        &self,
        email: Option<&Email>,
        name: Option<&str>,
        metadata: Metadata,
        test_clock: Option<&StripeTestClockId>,
        idempotency_key: &str,
    ) -> Result<StripeCustomerId> {
        let mut req = CreateCustomer::new().metadata(metadata);
        if let Some(clock) = test_clock {
            req = req.test_clock(clock.as_str());
        }
        if let Some(e) = email {
            req = req.email(e.as_str());
        }
        if let Some(n) = name {
            req = req.name(n);
        }
        let c = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(StripeCustomerId::from_stripe(c.id.as_str()))
    }

    pub async fn create_product(
        &self,
        name: &str,
        description: Option<&str>,
        metadata: Metadata,
        idempotency_key: &str,
    ) -> Result<StripeProductId> {
        let mut req = CreateProduct::new(name).metadata(metadata);
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            req = req.description(d);
        }
        let p = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(StripeProductId::from_stripe(p.id.as_str()))
    }

    pub async fn create_price(&self, p: NewStripePrice<'_>) -> Result<StripePriceId> {
        let mut req = CreatePrice::new(map::stripe_currency(p.currency))
            .product(p.stripe_product_id.as_str())
            .unit_amount(p.unit_amount.get())
            .metadata(p.metadata);
        if let Some(k) = p.lookup_key {
            // A lookup key names one price in the whole account; Tollgate's are the
            // tenant's keys, made unique across tenants by the caller.
            req = req.lookup_key(k);
        }
        if let Some((interval, count)) = p.recurring {
            let interval = match interval {
                RecurringInterval::Day => CreatePriceRecurringInterval::Day,
                RecurringInterval::Week => CreatePriceRecurringInterval::Week,
                RecurringInterval::Month => CreatePriceRecurringInterval::Month,
                RecurringInterval::Year => CreatePriceRecurringInterval::Year,
            };
            let mut r = CreatePriceRecurring::new(interval);
            r.interval_count = Some(count);
            if let Some(meter) = p.meter {
                r.usage_type = Some(stripe_product::price::CreatePriceRecurringUsageType::Metered);
                r.meter = Some(meter.to_string());
            }
            req = req.recurring(r);
        }
        let price = req
            .customize()
            .request_strategy(key(&p.idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(StripePriceId::from_stripe(price.id.as_str()))
    }

    pub async fn create_checkout_session(&self, r: &CheckoutRequest) -> Result<CreatedSession> {
        let lines: Vec<CreateCheckoutSessionLineItems> = r
            .lines
            .iter()
            .map(|l| {
                let mut item = CreateCheckoutSessionLineItems::new();
                item.price = Some(l.stripe_price_id.to_string());
                item.quantity = l.quantity;
                item
            })
            .collect();
        let subscription = r.mode == CheckoutMode::Subscription;
        let mode = if subscription {
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
        match &r.payer {
            Payer::Customer(c) => req = req.customer(c.as_str()),
            Payer::Guest(e) => req = req.customer_email(e.as_str()),
        }
        if let Some(code) = &r.promotion_code {
            req = req.discounts(vec![
                stripe_checkout::checkout_session::CreateCheckoutSessionDiscounts {
                    coupon: None,
                    promotion_code: Some(code.to_string()),
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
        if let Payer::Customer(_) = r.payer {
            // With an existing customer, Stripe requires Checkout to save what tax needs
            // onto the customer: "Automatic tax calculation in Checkout requires a valid
            // address on the Customer. Add a valid address to the Customer or set either
            // `customer_update[address]` to 'auto' or `customer_update[shipping]` to
            // 'auto'", and tax ID collection requires `customer_update[name]` = 'auto'
            // (docs.stripe.com/tax/checkout and /tax/checkout/tax-ids). Saved onto the
            // customer, the address also taxes the subscription's renewals.
            let mut update = CreateCheckoutSessionCustomerUpdate::new();
            if r.automatic_tax {
                update.address = Some(CreateCheckoutSessionCustomerUpdateAddress::Auto);
            }
            if r.tax_id_collection {
                update.name = Some(CreateCheckoutSessionCustomerUpdateName::Auto);
            }
            if update.address.is_some() || update.name.is_some() {
                req = req.customer_update(update);
            }
        }
        if subscription {
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
            id: StripeCheckoutSessionId::from_stripe(s.id.as_str()),
            url: s.url,
            expires_at: map::ts(s.expires_at),
        })
    }

    /// Expires an open session so it can no longer be paid. Stripe refuses when the session
    /// is not open any more (paid or expired already); callers read its state after.
    pub async fn expire_session(&self, id: &StripeCheckoutSessionId) -> Result<()> {
        ExpireCheckoutSession::new(id.as_str())
            .send(&self.client)
            .await?;
        Ok(())
    }

    /// The session as Stripe has it now, with every one of its line items.
    pub async fn retrieve_session(&self, id: &StripeCheckoutSessionId) -> Result<SessionState> {
        let of = format!("Checkout Session {id}");
        let s = RetrieveCheckoutSession::new(id.as_str())
            .expand(vec!["line_items".to_owned()])
            .send(&self.client)
            .await?;
        let to_line = |li: stripe_shared::CheckoutSessionItem| -> Result<SessionLine> {
            Ok(SessionLine {
                stripe_price_id: li.price.map(|p| StripePriceId::from_stripe(p.id.as_str())),
                quantity: li
                    .quantity
                    .map_or(0, |q| i64::try_from(q).unwrap_or(i64::MAX)),
                amount_total: map::amount(li.amount_total, "line amount", &of)?,
                amount_tax: map::amount(li.amount_tax, "line tax", &of)?,
            })
        };
        let mut lines = Vec::new();
        let mut more = false;
        let mut last: Option<String> = None;
        if let Some(list) = s.line_items {
            more = list.has_more;
            last = list.data.last().map(|li| li.id.to_string());
            for li in list.data {
                lines.push(to_line(li)?);
            }
        }
        // The expansion holds the first page only; a large cart has more.
        while more {
            let mut page = ListLineItemsCheckoutSession::new(id.as_str()).limit(100);
            if let Some(after) = &last {
                page = page.starting_after(after);
            }
            let list = page.send(&self.client).await?;
            more = list.has_more && !list.data.is_empty();
            last = list.data.last().map(|li| li.id.to_string());
            for li in list.data {
                lines.push(to_line(li)?);
            }
        }
        let status = match &s.status {
            Some(st) => map::session_status(st, &of)?,
            None => return Err(GatewayError::Undecodable(format!("{of} has no status"))),
        };
        Ok(SessionState {
            id: StripeCheckoutSessionId::from_stripe(s.id.as_str()),
            status,
            payment_status: map::payment_status(&s.payment_status, &of)?,
            payment_intent: s
                .payment_intent
                .map(|p| StripePaymentIntentId::from_stripe(p.id().as_str())),
            amount_total: s
                .amount_total
                .map(|a| map::amount(a, "amount_total", &of))
                .transpose()?,
            metadata: s.metadata.unwrap_or_default(),
            lines,
            mode: map::checkout_mode(&s.mode, &of)?,
            subscription: s
                .subscription
                .map(|x| StripeSubscriptionId::from_stripe(x.id().as_str())),
        })
    }

    /// Every dispute of a payment intent, as Stripe has them now (every page).
    pub async fn list_disputes(
        &self,
        payment_intent: &StripePaymentIntentId,
    ) -> Result<Vec<DisputeInfo>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut req = ListDispute::new()
                .payment_intent(payment_intent.as_str())
                .limit(100);
            if let Some(a) = &after {
                req = req.starting_after(a);
            }
            let list = req.send(&self.client).await?;
            after = list.data.last().map(|d| d.id.to_string());
            for d in list.data {
                let of = format!("dispute {}", d.id);
                out.push(DisputeInfo {
                    id: StripeDisputeId::from_stripe(d.id.as_str()),
                    status: map::dispute_status(&d.status, &of)?,
                    amount: map::amount(d.amount, "amount", &of)?,
                    currency: map::currency(&d.currency, &of)?,
                    reason: d.reason.clone(),
                    evidence_due_by: d.evidence_details.due_by.map(map::ts),
                    fee: map::amount(
                        d.balance_transactions.iter().map(|b| b.fee).sum(),
                        "fee",
                        &of,
                    )?,
                    created: map::ts(d.created),
                });
            }
            if !list.has_more || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Whether a payment succeeded, is under way, or failed.
    pub async fn payment_outcome(&self, id: &StripePaymentIntentId) -> Result<PaymentOutcome> {
        let pi = stripe_core::payment_intent::RetrievePaymentIntent::new(id.as_str())
            .send(&self.client)
            .await?;
        use stripe_shared::PaymentIntentStatus as S;
        Ok(match pi.status {
            S::Succeeded => PaymentOutcome::Succeeded,
            S::Canceled | S::RequiresPaymentMethod => PaymentOutcome::Failed,
            S::Processing | S::RequiresAction | S::RequiresCapture | S::RequiresConfirmation => {
                PaymentOutcome::Pending
            }
            other => {
                return Err(GatewayError::Undecodable(format!(
                    "payment intent {id} has status '{}' that Tollgate does not know",
                    other.as_str()
                )));
            }
        })
    }

    /// Updates a product's name, description and whether it can be bought.
    pub async fn update_product(
        &self,
        id: &StripeProductId,
        name: &str,
        description: Option<&str>,
        active: bool,
    ) -> Result<()> {
        let mut req = UpdateProduct::new(id.as_str()).name(name).active(active);
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            req = req.description(d);
        }
        req.send(&self.client).await?;
        Ok(())
    }

    /// Archives or restores a price (Stripe prices cannot change their amount), and moves
    /// its lookup key (`Some("")` removes it).
    pub async fn update_price(
        &self,
        id: &StripePriceId,
        active: bool,
        lookup_key: Option<&str>,
    ) -> Result<()> {
        let mut req = UpdatePrice::new(id.as_str()).active(active);
        if let Some(k) = lookup_key {
            req = req.lookup_key(k);
            if !k.is_empty() {
                // Stripe: "If true, will atomically remove the lookup key from the existing
                // price, and assign it to this price."
                req = req.transfer_lookup_key(true);
            }
        }
        req.send(&self.client).await?;
        Ok(())
    }

    pub async fn create_refund(
        &self,
        payment_intent: &StripePaymentIntentId,
        amount: Amount,
        reason: Option<RefundReason>,
        metadata: Metadata,
        idempotency_key: &str,
    ) -> Result<RefundInfo> {
        let mut req = CreateRefund::new()
            .payment_intent(payment_intent.as_str())
            .amount(amount.get())
            .metadata(metadata);
        match reason {
            Some(RefundReason::Duplicate | RefundReason::DuplicatePurchase) => {
                req = req.reason(CreateRefundReason::Duplicate)
            }
            Some(RefundReason::Fraudulent) => req = req.reason(CreateRefundReason::Fraudulent),
            Some(RefundReason::RequestedByCustomer) => {
                req = req.reason(CreateRefundReason::RequestedByCustomer)
            }
            Some(RefundReason::RefundedInStripe | RefundReason::DisputeLost) | None => {}
        }
        let r = req
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        refund_info(r)
    }

    /// Every refund of a payment intent, every page.
    pub async fn list_refunds(
        &self,
        payment_intent: &StripePaymentIntentId,
    ) -> Result<Vec<RefundInfo>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut req = ListRefund::new()
                .payment_intent(payment_intent.as_str())
                .limit(100);
            if let Some(a) = &after {
                req = req.starting_after(a);
            }
            let list = req.send(&self.client).await?;
            after = list.data.last().map(|r| r.id.to_string());
            for r in list.data {
                out.push(refund_info(r)?);
            }
            if !list.has_more || after.is_none() {
                return Ok(out);
            }
        }
    }
}

fn refund_info(r: stripe_shared::Refund) -> Result<RefundInfo> {
    let of = format!("refund {}", r.id);
    Ok(RefundInfo {
        id: StripeRefundId::from_stripe(r.id.as_str()),
        amount: map::amount(r.amount, "amount", &of)?,
        purchase_id: r
            .metadata
            .as_ref()
            .and_then(|m| m.get("purchase_id"))
            .and_then(|p| PurchaseId::parse(p).ok()),
        request_id: r
            .metadata
            .as_ref()
            .and_then(|m| m.get("refund_request_id"))
            .and_then(|p| RefundRequestId::parse(p).ok()),
        status: map::refund_status(r.status.as_deref(), &of)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_is_read_from_the_request_log_url() {
        assert_eq!(
            request_id_of("https://dashboard.stripe.com/test/logs/req_Ab12Cd?t=1700000000"),
            Some("req_Ab12Cd")
        );
        assert_eq!(
            request_id_of("https://dashboard.stripe.com/logs/req_X9"),
            Some("req_X9")
        );
        assert_eq!(request_id_of("https://dashboard.stripe.com/logs/"), None);
        assert_eq!(request_id_of("not a url"), None);
    }
}
