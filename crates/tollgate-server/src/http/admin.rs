//! Operator routes (`Authorization: Bearer tg_admin_...`): tenants, their settings (the
//! platform fee among them) and their keys. And the tenant's own settings under its own
//! key (everything but the platform fee, which it may read).

use axum::extract::State;
use tollgate_domain::{ApiKeyId, TenantId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::guard::Operator;
use super::{Answer, Json, PathParam, PathParams, TenantExt, id};
use crate::error::Error;
use crate::state::AppState;
use crate::usecases::tenants::{self, Actor, TenantInput};
use crate::views::{ApiKeyView, IssuedKeyView, List, TenantView};

pub fn operator_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(retrieve_tenant, update_tenant))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

pub fn own_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(own_settings, update_own_settings))
}

/// A tenant and its first API key (shown once).
#[utoipa::path(post, path = "/v1/tenants", tag = "operator", request_body = TenantInput,
    responses((status = 200, description = "The tenant and its first key", body = IssuedKeyView)))]
async fn create_tenant(
    State(state): State<AppState>,
    _: Operator,
    Json(input): Json<TenantInput>,
) -> Answer<IssuedKeyView> {
    let (tenant, key) = tenants::create_tenant(&state, input).await?;
    Ok(axum::Json(IssuedKeyView {
        tenant_id: tenant.id.clone(),
        api_key: key.secret,
        api_key_id: key.id,
        tenant: Some(TenantView::of(&tenant)),
    }))
}

#[utoipa::path(get, path = "/v1/tenants", tag = "operator",
    responses((status = 200, description = "Every tenant", body = List<TenantView>)))]
async fn list_tenants(State(state): State<AppState>, _: Operator) -> Answer<List<TenantView>> {
    let rows = state.store.list_tenants().await?;
    Ok(axum::Json(List::new(
        rows.iter().map(TenantView::of).collect(),
        false,
        "/v1/tenants",
    )))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "operator",
    params(("id" = TenantId, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant", body = TenantView)))]
async fn retrieve_tenant(
    State(state): State<AppState>,
    _: Operator,
    PathParam(raw): PathParam,
) -> Answer<TenantView> {
    let tid = id("id", &raw, TenantId::parse)?;
    Ok(axum::Json(TenantView::of(
        &tenants::find(&state.store, &tid).await?,
    )))
}

/// Changes any of a tenant's settings, the platform fee included.
#[utoipa::path(post, path = "/v1/tenants/{id}", tag = "operator",
    params(("id" = TenantId, Path, description = "The tenant's id")),
    request_body = TenantInput,
    responses((status = 200, description = "The tenant after the change", body = TenantView)))]
async fn update_tenant(
    State(state): State<AppState>,
    _: Operator,
    PathParam(raw): PathParam,
    Json(input): Json<TenantInput>,
) -> Answer<TenantView> {
    let tid = id("id", &raw, TenantId::parse)?;
    let t = tenants::update_tenant(&state, &tid, input, Actor::Operator).await?;
    Ok(axum::Json(TenantView::of(&t)))
}

/// Another API key for a tenant (shown once).
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "operator",
    params(("id" = TenantId, Path, description = "The tenant's id")),
    responses((status = 200, description = "The new key", body = IssuedKeyView)))]
async fn create_key(
    State(state): State<AppState>,
    _: Operator,
    PathParam(raw): PathParam,
) -> Answer<IssuedKeyView> {
    let tid = id("id", &raw, TenantId::parse)?;
    tenants::find(&state.store, &tid).await?;
    let key = state.store.create_key(&tid).await?;
    Ok(axum::Json(IssuedKeyView {
        tenant_id: tid,
        api_key: key.secret,
        api_key_id: key.id,
        tenant: None,
    }))
}

/// A tenant's keys, revoked ones too (never their secrets).
#[utoipa::path(get, path = "/v1/tenants/{id}/keys", tag = "operator",
    params(("id" = TenantId, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant's keys", body = List<ApiKeyView>)))]
async fn list_keys(
    State(state): State<AppState>,
    _: Operator,
    PathParam(raw): PathParam,
) -> Answer<List<ApiKeyView>> {
    let tid = id("id", &raw, TenantId::parse)?;
    tenants::find(&state.store, &tid).await?;
    let keys = state.store.list_keys(&tid).await?;
    Ok(axum::Json(List::new(
        keys.iter().map(ApiKeyView::of).collect(),
        false,
        format!("/v1/tenants/{tid}/keys"),
    )))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/keys/{key}", tag = "operator",
    params(("id" = TenantId, Path, description = "The tenant's id"),
           ("key" = ApiKeyId, Path, description = "The key's id")),
    responses((status = 200, description = "The key, revoked", body = ApiKeyView)))]
async fn revoke_key(
    State(state): State<AppState>,
    _: Operator,
    PathParams(raw_tenant, raw_key): PathParams,
) -> Answer<ApiKeyView> {
    let tid = id("id", &raw_tenant, TenantId::parse)?;
    let kid = id("key", &raw_key, ApiKeyId::parse)?;
    match state.store.revoke_key(&tid, &kid).await {
        Ok(()) => {}
        Err(tollgate_store::StoreError::NotFound) => {
            return Err(Error::not_found("live API key", kid.as_str()));
        }
        Err(e) => return Err(e.into()),
    }
    state.forget_keys();
    let keys = state.store.list_keys(&tid).await?;
    let key = keys
        .iter()
        .find(|k| k.id == kid)
        .ok_or_else(|| Error::not_found("API key", kid.as_str()))?;
    Ok(axum::Json(ApiKeyView::of(key)))
}

/// The tenant's own settings.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, description = "The tenant", body = TenantView)))]
async fn own_settings(tenant: TenantExt) -> Answer<TenantView> {
    Ok(axum::Json(TenantView::of(&tenant)))
}

/// Changes the tenant's own settings; the platform fee is the operator's to set.
#[utoipa::path(post, path = "/v1/tenant", tag = "tenant", request_body = TenantInput,
    responses((status = 200, description = "The tenant after the change", body = TenantView)))]
async fn update_own_settings(
    State(state): State<AppState>,
    tenant: TenantExt,
    Json(input): Json<TenantInput>,
) -> Answer<TenantView> {
    let t = tenants::update_tenant(&state, &tenant.id, input, Actor::Tenant).await?;
    Ok(axum::Json(TenantView::of(&t)))
}
