//! Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, an
//! HMAC-SHA256 of `"<t>.<raw body>"` keyed with the endpoint secret. Any `v1` may match any
//! of the configured secrets (during a rotation there are two), within a tolerance.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's default tolerance between the signature's timestamp and now.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or malformed Stripe-Signature header")]
    Header,
    #[error("no signature matches the configured secrets")]
    Signature,
    #[error("signature timestamp outside the tolerance")]
    Timestamp,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// Checks `header` against `payload` (the raw body, as received) for each secret.
///
/// Written here rather than taken from async-stripe-webhook because that verifier also
/// deserializes every event into typed objects, which the ingest path neither needs nor
/// should pay for: events are stored raw and read later by the worker.
pub fn verify_signature(
    payload: &str,
    header: &str,
    secrets: &[String],
    now: i64,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for pair in header.split(',') {
        match pair.trim().split_once('=') {
            Some(("t", v)) => timestamp = Some(v.parse().map_err(|_| VerifyError::Header)?),
            // A v1 that is not hex cannot match; skip it rather than refuse the rest.
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            Some(_) => {}
            None => return Err(VerifyError::Header),
        }
    }
    let t = timestamp.ok_or(VerifyError::Header)?;
    if signatures.is_empty() {
        return Err(VerifyError::Header);
    }
    let matched = secrets.iter().any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        // verify_slice compares in constant time.
        signatures
            .iter()
            .any(|sig| mac.clone().verify_slice(sig).is_ok())
    });
    if !matched {
        return Err(VerifyError::Signature);
    }
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Timestamp);
    }
    Ok(())
}

/// What Tollgate reads from an event before storing it.
#[derive(Debug, Clone)]
pub struct WebhookEnvelope {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    /// `data.object.metadata.tenant_id`, when Tollgate put it there.
    pub tenant_id: Option<String>,
    /// `data.object.id`.
    pub object_id: Option<String>,
    /// `data.object.payment_intent` (charges, disputes, sessions) or the intent's own id.
    pub payment_intent: Option<String>,
    /// The subscription the event is about: the object itself, an invoice's parent
    /// subscription, or a session's subscription.
    pub subscription: Option<String>,
}

/// Reads the envelope of a verified event.
pub fn parse_envelope(payload: &str) -> Option<WebhookEnvelope> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let object = &v["data"]["object"];
    let str_of = |x: &serde_json::Value| x.as_str().map(str::to_owned);
    let payment_intent = match object["object"].as_str() {
        Some("payment_intent") => str_of(&object["id"]),
        _ => str_of(&object["payment_intent"]).or_else(|| str_of(&object["payment_intent"]["id"])),
    };
    let details = &object["parent"]["subscription_details"];
    let subscription = match object["object"].as_str() {
        Some("subscription") => str_of(&object["id"]),
        Some("invoice") => {
            str_of(&details["subscription"]).or_else(|| str_of(&details["subscription"]["id"]))
        }
        _ => str_of(&object["subscription"]).or_else(|| str_of(&object["subscription"]["id"])),
    };
    Some(WebhookEnvelope {
        id: str_of(&v["id"])?,
        event_type: str_of(&v["type"])?,
        created: v["created"].as_i64().unwrap_or(0),
        // An invoice carries its subscription's metadata in its parent's details.
        tenant_id: str_of(&object["metadata"]["tenant_id"])
            .or_else(|| str_of(&details["metadata"]["tenant_id"])),
        object_id: str_of(&object["id"]),
        payment_intent,
        subscription,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sign(secret: &str, t: i64, payload: &str) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{payload}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    const PAYLOAD: &str = r#"{"id":"evt_1","object":"event","type":"made.up","created":1,"livemode":false,"pending_webhooks":1,"data":{"object":{"id":"x_1","object":"thing"}}}"#;

    #[test]
    fn any_v1_against_any_secret_verifies_during_a_rotation() {
        let t = 1_700_000_000;
        let header = format!(
            "t={t},v1={},v1={}",
            sign("whsec_old", t, PAYLOAD),
            sign("whsec_new", t, PAYLOAD)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, &["whsec_new".into()], t),
            Ok(())
        );
        assert_eq!(
            verify_signature(
                PAYLOAD,
                &header,
                &["whsec_other".into(), "whsec_old".into()],
                t + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_secret_a_changed_body_or_an_old_timestamp_is_refused() {
        let t = 1_700_000_000;
        let header = format!("t={t},v1={}", sign("whsec_a", t, PAYLOAD));
        assert_eq!(
            verify_signature(PAYLOAD, &header, &["whsec_b".into()], t),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            verify_signature(
                &PAYLOAD.replace("evt_1", "evt_2"),
                &header,
                &["whsec_a".into()],
                t
            ),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, &["whsec_a".into()], t + 301),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify_signature(PAYLOAD, "garbage", &["whsec_a".into()], t),
            Err(VerifyError::Header)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, &[], t),
            Err(VerifyError::NoSecret)
        );
    }

    #[test]
    fn the_envelope_names_the_tenant_and_the_payment_intent() {
        let e = parse_envelope(r#"{"id":"evt_9","type":"charge.refunded","created":5,"data":{"object":{"id":"ch_1","object":"charge","payment_intent":"pi_1","metadata":{"tenant_id":"ten_1"}}}}"#).unwrap();
        assert_eq!(
            (
                e.tenant_id.as_deref(),
                e.payment_intent.as_deref(),
                e.object_id.as_deref()
            ),
            (Some("ten_1"), Some("pi_1"), Some("ch_1"))
        );
    }
}
