//! The use cases the API, the webhook worker and the CLI share, one module per concern.
//! Each takes the shared state and the tenant, returns the domain's and the store's types
//! or an [`Error`](crate::error::Error), and applies every change of access it commits to
//! the index (through [`AppState::apply`](crate::state::AppState::apply)). Handlers parse,
//! call one of these, and render; nothing here knows about HTTP.

pub mod catalog;
pub mod checkout;
pub mod completion;
pub mod coupons;
pub mod customers;
pub mod disputes;
pub mod events;
pub mod migrations;
pub mod plans;
pub mod portal;
pub mod refunds;
pub mod stripe_objects;
pub mod subscriptions;
pub mod tenants;
pub mod usage;
pub mod validate;

use tollgate_domain::{PriceId, TenantId};
use tollgate_store::{Price, StoreError};
use tollgate_stripe::Metadata;

use crate::error::{Code, Error, Result};
use crate::state::AppState;

pub(crate) fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// How a request names one of the tenant's prices: its id, or one of its lookup keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceRef {
    Id(PriceId),
    LookupKey(String),
}

impl PriceRef {
    /// `prc_...` is an id; a Stripe price id is refused with a message saying so
    /// (Tollgate's prices are named by Tollgate's ids); anything else is a lookup key.
    pub fn parse(param: &str, s: &str) -> Result<Self> {
        if ["prc_", "price_", "plan_"].iter().any(|p| s.starts_with(p)) {
            return PriceId::parse(s)
                .map(PriceRef::Id)
                .map_err(|e| Error::bad_id(param, e));
        }
        validate::lookup_key(param, s)?;
        Ok(PriceRef::LookupKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            PriceRef::Id(id) => id.as_str(),
            PriceRef::LookupKey(k) => k,
        }
    }
}

/// One of the tenant's prices, by id or lookup key; 404 naming `param` when there is none.
pub async fn find_price(
    state: &AppState,
    tenant: &TenantId,
    reference: &PriceRef,
    param: &str,
) -> Result<Price> {
    let found = match reference {
        PriceRef::Id(id) => state.store.price(tenant, id).await,
        PriceRef::LookupKey(k) => state.store.price_by_lookup_key(tenant, k).await,
    };
    match found {
        Ok(p) => Ok(p),
        Err(StoreError::NotFound) => Err(Error::new(
            Code::PriceNotFound,
            format!("No such price: '{}'", reference.as_str()),
        )
        .with_param(param)),
        Err(e) => Err(e.into()),
    }
}
