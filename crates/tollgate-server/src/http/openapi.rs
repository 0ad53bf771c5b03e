//! The OpenAPI document (3.1). Routes and their bodies come from the handlers' own
//! annotations, gathered as the router is built; this module adds what every operation
//! shares: the error answers (with the list of codes), `Idempotency-Key` on POSTs, and the
//! keys that authenticate.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, Required};
use utoipa::{PartialSchema, ToSchema};

use super::error::ErrorBody;
use crate::error::{Code, Kind};

pub(super) fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Tollgate")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Billing for platforms that sell through Stripe on behalf of many tenants.\n\n\
                     Tollgate's ids carry prefixes no Stripe object uses (`cust_`, `prd_`, `prc_`, \
                     `ord_`, `pur_`, `subs_`, ...); Stripe's ids are in fields named `stripe_..._id`. \
                     Every time is Unix seconds in a field ending in `_at`. Money is an integer amount \
                     of minor units beside its `currency`. Errors are \
                     `{\"error\": {\"type\", \"code\", \"message\", \"param\"}}`; the codes are listed \
                     in the `Code` schema.",
                ))
                .build(),
        )
        .build()
}

/// What every status an error may come with means.
fn error_statuses() -> Vec<(u16, &'static str, Kind)> {
    vec![
        (
            400,
            "The request is wrong: `param` names what to change.",
            Kind::InvalidRequest,
        ),
        (401, "No valid API key.", Kind::Authentication),
        (
            404,
            "No such object for this tenant, or no such route.",
            Kind::NotFound,
        ),
        (
            405,
            "The route does not take that method.",
            Kind::MethodNotAllowed,
        ),
        (
            409,
            "The request conflicts with the state of an object.",
            Kind::Conflict,
        ),
        (413, "The body is too large.", Kind::TooLarge),
        (429, "Too many requests; slow down.", Kind::RateLimited),
        (500, "Tollgate failed; try again.", Kind::Internal),
        (
            502,
            "Stripe refused or failed a request Tollgate made.",
            Kind::Stripe,
        ),
        (
            503,
            "Stripe or the database is unavailable; try again shortly.",
            Kind::Unavailable,
        ),
    ]
}

/// The codes of one kind, for a response's description.
fn codes_of(kind: Kind) -> String {
    Code::ALL
        .iter()
        .filter(|c| c.kind() == kind)
        .map(|c| format!("`{}`", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The list of error codes with their meaning, for the `Code` schema's description.
fn code_table() -> String {
    let mut out = String::from(
        "Every error code Tollgate answers with:\n\n| code | status | meaning |\n|---|---|---|\n",
    );
    for c in Code::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            c.as_str(),
            super::error::status(c.kind()).as_u16(),
            c.description()
        ));
    }
    out
}

pub(super) fn finish(mut api: OpenApi) -> OpenApi {
    let components = api
        .components
        .get_or_insert_with(utoipa::openapi::Components::new);
    let mut schemas = vec![(ErrorBody::name().into_owned(), ErrorBody::schema())];
    <ErrorBody as ToSchema>::schemas(&mut schemas);
    components.schemas.extend(schemas);
    // The code list, with what each code means.
    if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(code))) =
        components.schemas.get_mut("Code")
    {
        code.description = Some(code_table());
    }
    components.add_security_scheme(
        "tenant_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A tenant's API key: `tg_sk_...`."))
                .build(),
        ),
    );
    components.add_security_scheme(
        "operator_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The operator's key: `tg_admin_...`."))
                .build(),
        ),
    );
    for (path, item) in api.paths.paths.iter_mut() {
        let operator = path.starts_with("/v1/tenants");
        let webhook = path.starts_with("/webhooks/");
        let each = |op: &mut Operation, post: bool| {
            for (status, meaning, kind) in error_statuses() {
                let codes = codes_of(kind);
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(format!("{meaning} Codes: {codes}."))
                            .content(
                                "application/json",
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                                    .build(),
                            )
                            .build()
                            .into()
                    });
            }
            if webhook {
                return;
            }
            op.security = Some(vec![SecurityRequirement::new(
                if operator {
                    "operator_key"
                } else {
                    "tenant_key"
                },
                Vec::<String>::new(),
            )]);
            if post {
                op.parameters.get_or_insert_with(Vec::new).push(
                    ParameterBuilder::new()
                        .name("Idempotency-Key")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "The same key and body within 24 hours replays the first answer; another body is a 409.",
                        ))
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .min_length(Some(1))
                                .max_length(Some(255))
                                .pattern(Some("^[!-~]+$")),
                        ))
                        .build()
                        .into(),
                );
            }
        };
        if let Some(op) = item.get.as_mut() {
            each(op, false);
        }
        if let Some(op) = item.post.as_mut() {
            each(op, true);
        }
        if let Some(op) = item.delete.as_mut() {
            each(op, false);
        }
    }
    api
}
