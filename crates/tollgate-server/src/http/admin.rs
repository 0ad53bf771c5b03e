//! Operator routes (`Authorization: Bearer tg_admin_...`): tenants and their keys. And the
//! tenant's own settings under its own key.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;
use tollgate_domain::{ApiKeyId, Currency, FeeSchedule, TenantId};
use tollgate_store::{NewTenant, PortalSettings, Tenant};

use super::{Json, bearer, ok};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    let operator = Router::new()
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{id}/keys", post(create_key))
        .route("/v1/tenants/{id}/keys/{key}", delete(revoke_key))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::idempotency,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate_operator,
        ));
    let own = Router::new()
        .route("/v1/tenant", get(own_settings).post(update_own_settings))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::idempotency,
        ))
        .layer(middleware::from_fn_with_state(
            state,
            super::authenticate_tenant,
        ));
    operator.merge(own)
}

async fn authenticate_operator(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.admin_key_hash else {
        return ApiError::unauthorized(
            "Operator routes are off: set TOLLGATE_ADMIN_KEY to use them.",
        )
        .into_response();
    };
    match bearer(req.headers()) {
        // Compare hashes, so the comparison says nothing about the key through its timing.
        Some(key) if &tollgate_store::hash_secret(key) == expected => {
            req.extensions_mut()
                .insert(super::IdempotencyScope("operator".into()));
            next.run(req).await
        }
        _ => ApiError::unauthorized("Pass the operator key: Authorization: Bearer tg_admin_...")
            .into_response(),
    }
}

/// Tenant settings as the API takes them.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    pub name: Option<String>,
    pub default_currency: Option<String>,
    pub success_url_template: Option<String>,
    pub cancel_url_template: Option<String>,
    pub portal_return_url_template: Option<String>,
    pub platform_fee_bps: Option<u32>,
    pub organization_fee_bps: Option<u32>,
    /// Days a past_due subscription keeps its access (0 to 60).
    pub grace_period_days: Option<i64>,
    /// What the customer portal offers.
    pub portal: Option<PortalSettings>,
}

/// Applies `input` over `base`, validating every field.
pub fn tenant_settings(base: NewTenant, input: TenantInput) -> ApiResult<NewTenant> {
    let name = input.name.unwrap_or(base.name);
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::invalid(
            "name",
            "invalid_name",
            "name must be 1 to 200 characters.",
        ));
    }
    let currency = match input.default_currency {
        Some(c) => Currency::parse(&c)
            .map_err(|_| {
                ApiError::invalid(
                    "default_currency",
                    "invalid_currency",
                    "default_currency must be a three-letter ISO code.",
                )
            })?
            .as_str()
            .to_owned(),
        None => base.default_currency,
    };
    let fees = FeeSchedule::new(
        input.platform_fee_bps.unwrap_or(base.fees.platform_bps()),
        input
            .organization_fee_bps
            .unwrap_or(base.fees.organization_bps()),
    )
    .map_err(|e| ApiError::invalid("platform_fee_bps", "invalid_fees", e.to_string()))?;
    for (param, value) in [
        ("success_url_template", &input.success_url_template),
        ("cancel_url_template", &input.cancel_url_template),
        (
            "portal_return_url_template",
            &input.portal_return_url_template,
        ),
    ] {
        if let Some(v) = value {
            let probe = v
                .replace("{CHECKOUT_SESSION_ID}", "cs")
                .replace("{ORDER_ID}", "ord")
                .replace("{CUSTOMER_ID}", "cus");
            if url::Url::parse(&probe).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
                return Err(ApiError::invalid(
                    param,
                    "invalid_url",
                    format!("{param} must be an absolute http(s) URL"),
                ));
            }
        }
    }
    let grace_period_days = input.grace_period_days.unwrap_or(base.grace_period_days);
    if !(0..=60).contains(&grace_period_days) {
        return Err(ApiError::invalid(
            "grace_period_days",
            "invalid_grace_period",
            "grace_period_days must be between 0 and 60.",
        ));
    }
    let portal = input.portal.unwrap_or(base.portal);
    if portal.headline.as_ref().is_some_and(|h| h.len() > 60) {
        return Err(ApiError::invalid(
            "portal[headline]",
            "invalid_headline",
            "The portal headline is at most 60 characters.",
        ));
    }
    Ok(NewTenant {
        grace_period_days,
        portal,
        name,
        default_currency: currency,
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
        fees: t.fees(),
        grace_period_days: t.grace_period_days,
        portal: t.portal.clone(),
    }
}

async fn create_tenant(
    State(state): State<AppState>,
    Json(input): Json<TenantInput>,
) -> ApiResult<Response> {
    if input.name.is_none() {
        return Err(ApiError::invalid(
            "name",
            "parameter_missing",
            "name is required.",
        ));
    }
    let settings = tenant_settings(
        NewTenant {
            default_currency: "usd".into(),
            ..Default::default()
        },
        input,
    )?;
    let (tenant, key) = state.store.create_tenant(&settings).await?;
    // The secret is shown here once; only its hash is kept.
    Ok(ok(
        json!({ "tenant_id": tenant.id, "tenant": tenant, "api_key": key.secret, "api_key_id": key.id }),
    ))
}

async fn list_tenants(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(super::list(
        state.store.list_tenants().await?,
        false,
        "/v1/tenants",
    ))
}

async fn create_key(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let tid = TenantId::parse(&id).ok_or_else(|| ApiError::not_found("tenant", &id))?;
    let key = state
        .store
        .create_key(&tid)
        .await
        .map_err(|_| ApiError::not_found("tenant", &id))?;
    Ok(ok(
        json!({ "tenant_id": tid, "api_key": key.secret, "api_key_id": key.id }),
    ))
}

async fn revoke_key(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    let tid = TenantId::parse(&id).ok_or_else(|| ApiError::not_found("tenant", &id))?;
    let kid = ApiKeyId::parse(&key).ok_or_else(|| ApiError::not_found("api key", &key))?;
    state
        .store
        .revoke_key(&tid, &kid)
        .await
        .map_err(|_| ApiError::not_found("api key", &key))?;
    state.forget_keys();
    Ok(ok(
        json!({ "id": kid, "object": "api_key", "revoked": true }),
    ))
}

async fn own_settings(Extension(tenant): Extension<Arc<Tenant>>) -> Response {
    ok(tenant.as_ref())
}

async fn update_own_settings(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Json(input): Json<TenantInput>,
) -> ApiResult<Response> {
    let settings = tenant_settings(current(&tenant), input)?;
    let updated = state.store.update_tenant(&tenant.id, &settings).await?;
    state.forget_keys();
    if updated.grace_period_days != tenant.grace_period_days {
        for c in state.store.customers_past_due(&tenant.id).await? {
            state.access_changed(&tenant.id, &c).await;
        }
    }
    Ok(ok(updated))
}

/// Tenant settings from the CLI's flags, validated as the API validates them.
pub fn settings_from_cli(
    name: String,
    currency: String,
    platform_fee_bps: u32,
    organization_fee_bps: u32,
    success_url: Option<String>,
    cancel_url: Option<String>,
) -> ApiResult<NewTenant> {
    tenant_settings(
        NewTenant {
            default_currency: "usd".into(),
            ..Default::default()
        },
        TenantInput {
            name: Some(name),
            default_currency: Some(currency),
            success_url_template: success_url,
            cancel_url_template: cancel_url,
            portal_return_url_template: None,
            platform_fee_bps: Some(platform_fee_bps),
            organization_fee_bps: Some(organization_fee_bps),
            ..Default::default()
        },
    )
}
