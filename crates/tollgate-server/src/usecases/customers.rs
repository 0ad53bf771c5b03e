//! Customers: get-or-create by the tenant's own user id, with exactly one Stripe customer.

use serde::Deserialize;
use tollgate_domain::{CustomerId, Email, StripeTestClockId};
use tollgate_store::{Customer, StoreError, Tenant};
use utoipa::ToSchema;

use super::stripe_objects::ensure_stripe_customer;
use super::validate;
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// A customer as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    /// The tenant's own id for the person (1 to 255 visible characters).
    pub external_user_id: String,
    pub email: Option<String>,
    /// Up to 256 characters.
    pub name: Option<String>,
    /// Test mode only: create the Stripe customer on this Stripe test clock (`clock_...`).
    pub test_clock: Option<String>,
}

/// Parses an email from a request.
pub fn email(param: &str, value: &str) -> Result<Email> {
    Email::parse(value).map_err(|_| {
        Error::invalid(
            param,
            Code::InvalidEmail,
            format!("{param} is not a valid email address."),
        )
    })
}

/// The customer for the tenant's user, created with its Stripe customer if there is none;
/// answers whether it was created.
pub async fn get_or_create(
    state: &AppState,
    tenant: &Tenant,
    input: CustomerInput,
) -> Result<(Customer, bool)> {
    let external = input.external_user_id.trim();
    validate::token("external_user_id", external, 255)?;
    let email = input
        .email
        .as_deref()
        .map(|e| email("email", e))
        .transpose()?;
    let name = validate::opt_text("name", input.name.as_deref(), 256)?;
    let clock = input
        .test_clock
        .as_deref()
        .map(|c| StripeTestClockId::parse(c).map_err(|e| Error::bad_id("test_clock", e)))
        .transpose()?;
    let (customer, created) = state
        .store
        .get_or_create_customer(&tenant.id, external, email.as_ref(), name.as_deref())
        .await?;
    let customer = ensure_stripe_customer(state, &tenant.id, customer, clock.as_ref()).await?;
    Ok((customer, created))
}

/// What linking guest purchases asks for.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestClaimInput {
    /// An email address the tenant has verified belongs to the customer.
    pub email: String,
}

/// Links the tenant's guest purchases made with an email address the tenant has verified
/// to be the customer's: the purchases (with their orders and bookings) become the
/// customer's, and access follows. A guest purchase of a product the customer owns
/// already stays a guest's. Answers the purchases linked.
pub async fn claim_guest_purchases(
    state: &AppState,
    tenant: &Tenant,
    id: &CustomerId,
    input: GuestClaimInput,
) -> Result<Vec<tollgate_store::Purchase>> {
    let customer = find(state, tenant, id, None).await?;
    let email = email("email", &input.email)?;
    let (linked, changes) = state
        .store
        .link_guest_purchases(&tenant.id, &customer.id, &email)
        .await?;
    state.apply(changes).await;
    if !linked.is_empty() {
        tracing::info!(tenant = %tenant.id, customer = %customer.id, purchases = linked.len(), "guest purchases linked to a customer");
    }
    Ok(linked)
}

/// One of the tenant's customers; 404 naming `param` when there is none.
pub async fn find(
    state: &AppState,
    tenant: &Tenant,
    id: &CustomerId,
    param: Option<&str>,
) -> Result<Customer> {
    match state.store.customer(&tenant.id, id).await {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound) => {
            let e = Error::not_found("customer", id.as_str());
            Err(match param {
                Some(p) => e.with_param(p),
                None => e,
            })
        }
        Err(e) => Err(e.into()),
    }
}
