//! The access index: what each customer may use, in memory, answered without I/O. It is
//! built from the database on start, refreshed per customer after every change this
//! process makes, and, on PostgreSQL, after every change another instance announces on
//! the access channel (with a full rebuild now and then as a safety net).
//!
//! Refreshes read the database and then write the index, and several may run at once (the
//! API, the workers, a full rebuild). Each takes a ticket before it reads; a write only
//! lands if its ticket is newer than the one that last wrote that customer. Every change
//! to the database is followed by a refresh that takes its ticket after the commit, so the
//! newest ticket always carries a read that saw every commit, and an older read can never
//! overwrite a newer one.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_domain::{CustomerId, ProductId, PurchaseId, SubscriptionId, TenantId, Timestamp};
use tollgate_store::{Grant, GrantSource, GrantTarget};

type Key = (TenantId, CustomerId);

/// One thing a customer holds.
#[derive(Debug, Clone)]
struct Held {
    target: GrantTarget,
    source: GrantSource,
    expires_at: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct Entry {
    ticket: u64,
    held: Vec<Held>,
}

/// Each customer's grants. Hashed with foldhash rather than SipHash: every check hashes
/// its key, the keys are ids this service made, and a caller's id only looks one up.
type Customers = HashMap<Key, Entry, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct AccessIndex {
    customers: RwLock<Customers>,
    tickets: AtomicU64,
}

/// What grants access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessSource {
    Purchase,
    Subscription,
}

/// The answer to "may this customer use this product (or feature)?".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AccessAnswer {
    pub has_access: bool,
    /// What grants it; `null` when there is no access.
    pub source: Option<AccessSource>,
    /// The purchase that grants it.
    pub purchase_id: Option<PurchaseId>,
    /// The subscription that grants it.
    pub subscription_id: Option<SubscriptionId>,
    /// When this access ends on its own (a subscription canceled at period end, a grace
    /// period); `null` when it does not.
    pub expires_at: Option<Timestamp>,
}

impl AccessAnswer {
    const NONE: AccessAnswer = AccessAnswer {
        has_access: false,
        source: None,
        purchase_id: None,
        subscription_id: None,
        expires_at: None,
    };

    /// The answer as JSON: the bytes serde_json writes for it, written directly. Through
    /// serde_json, escaping each key and id byte by byte was the largest cost of an access
    /// check over what a minimal server spends (about 2,900 of its 34,000 instructions,
    /// by callgrind). An id is written as it stands only when it holds nothing JSON would
    /// escape, which every id Tollgate makes does; any other goes through serde_json.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(match self.has_access {
            true => b"{\"has_access\":true,\"source\":",
            false => b"{\"has_access\":false,\"source\":",
        });
        out.extend_from_slice(match self.source {
            None => b"null",
            Some(AccessSource::Purchase) => b"\"purchase\"",
            Some(AccessSource::Subscription) => b"\"subscription\"",
        });
        out.extend_from_slice(b",\"purchase_id\":");
        string_or_null(&mut out, self.purchase_id.as_ref().map(PurchaseId::as_str));
        out.extend_from_slice(b",\"subscription_id\":");
        string_or_null(
            &mut out,
            self.subscription_id.as_ref().map(SubscriptionId::as_str),
        );
        out.extend_from_slice(b",\"expires_at\":");
        match self.expires_at {
            None => out.extend_from_slice(b"null"),
            // Writing into a Vec cannot fail.
            Some(t) => write!(out, "{}", t.secs()).unwrap_or_default(),
        }
        out.push(b'}');
        out
    }
}

fn string_or_null(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(b"null"),
        Some(s) if s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        // Writing into a Vec cannot fail.
        Some(s) => serde_json::to_writer(&mut *out, s).unwrap_or_default(),
    }
}

impl AccessIndex {
    /// A ticket to take before reading grants from the database.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Customers> {
        self.customers.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Customers> {
        self.customers.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces everything with `grants`, read under `ticket`; customers refreshed under a
    /// newer ticket keep what they have.
    pub fn load(&self, ticket: u64, grants: Vec<Grant>) {
        let mut fresh: HashMap<Key, Vec<Held>> = HashMap::new();
        for g in grants {
            fresh
                .entry((g.tenant_id, g.customer_id))
                .or_default()
                .push(Held {
                    target: g.target,
                    source: g.source,
                    expires_at: g.expires_at,
                });
        }
        let mut map = self.write();
        for entry in map.values_mut() {
            if entry.ticket < ticket {
                entry.ticket = ticket;
                entry.held.clear();
            }
        }
        for (key, held) in fresh {
            let entry = map.entry(key).or_default();
            if entry.ticket <= ticket {
                entry.ticket = ticket;
                entry.held = held;
            }
        }
        map.retain(|_, e| !e.held.is_empty() || e.ticket > ticket);
    }

    /// Replaces one customer's grants, read under `ticket`, unless a newer read landed.
    pub fn replace_customer(
        &self,
        ticket: u64,
        tenant: &TenantId,
        customer: &CustomerId,
        grants: Vec<Grant>,
    ) {
        let held = grants
            .into_iter()
            .map(|g| Held {
                target: g.target,
                source: g.source,
                expires_at: g.expires_at,
            })
            .collect();
        let mut map = self.write();
        let entry = map.entry((tenant.clone(), customer.clone())).or_default();
        if entry.ticket < ticket {
            entry.ticket = ticket;
            entry.held = held;
        }
    }

    /// Whether the customer holds `target` at `now`. A purchase answers before a
    /// subscription (it never ends); among subscriptions the one lasting longest answers.
    pub fn check(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
        target: &GrantTarget,
        now: Timestamp,
    ) -> AccessAnswer {
        let map = self.read();
        // A tuple key needs owned parts to look up; the clones are two short strings.
        let Some(entry) = map.get(&(tenant.clone(), customer.clone())) else {
            return AccessAnswer::NONE;
        };
        let best = entry
            .held
            .iter()
            .filter(|h| &h.target == target && h.expires_at.is_none_or(|t| t > now))
            .max_by_key(|h| {
                (
                    matches!(h.source, GrantSource::Purchase(_)),
                    h.expires_at.map_or(i64::MAX, Timestamp::secs),
                )
            });
        match best {
            None => AccessAnswer::NONE,
            Some(h) => AccessAnswer {
                has_access: true,
                source: Some(match h.source {
                    GrantSource::Purchase(_) => AccessSource::Purchase,
                    GrantSource::Subscription(_) => AccessSource::Subscription,
                }),
                purchase_id: match &h.source {
                    GrantSource::Purchase(p) => Some(p.clone()),
                    GrantSource::Subscription(_) => None,
                },
                subscription_id: match &h.source {
                    GrantSource::Subscription(s) => Some(s.clone()),
                    GrantSource::Purchase(_) => None,
                },
                expires_at: h.expires_at,
            },
        }
    }

    /// Shorthand for a product check.
    pub fn check_product(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
        product: &ProductId,
        now: Timestamp,
    ) -> AccessAnswer {
        self.check(
            tenant,
            customer,
            &GrantTarget::Product(product.clone()),
            now,
        )
    }

    /// Whether the index holds anything for a customer (known to have had grants).
    pub fn knows(&self, tenant: &TenantId, customer: &CustomerId) -> bool {
        self.read()
            .contains_key(&(tenant.clone(), customer.clone()))
    }

    /// How many customers hold any grant (for metrics and tests).
    pub fn customers(&self) -> usize {
        self.read().values().filter(|e| !e.held.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn purchase(t: &TenantId, c: &CustomerId, p: &ProductId) -> Grant {
        Grant {
            tenant_id: t.clone(),
            customer_id: c.clone(),
            target: GrantTarget::Product(p.clone()),
            source: GrantSource::Purchase(PurchaseId::generate()),
            expires_at: None,
        }
    }

    #[test]
    fn an_answer_is_written_as_serde_json_writes_it() {
        let odd = |s: &str| PurchaseId::from_db(s.to_owned());
        let mut answers = vec![AccessAnswer::NONE];
        for source in [
            None,
            Some(AccessSource::Purchase),
            Some(AccessSource::Subscription),
        ] {
            for purchase_id in [None, Some(PurchaseId::generate()), Some(odd("pur_\"\\é\n"))] {
                for subscription_id in [None, Some(SubscriptionId::generate())] {
                    for expires_at in [None, Some(at(1_700_000_000)), Some(at(-1))] {
                        answers.push(AccessAnswer {
                            has_access: source.is_some(),
                            source,
                            purchase_id: purchase_id.clone(),
                            subscription_id: subscription_id.clone(),
                            expires_at,
                        });
                    }
                }
            }
        }
        for a in answers {
            assert_eq!(
                String::from_utf8(a.to_json()).unwrap(),
                serde_json::to_string(&a).unwrap()
            );
        }
    }

    #[test]
    fn a_grant_answers_for_its_tenant_customer_and_product_only() {
        let index = AccessIndex::default();
        let (t1, t2) = (TenantId::generate(), TenantId::generate());
        let c = CustomerId::generate();
        let (p, q) = (ProductId::generate(), ProductId::generate());
        index.load(index.ticket(), vec![purchase(&t1, &c, &p)]);
        assert!(index.check_product(&t1, &c, &p, at(0)).has_access);
        assert!(!index.check_product(&t1, &c, &q, at(0)).has_access);
        assert!(
            !index.check_product(&t2, &c, &p, at(0)).has_access,
            "another tenant's grant is not this tenant's"
        );
        index.replace_customer(index.ticket(), &t1, &c, vec![]);
        assert!(!index.check_product(&t1, &c, &p, at(0)).has_access);
        assert_eq!(index.customers(), 0);
    }

    #[test]
    fn an_older_read_never_overwrites_a_newer_one() {
        let index = AccessIndex::default();
        let t = TenantId::generate();
        let c = CustomerId::generate();
        let p = ProductId::generate();
        // A full rebuild starts reading (it sees the grant) ...
        let rebuild = index.ticket();
        // ... a refund commits and its refresh lands first, with no grant ...
        let refresh = index.ticket();
        index.replace_customer(refresh, &t, &c, vec![]);
        // ... then the rebuild's older snapshot arrives.
        index.load(rebuild, vec![purchase(&t, &c, &p)]);
        assert!(
            !index.check_product(&t, &c, &p, at(0)).has_access,
            "the stale snapshot must not bring access back"
        );
        // Two refreshes of one customer landing out of order.
        let (older, newer) = (index.ticket(), index.ticket());
        index.replace_customer(newer, &t, &c, vec![purchase(&t, &c, &p)]);
        index.replace_customer(older, &t, &c, vec![]);
        assert!(index.check_product(&t, &c, &p, at(0)).has_access);
        // A later full rebuild that no longer sees the customer's grant removes it.
        index.load(index.ticket(), vec![]);
        assert!(!index.check_product(&t, &c, &p, at(0)).has_access);
    }

    #[test]
    fn a_grant_ends_at_its_expiry_and_a_purchase_outranks_a_subscription() {
        let index = AccessIndex::default();
        let t = TenantId::generate();
        let c = CustomerId::generate();
        let p = ProductId::generate();
        let sub = SubscriptionId::generate();
        let by_subscription = Grant {
            source: GrantSource::Subscription(sub.clone()),
            expires_at: Some(at(10)),
            ..purchase(&t, &c, &p)
        };
        index.load(index.ticket(), vec![by_subscription.clone()]);
        let answer = index.check_product(&t, &c, &p, at(9));
        assert_eq!(
            (
                answer.has_access,
                answer.source,
                answer.subscription_id,
                answer.expires_at
            ),
            (
                true,
                Some(AccessSource::Subscription),
                Some(sub),
                Some(at(10))
            )
        );
        assert!(!index.check_product(&t, &c, &p, at(10)).has_access);
        let bought = purchase(&t, &c, &p);
        index.load(index.ticket(), vec![by_subscription, bought]);
        assert_eq!(
            index.check_product(&t, &c, &p, at(0)).source,
            Some(AccessSource::Purchase)
        );
    }
}
