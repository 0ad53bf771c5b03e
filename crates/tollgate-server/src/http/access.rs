//! `/v1/access`: "may this customer use this product (or this plan feature)?", answered
//! from memory. Only ids the index holds nothing for are looked up, once, to tell a
//! customer without access (200) from a customer that is not this tenant's (404).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;
use tollgate_domain::{CustomerId, ProductId};
use tollgate_store::{GrantTarget, Tenant};

use super::{Json, Query, ok};
use crate::access::AccessAnswer;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Checks one batch may hold.
const MAX_BATCH: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/access", get(check))
        .route("/v1/access/batch", post(batch))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    customer: String,
    product: Option<String>,
    feature: Option<String>,
}

/// A feature name as plans declare it: 1 to 100 visible characters.
pub fn valid_feature(name: &str) -> bool {
    (1..=100).contains(&name.len()) && name.chars().all(|c| c.is_ascii_graphic())
}

/// `batch_index` names the check's place in a batch, for the error's `param`.
async fn answer(
    state: &AppState,
    tenant: &Tenant,
    c: &Check,
    batch_index: Option<usize>,
) -> ApiResult<AccessAnswer> {
    let param = |p: &str| match batch_index {
        Some(i) => format!("checks[{i}][{p}]"),
        None => p.to_owned(),
    };
    let missing = |what: &str, id: &str, p: &str| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_missing",
            format!("No such {what}: '{id}'"),
        )
        .with_param(&param(p))
    };
    let customer = CustomerId::parse(&c.customer)
        .ok_or_else(|| missing("customer", &c.customer, "customer"))?;
    let target = match (&c.product, &c.feature) {
        (Some(p), None) => GrantTarget::Product(
            ProductId::parse(p).ok_or_else(|| missing("product", p, "product"))?,
        ),
        (None, Some(f)) if valid_feature(f) => GrantTarget::Feature(f.clone()),
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                &param("feature"),
                "invalid_feature",
                "feature must be 1 to 100 visible characters.",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                &param("product"),
                "parameter_missing",
                "Pass a product or a feature (one of them).",
            ));
        }
    };
    let answer = state
        .access
        .check(&tenant.id, &customer, &target, tollgate_store::now_ms());
    if answer.has_access {
        return Ok(answer);
    }
    // No access: say so only about this tenant's own customer and product.
    if !state.customer_exists(&tenant.id, &customer).await? {
        return Err(missing("customer", &c.customer, "customer"));
    }
    if let GrantTarget::Product(p) = &target
        && !state.product_exists(&tenant.id, p).await?
    {
        return Err(missing("product", p.as_str(), "product"));
    }
    Ok(answer)
}

async fn check(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<Check>,
) -> ApiResult<Response> {
    Ok(ok(answer(&state, &tenant, &q, None).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    checks: Vec<Check>,
}

async fn batch(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<Tenant>>,
    Json(b): Json<Batch>,
) -> ApiResult<Response> {
    if b.checks.is_empty() || b.checks.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "checks",
            "invalid_batch",
            format!("checks must hold 1 to {MAX_BATCH} items."),
        ));
    }
    let mut data = Vec::with_capacity(b.checks.len());
    for (i, c) in b.checks.iter().enumerate() {
        let a = answer(&state, &tenant, c, Some(i)).await?;
        data.push(json!({
            "customer": c.customer,
            "product": c.product,
            "feature": c.feature,
            "has_access": a.has_access,
            "source": a.source,
            "purchase_id": a.purchase_id,
            "subscription_id": a.subscription_id,
            "expires_at": a.expires_at,
        }));
    }
    Ok(ok(json!({ "object": "list", "data": data })))
}
