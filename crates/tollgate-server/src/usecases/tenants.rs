//! Tenants' settings: made and changed by the operator (everything) and by the tenant
//! itself (everything but the platform's fee), validated alike for the API and the CLI.

use serde::Deserialize;
use tollgate_domain::{Currency, FeeSchedule, TenantId};
use tollgate_store::{IssuedKey, NewTenant, PortalSettings, StoreError, Tenant};
use utoipa::ToSchema;

use super::validate;
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// Tenant settings as the API and the CLI take them; what is left out stays as it is.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    /// 1 to 200 characters.
    pub name: Option<String>,
    pub default_currency: Option<Currency>,
    /// Where Checkout returns after payment; `{CHECKOUT_SESSION_ID}` and `{ORDER_ID}` are
    /// filled in.
    pub success_url_template: Option<String>,
    pub cancel_url_template: Option<String>,
    /// Where the customer portal returns; `{CUSTOMER_ID}` is filled in.
    pub portal_return_url_template: Option<String>,
    /// The platform's cut in basis points. The operator's to set; a tenant may read it.
    pub platform_fee_bps: Option<u32>,
    /// The organization's cut in basis points.
    pub organization_fee_bps: Option<u32>,
    /// Days a past_due subscription keeps its access (0 to 60).
    pub grace_period_days: Option<i64>,
    /// What the customer portal offers (given whole).
    pub portal: Option<PortalInput>,
}

/// What the customer portal offers, as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalInput {
    /// Cancel a subscription (at the end of the period). Default true.
    pub cancel: Option<bool>,
    /// Switch to another of the tenant's plans. Default true.
    pub switch_plan: Option<bool>,
    /// Change the card. Default true.
    pub update_payment_method: Option<bool>,
    /// A line at the top of the portal (up to 60 characters).
    pub headline: Option<String>,
}

/// Who changes the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Operator,
    Tenant,
}

/// Applies `input` over `base`, validating every field.
pub fn settings(base: NewTenant, input: TenantInput, actor: Actor) -> Result<NewTenant> {
    if actor == Actor::Tenant && input.platform_fee_bps.is_some() {
        return Err(Error::invalid(
            "platform_fee_bps",
            Code::ParameterNotAllowed,
            "The platform fee is set by the platform's operator.",
        ));
    }
    let name = match &input.name {
        Some(n) => validate::text("name", n, 200)?,
        None => base.name,
    };
    let fees = FeeSchedule::new(
        input.platform_fee_bps.unwrap_or(base.fees.platform_bps()),
        input
            .organization_fee_bps
            .unwrap_or(base.fees.organization_bps()),
    )
    .map_err(|e| {
        let param = if input.organization_fee_bps.is_some() {
            "organization_fee_bps"
        } else {
            "platform_fee_bps"
        };
        Error::param(param, e.to_string())
    })?;
    for (param, value) in [
        ("success_url_template", &input.success_url_template),
        ("cancel_url_template", &input.cancel_url_template),
        (
            "portal_return_url_template",
            &input.portal_return_url_template,
        ),
    ] {
        if let Some(v) = value {
            validate::url(param, v)?;
        }
    }
    let grace_period_days = input.grace_period_days.unwrap_or(base.grace_period_days);
    if !(0..=60).contains(&grace_period_days) {
        return Err(Error::param(
            "grace_period_days",
            "grace_period_days must be between 0 and 60.",
        ));
    }
    let portal = match input.portal {
        None => base.portal,
        Some(p) => {
            let defaults = PortalSettings::default();
            PortalSettings {
                cancel: p.cancel.unwrap_or(defaults.cancel),
                switch_plan: p.switch_plan.unwrap_or(defaults.switch_plan),
                update_payment_method: p
                    .update_payment_method
                    .unwrap_or(defaults.update_payment_method),
                headline: validate::opt_text("portal[headline]", p.headline.as_deref(), 60)?,
            }
        }
    };
    Ok(NewTenant {
        grace_period_days,
        portal,
        name,
        default_currency: input.default_currency.unwrap_or(base.default_currency),
        success_url_template: input.success_url_template.or(base.success_url_template),
        cancel_url_template: input.cancel_url_template.or(base.cancel_url_template),
        portal_return_url_template: input
            .portal_return_url_template
            .or(base.portal_return_url_template),
        fees,
    })
}

fn current(t: &Tenant) -> NewTenant {
    NewTenant {
        name: t.name.clone(),
        default_currency: t.default_currency.clone(),
        success_url_template: t.success_url_template.clone(),
        cancel_url_template: t.cancel_url_template.clone(),
        portal_return_url_template: t.portal_return_url_template.clone(),
        fees: t.fees,
        grace_period_days: t.grace_period_days,
        portal: t.portal.clone(),
    }
}

/// Creates a tenant and its first API key (the operator's task).
pub async fn create_tenant(state: &AppState, input: TenantInput) -> Result<(Tenant, IssuedKey)> {
    create_tenant_in(&state.store, input).await
}

/// Creates a tenant on a store (the CLI has no running service).
pub async fn create_tenant_in(
    store: &tollgate_store::Store,
    input: TenantInput,
) -> Result<(Tenant, IssuedKey)> {
    if input.name.is_none() {
        return Err(Error::missing("name", "name is required."));
    }
    let settings = settings(NewTenant::default(), input, Actor::Operator)?;
    Ok(store.create_tenant(&settings).await?)
}

/// A tenant by id; 404 when there is none.
pub async fn find(store: &tollgate_store::Store, id: &TenantId) -> Result<Tenant> {
    match store.tenant(id).await {
        Ok(t) => Ok(t),
        Err(StoreError::NotFound) => Err(Error::not_found("tenant", id.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// Changes a tenant's settings: `actor` says whose change it is. A change of the grace
/// period changes what past_due subscriptions grant; the index follows.
pub async fn update_tenant(
    state: &AppState,
    id: &TenantId,
    input: TenantInput,
    actor: Actor,
) -> Result<Tenant> {
    let (tenant, changes) = update_tenant_in(&state.store, id, input, actor).await?;
    state.forget_keys();
    state.forget_tenants();
    state.apply(changes).await;
    Ok(tenant)
}

/// Changes a tenant's settings on a store (the CLI); the changes of access are returned
/// for a running service to apply.
pub async fn update_tenant_in(
    store: &tollgate_store::Store,
    id: &TenantId,
    input: TenantInput,
    actor: Actor,
) -> Result<(Tenant, tollgate_store::AccessChanges)> {
    let tenant = find(store, id).await?;
    let settings = settings(current(&tenant), input, actor)?;
    Ok(store.update_tenant(id, &settings).await?)
}
