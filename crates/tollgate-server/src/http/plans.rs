//! What plans grant (`/v1/products/{id}/entitlements`), and price migrations
//! (`/v1/prices/{id}/migrate`, `/v1/price_migrations/{id}`).

use axum::extract::State;
use tollgate_domain::{EntitlementId, PriceMigrationId, ProductId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Answer, Json, PathParam, PathParams, TenantExt, id};
use crate::state::AppState;
use crate::usecases::PriceRef;
use crate::usecases::migrations::{self, MigrationInput};
use crate::usecases::plans::{self, EntitlementInput};
use crate::views::{Deleted, EntitlementView, List, PriceMigrationView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_entitlement, list_entitlements))
        .routes(routes!(delete_entitlement))
        .routes(routes!(migrate))
        .routes(routes!(retrieve_migration))
}

/// Makes a plan grant another product or a named feature to its subscribers.
#[utoipa::path(post, path = "/v1/products/{id}/entitlements", tag = "plans",
    params(("id" = ProductId, Path, description = "The plan's id")),
    request_body = EntitlementInput,
    responses((status = 200, description = "The entitlement", body = EntitlementView)))]
async fn add_entitlement(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<EntitlementInput>,
) -> Answer<EntitlementView> {
    let plan = id("id", &raw, ProductId::parse)?;
    let e = plans::add_entitlement(&state, &tenant, &plan, input).await?;
    Ok(axum::Json(EntitlementView::of(&e)))
}

#[utoipa::path(get, path = "/v1/products/{id}/entitlements", tag = "plans",
    params(("id" = ProductId, Path, description = "The plan's id")),
    responses((status = 200, description = "What the plan grants", body = List<EntitlementView>)))]
async fn list_entitlements(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<List<EntitlementView>> {
    let plan = id("id", &raw, ProductId::parse)?;
    let rows = plans::list_entitlements(&state, &tenant, &plan).await?;
    Ok(axum::Json(List::new(
        rows.iter().map(EntitlementView::of).collect(),
        false,
        format!("/v1/products/{plan}/entitlements"),
    )))
}

#[utoipa::path(delete, path = "/v1/products/{id}/entitlements/{entitlement}", tag = "plans",
    params(("id" = ProductId, Path, description = "The plan's id"),
           ("entitlement" = EntitlementId, Path, description = "The entitlement's id")),
    responses((status = 200, description = "Deleted", body = Deleted<EntitlementId>)))]
async fn delete_entitlement(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParams(raw_plan, raw_entitlement): PathParams,
) -> Answer<Deleted<EntitlementId>> {
    let plan = id("id", &raw_plan, ProductId::parse)?;
    let eid = id("entitlement", &raw_entitlement, EntitlementId::parse)?;
    plans::delete_entitlement(&state, &tenant, &plan, &eid).await?;
    Ok(axum::Json(Deleted {
        id: eid,
        object: "entitlement",
        deleted: true,
    }))
}

/// Puts `to_price` in this price's place for new sign-ups (with its lookup key) and moves
/// existing subscriptions onto it at `move_existing_at`, from their next renewal.
#[utoipa::path(post, path = "/v1/prices/{id}/migrate", tag = "plans",
    params(("id" = String, Path, description = "The price's id or lookup key")),
    request_body = MigrationInput,
    responses((status = 200, description = "The migration", body = PriceMigrationView)))]
async fn migrate(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
    Json(input): Json<MigrationInput>,
) -> Answer<PriceMigrationView> {
    let from = PriceRef::parse("id", &raw)?;
    let m = migrations::migrate_price(&state, &tenant, &from, input).await?;
    Ok(axum::Json(PriceMigrationView::of(&m)))
}

#[utoipa::path(get, path = "/v1/price_migrations/{id}", tag = "plans",
    params(("id" = PriceMigrationId, Path, description = "The migration's id")),
    responses((status = 200, description = "The migration", body = PriceMigrationView)))]
async fn retrieve_migration(
    State(state): State<AppState>,
    tenant: TenantExt,
    PathParam(raw): PathParam,
) -> Answer<PriceMigrationView> {
    let mid = id("id", &raw, PriceMigrationId::parse)?;
    let m = migrations::find(&state, &tenant, &mid).await?;
    Ok(axum::Json(PriceMigrationView::of(&m)))
}
