//! Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, an
//! HMAC-SHA256 of `"<t>.<raw body>"` keyed with the endpoint secret. Any `v1` may match any
//! of the configured secrets (during a rotation there are two), within a tolerance.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tollgate_domain::{
    StripeEventId, StripePaymentIntentId, StripeSubscriptionId, TenantId, Timestamp,
};

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
    // abs_diff: a timestamp of i64::MIN must not overflow the subtraction.
    if now.abs_diff(t) > TOLERANCE_SECS.unsigned_abs() {
        return Err(VerifyError::Timestamp);
    }
    Ok(())
}

/// What Tollgate reads from an event before storing it.
#[derive(Debug, Clone)]
pub struct WebhookEnvelope {
    pub id: StripeEventId,
    pub event_type: String,
    pub created: Timestamp,
    /// `data.object.metadata.tenant_id`, when Tollgate put it there (and it reads as one).
    pub tenant_id: Option<TenantId>,
    /// `data.object.id`.
    pub object_id: Option<String>,
    /// `data.object.payment_intent` (charges, disputes, sessions, refunds) or the intent's
    /// own id.
    pub payment_intent: Option<StripePaymentIntentId>,
    /// The subscription the event is about: the object itself, an invoice's parent
    /// subscription, or a session's subscription.
    pub subscription: Option<StripeSubscriptionId>,
}

/// The parts of an event the envelope needs, read in one pass without building a tree of
/// the whole body (events are stored raw and read whole only by the worker).
#[derive(serde::Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    created: i64,
    #[serde(default, borrow)]
    data: RawData<'a>,
}

#[derive(serde::Deserialize, Default)]
struct RawData<'a> {
    #[serde(default, borrow)]
    object: RawObject<'a>,
}

#[derive(serde::Deserialize, Default)]
struct RawObject<'a> {
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    object: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default)]
    payment_intent: Option<IdOrObject>,
    #[serde(default)]
    subscription: Option<IdOrObject>,
    #[serde(default)]
    parent: Option<RawParent>,
}

#[derive(serde::Deserialize, Default)]
struct RawMetadata {
    #[serde(default)]
    tenant_id: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct RawParent {
    #[serde(default)]
    subscription_details: Option<RawSubscriptionDetails>,
}

#[derive(serde::Deserialize, Default)]
struct RawSubscriptionDetails {
    #[serde(default)]
    subscription: Option<IdOrObject>,
    #[serde(default)]
    metadata: Option<RawMetadata>,
}

/// A field Stripe sends as an id, or as the object when it is expanded.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum IdOrObject {
    Id(String),
    Object { id: String },
    Other(serde::de::IgnoredAny),
}

impl IdOrObject {
    fn id(self) -> Option<String> {
        match self {
            IdOrObject::Id(s) | IdOrObject::Object { id: s } => Some(s),
            IdOrObject::Other(_) => None,
        }
    }
}

/// Reads the envelope of a verified event; `None` when the body is not a Stripe event.
pub fn parse_envelope(payload: &str) -> Option<WebhookEnvelope> {
    let e: RawEvent<'_> = serde_json::from_str(payload).ok()?;
    if e.id.is_empty() || e.kind.is_empty() {
        return None;
    }
    let object = e.data.object;
    let details = object.parent.and_then(|p| p.subscription_details);
    let kind = object.object.as_deref();
    let payment_intent = match kind {
        Some("payment_intent") => object.id.as_deref().map(str::to_owned),
        _ => object.payment_intent.and_then(IdOrObject::id),
    };
    let (details_subscription, details_tenant) = match details {
        Some(d) => (
            d.subscription.and_then(IdOrObject::id),
            d.metadata.and_then(|m| m.tenant_id),
        ),
        None => (None, None),
    };
    let subscription = match kind {
        Some("subscription") => object.id.as_deref().map(str::to_owned),
        Some("invoice") => details_subscription,
        _ => object.subscription.and_then(IdOrObject::id),
    };
    // An invoice carries its subscription's metadata in its parent's details.
    let tenant = object
        .metadata
        .and_then(|m| m.tenant_id)
        .or(details_tenant)
        .and_then(|t| TenantId::parse(&t).ok());
    Some(WebhookEnvelope {
        id: StripeEventId::from_stripe(e.id.into_owned()),
        event_type: e.kind.into_owned(),
        created: Timestamp::from_secs(e.created),
        tenant_id: tenant,
        object_id: object.id.map(|i| i.into_owned()),
        payment_intent: payment_intent.map(StripePaymentIntentId::from_stripe),
        subscription: subscription.map(StripeSubscriptionId::from_stripe),
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
    fn an_extreme_timestamp_is_refused_without_overflowing() {
        let header = format!("t={},v1={}", i64::MIN, sign("whsec_a", i64::MIN, PAYLOAD));
        assert_eq!(
            verify_signature(PAYLOAD, &header, &["whsec_a".into()], 1_700_000_000),
            Err(VerifyError::Timestamp)
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
                e.tenant_id.as_ref().map(|t| t.as_str()),
                e.payment_intent.as_ref().map(|p| p.as_str()),
                e.object_id.as_deref()
            ),
            (Some("ten_1"), Some("pi_1"), Some("ch_1"))
        );
        let invoice = parse_envelope(r#"{"id":"evt_2","type":"invoice.paid","created":5,"data":{"object":{"id":"in_1","object":"invoice","parent":{"subscription_details":{"subscription":{"id":"sub_9"},"metadata":{"tenant_id":"ten_2"}}}}}}"#).unwrap();
        assert_eq!(invoice.subscription.unwrap().as_str(), "sub_9");
        assert_eq!(invoice.tenant_id.unwrap().as_str(), "ten_2");
        assert!(parse_envelope("[1]").is_none());
        assert!(parse_envelope(r#"{"id":"","type":"x"}"#).is_none());
    }
}
