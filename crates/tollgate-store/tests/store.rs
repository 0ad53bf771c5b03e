//! The storage seam on both engines. Every case runs on SQLite (a fresh file) and on
//! PostgreSQL (a fresh schema). PostgreSQL comes from `TOLLGATE_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`); when it is unreachable the Postgres
//! cases say they are skipped, unless `TOLLGATE_REQUIRE_POSTGRES=1`, which makes them fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_domain::status::SubscriptionStatus;
use tollgate_domain::{FeeSchedule, TenantId};
use tollgate_store::{
    IdempotencyOutcome, NewInboxEvent, NewOrder, NewOrderItem, NewPrice, NewProduct, NewPurchase,
    NewTenant, NewUsage, Store, StoreError, SubscriptionRecord,
};

static COUNTER: AtomicU64 = AtomicU64::new(0);

async fn sqlite() -> Store {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tollgate-store-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.db");
    let _ = std::fs::remove_file(&path);
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

/// A store on a fresh Postgres schema, or `None` (skipped) when Postgres is not there.
async fn postgres() -> Option<Store> {
    let base = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!(
        "tg_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let admin = match Store::connect(&base).await {
        Ok(s) => s,
        Err(e) => {
            if std::env::var("TOLLGATE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PostgreSQL is required (TOLLGATE_REQUIRE_POSTGRES=1) but unreachable: {e}");
            }
            eprintln!(
                "skipped: PostgreSQL unreachable at {base} ({e}); set TOLLGATE_REQUIRE_POSTGRES=1 to require it"
            );
            return None;
        }
    };
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(admin.pool())
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(admin.pool())
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = Store::connect(&format!("{base}{sep}options=-c%20search_path%3D{schema}"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Some(store)
}

/// Runs each named case on both engines.
macro_rules! both_engines {
    ($($case:ident),+ $(,)?) => {
        mod sqlite_engine {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::sqlite().await).await; })+
        }
        mod postgres_engine {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(store) = super::postgres().await { super::$case(store).await; }
            })+
        }
    };
}

both_engines!(
    migrations_apply_twice_without_change,
    api_keys_are_stored_hashed_and_revocable,
    concurrent_get_or_create_makes_one_customer,
    an_event_without_seats_rolls_the_whole_order_back,
    completing_an_order_twice_records_each_purchase_once_with_its_split,
    the_database_refuses_a_split_that_does_not_add_up,
    a_second_paid_order_for_an_owned_product_is_recorded_but_grants_nothing,
    refunds_reverse_the_split_and_are_idempotent_on_the_stripe_refund,
    inbox_keeps_one_copy_and_one_worker_holds_an_event,
    failed_events_retry_then_dead_letter_and_replay,
    idempotency_keys_replay_and_refuse_other_bodies,
    another_tenants_objects_are_not_found,
    event_tickets_may_be_bought_again_but_a_partly_refunded_course_may_not,
    the_split_follows_the_fee_schedule_the_order_was_placed_under,
    one_stripe_refund_recorded_by_the_api_and_the_worker_at_once_counts_once,
    pending_orders_left_behind_are_found_for_the_sweep,
    an_older_read_of_a_subscription_never_overwrites_a_newer_one,
    usage_is_recorded_once_per_key_and_each_record_is_claimed_by_one_reporter,
    two_orders_for_one_product_completed_at_once_make_one_purchase_and_one_duplicate,
);

async fn tenant(store: &Store, fees: (u32, u32)) -> TenantId {
    let (t, _) = store
        .create_tenant(&NewTenant {
            name: "Acme".into(),
            default_currency: "usd".into(),
            fees: FeeSchedule::new(fees.0, fees.1).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    t.id
}

/// A published product with one price; `capacity` makes it an event.
async fn product(
    store: &Store,
    t: &TenantId,
    amount: i64,
    capacity: Option<i64>,
) -> (tollgate_store::Product, tollgate_store::Price) {
    let p = store
        .create_product(
            t,
            &NewProduct {
                kind: if capacity.is_some() {
                    "event"
                } else {
                    "course"
                }
                .into(),
                title: "Rust for billing".into(),
                description: None,
                status: "published".into(),
                creator_id: Some("creator_1".into()),
                capacity,
                metadata: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    let price = store
        .create_price(
            t,
            &p.id,
            &NewPrice {
                currency: "usd".into(),
                unit_amount: amount,
                recurring_interval: None,
                recurring_interval_count: None,
                trial_days: None,
                lookup_key: None,
                usage_type: "licensed".into(),
                meter_event_name: None,
            },
        )
        .await
        .unwrap();
    (p, price)
}

fn item(p: &tollgate_store::Product, price: &tollgate_store::Price, quantity: i64) -> NewOrderItem {
    NewOrderItem {
        product_id: p.id.clone(),
        price_id: price.id.clone(),
        title: p.title.clone(),
        quantity,
        unit_amount: price.unit_amount,
        event_capacity: p.capacity,
    }
}

async fn paid_order(
    store: &Store,
    t: &TenantId,
    customer: &tollgate_store::Customer,
    items: Vec<NewOrderItem>,
    pi: &str,
    fees: FeeSchedule,
) -> Vec<tollgate_store::Purchase> {
    let order = store
        .create_order(
            t,
            &NewOrder {
                customer_id: Some(customer.id.clone()),
                email: None,
                currency: "usd".into(),
                items,
                fees,
                subscription: false,
            },
        )
        .await
        .unwrap();
    let lines: Vec<NewPurchase> = order
        .items
        .iter()
        .map(|i| NewPurchase {
            order_item_id: i.id.to_string(),
            product_id: i.product_id.clone(),
            creator_id: None,
            amount: i.amount,
            exclusive: true,
        })
        .collect();
    store
        .complete_order(t, &order.id, pi, &lines, None)
        .await
        .unwrap()
}

async fn migrations_apply_twice_without_change(store: Store) {
    store.migrate().await.unwrap();
    assert!(store.ping().await);
}

async fn api_keys_are_stored_hashed_and_revocable(store: Store) {
    let (t, key) = store
        .create_tenant(&NewTenant {
            name: "A".into(),
            default_currency: "usd".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(key.secret.starts_with("tg_sk_"));
    assert_eq!(
        store.tenant_for_key(&key.secret).await.unwrap(),
        Some(t.id.clone())
    );
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE secret_hash = $1")
        .bind(&key.secret)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0, "the secret itself is not stored");
    let second = store.create_key(&t.id).await.unwrap();
    store.revoke_key(&t.id, &key.id).await.unwrap();
    assert_eq!(store.tenant_for_key(&key.secret).await.unwrap(), None);
    assert_eq!(
        store.tenant_for_key(&second.secret).await.unwrap(),
        Some(t.id.clone()),
        "other keys keep working"
    );
    assert!(matches!(
        store.revoke_key(&t.id, &key.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn concurrent_get_or_create_makes_one_customer(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let mut handles = Vec::new();
    for _ in 0..16 {
        let (store, t) = (store.clone(), t.clone());
        handles.push(tokio::spawn(async move {
            store
                .get_or_create_customer(&t, "user-1", Some("u@example.com"), None)
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    let mut created = 0;
    for h in handles {
        let (c, new) = h.await.unwrap();
        ids.push(c.id);
        created += usize::from(new);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
}

async fn an_event_without_seats_rolls_the_whole_order_back(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (course, course_price) = product(&store, &t, 1000, None).await;
    let (event, event_price) = product(&store, &t, 500, Some(3)).await;
    let first = store
        .create_order(
            &t,
            &NewOrder {
                customer_id: None,
                email: Some("a@example.com".into()),
                currency: "usd".into(),
                items: vec![item(&event, &event_price, 2)],
                fees: FeeSchedule::default(),
                subscription: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(store.seats_taken(&t, &event.id).await.unwrap(), 2);
    let err = store
        .create_order(
            &t,
            &NewOrder {
                customer_id: None,
                email: Some("b@example.com".into()),
                currency: "usd".into(),
                items: vec![
                    item(&course, &course_price, 1),
                    item(&event, &event_price, 2),
                ],
                fees: FeeSchedule::default(),
                subscription: false,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(c) if c.starts_with("sold_out:")),
        "{err:?}"
    );
    let orders = store.list_orders(&t, None, 10, None).await.unwrap();
    assert_eq!(orders.len(), 1, "the sold-out order left no rows");
    assert_eq!(store.seats_taken(&t, &event.id).await.unwrap(), 2);
    // Expiring the first order frees its seats.
    assert!(
        store
            .close_order(&t, &first.id, "expired", None)
            .await
            .unwrap()
    );
    assert_eq!(store.seats_taken(&t, &event.id).await.unwrap(), 0);
}

async fn completing_an_order_twice_records_each_purchase_once_with_its_split(store: Store) {
    let fees = FeeSchedule::new(1000, 250).unwrap();
    let t = tenant(&store, (1000, 250)).await;
    let (a, pa) = product(&store, &t, 999, None).await;
    let (b, pb) = product(&store, &t, 2000, None).await;
    let (c, _) = store
        .get_or_create_customer(&t, "u", None, None)
        .await
        .unwrap();
    let order = store
        .create_order(
            &t,
            &NewOrder {
                customer_id: Some(c.id.clone()),
                email: None,
                currency: "usd".into(),
                items: vec![item(&a, &pa, 1), item(&b, &pb, 1)],
                fees,
                subscription: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(order.amount_total, 2999);
    let lines: Vec<NewPurchase> = order
        .items
        .iter()
        .map(|i| NewPurchase {
            order_item_id: i.id.to_string(),
            product_id: i.product_id.clone(),
            creator_id: None,
            amount: i.amount,
            exclusive: true,
        })
        .collect();
    let first = store
        .complete_order(&t, &order.id, "pi_1", &lines, None)
        .await
        .unwrap();
    let again = store
        .complete_order(&t, &order.id, "pi_1", &lines, None)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(
        first.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        again.iter().map(|p| p.id.clone()).collect::<Vec<_>>()
    );
    let p = first.iter().find(|p| p.product_id == a.id).unwrap();
    assert_eq!(
        (
            p.amount,
            p.platform_fee,
            p.organization_fee,
            p.creator_payout
        ),
        (999, 99, 24, 876)
    );
    assert_eq!(
        store.order(&t, &order.id).await.unwrap().status,
        "completed"
    );
    assert_eq!(store.grants_for_customer(&t, &c.id).await.unwrap().len(), 2);
}

async fn the_database_refuses_a_split_that_does_not_add_up(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "u", None, None)
        .await
        .unwrap();
    let (a, pa) = product(&store, &t, 1000, None).await;
    let purchases = paid_order(
        &store,
        &t,
        &c,
        vec![item(&a, &pa, 1)],
        "pi_x",
        FeeSchedule::default(),
    )
    .await;
    let err = sqlx::query("UPDATE purchases SET creator_payout = creator_payout + 1 WHERE id = $1")
        .bind(purchases[0].id.as_str())
        .execute(store.pool())
        .await;
    assert!(
        err.is_err(),
        "CHECK amount = platform + organization + creator"
    );
    let err = sqlx::query("UPDATE purchases SET refunded_amount = amount + 1 WHERE id = $1")
        .bind(purchases[0].id.as_str())
        .execute(store.pool())
        .await;
    assert!(err.is_err(), "a refund cannot exceed the amount");
}

async fn a_second_paid_order_for_an_owned_product_is_recorded_but_grants_nothing(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "u", None, None)
        .await
        .unwrap();
    let (a, pa) = product(&store, &t, 1000, None).await;
    paid_order(
        &store,
        &t,
        &c,
        vec![item(&a, &pa, 1)],
        "pi_1",
        FeeSchedule::default(),
    )
    .await;
    let second = paid_order(
        &store,
        &t,
        &c,
        vec![item(&a, &pa, 1)],
        "pi_2",
        FeeSchedule::default(),
    )
    .await;
    assert_eq!(second[0].status, "failed");
    assert_eq!(
        second[0].refund_reason.as_deref(),
        Some("duplicate_purchase")
    );
    assert_eq!(store.grants_for_customer(&t, &c.id).await.unwrap().len(), 1);
    // The partial unique index holds even against a direct write.
    let err = sqlx::query(
        "UPDATE purchases SET status = 'completed', refund_reason = NULL WHERE id = $1",
    )
    .bind(second[0].id.as_str())
    .execute(store.pool())
    .await;
    assert!(
        err.is_err(),
        "at most one completed, unrefunded purchase per customer and product"
    );
}

async fn refunds_reverse_the_split_and_are_idempotent_on_the_stripe_refund(store: Store) {
    let fees = FeeSchedule::new(1000, 500).unwrap();
    let t = tenant(&store, (1000, 500)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "u", None, None)
        .await
        .unwrap();
    let (a, pa) = product(&store, &t, 1000, None).await;
    let p = paid_order(&store, &t, &c, vec![item(&a, &pa, 1)], "pi_1", fees)
        .await
        .remove(0);
    let after = store
        .record_refund(&t, &p.id, 400, Some("requested_by_customer"), "re_1", None)
        .await
        .unwrap();
    assert_eq!(after.status, "partially_refunded");
    assert_eq!(
        (
            after.refunded_platform_fee,
            after.refunded_organization_fee,
            after.refunded_creator_payout
        ),
        (40, 20, 340)
    );
    assert!(after.grants_access(), "a partial refund keeps access");
    let again = store
        .record_refund(&t, &p.id, 400, None, "re_1", None)
        .await
        .unwrap();
    assert_eq!(
        again.refunded_amount, 400,
        "the same Stripe refund is recorded once"
    );
    let err = store
        .record_refund(&t, &p.id, 601, None, "re_2", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));
    let full = store
        .record_refund(&t, &p.id, 600, None, "re_3", None)
        .await
        .unwrap();
    assert_eq!(full.status, "refunded");
    assert_eq!(
        (
            full.refunded_platform_fee,
            full.refunded_organization_fee,
            full.refunded_creator_payout
        ),
        (100, 50, 850)
    );
    assert!(
        store
            .grants_for_customer(&t, &c.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.refunds_for_purchase(&t, &p.id).await.unwrap().len(),
        2
    );
    // Refunds made in Stripe: a known id is skipped, a new one is spread over purchases.
    let (b, pb) = product(&store, &t, 700, None).await;
    let (d, pd) = product(&store, &t, 300, None).await;
    paid_order(
        &store,
        &t,
        &c,
        vec![item(&b, &pb, 1), item(&d, &pd, 1)],
        "pi_cart",
        fees,
    )
    .await;
    let list = store
        .record_external_refunds(&t, "pi_cart", &[("re_ext".into(), 800, None)], None)
        .await
        .unwrap();
    assert_eq!(
        list.iter().map(|p| p.refunded_amount).collect::<Vec<_>>(),
        [700, 100]
    );
    let list = store
        .record_external_refunds(&t, "pi_cart", &[("re_ext".into(), 800, None)], None)
        .await
        .unwrap();
    assert_eq!(
        list.iter().map(|p| p.refunded_amount).collect::<Vec<_>>(),
        [700, 100],
        "idempotent"
    );
    // A dispute freezes access; winning it thaws it.
    store.set_disputed(&t, "pi_cart", true, None).await.unwrap();
    assert!(
        store
            .grants_for_customer(&t, &c.id)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .set_disputed(&t, "pi_cart", false, None)
        .await
        .unwrap();
    assert_eq!(store.grants_for_customer(&t, &c.id).await.unwrap().len(), 1);
}

async fn inbox_keeps_one_copy_and_one_worker_holds_an_event(store: Store) {
    let e = NewInboxEvent {
        event_id: "evt_1",
        event_type: "checkout.session.completed",
        tenant_id: None,
        payload: "{}",
        event_created: 1,
    };
    assert!(store.inbox_insert(&e).await.unwrap());
    assert!(
        !store.inbox_insert(&e).await.unwrap(),
        "a duplicate delivery is a no-op"
    );
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store.inbox_claim(30_000).await.unwrap()
        }));
    }
    let mut claims = Vec::new();
    for h in handles {
        claims.extend(h.await.unwrap());
    }
    assert_eq!(claims.len(), 1, "exactly one worker holds the event");
    assert!(store.inbox_mark(&claims[0], "processed").await.unwrap());
    assert!(store.inbox_claim(30_000).await.unwrap().is_none());
    // An expired lease (a dead worker) lets another claim it.
    store
        .inbox_insert(&NewInboxEvent {
            event_id: "evt_2",
            ..e
        })
        .await
        .unwrap();
    let lapsed = store.inbox_claim(-1).await.unwrap().unwrap();
    let again = store.inbox_claim(30_000).await.unwrap().unwrap();
    assert_eq!((again.event_id.as_str(), again.attempts), ("evt_2", 2));
    // The worker whose lease ran out can no longer mark or fail what the other one holds.
    assert!(!store.inbox_mark(&lapsed, "processed").await.unwrap());
    assert!(!store.inbox_fail(&lapsed, "late", None).await.unwrap());
    assert_eq!(
        store.inbox_event("evt_2").await.unwrap().unwrap().status,
        "pending"
    );
    assert!(store.inbox_mark(&again, "processed").await.unwrap());
}

async fn failed_events_retry_then_dead_letter_and_replay(store: Store) {
    store
        .inbox_insert(&NewInboxEvent {
            event_id: "evt_f",
            event_type: "x",
            tenant_id: Some("ten_1"),
            payload: "{}",
            event_created: 1,
        })
        .await
        .unwrap();
    let claim = store.inbox_claim(30_000).await.unwrap().unwrap();
    assert!(
        store
            .inbox_fail(&claim, "boom", Some(tollgate_store::now_ms() + 60_000))
            .await
            .unwrap()
    );
    assert!(
        store.inbox_claim(30_000).await.unwrap().is_none(),
        "not due yet"
    );
    // Due again (as if the minute had passed), it fails for good.
    sqlx::query("UPDATE webhook_inbox SET next_attempt_at = 0 WHERE event_id = 'evt_f'")
        .execute(store.pool())
        .await
        .unwrap();
    let claim = store.inbox_claim(30_000).await.unwrap().unwrap();
    assert!(store.inbox_fail(&claim, "boom", None).await.unwrap());
    let dead = store.inbox_event("evt_f").await.unwrap().unwrap();
    assert_eq!(
        (dead.status.as_str(), dead.last_error.as_deref()),
        ("dead", Some("boom"))
    );
    assert!(store.inbox_replay("evt_f").await.unwrap());
    assert_eq!(
        store.inbox_claim(30_000).await.unwrap().unwrap().event_id,
        "evt_f"
    );
}

async fn idempotency_keys_replay_and_refuse_other_bodies(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let t = t.as_str();
    let begin = |scope: &str, key: &str, hash: &str, lock: i64| {
        let (store, scope, key, hash) = (
            store.clone(),
            scope.to_owned(),
            key.to_owned(),
            hash.to_owned(),
        );
        async move {
            store
                .idempotency_begin(&scope, &key, &hash, lock)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        begin(t, "k", "h1", 60_000).await,
        IdempotencyOutcome::Proceed
    );
    assert_eq!(
        begin(t, "k", "h1", 60_000).await,
        IdempotencyOutcome::InProgress
    );
    store
        .idempotency_finish(t, "k", 200, "{\"ok\":true}")
        .await
        .unwrap();
    assert_eq!(
        begin(t, "k", "h1", 60_000).await,
        IdempotencyOutcome::Replay {
            status: 200,
            body: "{\"ok\":true}".into()
        }
    );
    assert_eq!(
        begin(t, "k", "h2", 60_000).await,
        IdempotencyOutcome::Mismatch
    );
    let other = tenant(&store, (0, 0)).await;
    assert_eq!(
        begin(other.as_str(), "k", "h2", 60_000).await,
        IdempotencyOutcome::Proceed,
        "keys are per tenant"
    );
    assert_eq!(
        begin("operator", "k", "h3", 60_000).await,
        IdempotencyOutcome::Proceed,
        "and the operator's are its own"
    );
    // A request that died holding its key gives it up once its lock runs out: of several
    // retries arriving together, exactly one takes it over.
    assert_eq!(begin(t, "dead", "h", -1).await, IdempotencyOutcome::Proceed);
    let retries: Vec<_> = (0..6)
        .map(|_| tokio::spawn(begin(t, "dead", "h", 60_000)))
        .collect();
    let mut outcomes = Vec::new();
    for r in retries {
        outcomes.push(r.await.unwrap());
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == IdempotencyOutcome::Proceed)
            .count(),
        1,
        "{outcomes:?}"
    );
    // Released keys run again; finished ones are kept until they are a day old.
    store.idempotency_release(t, "dead").await.unwrap();
    assert_eq!(
        begin(t, "dead", "h", 60_000).await,
        IdempotencyOutcome::Proceed
    );
    assert_eq!(store.idempotency_prune().await.unwrap(), 0);
    sqlx::query("UPDATE idempotency_keys SET created_at = $1 WHERE idempotency_key = 'k'")
        .bind(tollgate_store::now_ms() - tollgate_store::IDEMPOTENCY_RETENTION_MS - 1)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.idempotency_prune().await.unwrap(), 1);
    assert_eq!(
        begin(t, "k", "h2", 60_000).await,
        IdempotencyOutcome::Proceed
    );
}

async fn event_tickets_may_be_bought_again_but_a_partly_refunded_course_may_not(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "u", None, None)
        .await
        .unwrap();
    let (event, event_price) = product(&store, &t, 500, Some(10)).await;
    for pi in ["pi_e1", "pi_e2"] {
        let order = store
            .create_order(
                &t,
                &NewOrder {
                    customer_id: Some(c.id.clone()),
                    email: None,
                    currency: "usd".into(),
                    items: vec![item(&event, &event_price, 2)],
                    fees: FeeSchedule::default(),
                    subscription: false,
                },
            )
            .await
            .unwrap();
        let lines = vec![NewPurchase {
            order_item_id: order.items[0].id.to_string(),
            product_id: event.id.clone(),
            creator_id: None,
            amount: 1000,
            exclusive: false,
        }];
        let done = store
            .complete_order(&t, &order.id, pi, &lines, None)
            .await
            .unwrap();
        assert_eq!(done[0].status, "completed", "more seats for the same event");
    }
    assert_eq!(store.seats_taken(&t, &event.id).await.unwrap(), 4);
    // A course refunded in part still grants access, so it still counts as owned.
    let (course, course_price) = product(&store, &t, 1000, None).await;
    let first = paid_order(
        &store,
        &t,
        &c,
        vec![item(&course, &course_price, 1)],
        "pi_c1",
        FeeSchedule::default(),
    )
    .await
    .remove(0);
    store
        .record_refund(&t, &first.id, 100, None, "re_part", None)
        .await
        .unwrap();
    let second = paid_order(
        &store,
        &t,
        &c,
        vec![item(&course, &course_price, 1)],
        "pi_c2",
        FeeSchedule::default(),
    )
    .await
    .remove(0);
    assert_eq!(
        (second.status.as_str(), second.refund_reason.as_deref()),
        ("failed", Some(tollgate_store::DUPLICATE_PURCHASE))
    );
    let owed = store
        .unrefunded_duplicates(&t, &second.order_id)
        .await
        .unwrap();
    assert_eq!(owed.len(), 1, "the duplicate waits for its refund");
    let err = sqlx::query("UPDATE purchases SET status = 'completed' WHERE id = $1")
        .bind(second.id.as_str())
        .execute(store.pool())
        .await;
    assert!(err.is_err(), "the index counts partly refunded purchases");
    let refunded = store
        .record_refund(&t, &second.id, 1000, Some("duplicate"), "re_dup", None)
        .await
        .unwrap();
    assert_eq!(refunded.status, "refunded");
    assert!(
        store
            .unrefunded_duplicates(&t, &second.order_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .orders_with_unrefunded_duplicates(10)
            .await
            .unwrap()
            .len(),
        0
    );
}

async fn the_split_follows_the_fee_schedule_the_order_was_placed_under(store: Store) {
    let t = tenant(&store, (1000, 0)).await;
    let placed_under = store.tenant(&t).await.unwrap().fees();
    let (c, _) = store
        .get_or_create_customer(&t, "u", None, None)
        .await
        .unwrap();
    let (a, pa) = product(&store, &t, 1000, None).await;
    let order = store
        .create_order(
            &t,
            &NewOrder {
                customer_id: Some(c.id.clone()),
                email: None,
                currency: "usd".into(),
                items: vec![item(&a, &pa, 1)],
                fees: placed_under,
                subscription: false,
            },
        )
        .await
        .unwrap();
    // The tenant moves to 30% while the payment is under way.
    store
        .update_tenant(
            &t,
            &NewTenant {
                name: "Acme".into(),
                default_currency: "usd".into(),
                fees: FeeSchedule::new(3000, 0).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lines = vec![NewPurchase {
        order_item_id: order.items[0].id.to_string(),
        product_id: a.id.clone(),
        creator_id: None,
        amount: 1000,
        exclusive: true,
    }];
    let p = store
        .complete_order(&t, &order.id, "pi_f", &lines, None)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((p.platform_fee, p.creator_payout), (100, 900));
}

async fn one_stripe_refund_recorded_by_the_api_and_the_worker_at_once_counts_once(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "u", None, None)
        .await
        .unwrap();
    let (a, pa) = product(&store, &t, 1000, None).await;
    let p = paid_order(
        &store,
        &t,
        &c,
        vec![item(&a, &pa, 1)],
        "pi_r",
        FeeSchedule::default(),
    )
    .await
    .remove(0);
    for round in 0..5 {
        let refund = format!("re_race_{round}");
        let api = {
            let (store, t, id, refund) = (store.clone(), t.clone(), p.id.clone(), refund.clone());
            tokio::spawn(
                async move { store.record_refund(&t, &id, 100, None, &refund, None).await },
            )
        };
        let worker = {
            let (store, t, id, refund) = (store.clone(), t.clone(), p.id.clone(), refund.clone());
            tokio::spawn(async move {
                store
                    .record_external_refunds(&t, "pi_r", &[(refund, 100, Some(id))], None)
                    .await
            })
        };
        api.await.unwrap().unwrap();
        worker.await.unwrap().unwrap();
    }
    let after = store.purchase(&t, &p.id).await.unwrap();
    assert_eq!(after.refunded_amount, 500, "five refunds of 100, each once");
    assert_eq!(
        store.refunds_for_purchase(&t, &p.id).await.unwrap().len(),
        5
    );
    // Refunds of one purchase take turns.
    assert!(store.refund_lock(&t, &p.id, 60_000).await.unwrap());
    assert!(!store.refund_lock(&t, &p.id, 60_000).await.unwrap());
    store.refund_unlock(&t, &p.id).await.unwrap();
    assert!(store.refund_lock(&t, &p.id, -1).await.unwrap());
    assert!(
        store.refund_lock(&t, &p.id, 60_000).await.unwrap(),
        "a lease whose holder died runs out"
    );
}

async fn pending_orders_left_behind_are_found_for_the_sweep(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (a, pa) = product(&store, &t, 1000, None).await;
    let order = |email: &str| NewOrder {
        customer_id: None,
        email: Some(email.into()),
        currency: "usd".into(),
        items: vec![item(&a, &pa, 1)],
        fees: FeeSchedule::default(),
        subscription: false,
    };
    let orphan = store
        .create_order(&t, &order("a@example.com"))
        .await
        .unwrap();
    let live = store
        .create_order(&t, &order("b@example.com"))
        .await
        .unwrap();
    let now = tollgate_store::now_ms();
    store
        .attach_checkout_session(&t, &live.id, "cs_live", None, Some(now / 1000 + 3600))
        .await
        .unwrap();
    let expired = store
        .create_order(&t, &order("c@example.com"))
        .await
        .unwrap();
    store
        .attach_checkout_session(&t, &expired.id, "cs_old", None, Some(now / 1000 - 7200))
        .await
        .unwrap();
    let stale = store
        .stale_pending_orders(now + 1, now / 1000 - 600, 10)
        .await
        .unwrap();
    let mut found: Vec<_> = stale
        .iter()
        .map(|s| (s.order_id.clone(), s.stripe_checkout_session_id.clone()))
        .collect();
    found.sort();
    let mut expected = vec![(orphan.id, None), (expired.id, Some("cs_old".to_owned()))];
    expected.sort();
    assert_eq!(found, expected);
}

async fn another_tenants_objects_are_not_found(store: Store) {
    let a = tenant(&store, (0, 0)).await;
    let b = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&a, "u", None, None)
        .await
        .unwrap();
    let (p, price) = product(&store, &a, 1000, None).await;
    let purchases = paid_order(
        &store,
        &a,
        &c,
        vec![item(&p, &price, 1)],
        "pi_a",
        FeeSchedule::default(),
    )
    .await;
    assert!(matches!(
        store.customer(&b, &c.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.product(&b, &p.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.price(&b, &price.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.order(&b, &purchases[0].order_id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.purchase(&b, &purchases[0].id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .purchases_for_payment_intent(&b, "pi_a")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .record_refund(&b, &purchases[0].id, 1, None, "re_b", None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .list_purchases(&b, &Default::default(), 10, 0, None)
            .await
            .unwrap()
            .1,
        0
    );
}

fn subscription_record(
    customer: &tollgate_store::Customer,
    status: SubscriptionStatus,
    cancel: bool,
) -> SubscriptionRecord {
    SubscriptionRecord {
        customer_id: customer.id.clone(),
        stripe_subscription_id: "sub_store_1".into(),
        stripe_customer_id: "cus_store_1".into(),
        status,
        product_id: None,
        price_id: None,
        stripe_price_id: "price_store_1".into(),
        stripe_item_id: "si_store_1".into(),
        quantity: 1,
        items: serde_json::json!([]),
        currency: "usd".into(),
        current_period_start: 1_000,
        current_period_end: 2_000,
        trial_start: None,
        trial_end: None,
        cancel_at_period_end: cancel,
        cancel_at: None,
        canceled_at: None,
        ended_at: None,
        pause_behavior: None,
        pause_resumes_at: None,
        past_due_since: None,
        previous_price_id: None,
        previous_product_id: None,
        previous_until: None,
        latest_invoice_id: None,
        order_id: None,
    }
}

async fn an_older_read_of_a_subscription_never_overwrites_a_newer_one(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "subscriber", None, None)
        .await
        .unwrap();
    let older = store.next_sync_seq().await.unwrap();
    let newer = store.next_sync_seq().await.unwrap();
    assert!(newer > older, "reads are numbered in the order they start");

    let (s, written) = store
        .upsert_subscription(
            &t,
            &subscription_record(&c, SubscriptionStatus::Active, true),
            newer,
            None,
        )
        .await
        .unwrap();
    assert!(written);
    assert!(s.cancel_at_period_end);
    // The older read lands last, as a slow request or a late event would: it is ignored.
    let (s, written) = store
        .upsert_subscription(
            &t,
            &subscription_record(&c, SubscriptionStatus::Trialing, false),
            older,
            None,
        )
        .await
        .unwrap();
    assert!(!written, "an older read changes nothing");
    assert_eq!(s.status, "active");
    assert!(s.cancel_at_period_end);
    let (s, written) = store
        .upsert_subscription(
            &t,
            &subscription_record(&c, SubscriptionStatus::Active, true),
            newer,
            None,
        )
        .await
        .unwrap();
    assert!(!written, "the same read twice is written once");
    let newest = store.next_sync_seq().await.unwrap();
    let (after, written) = store
        .upsert_subscription(
            &t,
            &subscription_record(&c, SubscriptionStatus::Canceled, false),
            newest,
            None,
        )
        .await
        .unwrap();
    assert!(written);
    assert_eq!(after.status, "canceled");
    assert_eq!(after.id, s.id, "one row per Stripe subscription");
    let listed = store
        .list_subscriptions(&t, &Default::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

async fn usage_is_recorded_once_per_key_and_each_record_is_claimed_by_one_reporter(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "metered", None, None)
        .await
        .unwrap();
    store
        .set_stripe_customer(&t, &c.id, "cus_metered")
        .await
        .unwrap();
    let meter = store.get_or_create_meter(&t, "api_calls").await.unwrap();
    let usage = |key: &str, value: i64| NewUsage {
        customer_id: c.id.clone(),
        meter_id: meter.id.clone(),
        value,
        occurred_at: 1_800_000_000,
        idempotency_key: key.into(),
    };
    let (first, new) = store.record_usage(&t, &usage("k1", 5)).await.unwrap();
    assert!(new);
    let (again, new) = store.record_usage(&t, &usage("k1", 5)).await.unwrap();
    assert!(!new, "the same key again records nothing");
    assert_eq!(again.id, first.id);
    assert!(matches!(
        store.record_usage(&t, &usage("k1", 6)).await,
        Err(StoreError::Conflict(_))
    ));
    for i in 0..9 {
        store
            .record_usage(&t, &usage(&format!("k{}", i + 2), 1))
            .await
            .unwrap();
    }

    // Two reporters claiming at once share the ten records without overlap.
    let (a, b) = tokio::join!(store.claim_usage(6, 60_000), store.claim_usage(6, 60_000));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<_> = a.iter().chain(&b).map(|u| u.record.id.clone()).collect();
    assert_eq!(ids.len(), 10, "every record claimed");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "none claimed twice");
    assert!(
        store.claim_usage(10, 60_000).await.unwrap().is_empty(),
        "all leased"
    );
    assert_eq!(a[0].stripe_customer_id.as_deref(), Some("cus_metered"));
    assert_eq!(a[0].stripe_event_name, meter.stripe_event_name);

    // A reporter whose lease was taken over cannot mark the record.
    let mut stale = a[0].record.clone();
    stale.lease_token = Some("not-the-lease".into());
    assert!(!store.usage_reported(&stale).await.unwrap());
    assert!(store.usage_reported(&a[0].record).await.unwrap());
    assert!(
        store
            .usage_failed(&a[1].record, "boom", Some(0))
            .await
            .unwrap()
    );
    let retried = store.claim_usage(10, 60_000).await.unwrap();
    assert_eq!(retried.len(), 1, "only the failed one is due again");
    assert_eq!(retried[0].record.id, a[1].record.id);
    assert_eq!(retried[0].record.attempts, 2);
}

async fn two_orders_for_one_product_completed_at_once_make_one_purchase_and_one_duplicate(
    store: Store,
) {
    let t = tenant(&store, (0, 0)).await;
    let (a, pa) = product(&store, &t, 1000, None).await;
    // Several rounds, each racing two completions of one customer's two orders.
    for round in 0..10 {
        let (c, _) = store
            .get_or_create_customer(&t, &format!("racer-{round}"), None, None)
            .await
            .unwrap();
        let (pi_a, pi_b) = (format!("pi_a{round}"), format!("pi_b{round}"));
        let (first, second) = tokio::join!(
            paid_order(
                &store,
                &t,
                &c,
                vec![item(&a, &pa, 1)],
                &pi_a,
                FeeSchedule::default()
            ),
            paid_order(
                &store,
                &t,
                &c,
                vec![item(&a, &pa, 1)],
                &pi_b,
                FeeSchedule::default()
            ),
        );
        let mut statuses = vec![first[0].status.clone(), second[0].status.clone()];
        statuses.sort();
        assert_eq!(statuses, ["completed", "failed"], "round {round}");
    }
}
