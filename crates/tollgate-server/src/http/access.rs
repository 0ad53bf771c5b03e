//! `/v1/access`: "may this customer use this product (or this plan feature)?", answered
//! from memory. Only ids the index holds nothing for are looked up, once, to tell a
//! customer without access (200) from a customer that is not this tenant's (404).

use axum::extract::State;
use axum::http::Uri;
use serde::Deserialize;
use tollgate_domain::{CustomerId, ProductId, Timestamp};
use tollgate_store::{GrantTarget, Tenant};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{is_plain, parse_query, raw_pairs};
use super::{Answer, Json, TenantExt};
use crate::access::AccessAnswer;
use crate::error::{Code, Error, Result};
use crate::state::AppState;
use crate::usecases::plans::check_feature;
use crate::views::{AccessBatchView, AccessCheckView};

/// Checks one batch may hold.
const MAX_BATCH: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(check))
        .routes(routes!(batch))
}

/// One check: a customer and a product or a feature (one of them).
#[derive(Debug, PartialEq, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Check {
    #[param(value_type = CustomerId)]
    #[schema(value_type = CustomerId)]
    customer: String,
    #[param(value_type = Option<ProductId>)]
    #[schema(value_type = Option<ProductId>)]
    product: Option<String>,
    /// A feature a plan grants.
    feature: Option<String>,
}

impl Check {
    /// Reads a check from its query string. The usual query (plain, per
    /// [`is_plain`], and naming `customer`, `product` and `feature` at most once each and
    /// nothing else) is read as it stands: this is the busiest route, and the general
    /// reading, which decodes every pair and deserializes through serde, cost a sixth of
    /// the instructions of a whole check. Any other query takes the general reading,
    /// which also names what is wrong with it.
    fn from_query(query: &str) -> Result<Self> {
        Self::plain(query).map_or_else(|| parse_query(query), Ok)
    }

    fn plain(query: &str) -> Option<Self> {
        if !is_plain(query) {
            return None;
        }
        let (mut customer, mut product, mut feature) = (None, None, None);
        for (name, value) in raw_pairs(query) {
            let slot = match name {
                "customer" => &mut customer,
                "product" => &mut product,
                "feature" => &mut feature,
                _ => return None,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        Some(Self {
            customer: customer?.to_owned(),
            product: product.map(str::to_owned),
            feature: feature.map(str::to_owned),
        })
    }
}

/// `batch_index` names the check's place in a batch, for the error's `param`.
async fn answer(
    state: &AppState,
    tenant: &Tenant,
    c: &Check,
    batch_index: Option<usize>,
) -> Result<(CustomerId, Option<ProductId>, AccessAnswer)> {
    let param = |p: &str| match batch_index {
        Some(i) => format!("checks[{i}][{p}]"),
        None => p.to_owned(),
    };
    // The parameter's name is only made for an error: this runs on every check.
    let customer =
        CustomerId::parse(&c.customer).map_err(|e| Error::bad_id(&param("customer"), e))?;
    let (target, product) = match (&c.product, &c.feature) {
        (Some(p), None) => {
            let pid = ProductId::parse(p).map_err(|e| Error::bad_id(&param("product"), e))?;
            (GrantTarget::Product(pid.clone()), Some(pid))
        }
        (None, Some(f)) => {
            check_feature(&param("feature"), f)?;
            (GrantTarget::Feature(f.clone()), None)
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                &param("feature"),
                Code::ParameterConflict,
                "Pass a product or a feature, not both.",
            ));
        }
        (None, None) => {
            return Err(Error::missing(
                &param("product"),
                "Pass a product or a feature (one of them).",
            ));
        }
    };
    let answer = state
        .access
        .check(&tenant.id, &customer, &target, Timestamp::now());
    if answer.has_access {
        return Ok((customer, product, answer));
    }
    // No access: say so only about this tenant's own customer and product.
    if !state.customer_exists(&tenant.id, &customer).await? {
        return Err(Error::not_found("customer", customer.as_str()).with_param(&param("customer")));
    }
    if let Some(p) = &product
        && !state.product_exists(&tenant.id, p).await?
    {
        return Err(Error::not_found("product", p.as_str()).with_param(&param("product")));
    }
    Ok((customer, product, answer))
}

#[utoipa::path(get, path = "/v1/access", tag = "access", params(Check),
    responses((status = 200, description = "Whether the customer has access now", body = AccessAnswer)))]
async fn check(
    State(state): State<AppState>,
    tenant: TenantExt,
    uri: Uri,
) -> Result<axum::response::Response> {
    let q = Check::from_query(uri.query().unwrap_or_default())?;
    let (_, _, answer) = answer(&state, &tenant, &q, None).await?;
    Ok(super::json_bytes(answer.to_json()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// 1 to 100 checks.
    checks: Vec<Check>,
}

/// Up to 100 checks at once, answered in order.
#[utoipa::path(post, path = "/v1/access/batch", tag = "access", request_body = Batch,
    responses((status = 200, description = "The answers, in the order asked", body = AccessBatchView)))]
async fn batch(
    State(state): State<AppState>,
    tenant: TenantExt,
    Json(b): Json<Batch>,
) -> Answer<AccessBatchView> {
    if b.checks.is_empty() || b.checks.len() > MAX_BATCH {
        return Err(Error::param(
            "checks",
            format!("checks must hold 1 to {MAX_BATCH} items."),
        ));
    }
    let mut data = Vec::with_capacity(b.checks.len());
    for (i, c) in b.checks.iter().enumerate() {
        let (customer, product, answer) = answer(&state, &tenant, c, Some(i)).await?;
        data.push(AccessCheckView {
            customer,
            product,
            feature: c.feature.clone(),
            answer,
        });
    }
    Ok(axum::Json(AccessBatchView {
        object: "list",
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain reading answers as the general one does, whatever the query: the same
    /// check, or the same error.
    #[test]
    fn a_check_is_read_from_any_query_as_the_general_reading_reads_it() {
        let queries = [
            "customer=cus_1&product=prd_2",
            "product=prd_2&customer=cus_1",
            "customer=cus_1&feature=api_calls",
            "customer=cus_1&product=prd_2&feature=api_calls",
            "customer=cus_1",
            "customer=&product=",
            "customer&product=prd_2",
            "customer=cus_1&&product=prd_2&",
            "customer=cus_1&customer=cus_2&product=prd_2",
            "customer=cus_1&product=prd_2&product=prd_3",
            "customer=cus_1&product=prd_2&extra=1",
            "product=prd_2",
            "",
            "customer=cus%5F1&product=prd_2",
            "customer=cus+1&product=prd_2",
            "customer=cus_1%00&product=prd_2",
            "customer=cus_1&product=prd=2",
        ];
        for query in queries {
            let general = parse_query::<Check>(query).map_err(|e| format!("{e:?}"));
            let read = Check::from_query(query).map_err(|e| format!("{e:?}"));
            assert_eq!(read, general, "{query}");
        }
        // And the plain reading is the one taken for the usual query.
        assert_eq!(
            Check::plain("customer=cus_1&product=prd_2"),
            Some(Check {
                customer: "cus_1".into(),
                product: Some("prd_2".into()),
                feature: None,
            })
        );
    }
}
