//! The HTTP face of the sandbox: Stripe's API under `/v1`, the hosted pages, and the
//! `/_sandbox` admin routes. Every `/v1` request goes through one pipeline: faults,
//! authentication, parameter parsing and validation against Stripe's OpenAPI, idempotency,
//! the resource handler, `expand[]`, then the events it caused go to the webhook dispatcher.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::faults::{Faults, roll};
use crate::ids::new_id;
use crate::world::RequestInfo;
use crate::{Shared, api, expand, pages, params};

/// Largest request body the API accepts.
const MAX_BODY: usize = 1 << 20;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/{*rest}", axum::routing::any(api_request))
        .route(
            "/c/pay/{id}",
            get(pages::checkout_page).post(pages::checkout_pay),
        )
        .route(
            "/c/pay/{id}/authenticate",
            post(pages::checkout_authenticate),
        )
        .route(
            "/c/pay/{id}/promotion_code",
            post(pages::checkout_promotion_code),
        )
        .route("/c/pay/{id}/cancel", get(pages::checkout_cancel))
        .route("/p/session/{id}", get(pages::portal_page))
        .route("/p/session/{id}/{action}", post(pages::portal_action))
        .route("/_sandbox/faults", get(get_faults).post(set_faults))
        .route("/_sandbox/deliveries", get(list_deliveries))
        .route("/_sandbox/charges/{id}/dispute", post(create_dispute))
        .route("/_sandbox/disputes/{id}/resolve", post(resolve_dispute))
        .route("/_sandbox/events/{id}/resend", post(resend_event))
        .route(
            "/_sandbox/billing_portal/default_configuration",
            post(save_default_portal_configuration),
        )
        .route("/", get(pages::index))
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::unrecognized(method.as_str(), uri.path())
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// The secret key from `Authorization: Bearer sk_test_...` or Basic auth with the key as user.
fn api_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let no_key = || {
        ApiError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    };
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(no_key)?;
    let key = if let Some(token) = header.strip_prefix("Bearer ") {
        token.trim().to_owned()
    } else if let Some(b64) = header.strip_prefix("Basic ") {
        let decoded = base64_decode(b64.trim()).ok_or_else(no_key)?;
        decoded.split(':').next().unwrap_or_default().to_owned()
    } else {
        return Err(no_key());
    };
    if key.is_empty() {
        return Err(no_key());
    }
    Ok(key)
}

/// Standard base64 decoding, for Basic auth only; a dependency for ten lines is not worth it.
fn base64_decode(input: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in input.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

fn redact(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let head: String = key.chars().take(8).collect();
    format!("{head}********{tail}")
}

async fn api_request(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = new_id("req");
    let mut res = match serve_api(&shared, &method, &uri, &headers, &body, &request_id).await {
        Ok(res) => res,
        // Stripe's error objects link the request's log, which names its id: clients that
        // see no headers (async-stripe's) log the id from here.
        Err(e) => e
            .with_extra(
                "request_log_url",
                serde_json::Value::String(format!(
                    "https://dashboard.stripe.com/test/logs/{request_id}"
                )),
            )
            .into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("request-id", v);
    }
    res.headers_mut().insert(
        "stripe-version",
        HeaderValue::from_static(crate::API_VERSION),
    );
    res
}

async fn serve_api(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    request_id: &str,
) -> Result<Response, ApiError> {
    let faults = shared.faults();
    // The delay comes before the world is locked, so that slow answers overlap as Stripe's
    // do instead of queueing behind one another.
    let delay = faults.latency();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let key = api_key(headers)?;
    let key_ok = match &shared.config.api_key {
        Some(expected) => &key == expected,
        None => key.starts_with("sk_test_"),
    };
    if !key_ok {
        return Err(ApiError::unauthorized(format!(
            "Invalid API Key provided: {}",
            redact(&key)
        )));
    }
    if roll(faults.rate_limit_rate) {
        return Err(ApiError::rate_limited());
    }
    if roll(faults.error_rate) {
        return Err(ApiError::server_error());
    }
    check_version(&shared.config, headers)?;

    let path = uri.path();
    // Stripe takes POST parameters in the body and GET parameters in the query; clients
    // send DELETE parameters either way.
    let raw = if *method == Method::POST || (*method == Method::DELETE && !body.is_empty()) {
        std::str::from_utf8(body)
            .map_err(|_| ApiError::invalid("Request body is not valid UTF-8."))?
            .to_owned()
    } else {
        uri.query().unwrap_or_default().to_owned()
    };
    let op = params::find(method.as_str(), path)
        .ok_or_else(|| ApiError::unrecognized(method.as_str(), path))?;
    let mut p = op.check(params::parse_form(&raw)?)?;
    let expand_paths: Vec<String> = p
        .as_object_mut()
        .and_then(|m| m.remove("expand"))
        .and_then(|e| e.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();

    let idem_key = if *method == Method::POST || *method == Method::DELETE {
        headers
            .get("idempotency-key")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    } else {
        None
    };

    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    let (status, out) = {
        let mut world = shared.world();
        if let Some(k) = &idem_key
            && let Some(stored) = world.idempotency.get(&(key.clone(), k.clone()))
        {
            if stored.method != method.as_str() || stored.path != path || stored.params != p {
                return Err(ApiError::idempotency(format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request."
                )));
            }
            let mut res = (
                StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                axum::Json(stored.body.clone()),
            )
                .into_response();
            // Stripe: "subsequent requests with the same key return the same result"; its
            // replayed answers say so with `Idempotent-Replayed: true` and name the request
            // that produced them in `Original-Request`.
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            if let Ok(v) = HeaderValue::from_str(&stored.request_id) {
                res.headers_mut().insert("original-request", v);
            }
            if let Ok(v) = HeaderValue::from_str(k) {
                res.headers_mut().insert("idempotency-key", v);
            }
            return Ok(res);
        }
        crate::api::checkout::expire_due(&mut world);
        world.request = Some(RequestInfo {
            id: Some(request_id.to_owned()),
            idempotency_key: idem_key.clone(),
        });
        let ctx = api::Ctx {
            base_url: &shared.base_url,
            config: &shared.config,
        };
        let result = api::route(&mut world, &ctx, method.as_str(), &segments, p.clone())
            .and_then(|v| expand::apply(&world, v, &expand_paths));
        world.request = None;
        let (status, out) = match result {
            Ok(v) => (StatusCode::OK, v),
            Err(e) => (e.status, e.body()),
        };
        if let Some(k) = idem_key {
            world.idempotency.insert(
                (key, k),
                crate::world::StoredResponse {
                    request_id: request_id.to_owned(),
                    method: method.to_string(),
                    path: path.to_owned(),
                    params: std::mem::take(&mut p),
                    status: status.as_u16(),
                    body: out.clone(),
                },
            );
        }
        shared.settle(world);
        (status, out)
    };
    if *method == Method::POST && roll(faults.lost_answer_rate) {
        return Err(ApiError::server_error());
    }
    Ok((status, axum::Json(out)).into_response())
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> axum::Json<Faults> {
    axum::Json(shared.faults())
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return ApiError::invalid(format!("Invalid faults: {e}")).into_response(),
    };
    if let Err(msg) = faults.check() {
        return ApiError::invalid(msg).into_response();
    }
    *shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults.clone();
    axum::Json(faults).into_response()
}

#[derive(serde::Deserialize)]
struct DeliveryFilter {
    event: Option<String>,
    endpoint: Option<String>,
}

async fn list_deliveries(
    State(shared): State<Arc<Shared>>,
    Query(filter): Query<DeliveryFilter>,
) -> axum::Json<Value> {
    let data: Vec<_> = shared
        .webhooks
        .records()
        .into_iter()
        .filter(|d| filter.event.as_deref().is_none_or(|e| d.event_id == e))
        .filter(|d| {
            filter
                .endpoint
                .as_deref()
                .is_none_or(|e| d.endpoint_id == e)
        })
        .collect();
    axum::Json(json!({ "object": "list", "data": data }))
}

/// Runs a world change outside the `/v1` pipeline (admin routes and hosted pages), then
/// settles it: events to the dispatcher, the state file written.
pub(crate) fn with_world<T>(
    shared: &Arc<Shared>,
    change: impl FnOnce(&mut crate::world::World) -> T,
) -> T {
    let mut world = shared.world();
    let out = change(&mut world);
    shared.settle(world);
    out
}

/// The API versions a request may ask for: the one the sandbox speaks, and
/// `Config::extra_api_versions`.
fn check_version(config: &crate::Config, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(raw) = headers.get("stripe-version") else {
        return Ok(());
    };
    let asked = raw.to_str().unwrap_or_default().trim();
    if asked == crate::API_VERSION || config.extra_api_versions.iter().any(|v| v == asked) {
        return Ok(());
    }
    // Stripe answers a version it does not know with "Invalid Stripe API version: <v>"
    // (as seen on `2019-2-19` and on a made-up `2025-09-30.acacia`; stripe-java #682).
    let mut message = format!("Invalid Stripe API version: {asked}");
    if well_formed_version(asked) {
        // A real-looking version the sandbox does not speak: serving it the sandbox's own
        // shapes would let a test pass that Stripe's answers for that version might fail.
        message.push_str(&format!(
            ". The sandbox speaks only Stripe API version {}; send that version (or none).",
            crate::API_VERSION
        ));
    }
    Err(ApiError::invalid(message))
}

/// `YYYY-MM-DD` with a real date, optionally followed by `.release` (`2026-05-27.dahlia`).
fn well_formed_version(v: &str) -> bool {
    let (date, release) = v.split_once('.').map_or((v, None), |(d, r)| (d, Some(r)));
    let date_ok = date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok();
    let release_ok =
        release.is_none_or(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase()));
    date_ok && release_ok
}

#[derive(serde::Deserialize, Default)]
struct DisputeParams {
    reason: Option<String>,
    status: Option<String>,
}

async fn create_dispute(
    State(shared): State<Arc<Shared>>,
    Path(charge): Path<String>,
    Query(q): Query<DisputeParams>,
) -> Response {
    let reason = q.reason.unwrap_or_else(|| "fraudulent".into());
    match with_world(&shared, |w| {
        api::payments::disputes::open_dispute(w, &charge, &reason)
    }) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn resolve_dispute(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<DisputeParams>,
) -> Response {
    let status = q.status.unwrap_or_else(|| "won".into());
    match with_world(&shared, |w| {
        api::payments::disputes::close_dispute(w, &id, &status)
    }) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Sends a stored event again to every endpoint that takes it, as `stripe events resend` does.
async fn resend_event(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut world = shared.world();
    match world.fetch("event", &id, "event", "id") {
        Ok(event) => {
            shared
                .webhooks
                .enqueue(&mut world, std::slice::from_ref(&event));
            axum::Json(event).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Saves the account's default customer portal configuration, as saving the portal settings
/// in Stripe's Dashboard does (the API cannot make a default). The form body takes the
/// parameters of `POST /v1/billing_portal/configurations`; a second call updates the default.
async fn save_default_portal_configuration(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Response {
    let parsed = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("Request body is not valid UTF-8."))
        .and_then(|raw| Ok(params::parse_form(raw)?))
        .map(|mut p| {
            // The Dashboard's settings page saves every feature; the API's create requires
            // `features`, the defaults here do not.
            if p.get("features").is_none() {
                p["features"] = serde_json::json!({});
            }
            p
        })
        .and_then(|p| {
            params::find("POST", "/v1/billing_portal/configurations")
                .ok_or_else(|| ApiError::unrecognized("POST", "/v1/billing_portal/configurations"))
                .and_then(|op| Ok(op.check(p)?))
        });
    let p = match parsed {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let config = with_world(&shared, |w| {
        api::billing::portal::save_default_configuration(w, &p)
    });
    axum::Json(config).into_response()
}
