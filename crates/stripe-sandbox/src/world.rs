//! The sandbox's state: every Stripe object it holds, as the JSON Stripe would render it,
//! plus what Stripe keeps out of sight (card behaviour, idempotent responses, deliveries).
//!
//! Objects are kept as `serde_json::Value` rather than typed structs: the sandbox's job is
//! to answer in Stripe's wire format, and updates become "change these fields", from which
//! an event's `previous_attributes` falls out as a diff.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::ids::new_id;

/// Stripe's API version the sandbox speaks (the vendored OpenAPI subset's version).
pub const API_VERSION: &str = "2026-05-27.dahlia";

/// The layout of [`World::snapshot`]; a file of another layout is refused on start.
const SNAPSHOT_FORMAT: u64 = 1;

/// How a test card behaves when charged, after Stripe's test card table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardBehaviour {
    /// 4242 4242 4242 4242 and the other plain test cards.
    Succeeds,
    /// Every charge is declined (4000 0000 0000 0002, 9995, 0069, 0127).
    Declines(Decline),
    /// 4000 0025 0000 3155: on-session payments ask for 3-D Secure; once set up,
    /// off-session renewals go through.
    Requires3ds,
    /// 4000 0000 0000 0341: attaching succeeds, every charge fails.
    AttachThenFail,
    /// 4000 0000 0000 5126: the charge succeeds, a refund of it fails later.
    RefundFails,
    /// The charge succeeds and is then disputed with this reason (4000 0000 0000 0259
    /// `fraudulent`, 2685 `product_not_received`).
    Disputed(&'static str),
}

impl CardBehaviour {
    /// A stable name, for the state file.
    pub fn name(&self) -> String {
        match self {
            CardBehaviour::Succeeds => "succeeds".into(),
            CardBehaviour::Declines(d) => format!("declines:{}", d.decline_code.unwrap_or(d.code)),
            CardBehaviour::Requires3ds => "requires_3ds".into(),
            CardBehaviour::AttachThenFail => "attach_then_fail".into(),
            CardBehaviour::RefundFails => "refund_fails".into(),
            CardBehaviour::Disputed(reason) => format!("disputed:{reason}"),
        }
    }

    /// The behaviour [`CardBehaviour::name`] named.
    pub fn from_name(name: &str) -> Option<CardBehaviour> {
        Some(match name {
            "succeeds" => CardBehaviour::Succeeds,
            "requires_3ds" => CardBehaviour::Requires3ds,
            "attach_then_fail" => CardBehaviour::AttachThenFail,
            "refund_fails" => CardBehaviour::RefundFails,
            other => {
                if let Some(code) = other.strip_prefix("declines:") {
                    CardBehaviour::Declines(
                        Decline::ALL
                            .into_iter()
                            .find(|d| d.decline_code.unwrap_or(d.code) == code)?,
                    )
                } else {
                    let reason = other.strip_prefix("disputed:")?;
                    CardBehaviour::Disputed(DISPUTE_REASONS.iter().copied().find(|r| *r == reason)?)
                }
            }
        })
    }
}

/// The dispute reasons Stripe's test cards raise.
pub const DISPUTE_REASONS: &[&str] = &["fraudulent", "product_not_received", "general"];

/// A decline as Stripe reports it: error code, decline code, and the message shown to the payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decline {
    pub code: &'static str,
    pub decline_code: Option<&'static str>,
    pub message: &'static str,
}

impl Decline {
    /// 4000 0000 0000 0002.
    pub const GENERIC: Decline = Decline {
        code: "card_declined",
        decline_code: Some("generic_decline"),
        message: "Your card was declined.",
    };
    /// 4000 0000 0000 9995.
    pub const INSUFFICIENT_FUNDS: Decline = Decline {
        code: "card_declined",
        decline_code: Some("insufficient_funds"),
        message: "Your card has insufficient funds.",
    };
    /// 4000 0000 0000 0069.
    pub const EXPIRED_CARD: Decline = Decline {
        code: "expired_card",
        decline_code: Some("expired_card"),
        message: "Your card has expired.",
    };
    /// 4000 0000 0000 0127.
    pub const INCORRECT_CVC: Decline = Decline {
        code: "incorrect_cvc",
        decline_code: Some("incorrect_cvc"),
        message: "Your card's security code is incorrect.",
    };
    /// Every decline a test card gives.
    pub const ALL: [Decline; 4] = [
        Decline::GENERIC,
        Decline::INSUFFICIENT_FUNDS,
        Decline::EXPIRED_CARD,
        Decline::INCORRECT_CVC,
    ];
}

/// Work that happens after the answer, as on Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A test clock advance to run to `ready`.
    AdvanceClock(String),
    /// A refund (of a 4000 0000 0000 5126 payment) to fail.
    FailRefund(String),
}

/// A response kept for an `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The id of the request that first used the key (`Original-Request` on replays).
    #[serde(default)]
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub params: Value,
    pub status: u16,
    pub body: Value,
}

/// The request that caused an event (`event.request`).
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Everything the sandbox knows. One instance behind one mutex: the sandbox serves tests
/// and demos, where simple and obviously serialisable beats concurrent.
#[derive(Default)]
pub struct World {
    objects: HashMap<String, Value>,
    by_kind: HashMap<String, Vec<String>>,
    pub idempotency: HashMap<(String, String), StoredResponse>,
    pub cards: HashMap<String, CardBehaviour>,
    /// Events created since the last drain, to hand to the webhook dispatcher.
    pub outbox: Vec<Value>,
    /// The request being served, stamped on the events it causes.
    pub request: Option<RequestInfo>,
    /// What Stripe keeps about an object but does not show (a session's line items, say),
    /// keyed by the object's id.
    pub hidden: HashMap<String, Value>,
    /// Meter event identifiers already accepted, with when (Stripe deduplicates on them
    /// over a rolling 24 hours).
    pub meter_identifiers: HashMap<String, i64>,
    /// Work Stripe does after it has answered, run in the background once the request that
    /// caused it is settled.
    pub pending: Vec<Pending>,
    /// Bumped by every change, so that a snapshot can tell whether it is newer than the one
    /// already written.
    version: u64,
    /// Checkout Sessions still open: every request expires the due ones, and walking every
    /// session ever made for that would cost more than the request.
    open_sessions: std::collections::BTreeSet<String>,
}

/// One field of a snapshot, typed.
fn parse_field<T: serde::de::DeserializeOwned>(snapshot: &Value, name: &str) -> Result<T, String> {
    serde_json::from_value(snapshot.get(name).cloned().unwrap_or(Value::Null))
        .map_err(|e| format!("snapshot {name}: {e}"))
}

/// Whether an object is a Checkout Session still open.
fn is_open_session(obj: &Value) -> bool {
    obj["object"] == "checkout.session" && obj["status"] == "open" && obj.get("deleted").is_none()
}

/// Seconds since the Unix epoch, now.
pub fn wall_clock() -> i64 {
    chrono::Utc::now().timestamp()
}

impl World {
    /// Stores a new object (it must carry `id` and `object`) and returns a copy of it.
    pub fn insert(&mut self, obj: Value) -> Value {
        let id = obj["id"].as_str().unwrap_or_default().to_owned();
        let kind = obj["object"].as_str().unwrap_or_default().to_owned();
        self.touch();
        self.by_kind.entry(kind).or_default().push(id.clone());
        self.note_if_open(&id, &obj);
        self.objects.insert(id, obj.clone());
        obj
    }

    /// Keeps [`World::open_sessions`] in step with a stored object.
    fn note_if_open(&mut self, id: &str, obj: &Value) {
        if is_open_session(obj) {
            self.open_sessions.insert(id.to_owned());
        } else {
            self.open_sessions.remove(id);
        }
    }

    /// The Checkout Sessions still open.
    pub fn open_sessions(&self) -> impl Iterator<Item = &Value> {
        self.open_sessions
            .iter()
            .filter_map(|id| self.objects.get(id))
    }

    /// Marks the world changed (for state kept outside `objects`: `hidden`, `cards`, ...).
    pub fn touch(&mut self) {
        self.version += 1;
    }

    /// How many changes the world has seen; a snapshot taken at a higher version is newer.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The durable part of the world, as JSON: everything but the outbox, the request being
    /// served and pending work, which belong to one run of the process.
    pub fn snapshot(&self) -> Value {
        let idempotency: Vec<Value> = self
            .idempotency
            .iter()
            .map(|((key, idem), stored)| json!({ "api_key": key, "key": idem, "response": stored }))
            .collect();
        let cards: Map<String, Value> = self
            .cards
            .iter()
            .map(|(pm, behaviour)| (pm.clone(), json!(behaviour.name())))
            .collect();
        json!({
            "format": SNAPSHOT_FORMAT,
            "api_version": API_VERSION,
            "objects": self.objects,
            "by_kind": self.by_kind,
            "idempotency": idempotency,
            "cards": cards,
            "hidden": self.hidden,
            "meter_identifiers": self.meter_identifiers,
        })
    }

    /// A world restored from [`World::snapshot`]'s JSON.
    pub fn restore(snapshot: &Value) -> Result<World, String> {
        if snapshot["format"] != SNAPSHOT_FORMAT {
            return Err(format!(
                "unknown snapshot format {} (expected {SNAPSHOT_FORMAT})",
                snapshot["format"]
            ));
        }
        let field = |name: &str| snapshot.get(name).cloned().unwrap_or(Value::Null);
        let mut world = World {
            objects: parse_field(snapshot, "objects")?,
            by_kind: parse_field(snapshot, "by_kind")?,
            hidden: parse_field(snapshot, "hidden")?,
            meter_identifiers: parse_field(snapshot, "meter_identifiers")?,
            ..World::default()
        };
        world.open_sessions = world
            .objects
            .iter()
            .filter(|(_, o)| is_open_session(o))
            .map(|(id, _)| id.clone())
            .collect();
        for entry in field("idempotency").as_array().into_iter().flatten() {
            let stored: StoredResponse = serde_json::from_value(entry["response"].clone())
                .map_err(|e| format!("snapshot idempotency: {e}"))?;
            let key = entry["api_key"].as_str().unwrap_or_default().to_owned();
            let idem = entry["key"].as_str().unwrap_or_default().to_owned();
            world.idempotency.insert((key, idem), stored);
        }
        for (pm, name) in field("cards").as_object().into_iter().flatten() {
            let behaviour = name
                .as_str()
                .and_then(CardBehaviour::from_name)
                .ok_or_else(|| format!("snapshot cards: unknown behaviour {name}"))?;
            world.cards.insert(pm.clone(), behaviour);
        }
        Ok(world)
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.objects.get(id)
    }

    /// The object of this type with this id, or Stripe's `resource_missing` error.
    /// `label` is the noun in the message ("customer", "price"), `param` the parameter that named it.
    pub fn fetch(&self, kind: &str, id: &str, label: &str, param: &str) -> ApiResult<Value> {
        match self.objects.get(id) {
            Some(obj) if obj["object"] == kind && obj.get("deleted").is_none() => Ok(obj.clone()),
            _ => Err(ApiError::missing(label, id, param)),
        }
    }

    /// Replaces fields of an object. Returns the new object and what an `*.updated` event's
    /// `previous_attributes` shows for the change: the old values of what changed, descending
    /// into nested objects so that only their changed keys appear, arrays whole.
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut Value)) -> (Value, Value) {
        self.version += 1;
        let Some(obj) = self.objects.get_mut(id) else {
            return (Value::Null, json!({}));
        };
        let before = obj.clone();
        change(obj);
        let previous = previous_attributes(&before, obj).unwrap_or_else(|| json!({}));
        let after = obj.clone();
        self.note_if_open(id, &after);
        (after, previous)
    }

    /// Marks an object deleted, as Stripe's delete endpoints answer: `{id, object, deleted: true}`.
    pub fn delete(&mut self, id: &str) -> Value {
        self.touch();
        if let Some(obj) = self.objects.get_mut(id) {
            obj["deleted"] = json!(true);
        }
        self.open_sessions.remove(id);
        let kind = self
            .objects
            .get(id)
            .map(|o| o["object"].clone())
            .unwrap_or(Value::Null);
        json!({ "id": id, "object": kind, "deleted": true })
    }

    /// Live objects of one type, newest first (Stripe's list order).
    pub fn all(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.by_kind
            .get(kind)
            .map(|ids| ids.as_slice())
            .unwrap_or_default()
            .iter()
            .rev()
            .filter_map(|id| self.objects.get(id))
            .filter(|o| o.get("deleted").is_none())
    }

    /// The time that applies to a customer: its test clock's frozen time, else now.
    pub fn now_for_customer(&self, customer: Option<&str>) -> i64 {
        customer
            .and_then(|c| self.objects.get(c))
            .and_then(|c| c["test_clock"].as_str())
            .and_then(|clock| self.objects.get(clock))
            .and_then(|clock| clock["frozen_time"].as_i64())
            .unwrap_or_else(wall_clock)
    }

    /// Records an event about `object` and queues it for delivery. `previous` is kept only on
    /// `*.updated` events, the only ones Stripe documents `previous_attributes` on.
    pub fn emit(&mut self, kind: &str, object: &Value, previous: Option<Value>, created: i64) {
        let request = match &self.request {
            Some(r) => json!({ "id": r.id, "idempotency_key": r.idempotency_key }),
            None => json!({ "id": null, "idempotency_key": null }),
        };
        let mut data = json!({ "object": object });
        if kind.ends_with(".updated")
            && let Some(prev) = previous.filter(|p| p.as_object().is_some_and(|m| !m.is_empty()))
        {
            data["previous_attributes"] = prev;
        }
        let event = json!({
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "data": data,
            "livemode": false,
            "pending_webhooks": 0,
            "request": request,
            "type": kind,
        });
        let event = self.insert(event);
        self.outbox.push(event);
    }

    /// Sets an event's `pending_webhooks` once the dispatcher knows how many endpoints get it.
    pub fn set_pending_webhooks(&mut self, event_id: &str, n: usize) {
        if let Some(e) = self.objects.get_mut(event_id) {
            e["pending_webhooks"] = json!(n);
        }
    }
}

/// The old values of what differs between `old` and `new`, `None` when nothing does.
/// Objects are compared key by key (a key that appeared shows as `null`); anything else,
/// arrays included, is reported whole, as Stripe reports an array with any changed element.
fn previous_attributes(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, v) in o {
                match n.get(k) {
                    Some(nv) => {
                        if let Some(d) = previous_attributes(v, nv) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in n.keys().filter(|k| !o.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        _ if old == new => None,
        _ => Some(old.clone()),
    }
}

/// Stripe's metadata rule for updates: a key set to "" is removed; `metadata=""` clears all.
pub fn merge_metadata(target: &mut Value, update: Option<&Value>) {
    match update {
        None => {}
        Some(Value::String(s)) if s.is_empty() => target["metadata"] = json!({}),
        Some(Value::Object(m)) => {
            if !target["metadata"].is_object() {
                target["metadata"] = json!({});
            }
            for (k, v) in m {
                if v.as_str() == Some("") {
                    if let Some(meta) = target["metadata"].as_object_mut() {
                        meta.remove(k);
                    }
                } else {
                    target["metadata"][k] = v.clone();
                }
            }
        }
        Some(_) => {}
    }
}

/// Metadata as given on create (an object of strings), or `{}`. Stripe: "Individual keys can
/// be unset by posting an empty value to them" (the `metadata` parameter's description), on
/// create as on update, so a key given as "" is not stored.
pub fn metadata_of(params: &Value) -> Value {
    match params.get("metadata") {
        Some(Value::Object(m)) => Value::Object(
            m.iter()
                .filter(|(_, v)| v.as_str() != Some(""))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_ids(w: &World) -> Vec<String> {
        w.open_sessions()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn due_sessions_expire_and_the_open_ones_are_known_after_a_restore() {
        let mut w = World::default();
        let now = wall_clock();
        for (id, expires_at) in [
            ("cs_due", now - 1),
            ("cs_later", now + 3600),
            ("cs_paid", now - 1),
        ] {
            w.insert(json!({"id": id, "object": "checkout.session", "status": "open", "expires_at": expires_at}));
        }
        w.insert(json!({"id": "cus_x", "object": "customer"}));
        w.update("cs_paid", |s| s["status"] = json!("complete"));
        assert_eq!(open_ids(&w), ["cs_due", "cs_later"]);

        crate::api::checkout::expire_due(&mut w);
        assert_eq!(w.get("cs_due").unwrap()["status"], "expired");
        assert_eq!(w.get("cs_paid").unwrap()["status"], "complete");
        assert_eq!(open_ids(&w), ["cs_later"]);

        let restored = World::restore(&w.snapshot()).unwrap();
        assert_eq!(open_ids(&restored), ["cs_later"]);
    }

    #[test]
    fn previous_attributes_name_only_the_changed_keys_of_nested_objects() {
        let old =
            json!({ "a": 1, "settings": { "x": 1, "y": 2 }, "list": [1, 2], "same": { "k": 1 } });
        let new = json!({ "a": 1, "settings": { "x": 1, "y": 3 }, "list": [1, 3], "same": { "k": 1 }, "added": true });
        assert_eq!(
            previous_attributes(&old, &new),
            Some(json!({ "settings": { "y": 2 }, "list": [1, 2], "added": null }))
        );
        assert_eq!(previous_attributes(&old, &old), None);
    }

    #[test]
    fn only_updated_events_carry_previous_attributes() {
        let mut w = World::default();
        w.emit("thing.created", &json!({}), Some(json!({ "a": 1 })), 0);
        w.emit("thing.updated", &json!({}), Some(json!({ "a": 1 })), 0);
        assert!(w.outbox[0]["data"].get("previous_attributes").is_none());
        assert_eq!(
            w.outbox[1]["data"]["previous_attributes"],
            json!({ "a": 1 })
        );
    }
}
