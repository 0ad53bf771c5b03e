//! The local mirror of Stripe's subscriptions, and the grants they make.
//!
//! Every write is Stripe's state as read at one moment, numbered before the read
//! ([`Store::next_sync_seq`]); a write carrying an older number than the stored one is
//! dropped. Events can arrive in any order and be applied by several workers at once: the
//! newest read always wins, so the mirror converges on Stripe's current state.

use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_domain::status::{PauseBehavior, SubscriptionStatus};
use tollgate_domain::subscription::{Grant as Granted, Standing};
use tollgate_domain::{
    Currency, CustomerId, OrderId, PriceId, ProductId, StripeCustomerId, StripeInvoiceId,
    StripePriceId, StripeSubscriptionId, StripeSubscriptionItemId, SubscriptionId, TenantId,
    Timestamp,
};

use crate::inbox::Claimed;
use crate::{
    AccessChanges, Engine, Grant, GrantSource, GrantTarget, Result, Store, StoreError, db,
    enum_col, flag_col, id_col, opt_enum_col, opt_id_col, opt_ts_col, ts_col,
};

/// One item of a subscription: a price and its quantity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionItem {
    pub stripe_item_id: StripeSubscriptionItemId,
    pub stripe_price_id: StripePriceId,
    /// The tenant's price, when the Stripe price is one of the tenant's.
    pub price_id: Option<PriceId>,
    pub quantity: i64,
}

/// Stripe's state of a subscription, as Tollgate mirrors it.
#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    pub customer_id: CustomerId,
    pub stripe_subscription_id: StripeSubscriptionId,
    pub stripe_customer_id: StripeCustomerId,
    pub status: SubscriptionStatus,
    /// The plan: the first item's price and its product (`None` when the price is not
    /// one of this tenant's, e.g. made in the Dashboard).
    pub product_id: Option<ProductId>,
    pub price_id: Option<PriceId>,
    pub stripe_price_id: StripePriceId,
    pub stripe_item_id: StripeSubscriptionItemId,
    pub quantity: i64,
    pub items: Vec<SubscriptionItem>,
    pub currency: Currency,
    pub current_period_start: Timestamp,
    pub current_period_end: Timestamp,
    pub trial_start: Option<Timestamp>,
    pub trial_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<Timestamp>,
    pub canceled_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub pause_behavior: Option<PauseBehavior>,
    pub pause_resumes_at: Option<Timestamp>,
    pub past_due_since: Option<Timestamp>,
    /// A downgrade keeps the plan paid for until the period it was paid for ends.
    pub previous_price_id: Option<PriceId>,
    pub previous_product_id: Option<ProductId>,
    pub previous_until: Option<Timestamp>,
    pub latest_invoice_id: Option<StripeInvoiceId>,
    pub order_id: Option<OrderId>,
}

/// A subscription as Tollgate mirrors it: Stripe's state as last read, and what
/// Tollgate keeps of its own.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub tenant_id: TenantId,
    pub state: SubscriptionRecord,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The number of the read of Stripe this row holds (see [`Store::next_sync_seq`]).
    pub synced_seq: i64,
}

impl std::ops::Deref for Subscription {
    type Target = SubscriptionRecord;
    fn deref(&self) -> &SubscriptionRecord {
        &self.state
    }
}

impl Subscription {
    fn from_row(row: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
        let items: String = row.try_get("items")?;
        let state = SubscriptionRecord {
            customer_id: id_col(row, "customer_id", CustomerId::from_db)?,
            stripe_subscription_id: id_col(
                row,
                "stripe_subscription_id",
                StripeSubscriptionId::from_db,
            )?,
            stripe_customer_id: id_col(row, "stripe_customer_id", StripeCustomerId::from_db)?,
            status: enum_col(row, "status", SubscriptionStatus::parse)?,
            product_id: opt_id_col(row, "product_id", ProductId::from_db)?,
            price_id: opt_id_col(row, "price_id", PriceId::from_db)?,
            stripe_price_id: id_col(row, "stripe_price_id", StripePriceId::from_db)?,
            stripe_item_id: id_col(row, "stripe_item_id", StripeSubscriptionItemId::from_db)?,
            quantity: row.try_get("quantity")?,
            items: serde_json::from_str(&items).unwrap_or_default(),
            currency: Currency::from_db(row.try_get("currency")?),
            current_period_start: ts_col(row, "current_period_start")?,
            current_period_end: ts_col(row, "current_period_end")?,
            trial_start: opt_ts_col(row, "trial_start")?,
            trial_end: opt_ts_col(row, "trial_end")?,
            cancel_at_period_end: flag_col(row, "cancel_at_period_end")?,
            cancel_at: opt_ts_col(row, "cancel_at")?,
            canceled_at: opt_ts_col(row, "canceled_at")?,
            ended_at: opt_ts_col(row, "ended_at")?,
            pause_behavior: opt_enum_col(row, "pause_behavior", PauseBehavior::parse)?,
            pause_resumes_at: opt_ts_col(row, "pause_resumes_at")?,
            past_due_since: opt_ts_col(row, "past_due_since")?,
            previous_price_id: opt_id_col(row, "previous_price_id", PriceId::from_db)?,
            previous_product_id: opt_id_col(row, "previous_product_id", ProductId::from_db)?,
            previous_until: opt_ts_col(row, "previous_until")?,
            latest_invoice_id: opt_id_col(row, "latest_invoice_id", StripeInvoiceId::from_db)?,
            order_id: opt_id_col(row, "order_id", OrderId::from_db)?,
        };
        Ok(Self {
            id: id_col(row, "id", SubscriptionId::from_db)?,
            tenant_id: id_col(row, "tenant_id", TenantId::from_db)?,
            state,
            created_at: ts_col(row, "created_at")?,
            updated_at: ts_col(row, "updated_at")?,
            synced_seq: row.try_get("synced_seq")?,
        })
    }
}

impl SubscriptionRecord {
    /// Live: it grants access now or may again without a new checkout.
    pub fn is_live(&self) -> bool {
        self.status.is_live()
    }

    /// What the access rules see of it.
    pub fn standing(&self) -> Standing {
        Standing {
            status: self.status,
            current_period_end: self.current_period_end,
            cancel_at_period_end: self.cancel_at_period_end,
            cancel_at: self.cancel_at,
            collection_paused: self.pause_behavior.is_some(),
            past_due_since: self.past_due_since,
        }
    }

    /// The plan paid for before a downgrade, while its period lasts.
    pub fn carried_over(&self) -> Option<(&ProductId, Timestamp)> {
        match (&self.previous_product_id, self.previous_until) {
            (Some(p), Some(until)) if until > self.current_period_start => Some((p, until)),
            _ => None,
        }
    }
}

/// Filters for listing subscriptions.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionFilter {
    pub customer_id: Option<CustomerId>,
    pub status: Option<SubscriptionStatus>,
}

const COLUMNS: &str = "id, tenant_id, customer_id, stripe_subscription_id, stripe_customer_id, status, product_id, \
    price_id, stripe_price_id, stripe_item_id, quantity, items, currency, current_period_start, current_period_end, \
    trial_start, trial_end, cancel_at_period_end, cancel_at, canceled_at, ended_at, pause_behavior, pause_resumes_at, \
    past_due_since, previous_price_id, previous_product_id, previous_until, latest_invoice_id, order_id, created_at, updated_at, synced_seq";

/// Numbers of reads reserved at once on SQLite.
const SEQ_BLOCK: i64 = 1000;

impl Store {
    /// The next number for a read of Stripe's subscriptions; draw it before the read.
    ///
    /// On PostgreSQL every number is drawn from the database's sequence
    /// `subscription_sync_seq`, so that the reads of all instances are ordered as they
    /// began; a sequence hands numbers out without a row lock or a commit of its own, where
    /// a counter row made every read wait for the one before it to commit. On SQLite, which
    /// serves one instance, numbers are handed out from memory in blocks reserved in the
    /// database (a write per block rather than per read); a second process on the same
    /// file draws from other blocks.
    pub async fn next_sync_seq(&self) -> Result<i64> {
        if self.engine == Engine::Postgres {
            return db(
                sqlx::query_scalar("SELECT nextval('subscription_sync_seq')")
                    .fetch_one(&self.pool)
                    .await,
            );
        }
        let mut block = self.instance.seq_block.lock().await;
        if block.0 >= block.1 {
            let end = self.reserve_sync_seqs(SEQ_BLOCK).await?;
            *block = (end - SEQ_BLOCK, end);
        }
        block.0 += 1;
        Ok(block.0)
    }

    /// Moves the counter on by `n`; answers its new value (the last number reserved).
    async fn reserve_sync_seqs(&self, n: i64) -> Result<i64> {
        db(sqlx::query(
            "UPDATE sync_counters SET value = value + $1 WHERE name = 'subscriptions' RETURNING value",
        )
        .bind(n)
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get("value")))
    }

    /// Writes Stripe's state of a subscription read under `seq`, unless a newer read is
    /// stored already. Returns the subscription as stored and whether this write landed.
    /// The customer's access is announced to other instances in the same transaction, and
    /// `marks` are marked processed in it.
    pub async fn upsert_subscription(
        &self,
        tenant: &TenantId,
        r: &SubscriptionRecord,
        seq: i64,
        marks: &[Claimed],
    ) -> Result<(Subscription, AccessChanges)> {
        let now = Timestamp::now().secs();
        let items = serde_json::to_string(&r.items)
            .map_err(|e| StoreError::Refused(format!("subscription items: {e}")))?;
        let mut tx = self.begin().await?;
        let written = db(sqlx::query(&format!(
            "INSERT INTO subscriptions (id, tenant_id, customer_id, stripe_subscription_id, stripe_customer_id, status, product_id, \
             price_id, stripe_price_id, stripe_item_id, quantity, items, currency, current_period_start, current_period_end, \
             trial_start, trial_end, cancel_at_period_end, cancel_at, canceled_at, ended_at, pause_behavior, pause_resumes_at, \
             past_due_since, previous_price_id, previous_product_id, previous_until, latest_invoice_id, order_id, synced_seq, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, \
             $24, $25, $26, $27, $28, $29, $30, $31, $31) \
             ON CONFLICT (stripe_subscription_id) DO UPDATE SET customer_id = excluded.customer_id, \
             stripe_customer_id = excluded.stripe_customer_id, status = excluded.status, product_id = excluded.product_id, \
             price_id = excluded.price_id, stripe_price_id = excluded.stripe_price_id, stripe_item_id = excluded.stripe_item_id, \
             quantity = excluded.quantity, items = excluded.items, currency = excluded.currency, \
             current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end, \
             trial_start = excluded.trial_start, trial_end = excluded.trial_end, \
             cancel_at_period_end = excluded.cancel_at_period_end, cancel_at = excluded.cancel_at, \
             canceled_at = excluded.canceled_at, ended_at = excluded.ended_at, pause_behavior = excluded.pause_behavior, \
             pause_resumes_at = excluded.pause_resumes_at, past_due_since = excluded.past_due_since, \
             previous_price_id = excluded.previous_price_id, previous_product_id = excluded.previous_product_id, \
             previous_until = excluded.previous_until, latest_invoice_id = excluded.latest_invoice_id, \
             order_id = COALESCE(subscriptions.order_id, excluded.order_id), synced_seq = excluded.synced_seq, \
             updated_at = excluded.updated_at \
             WHERE subscriptions.synced_seq < excluded.synced_seq AND subscriptions.tenant_id = excluded.tenant_id \
             RETURNING {COLUMNS}"
        ))
        .bind(SubscriptionId::generate().as_str())
        .bind(tenant.as_str())
        .bind(r.customer_id.as_str())
        .bind(r.stripe_subscription_id.as_str())
        .bind(r.stripe_customer_id.as_str())
        .bind(r.status.as_str())
        .bind(r.product_id.as_ref().map(|p| p.as_str()))
        .bind(r.price_id.as_ref().map(|p| p.as_str()))
        .bind(r.stripe_price_id.as_str())
        .bind(r.stripe_item_id.as_str())
        .bind(r.quantity)
        .bind(items)
        .bind(r.currency.as_str())
        .bind(r.current_period_start.secs())
        .bind(r.current_period_end.secs())
        .bind(r.trial_start.map(Timestamp::secs))
        .bind(r.trial_end.map(Timestamp::secs))
        .bind(i64::from(r.cancel_at_period_end))
        .bind(r.cancel_at.map(Timestamp::secs))
        .bind(r.canceled_at.map(Timestamp::secs))
        .bind(r.ended_at.map(Timestamp::secs))
        .bind(r.pause_behavior.map(|b| b.as_str()))
        .bind(r.pause_resumes_at.map(Timestamp::secs))
        .bind(r.past_due_since.map(Timestamp::secs))
        .bind(r.previous_price_id.as_ref().map(|p| p.as_str()))
        .bind(r.previous_product_id.as_ref().map(|p| p.as_str()))
        .bind(r.previous_until.map(Timestamp::secs))
        .bind(r.latest_invoice_id.as_ref().map(|i| i.as_str()))
        .bind(r.order_id.as_ref().map(|o| o.as_str()))
        .bind(seq)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await)?;
        let mut changes = AccessChanges::none();
        if written.is_some() {
            self.notify_access_in(&mut tx, tenant, &r.customer_id)
                .await?;
            changes.add(tenant, &r.customer_id);
        }
        self.mark_in(
            &mut tx,
            marks,
            tollgate_domain::status::InboxStatus::Processed,
        )
        .await?;
        let row = match written {
            Some(row) => row,
            // A newer read is stored already (or the row is another tenant's).
            None => db(sqlx::query(&format!(
                "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND stripe_subscription_id = $2"
            ))
            .bind(tenant.as_str())
            .bind(r.stripe_subscription_id.as_str())
            .fetch_optional(&mut *tx)
            .await)?
            // Stored under another tenant: never this tenant's to see or change.
            .ok_or(StoreError::NotFound)?,
        };
        db(tx.commit().await)?;
        Ok((db(Subscription::from_row(&row))?, changes))
    }

    pub async fn subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Subscription> {
        self.one_subscription("id", tenant, id.as_str()).await
    }

    pub async fn subscription_by_stripe_id(
        &self,
        tenant: &TenantId,
        stripe_id: &StripeSubscriptionId,
    ) -> Result<Subscription> {
        self.one_subscription("stripe_subscription_id", tenant, stripe_id.as_str())
            .await
    }

    /// The subscription a subscription checkout's order started, once mirrored.
    pub async fn subscription_for_order(
        &self,
        tenant: &TenantId,
        order: &OrderId,
    ) -> Result<Option<Subscription>> {
        match self
            .one_subscription("order_id", tenant, order.as_str())
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn one_subscription(
        &self,
        column: &str,
        tenant: &TenantId,
        value: &str,
    ) -> Result<Subscription> {
        self.one(
            &format!("SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND {column} = $2"),
            tenant,
            value,
            Subscription::from_row,
        )
        .await
    }

    /// The tenant a Stripe subscription is mirrored for (events about invoices name the
    /// subscription, not always the tenant).
    pub async fn tenant_for_stripe_subscription(
        &self,
        stripe_id: &StripeSubscriptionId,
    ) -> Result<Option<TenantId>> {
        let row = db(sqlx::query(
            "SELECT tenant_id FROM subscriptions WHERE stripe_subscription_id = $1",
        )
        .bind(stripe_id.as_str())
        .fetch_optional(&self.pool)
        .await)?;
        row.map(|r| db(id_col(&r, "tenant_id", TenantId::from_db)))
            .transpose()
    }

    /// Subscriptions newest first.
    pub async fn list_subscriptions(
        &self,
        tenant: &TenantId,
        f: &SubscriptionFilter,
        limit: i64,
        starting_after: Option<&SubscriptionId>,
    ) -> Result<Vec<Subscription>> {
        let (after_created, after_id) = match starting_after {
            Some(id) => {
                let s = self.subscription(tenant, id).await?;
                (s.created_at.secs(), s.id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND ($2 = '' OR customer_id = $2) \
             AND ($3 = '' OR status = $3) AND ($5 = '' OR created_at < $4 OR (created_at = $4 AND id < $5)) \
             ORDER BY created_at DESC, id DESC LIMIT $6"
        ))
        .bind(tenant.as_str())
        .bind(f.customer_id.as_ref().map(|c| c.as_str()).unwrap_or(""))
        .bind(f.status.map(|s| s.as_str()).unwrap_or(""))
        .bind(after_created)
        .bind(&after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Subscription::from_row(r))).collect()
    }

    /// The customer's live subscription to a plan, if any.
    pub async fn live_subscription_for_product(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
        product: &ProductId,
    ) -> Result<Vec<Subscription>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND customer_id = $2 AND product_id = $3 \
             AND status IN ({}) ORDER BY created_at, id",
            SubscriptionStatus::live_sql()
        ))
        .bind(tenant.as_str())
        .bind(customer.as_str())
        .bind(product.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Subscription::from_row(r))).collect()
    }

    /// Live subscriptions on a price (for moving them to another).
    pub async fn live_subscriptions_on_price(
        &self,
        tenant: &TenantId,
        price: &PriceId,
    ) -> Result<Vec<Subscription>> {
        let rows = db(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND price_id = $2 AND status IN ({}) \
             ORDER BY created_at, id",
            SubscriptionStatus::live_sql()
        ))
        .bind(tenant.as_str())
        .bind(price.as_str())
        .fetch_all(&self.pool)
        .await)?;
        rows.iter().map(|r| db(Subscription::from_row(r))).collect()
    }

    /// Every subscription grant of every tenant.
    pub async fn all_subscription_grants(&self) -> Result<Vec<Grant>> {
        self.subscription_grants_where("", &[]).await
    }

    /// One customer's subscription grants.
    pub async fn subscription_grants_for_customer(
        &self,
        tenant: &TenantId,
        customer: &CustomerId,
    ) -> Result<Vec<Grant>> {
        self.subscription_grants_where(
            " AND s.tenant_id = $1 AND s.customer_id = $2",
            &[tenant.as_str(), customer.as_str()],
        )
        .await
    }

    /// The grants of the subscriptions matching `extra`: each grants its plan and what the
    /// plan entitles to, for as long as the access rules say, plus the plan it was
    /// downgraded from until that plan's paid period ends.
    async fn subscription_grants_where(&self, extra: &str, binds: &[&str]) -> Result<Vec<Grant>> {
        let sql = format!(
            "SELECT s.{}, t.grace_period_days FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id \
             WHERE s.status IN ({}){extra}",
            COLUMNS.replace(", ", ", s."),
            SubscriptionStatus::may_grant_sql()
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(*b);
        }
        let rows = db(q.fetch_all(&self.pool).await)?;
        let mut subs = Vec::with_capacity(rows.len());
        for row in &rows {
            let grace: i64 = db(row.try_get("grace_period_days"))?;
            subs.push((db(Subscription::from_row(row))?, grace));
        }
        let plans: Vec<&ProductId> = subs
            .iter()
            .flat_map(|(s, _)| s.product_id.iter().chain(s.carried_over().map(|(p, _)| p)))
            .collect();
        let entitled = self.entitlements_of(&plans).await?;
        let mut grants = Vec::new();
        for (s, grace) in &subs {
            let Granted::Until(end) = s.standing().grant(*grace) else {
                continue;
            };
            let mut give = |plan: &ProductId, end: Option<Timestamp>| {
                let expires_at = end;
                let mut targets = vec![GrantTarget::Product(plan.clone())];
                targets.extend(
                    entitled
                        .iter()
                        .filter(|(p, _)| p == plan)
                        .map(|(_, t)| t.clone()),
                );
                for target in targets {
                    grants.push(Grant {
                        tenant_id: s.tenant_id.clone(),
                        customer_id: s.customer_id.clone(),
                        target,
                        source: GrantSource::Subscription(s.id.clone()),
                        expires_at,
                    });
                }
            };
            if let Some(plan) = &s.product_id {
                give(plan, end);
            }
            if let Some((plan, until)) = s.carried_over() {
                give(plan, Some(end.map_or(until, |e| e.min(until))));
            }
        }
        Ok(grants)
    }

    /// What each of `plans` entitles to, as `(plan, target)` pairs.
    async fn entitlements_of(&self, plans: &[&ProductId]) -> Result<Vec<(ProductId, GrantTarget)>> {
        if plans.is_empty() {
            return Ok(vec![]);
        }
        let mut unique: Vec<&str> = plans.iter().map(|p| p.as_str()).collect();
        unique.sort_unstable();
        unique.dedup();
        let mut out = Vec::new();
        // In chunks, to stay well inside both engines' limits on bound parameters.
        for chunk in unique.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT plan_id, product_id, feature FROM entitlements WHERE plan_id IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for p in chunk {
                q = q.bind(*p);
            }
            for row in db(q.fetch_all(&self.pool).await)? {
                let plan = ProductId::from_db(db(row.try_get("plan_id"))?);
                let product: Option<String> = db(row.try_get("product_id"))?;
                let feature: Option<String> = db(row.try_get("feature"))?;
                let target = match (product, feature) {
                    (Some(p), _) => GrantTarget::Product(ProductId::from_db(p)),
                    (None, Some(f)) => GrantTarget::Feature(f),
                    (None, None) => continue,
                };
                out.push((plan, target));
            }
        }
        Ok(out)
    }

    /// Tells every instance that the access of every subscriber of a plan changed (its
    /// entitlements did).
    pub(crate) async fn notify_plan_subscribers_in(
        &self,
        tx: &mut crate::Tx<'_>,
        tenant: &TenantId,
        plan: &ProductId,
    ) -> Result<AccessChanges> {
        let rows = db(sqlx::query(
            "SELECT DISTINCT customer_id FROM subscriptions WHERE tenant_id = $1 \
             AND (product_id = $2 OR previous_product_id = $2)",
        )
        .bind(tenant.as_str())
        .bind(plan.as_str())
        .fetch_all(&mut **tx)
        .await)?;
        let mut changes = AccessChanges::none();
        for row in rows {
            let c = db(id_col(&row, "customer_id", CustomerId::from_db))?;
            if self.engine == Engine::Postgres {
                self.notify_access_in(tx, tenant, &c).await?;
            }
            changes.add(tenant, &c);
        }
        Ok(changes)
    }
}
