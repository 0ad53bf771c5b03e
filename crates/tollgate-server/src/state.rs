//! What every handler and worker shares.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tollgate_domain::{
    CustomerId, OrderId, PriceId, ProductId, StripeCustomerId, StripePriceId, TenantId,
};
use tollgate_store::{AccessChanges, Store, Tenant};
use tollgate_stripe::Gateway;

use crate::access::AccessIndex;

/// The SHA-256 of an API key.
type KeyDigest = [u8; 32];

fn key_digest(secret: &str) -> KeyDigest {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}
use crate::config::Settings;

/// How long a verified API key is trusted without asking the database again. A key revoked
/// in another process stops working within this time; in this process, at once.
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// How long a tenant read for applying events is used again; a change made in this
/// process is seen at once.
const TENANT_CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries a [`Memo`] keeps before it starts again from empty.
const MEMO_CAPACITY: usize = 100_000;

/// Answers that never change once found (the local customer of a Stripe customer, the
/// local price of a Stripe price), kept so that applying events asks the database once
/// per object. A plain map emptied when full: the answers are cheap to find again, so no
/// eviction order is worth a dependency.
pub struct Memo<K, V> {
    map: RwLock<HashMap<K, V>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MEMO_CAPACITY {
            map.clear();
        }
        map.insert(key, value);
    }
}
/// How long `/readyz` trusts its last answer from Stripe: probes every few seconds from a
/// load balancer must not become as many calls to Stripe.
pub const STRIPE_PROBE_TTL: Duration = Duration::from_secs(5);
/// How long the readiness call to Stripe may take.
const STRIPE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A tenant as read (`None`: no such tenant), and when it was read.
type TenantRead = (Option<Arc<Tenant>>, Instant);

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub stripe: Gateway,
    pub webhook_secrets: Vec<String>,
    pub admin_key_hash: Option<String>,
    pub public_url: String,
    pub access: AccessIndex,
    pub checkout_limiter: DefaultKeyedRateLimiter<TenantId>,
    /// Tenants by the SHA-256 of their API keys (the digest's bytes: nothing to format on
    /// the path every request takes), hashed with foldhash rather than SipHash: a digest
    /// cannot be chosen to collide.
    keys: RwLock<HashMap<KeyDigest, (Arc<Tenant>, Instant), foldhash::fast::RandomState>>,
    /// Customers and products known to exist, per tenant: an access check for ids the
    /// index holds nothing for asks the database once, then answers from here.
    known_customers: RwLock<HashSet<(TenantId, CustomerId)>>,
    known_products: RwLock<HashSet<(TenantId, ProductId)>>,
    /// Tenants as read for applying events (`None`: no such tenant), with when read.
    tenants: RwLock<HashMap<TenantId, TenantRead>>,
    /// The local customer of a tenant's Stripe customer.
    pub customers_by_stripe: Memo<(TenantId, StripeCustomerId), CustomerId>,
    /// The local price (and its product) of a tenant's Stripe price.
    pub prices_by_stripe: Memo<(TenantId, StripePriceId), (PriceId, ProductId)>,
    /// Orders known to exist, per tenant.
    pub known_orders: Memo<(TenantId, OrderId), ()>,
    /// Woken when an event lands in the inbox unleased, so the claimer need not poll hard.
    pub inbox_signal: tokio::sync::Notify,
    /// Stores webhook events (group commit).
    pub ingest: crate::ingest::Ingest,
    /// This instance's dispatcher of events, when it applies events.
    pub dispatcher: std::sync::OnceLock<crate::worker::Handle>,
    /// Woken when usage is recorded, so the reporter sends it soon.
    pub usage_signal: tokio::sync::Notify,
    /// The last answer to "does Stripe answer this key?", and when it was had. Held across
    /// the call, so that probes arriving together share one call.
    stripe_probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The state, and the queue of webhook events for [`crate::ingest::run`] to store.
    pub fn new(
        settings: &Settings,
        store: Store,
        stripe: Gateway,
        webhook_secrets: Vec<String>,
        public_url: String,
    ) -> (Self, crate::ingest::Queue) {
        let (ingest, queue) = crate::ingest::Ingest::new();
        let per_minute =
            NonZeroU32::new(settings.checkout_rate_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let state = Self(Arc::new(Inner {
            store,
            stripe,
            webhook_secrets,
            admin_key_hash: settings
                .admin_key
                .as_deref()
                .map(tollgate_store::hash_secret),
            public_url,
            access: AccessIndex::default(),
            checkout_limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            keys: RwLock::default(),
            known_customers: RwLock::default(),
            known_products: RwLock::default(),
            tenants: RwLock::default(),
            customers_by_stripe: Memo::new(),
            prices_by_stripe: Memo::new(),
            known_orders: Memo::new(),
            inbox_signal: tokio::sync::Notify::new(),
            ingest,
            dispatcher: std::sync::OnceLock::new(),
            usage_signal: tokio::sync::Notify::new(),
            stripe_probe: tokio::sync::Mutex::new(None),
        }));
        (state, queue)
    }

    /// Whether Stripe answers with this instance's key, asked at most once every
    /// [`STRIPE_PROBE_TTL`]; `Err` says why not (for logs, never for clients).
    pub async fn stripe_reachable(&self) -> Result<(), String> {
        let mut last = self.stripe_probe.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < STRIPE_PROBE_TTL
        {
            return answer.clone();
        }
        let answer = self
            .stripe
            .check_key(STRIPE_PROBE_TIMEOUT)
            .await
            .map_err(|e| e.to_string());
        if let Err(why) = &answer {
            tracing::warn!(error = %why, "readiness: Stripe does not answer");
        }
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    /// The tenant for a secret API key, if the cache holds it (read at most
    /// [`KEY_CACHE_TTL`] ago).
    pub fn cached_tenant(&self, secret: &str) -> Option<Arc<Tenant>> {
        self.cached_key(&key_digest(secret))
    }

    fn cached_key(&self, digest: &KeyDigest) -> Option<Arc<Tenant>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(tenant, _)| tenant.clone())
    }

    /// The tenant for a secret API key, from a short-lived cache or the database.
    pub async fn tenant_for_key(
        &self,
        secret: &str,
    ) -> Result<Option<Arc<Tenant>>, tollgate_store::StoreError> {
        let hash = key_digest(secret);
        if let Some(tenant) = self.cached_key(&hash) {
            return Ok(Some(tenant));
        }
        let found = match self.store.tenant_for_key(secret).await? {
            Some(id) => Some(Arc::new(self.store.tenant(&id).await?)),
            None => None,
        };
        let mut cache = self.keys.write().unwrap_or_else(|p| p.into_inner());
        match &found {
            Some(t) => {
                cache.insert(hash, (t.clone(), Instant::now()));
            }
            None => {
                cache.remove(&hash);
            }
        }
        Ok(found)
    }

    /// A tenant (`None`: there is none), read at most [`TENANT_CACHE_TTL`] ago.
    pub async fn tenant(
        &self,
        id: &TenantId,
    ) -> Result<Option<Arc<Tenant>>, tollgate_store::StoreError> {
        if let Some((t, at)) = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            && at.elapsed() < TENANT_CACHE_TTL
        {
            return Ok(t.clone());
        }
        let t = match self.store.tenant(id).await {
            Ok(t) => Some(Arc::new(t)),
            Err(tollgate_store::StoreError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let mut cache = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MEMO_CAPACITY {
            cache.clear();
        }
        cache.insert(id.clone(), (t.clone(), Instant::now()));
        Ok(t)
    }

    /// Forgets what is cached of tenants (after a change in this process).
    pub fn forget_tenants(&self) {
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Forgets cached keys (after a revocation in this process).
    pub fn forget_keys(&self) {
        self.keys.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Applies committed changes of access to the index: the one place that does, for
    /// every write the API, the worker and the CLI make. (The store announces the same
    /// changes to other instances on PostgreSQL itself.)
    pub async fn apply(&self, changes: AccessChanges) {
        for (tenant, customer) in changes.into_inner() {
            self.refresh_customer(tenant, customer).await;
        }
    }

    /// Re-reads a customer's grants into the index. A failed read is tried again in the
    /// background until it succeeds: a grant the database took back must not linger here.
    pub async fn refresh_customer(&self, tenant: TenantId, customer: CustomerId) {
        if self.try_refresh(&tenant, &customer).await {
            return;
        }
        let state = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            loop {
                tokio::time::sleep(wait).await;
                if state.try_refresh(&tenant, &customer).await {
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        });
    }

    async fn try_refresh(&self, tenant: &TenantId, customer: &CustomerId) -> bool {
        let ticket = self.access.ticket();
        match self.store.grants_for_customer(tenant, customer).await {
            Ok(grants) => {
                self.access
                    .replace_customer(ticket, tenant, customer, grants);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, tenant = %tenant, customer = %customer, "refreshing access failed; will retry");
                false
            }
        }
    }

    /// Re-reads every grant (on start, and now and then as a safety net).
    pub async fn reload_access(&self) -> Result<(), tollgate_store::StoreError> {
        let ticket = self.access.ticket();
        let grants = self.store.all_grants().await?;
        self.access.load(ticket, grants);
        Ok(())
    }

    /// Whether a customer of this tenant exists.
    pub async fn customer_exists(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
    ) -> Result<bool, tollgate_store::StoreError> {
        let key = (tenant.clone(), customer.clone());
        if self.access.knows(tenant, customer)
            || self
                .known_customers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key)
        {
            return Ok(true);
        }
        match self.store.customer(tenant, customer).await {
            Ok(_) => {
                self.known_customers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
                Ok(true)
            }
            Err(tollgate_store::StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a product of this tenant exists (deleted ones included: their buyers keep
    /// access).
    pub async fn product_exists(
        &self,
        tenant: &TenantId,
        product: &ProductId,
    ) -> Result<bool, tollgate_store::StoreError> {
        let key = (tenant.clone(), product.clone());
        if self
            .known_products
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(true);
        }
        match self.store.product(tenant, product).await {
            Ok(_) => {
                self.known_products
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
                Ok(true)
            }
            Err(tollgate_store::StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
