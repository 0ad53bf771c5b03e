//! `POST /webhooks/stripe`: verify the signature over the raw body, store the event in the
//! inbox (once per event id), answer 2xx. The worker does the rest.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use tollgate_domain::Timestamp;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Answer;
use crate::error::{Code, Error};
use crate::ingest::Arrival;
use crate::state::AppState;
use crate::usecases::events::EventObject;
use crate::views::WebhookAck;

/// Stripe's events can be large (a session with many line items); they get more room.
const MAX_EVENT: usize = 1 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_EVENT))
}

/// Stripe's webhooks: `Stripe-Signature` is checked over the raw body against every
/// configured secret (300 s tolerance); the event is stored durably before the 2xx.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "webhooks",
    request_body(content = String, description = "A Stripe event, as Stripe sends it", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature of the body")),
    responses((status = 200, description = "Stored", body = WebhookAck)))]
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Answer<WebhookAck> {
    let body = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            super::extract::too_large(MAX_EVENT)
        } else {
            Error::new(Code::InvalidEvent, "The body could not be read.")
        }
    })?;
    let payload = std::str::from_utf8(&body)
        .map_err(|_| Error::new(Code::InvalidEvent, "The body is not UTF-8."))?;
    let header = headers
        .get("stripe-signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if let Err(e) = tollgate_stripe::verify_signature(
        payload,
        header,
        &state.webhook_secrets,
        Timestamp::now().secs(),
    ) {
        tracing::warn!(reason = %e, "webhook refused");
        return Err(Error::new(
            Code::InvalidSignature,
            format!("Webhook refused: {e}."),
        ));
    }
    let Some(envelope) = tollgate_stripe::parse_envelope(payload) else {
        return Err(Error::new(
            Code::InvalidEvent,
            "The body is not a Stripe event.",
        ));
    };
    let object = EventObject::of(&envelope);
    let inserted = state
        .ingest
        .store(Arrival {
            event_id: envelope.id.clone(),
            event_type: envelope.event_type.clone(),
            tenant_id: envelope.tenant_id,
            payload: payload.to_owned(),
            event_created: envelope.created,
            object,
        })
        .await?;
    tracing::debug!(event = %envelope.id, kind = %envelope.event_type, duplicate = !inserted, "webhook stored");
    Ok(axum::Json(WebhookAck {
        received: true,
        duplicate: !inserted,
    }))
}
