//! `POST /v1/checkout_sessions`: the validation pipeline, a pending order with its items
//! and bookings, then the Stripe Checkout Session. Each step is a function of its own;
//! [`create_checkout`] reads as the list of them.

use serde::Deserialize;
use tollgate_domain::status::CheckoutMode;
use tollgate_domain::{
    Amount, Currency, CustomerId, Email, OrderId, ProductId, StripeCheckoutSessionId,
    StripePromotionCodeId, Timestamp,
};
use tollgate_store::{Customer, NewOrder, NewOrderItem, Order, Price, Product, StoreError, Tenant};
use tollgate_stripe::{CheckoutLine, CheckoutRequest, Payer};
use utoipa::ToSchema;

use super::stripe_objects::{ensure_stripe_customer, ensure_stripe_price};
use super::{PriceRef, coupons, customers, metadata, validate};
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// One requested line of a checkout.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CartItem {
    #[schema(value_type = ProductId)]
    pub product: String,
    /// A price id or lookup key (default: the product's first price).
    pub price: Option<String>,
    /// Seats of an event or a subscription (default 1).
    pub quantity: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutInput {
    /// The customer who pays (a subscription needs one).
    #[schema(value_type = Option<CustomerId>)]
    pub customer: Option<String>,
    /// A guest's email, instead of `customer` (one-time items only).
    pub customer_email: Option<String>,
    #[serde(default)]
    pub items: Vec<CartItem>,
    /// A single item, instead of `items`.
    #[schema(value_type = Option<ProductId>)]
    pub product: Option<String>,
    /// With `product`, or alone: a price id or lookup key.
    pub price: Option<String>,
    pub quantity: Option<i64>,
    /// Default: the tenant's template. `{CHECKOUT_SESSION_ID}` passes through to Stripe.
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    /// Not taken: codes typed on Stripe's page are account-wide in Stripe, so they would
    /// work across tenants. Collect the code on your page and pass `promotion_code`.
    #[serde(default)]
    pub allow_promotion_codes: bool,
    #[serde(default)]
    pub automatic_tax: bool,
    #[serde(default)]
    pub tax_id_collection: bool,
    /// One of the tenant's promotion codes (its code, or its id) to apply.
    pub promotion_code: Option<String>,
    /// Days of free trial for a subscription (default: the price's own trial days).
    pub trial_period_days: Option<i64>,
}

/// What a created checkout answers.
#[derive(Debug, Clone)]
pub struct CheckoutOutput {
    pub order_id: OrderId,
    pub stripe_checkout_session_id: StripeCheckoutSessionId,
    pub url: Option<String>,
    pub expires_at: Timestamp,
}

/// Seats one order may book of an event, and seats of a subscription.
const MAX_QUANTITY: i64 = 100;
/// Items one cart may hold (Stripe Checkout takes at most 100 line items).
const MAX_ITEMS: usize = 100;

/// A line of the cart, checked: the product is for sale and the price is its own.
struct Line {
    product: Product,
    price: Price,
    quantity: i64,
}

/// The cart, checked as a whole.
struct Cart {
    lines: Vec<Line>,
    mode: CheckoutMode,
    currency: Currency,
    trial_days: Option<i64>,
}

/// Who pays.
enum Buyer {
    Customer(Customer),
    Guest(Email),
}

impl Buyer {
    fn customer(&self) -> Option<&Customer> {
        match self {
            Buyer::Customer(c) => Some(c),
            Buyer::Guest(_) => None,
        }
    }
}

/// The validation pipeline, then a pending order, then the Stripe session. If Stripe
/// fails, the order is marked failed and the caller gets a 502 or 503.
pub async fn create_checkout(
    state: &AppState,
    tenant: &Tenant,
    input: CheckoutInput,
) -> Result<CheckoutOutput> {
    let items = requested_items(state, tenant, &input).await?;
    let cart = check_cart(state, tenant, &items, input.trial_period_days).await?;
    let buyer = buyer(state, tenant, &input, cart.mode).await?;
    if cart.mode == CheckoutMode::Subscription {
        one_subscription_per_plan(state, tenant, &buyer, &cart).await?;
    }
    let promotion_code = promotion_code(state, tenant, &input).await?;
    not_owned_already(state, tenant, &buyer, &cart).await?;
    seats_left(state, tenant, &cart).await?;
    let (success_url, cancel_url) = redirect_urls(tenant, &input)?;
    if state.checkout_limiter.check_key(&tenant.id).is_err() {
        return Err(Error::new(
            Code::RateLimited,
            "Too many checkout sessions for this tenant; slow down.",
        ));
    }
    let (payer, lines) = in_stripe(state, tenant, &buyer, &cart).await?;
    let order = place_order(state, tenant, &buyer, &cart).await?;
    let request = CheckoutRequest {
        mode: cart.mode,
        lines,
        payer,
        success_url: fill_template(&success_url, &order.id),
        cancel_url: cancel_url.map(|c| fill_template(&c, &order.id)),
        metadata: metadata(&[
            ("tenant_id", tenant.id.as_str()),
            ("order_id", order.id.as_str()),
            (
                "customer_id",
                buyer.customer().map(|c| c.id.as_str()).unwrap_or(""),
            ),
        ]),
        allow_promotion_codes: false,
        automatic_tax: input.automatic_tax,
        tax_id_collection: input.tax_id_collection,
        trial_days: cart.trial_days.and_then(|d| u32::try_from(d).ok()),
        promotion_code,
        idempotency_key: format!("tg-checkout-{}", order.id),
    };
    open_session(state, tenant, &order, &request).await
}

/// The items asked for: `items`, or one `product` (with `price`), or a `price` alone.
async fn requested_items(
    state: &AppState,
    tenant: &Tenant,
    input: &CheckoutInput,
) -> Result<Vec<CartItem>> {
    let mut items = input.items.clone();
    if let Some(product) = &input.product {
        if !items.is_empty() {
            return Err(Error::invalid(
                "product",
                Code::ParameterConflict,
                "Pass either items or product, not both.",
            ));
        }
        items.push(CartItem {
            product: product.clone(),
            price: input.price.clone(),
            quantity: input.quantity,
        });
    } else if let Some(price) = input.price.as_ref().filter(|_| items.is_empty()) {
        // A price alone (its id or lookup key) names its product.
        let reference = PriceRef::parse("price", price)?;
        let product = super::find_price(state, &tenant.id, &reference, "price")
            .await?
            .product_id;
        items.push(CartItem {
            product: product.to_string(),
            price: Some(price.clone()),
            quantity: input.quantity,
        });
    } else if input.quantity.is_some() {
        return Err(Error::invalid(
            "quantity",
            Code::ParameterConflict,
            "quantity goes with product or price; in a cart, each item has its own.",
        ));
    }
    if items.is_empty() {
        return Err(Error::invalid(
            "items",
            Code::CartEmpty,
            "The cart is empty: pass at least one item.",
        ));
    }
    if items.len() > MAX_ITEMS {
        return Err(Error::invalid(
            "items",
            Code::TooManyItems,
            format!("A cart holds at most {MAX_ITEMS} items."),
        ));
    }
    Ok(items)
}

/// Every item's product is for sale and priced; the cart is one currency, one mode, at
/// most one plan, and within what Stripe charges in one payment.
async fn check_cart(
    state: &AppState,
    tenant: &Tenant,
    items: &[CartItem],
    trial_period_days: Option<i64>,
) -> Result<Cart> {
    let mut lines: Vec<Line> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let line = check_line(state, tenant, i, item).await?;
        let param = |f: &str| format!("items[{i}][{f}]");
        if lines.iter().any(|l| l.product.id == line.product.id) {
            return Err(Error::invalid(
                &param("product"),
                Code::DuplicateItem,
                "A product may appear once in a cart; use quantity.",
            ));
        }
        if let Some(first) = lines.first() {
            if first.price.currency != line.price.currency {
                return Err(Error::invalid(
                    &param("price"),
                    Code::CurrencyMismatch,
                    "Every item of a cart must be in the same currency.",
                ));
            }
            if first.price.is_recurring() != line.price.is_recurring() {
                return Err(Error::invalid(
                    &param("price"),
                    Code::MixedCart,
                    "A cart is either one-time purchases or one subscription, not both.",
                ));
            }
        }
        lines.push(line);
    }
    let first = lines.first().ok_or_else(|| {
        Error::invalid(
            "items",
            Code::CartEmpty,
            "The cart is empty: pass at least one item.",
        )
    })?;
    let mode = if first.price.is_recurring() {
        CheckoutMode::Subscription
    } else {
        CheckoutMode::Payment
    };
    let currency = first.price.currency.clone();
    if mode == CheckoutMode::Subscription && lines.len() > 1 {
        return Err(Error::invalid(
            "items",
            Code::OnePlanPerCheckout,
            "A subscription checkout takes one plan.",
        ));
    }
    let trial_days = match (mode, trial_period_days) {
        (CheckoutMode::Payment, Some(_)) => {
            return Err(Error::invalid(
                "trial_period_days",
                Code::ParameterConflict,
                "trial_period_days applies to subscriptions only.",
            ));
        }
        (CheckoutMode::Subscription, Some(d))
            if !(1..=super::catalog::MAX_TRIAL_DAYS).contains(&d) =>
        {
            return Err(Error::param(
                "trial_period_days",
                "trial_period_days must be between 1 and 730.",
            ));
        }
        (CheckoutMode::Subscription, days) => {
            days.or(first.price.recurring.as_ref().and_then(|r| r.trial_days))
        }
        (CheckoutMode::Payment, None) => None,
    };
    // What is due now must be an amount Stripe charges in one payment.
    let mut total = Amount::ZERO;
    for l in &lines {
        if l.price.is_metered() {
            continue;
        }
        total = l
            .price
            .unit_amount
            .checked_mul(l.quantity)
            .and_then(|line| total.checked_add(line))
            .filter(|t| *t <= Amount::STRIPE_MAX)
            .ok_or_else(|| {
                Error::invalid(
                    "items",
                    Code::AmountTooLarge,
                    format!(
                        "The cart comes to more than Stripe charges in one payment ({} minor units).",
                        Amount::STRIPE_MAX
                    ),
                )
            })?;
    }
    Ok(Cart {
        lines,
        mode,
        currency,
        trial_days,
    })
}

/// One item: its product exists and is for sale, its price is the product's and active,
/// not free, and the quantity fits the product.
async fn check_line(state: &AppState, tenant: &Tenant, i: usize, item: &CartItem) -> Result<Line> {
    let t = &tenant.id;
    let param = |f: &str| format!("items[{i}][{f}]");
    let not_for_sale = || {
        Error::new(
            Code::ProductNotFound,
            format!("No such product, or it is not for sale: '{}'", item.product),
        )
        .with_param(&param("product"))
    };
    let product_id =
        ProductId::parse(&item.product).map_err(|e| Error::bad_id(&param("product"), e))?;
    let product = match state.store.product(t, &product_id).await {
        Ok(p) if p.is_sellable() => p,
        Ok(_) | Err(StoreError::NotFound) => return Err(not_for_sale()),
        Err(e) => return Err(e.into()),
    };
    let price = match &item.price {
        Some(reference) => {
            let reference = PriceRef::parse(&param("price"), reference)?;
            let missing = || {
                Error::new(
                    Code::PriceNotFound,
                    format!("No such price for this product: '{}'", reference.as_str()),
                )
                .with_param(&param("price"))
            };
            match super::find_price(state, t, &reference, &param("price")).await {
                Ok(p) if p.product_id == product.id && p.active => p,
                Ok(_) => return Err(missing()),
                Err(e) if e.is_not_found() => return Err(missing()),
                Err(e) => return Err(e),
            }
        }
        None => state
            .store
            .prices_for_product(t, &product.id)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::new(Code::PriceNotFound, "This product has no price.")
                    .with_param(&param("product"))
            })?,
    };
    if price.unit_amount.is_zero() {
        return Err(Error::invalid(
            &param("price"),
            Code::FreeProduct,
            "Free products cannot be checked out.",
        ));
    }
    if price.is_metered() && item.quantity.is_some() {
        return Err(Error::invalid(
            &param("quantity"),
            Code::InvalidQuantity,
            "A metered price takes no quantity: reported usage decides what is billed.",
        ));
    }
    let quantity = item.quantity.unwrap_or(1);
    // Event seats and subscription seats come in numbers; anything else is owned once.
    let max = if !product.kind.owned_once() || price.is_recurring() {
        MAX_QUANTITY
    } else {
        1
    };
    if !(1..=max).contains(&quantity) {
        return Err(Error::invalid(
            &param("quantity"),
            Code::InvalidQuantity,
            format!("quantity must be between 1 and {max} for this product."),
        ));
    }
    Ok(Line {
        product,
        price,
        quantity,
    })
}

/// Who pays: a known customer, or a guest email. A subscription belongs to a customer.
async fn buyer(
    state: &AppState,
    tenant: &Tenant,
    input: &CheckoutInput,
    mode: CheckoutMode,
) -> Result<Buyer> {
    let buyer = match (&input.customer, &input.customer_email) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "customer_email",
                Code::ParameterConflict,
                "Pass customer or customer_email, not both.",
            ));
        }
        (Some(id), None) => {
            let id = CustomerId::parse(id).map_err(|e| Error::bad_id("customer", e))?;
            Buyer::Customer(customers::find(state, tenant, &id, Some("customer")).await?)
        }
        (None, Some(email)) => Buyer::Guest(customers::email("customer_email", email)?),
        (None, None) => {
            return Err(Error::invalid(
                "customer",
                Code::CustomerRequired,
                "Pass a customer, or a customer_email for a guest checkout.",
            ));
        }
    };
    if mode == CheckoutMode::Subscription && buyer.customer().is_none() {
        return Err(Error::invalid(
            "customer",
            Code::CustomerRequired,
            "A subscription belongs to a customer: pass customer (guests buy one-time items only).",
        ));
    }
    Ok(buyer)
}

/// Two payable checkouts of one plan would make two subscriptions: the newest checkout
/// wins. Each older one is expired in Stripe and then settled from Stripe's state, so one
/// paid in the meantime completes and is caught by the check that follows.
async fn one_subscription_per_plan(
    state: &AppState,
    tenant: &Tenant,
    buyer: &Buyer,
    cart: &Cart,
) -> Result<()> {
    let (Some(customer), Some(line)) = (buyer.customer(), cart.lines.first()) else {
        return Ok(());
    };
    let t = &tenant.id;
    let plan = &line.product;
    for open in state
        .store
        .open_subscription_orders(t, &customer.id, &plan.id)
        .await?
    {
        let Some(session) = &open.stripe_checkout_session_id else {
            continue;
        };
        if let Err(e) = state.stripe.expire_session(session).await {
            tracing::info!(error = %e, session = %session, "an older subscription checkout could not be expired; reading its state");
        }
        super::completion::complete_from_stripe(state, tenant, session, &[]).await?;
    }
    if let Some(live) = state
        .store
        .live_subscription_for_product(t, &customer.id, &plan.id)
        .await?
        .first()
    {
        return Err(Error::conflict(
            Code::AlreadySubscribed,
            format!(
                "The customer has a {} subscription to '{}' ({}); change it instead.",
                live.status, plan.id, live.id
            ),
        )
        .with_param("items"));
    }
    Ok(())
}

/// The tenant's promotion code to apply, if one was given. Codes typed on Stripe's page
/// are not offered: Stripe's codes are account-wide, so a code of one tenant would
/// discount another's products.
async fn promotion_code(
    state: &AppState,
    tenant: &Tenant,
    input: &CheckoutInput,
) -> Result<Option<StripePromotionCodeId>> {
    if input.allow_promotion_codes {
        return Err(Error::invalid(
            "allow_promotion_codes",
            Code::ParameterNotAllowed,
            "Codes typed on Stripe's page are account-wide in Stripe and would work across tenants: collect the code on your own page and pass promotion_code.",
        ));
    }
    match &input.promotion_code {
        None => Ok(None),
        Some(code) => Ok(Some(coupons::redeemable_code(state, tenant, code).await?)),
    }
}

/// A customer may own each product but event tickets once.
async fn not_owned_already(
    state: &AppState,
    tenant: &Tenant,
    buyer: &Buyer,
    cart: &Cart,
) -> Result<()> {
    let Some(customer) = buyer.customer() else {
        return Ok(());
    };
    for line in &cart.lines {
        if line.product.kind.owned_once()
            && state
                .store
                .has_active_purchase(&tenant.id, &customer.id, &line.product.id)
                .await?
        {
            return Err(Error::conflict(
                Code::AlreadyPurchased,
                format!("The customer already owns '{}'.", line.product.id),
            )
            .with_param("items"));
        }
    }
    Ok(())
}

/// Events have seats left for what is asked (checked again, under lock, when the order
/// is written).
async fn seats_left(state: &AppState, tenant: &Tenant, cart: &Cart) -> Result<()> {
    for line in &cart.lines {
        if let Some(capacity) = line.product.capacity
            && state
                .store
                .seats_taken(&tenant.id, &line.product.id)
                .await?
                + line.quantity
                > capacity
        {
            return Err(Error::conflict(
                Code::SoldOut,
                format!("'{}' has no seats left.", line.product.id),
            )
            .with_param("items"));
        }
    }
    Ok(())
}

/// Where Stripe sends the payer back: the request's URLs or the tenant's templates.
fn redirect_urls(tenant: &Tenant, input: &CheckoutInput) -> Result<(String, Option<String>)> {
    let success = input
        .success_url
        .clone()
        .or_else(|| tenant.success_url_template.clone())
        .ok_or_else(|| {
            Error::missing(
                "success_url",
                "Pass success_url, or set the tenant's success URL template.",
            )
        })?;
    validate::url("success_url", &success)?;
    let cancel = input
        .cancel_url
        .clone()
        .or_else(|| tenant.cancel_url_template.clone());
    if let Some(c) = &cancel {
        validate::url("cancel_url", c)?;
    }
    Ok((success, cancel))
}

fn fill_template(template: &str, order: &OrderId) -> String {
    template.replace("{ORDER_ID}", order.as_str())
}

/// The Stripe objects the session refers to, created once: who pays, and each line's
/// Stripe price.
async fn in_stripe(
    state: &AppState,
    tenant: &Tenant,
    buyer: &Buyer,
    cart: &Cart,
) -> Result<(Payer, Vec<CheckoutLine>)> {
    let payer = match buyer {
        Buyer::Customer(c) => {
            let c = ensure_stripe_customer(state, &tenant.id, c.clone(), None).await?;
            Payer::Customer(c.stripe_customer_id.ok_or_else(Error::internal)?)
        }
        Buyer::Guest(e) => Payer::Guest(e.clone()),
    };
    let mut lines = Vec::with_capacity(cart.lines.len());
    for l in &cart.lines {
        let price = ensure_stripe_price(state, &tenant.id, &l.product, l.price.clone()).await?;
        lines.push(CheckoutLine {
            stripe_price_id: price.stripe_price_id.ok_or_else(Error::internal)?,
            quantity: (!l.price.is_metered()).then(|| u64::try_from(l.quantity).unwrap_or(1)),
        });
    }
    Ok((payer, lines))
}

/// The pending order with its items and bookings, written whole.
async fn place_order(
    state: &AppState,
    tenant: &Tenant,
    buyer: &Buyer,
    cart: &Cart,
) -> Result<Order> {
    let (customer_id, email) = match buyer {
        Buyer::Customer(c) => (Some(c.id.clone()), c.email.clone()),
        Buyer::Guest(e) => (None, Some(e.clone())),
    };
    Ok(state
        .store
        .create_order(
            &tenant.id,
            &NewOrder {
                customer_id,
                email,
                currency: cart.currency.clone(),
                items: cart
                    .lines
                    .iter()
                    .map(|l| NewOrderItem {
                        product_id: l.product.id.clone(),
                        price_id: l.price.id.clone(),
                        title: l.product.title.clone(),
                        quantity: l.quantity,
                        // Usage is billed later: nothing of a metered price is due now.
                        unit_amount: if l.price.is_metered() {
                            Amount::ZERO
                        } else {
                            l.price.unit_amount
                        },
                        event_capacity: if l.product.kind.has_capacity() {
                            l.product.capacity
                        } else {
                            None
                        },
                    })
                    .collect(),
                fees: tenant.fees,
                mode: cart.mode,
            },
        )
        .await?)
}

/// Opens the Stripe session for the order; if Stripe fails, the order is failed.
async fn open_session(
    state: &AppState,
    tenant: &Tenant,
    order: &Order,
    request: &CheckoutRequest,
) -> Result<CheckoutOutput> {
    let t = &tenant.id;
    let session = match state.stripe.create_checkout_session(request).await {
        Ok(s) => s,
        Err(e) => {
            let e = Error::from(e);
            // What the caller is told, not what went on inside.
            if let Err(close) = state
                .store
                .close_order(
                    t,
                    &order.id,
                    tollgate_domain::status::OrderStatus::Failed,
                    Some(&e.message),
                )
                .await
            {
                tracing::error!(error = %close, order = %order.id, "marking a failed order failed");
            }
            return Err(e);
        }
    };
    state
        .store
        .attach_checkout_session(
            t,
            &order.id,
            &session.id,
            session.url.as_deref(),
            Some(session.expires_at),
        )
        .await?;
    tracing::info!(tenant = %t, order = %order.id, session = %session.id, amount = %order.amount_total, currency = %order.currency, "checkout session created");
    Ok(CheckoutOutput {
        order_id: order.id.clone(),
        stripe_checkout_session_id: session.id,
        url: session.url,
        expires_at: session.expires_at,
    })
}
