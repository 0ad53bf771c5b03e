//! `POST /webhooks/stripe`: verify the signature over the raw body, store the event in the
//! inbox (once per event id), answer 2xx. The worker does the rest.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde_json::json;
use tollgate_store::NewInboxEvent;

use super::ok;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Stripe's events can be large (a session with many line items); they get more room.
const MAX_EVENT: usize = 1 << 20;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/webhooks/stripe",
        post(receive).layer(axum::extract::DefaultBodyLimit::max(MAX_EVENT)),
    )
}

fn now() -> i64 {
    tollgate_store::now_ms() / 1000
}

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let payload = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "The body is not UTF-8.",
        )
    })?;
    let header = headers
        .get("stripe-signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if let Err(e) =
        tollgate_stripe::verify_signature(payload, header, &state.webhook_secrets, now())
    {
        tracing::warn!(reason = %e, "webhook refused");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            format!("Webhook refused: {e}."),
        ));
    }
    let Some(envelope) = tollgate_stripe::parse_envelope(payload) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_event",
            "The body is not a Stripe event.",
        ));
    };
    let inserted = state
        .store
        .inbox_insert(&NewInboxEvent {
            event_id: &envelope.id,
            event_type: &envelope.event_type,
            tenant_id: envelope.tenant_id.as_deref(),
            payload,
            event_created: envelope.created,
        })
        .await?;
    if inserted {
        state.inbox_signal.notify_one();
    }
    tracing::debug!(event = %envelope.id, kind = %envelope.event_type, duplicate = !inserted, "webhook stored");
    Ok(ok(json!({ "received": true, "duplicate": !inserted })))
}
