//! What plans grant besides themselves: other products, or named features.

use serde::Deserialize;
use tollgate_domain::status::ProductKind;
use tollgate_domain::{EntitlementId, ProductId};
use tollgate_store::{Entitlement, Product, StoreError, Tenant};
use utoipa::ToSchema;

use super::catalog::live_product;
use crate::error::{Code, Error, Result};
use crate::state::AppState;

/// An entitlement as the API takes it: a `product` or a `feature`, one of them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementInput {
    #[schema(value_type = Option<ProductId>)]
    pub product: Option<String>,
    /// A feature name: 1 to 100 visible characters.
    pub feature: Option<String>,
}

/// A feature name as plans declare it: 1 to 100 visible ASCII characters.
pub fn check_feature(param: &str, name: &str) -> Result<()> {
    if (1..=100).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Error::param(
            param,
            "A feature is 1 to 100 visible ASCII characters.",
        ))
    }
}

/// One of the tenant's live products that is a plan.
pub async fn plan(state: &AppState, tenant: &Tenant, id: &ProductId) -> Result<Product> {
    let product = live_product(state, tenant, id).await?;
    if product.kind != ProductKind::Plan {
        return Err(Error::invalid(
            "id",
            Code::NotAPlan,
            "Only products of kind plan grant other products or features.",
        ));
    }
    Ok(product)
}

pub async fn add_entitlement(
    state: &AppState,
    tenant: &Tenant,
    plan_id: &ProductId,
    input: EntitlementInput,
) -> Result<Entitlement> {
    let plan = plan(state, tenant, plan_id).await?;
    let (product, feature) = match (&input.product, &input.feature) {
        (Some(p), None) => {
            let id = ProductId::parse(p).map_err(|e| Error::bad_id("product", e))?;
            let granted = live_product(state, tenant, &id)
                .await
                .map_err(|e| e.with_param("product"))?;
            if granted.id == plan.id {
                return Err(Error::param("product", "A plan grants itself already."));
            }
            (Some(granted.id), None)
        }
        (None, Some(f)) => {
            check_feature("feature", f)?;
            (None, Some(f.as_str()))
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "feature",
                Code::ParameterConflict,
                "Pass a product or a feature, not both.",
            ));
        }
        (None, None) => {
            return Err(Error::missing(
                "product",
                "Pass a product or a feature (one of them).",
            ));
        }
    };
    let (entitlement, changes) = state
        .store
        .add_entitlement(&tenant.id, &plan.id, product.as_ref(), feature)
        .await?;
    state.apply(changes).await;
    Ok(entitlement)
}

pub async fn list_entitlements(
    state: &AppState,
    tenant: &Tenant,
    plan_id: &ProductId,
) -> Result<Vec<Entitlement>> {
    let plan = plan(state, tenant, plan_id).await?;
    Ok(state
        .store
        .entitlements_for_plan(&tenant.id, &plan.id)
        .await?)
}

pub async fn delete_entitlement(
    state: &AppState,
    tenant: &Tenant,
    plan_id: &ProductId,
    id: &EntitlementId,
) -> Result<()> {
    let plan = plan(state, tenant, plan_id).await?;
    let changes = match state
        .store
        .delete_entitlement(&tenant.id, &plan.id, id)
        .await
    {
        Ok(c) => c,
        Err(StoreError::NotFound) => return Err(Error::not_found("entitlement", id.as_str())),
        Err(e) => return Err(e.into()),
    };
    state.apply(changes).await;
    Ok(())
}
