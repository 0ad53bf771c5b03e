//! What plans grant (`/v1/products/{id}/entitlements`), and price migrations
//! (`/v1/prices/{id}/migrate`, `/v1/price_migrations/{id}`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;
use tollgate_domain::{EntitlementId, PriceMigrationId};
use tollgate_store::{StoreError, Tenant};

use super::catalog::live_product;
use super::{Json, list, ok};
use crate::error::{ApiError, ApiResult};
use crate::http::access::valid_feature;
use crate::state::AppState;
use crate::usecases::{MigrationInput, migrate_price, run_price_migration};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/products/{id}/entitlements",
            post(add_entitlement).get(list_entitlements),
        )
        .route(
            "/v1/products/{id}/entitlements/{entitlement}",
            delete(delete_entitlement),
        )
        .route("/v1/prices/{id}/migrate", post(migrate))
        .route("/v1/price_migrations/{id}", get(retrieve_migration))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntitlementInput {
    product: Option<String>,
    feature: Option<String>,
}

async fn plan(state: &AppState, tenant: &Tenant, id: &str) -> ApiResult<tollgate_store::Product> {
    let product = live_product(state, tenant, id).await?;
    if product.kind != "plan" {
        return Err(ApiError::invalid(
            "id",
            "not_a_plan",
            "Only products of kind plan grant other products or features.",
        ));
    }
    Ok(product)
}

async fn add_entitlement(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<EntitlementInput>,
) -> ApiResult<Response> {
    let plan = plan(&state, &tenant, &id).await?;
    let (product, feature) = match (&input.product, &input.feature) {
        (Some(p), None) => {
            let granted = live_product(&state, &tenant, p)
                .await
                .map_err(|e| e.with_param("product"))?;
            if granted.id == plan.id {
                return Err(ApiError::invalid(
                    "product",
                    "invalid_entitlement",
                    "A plan grants itself already.",
                ));
            }
            (Some(granted.id), None)
        }
        (None, Some(f)) if valid_feature(f) => (None, Some(f.as_str())),
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "feature",
                "invalid_feature",
                "feature must be 1 to 100 visible characters.",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "product",
                "parameter_missing",
                "Pass a product or a feature (one of them).",
            ));
        }
    };
    let (entitlement, customers) = state
        .store
        .add_entitlement(&tenant.id, &plan.id, product.as_ref(), feature)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::conflict("entitlement_exists", "The plan grants that already.")
            }
            other => other.into(),
        })?;
    for c in &customers {
        state.access_changed(&tenant.id, c).await;
    }
    Ok(ok(entitlement))
}

async fn list_entitlements(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let plan = plan(&state, &tenant, &id).await?;
    let rows = state
        .store
        .entitlements_for_plan(&tenant.id, &plan.id)
        .await?;
    Ok(list(
        rows,
        false,
        &format!("/v1/products/{}/entitlements", plan.id),
    ))
}

async fn delete_entitlement(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((id, entitlement)): Path<(String, String)>,
) -> ApiResult<Response> {
    let plan = plan(&state, &tenant, &id).await?;
    let missing = || ApiError::not_found("entitlement", &entitlement);
    let eid = EntitlementId::parse(&entitlement).ok_or_else(missing)?;
    let customers = state
        .store
        .delete_entitlement(&tenant.id, &plan.id, &eid)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => missing(),
            other => other.into(),
        })?;
    for c in &customers {
        state.access_changed(&tenant.id, c).await;
    }
    Ok(ok(
        json!({ "id": eid, "object": "entitlement", "deleted": true }),
    ))
}

async fn migrate(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
    Json(input): Json<MigrationInput>,
) -> ApiResult<Response> {
    let from = crate::usecases::find_price(&state, &tenant.id, &id, "id").await?;
    let to = crate::usecases::find_price(&state, &tenant.id, &input.to_price, "to_price").await?;
    let now = tollgate_store::now_ms() / 1000;
    if input.move_existing_at.is_some_and(|t| t < now - 60) {
        return Err(ApiError::invalid(
            "move_existing_at",
            "invalid_time",
            "move_existing_at is now or later (Unix seconds).",
        ));
    }
    let migration = migrate_price(&state, &tenant, from, to, input.move_existing_at).await?;
    // Due now: start at once rather than at the next sweep.
    if input.move_existing_at.is_some_and(|t| t <= now) {
        let (state, tenant, m) = (state.clone(), tenant.clone(), migration.clone());
        tokio::spawn(async move {
            if let Err(e) = run_price_migration(&state, &tenant, &m).await {
                tracing::warn!(error = %e.message, migration = %m.id, "price migration failed; the sweep tries again");
            }
        });
    }
    Ok(ok(migration))
}

async fn retrieve_migration(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let missing = || ApiError::not_found("price migration", &id);
    let mid = PriceMigrationId::parse(&id).ok_or_else(missing)?;
    match state.store.price_migration(&tenant.id, &mid).await {
        Ok(m) => Ok(ok(m)),
        Err(StoreError::NotFound) => Err(missing()),
        Err(e) => Err(e.into()),
    }
}
