//! The storage seam on both engines. Every case runs on SQLite (a fresh file) and on
//! PostgreSQL (a fresh schema). PostgreSQL comes from `TOLLGATE_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`); when it is unreachable the Postgres
//! cases say they are skipped, unless `TOLLGATE_REQUIRE_POSTGRES=1`, which makes them fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate_domain::status::{
    CheckoutMode, InboxStatus, OrderStatus, ProductKind, ProductStatus, PurchaseStatus,
    RefundReason, RefundRequestStatus, SubscriptionStatus,
};
use tollgate_domain::{
    Amount, Currency, Email, FeeSchedule, Split, StripeCustomerId, StripeEventId,
    StripePaymentIntentId, StripePriceId, StripeRefundId, StripeSubscriptionId,
    StripeSubscriptionItemId, TenantId, Timestamp,
};
use tollgate_store::{
    AccessChanges, Constraint, Engine, GrantSource, IDEMPOTENCY_RETENTION, IdempotencyOutcome,
    NewInboxEvent, NewOrder, NewOrderItem, NewPrice, NewProduct, NewPurchase, NewTenant, NewUsage,
    Opened, ProductUpdate, Store, StoreError, StripeRefund, SubscriptionRecord,
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
    let (base, admin) = postgres_admin().await?;
    let schema = format!(
        "tg_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
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

/// The test server's URL and a store connected to it, or `None` (skipped) when Postgres
/// is not there.
async fn postgres_admin() -> Option<(String, Store)> {
    let base = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
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
    Some((base, admin))
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
    events_stored_together_are_each_stored_once_and_leased_to_their_instance,
    only_the_leases_of_events_in_hand_are_renewed,
    a_batch_whose_body_is_refused_stores_nothing_of_that_event_and_the_rest_whole,
    a_batch_abandoned_midway_leaves_no_transaction_behind,
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
    a_check_violation_or_a_nul_byte_is_refused_not_a_database_error,
    every_connection_commits_to_disk_before_answering,
    a_refund_recorded_from_stripe_settles_the_request_it_carried_out,
    a_refund_stripe_failed_before_its_request_recorded_it_never_counts,
    a_request_failed_by_one_call_succeeds_when_its_refund_is_recorded,
    a_refund_naming_another_tenants_request_leaves_it_alone,
    a_duplicate_payment_whose_refund_fails_is_failed_again_and_not_asked_again,
    a_duplicate_payments_refund_failed_before_it_was_recorded_never_counts,
);

/// Connections the PostgreSQL server ends (a restart, an administrator) are replaced, not
/// used: webhook batches are written on a connection kept between them, and when the
/// server ends it the next write, a lone event's too, is still stored (made again on a
/// fresh connection); a pooled connection that has sat idle a second or more is tested
/// before use, and a dead one replaced. In a database of its own, so that only this
/// store's connections are ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_the_server_ended_are_replaced_not_used() {
    let Some((base, admin)) = postgres_admin().await else {
        return;
    };
    let (store, database) = store_of_its_own(&base, &admin, "kept").await;
    let ids: Vec<StripeEventId> = (0..3)
        .map(|n| StripeEventId::from_stripe(format!("evt_kept_{n}")))
        .collect();
    assert!(
        store
            .inbox_insert(&inbox_event(&ids[0], None))
            .await
            .unwrap()
    );
    let ended = end_connections(&admin, &database, WRITES_EVENTS).await;
    assert_eq!(ended, 1, "the kept connection was found and ended");
    for id in &ids[1..] {
        let stored = store.inbox_insert(&inbox_event(id, None)).await;
        assert!(matches!(stored, Ok(true)), "{id}: {stored:?}");
    }
    assert_eq!(
        rows_of_events(&store, "webhook_inbox", "evt_kept_").await,
        3
    );
    // Every connection of the database ended, the pool's idle ones among them; then left
    // idle past the store's threshold for testing one before use (one second).
    let ended = end_connections(&admin, &database, "%").await;
    assert!(ended >= 2, "the pool's connections were ended ({ended})");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for id in &ids {
        let read = store.inbox_event(id).await;
        assert!(matches!(read, Ok(Some(_))), "{id}: {read:?}");
    }
    drop(store);
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(admin.pool())
        .await
        .unwrap();
}

/// The statement the webhook writer's connection runs, as a LIKE pattern.
const WRITES_EVENTS: &str = "WITH new AS (INSERT INTO webhook_inbox%";

/// Ends the connections to `database` whose last statement is like `statement` (a LIKE
/// pattern), as a restart of the server would, waiting up to 5 s for each to be gone;
/// answers how many it ended.
async fn end_connections(admin: &Store, database: &str, statement: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
         WHERE datname = $1 AND query LIKE $2",
    )
    .bind(database)
    .bind(statement)
    .fetch_one(admin.pool())
    .await
    .unwrap()
}

/// A store on a PostgreSQL database of its own, made afresh, and the database's name.
async fn store_of_its_own(base: &str, admin: &Store, name: &str) -> (Store, String) {
    let database = format!("tg_test_{name}_{}", std::process::id());
    let (server, params) = base.split_once('?').unwrap_or((base, ""));
    let (server, _) = server.rsplit_once('/').unwrap();
    let url = match params {
        "" => format!("{server}/{database}"),
        p => format!("{server}/{database}?{p}"),
    };
    for sql in [
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("CREATE DATABASE {database}"),
    ] {
        sqlx::query(&sql).execute(admin.pool()).await.unwrap();
    }
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (store, database)
}

/// Storing events reads no whole table, even on a new database whose empty inbox was
/// analyzed: PostgreSQL plans the check of each body's row (its foreign key) once per
/// connection and keeps the plan, and planned on an empty table that is a scan of all of
/// it, which the webhook writer's kept connection would then run for every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_storing_events_scans_no_whole_table_even_after_an_empty_start() {
    let Some((base, admin)) = postgres_admin().await else {
        return;
    };
    let (store, database) = store_of_its_own(&base, &admin, "scans").await;
    sqlx::query("ANALYZE webhook_inbox")
        .execute(store.pool())
        .await
        .unwrap();
    let ids: Vec<StripeEventId> = (0..100)
        .map(|n| StripeEventId::from_stripe(format!("evt_scan_{n}")))
        .collect();
    for id in &ids {
        assert!(store.inbox_insert(&inbox_event(id, None)).await.unwrap());
    }
    // A backend reports what it read as it ends: the writer's is ended.
    assert_eq!(end_connections(&admin, &database, WRITES_EVENTS).await, 1);
    // The migrations' own statements on the empty table are a handful of scans; a scan per
    // stored event would be 100 more.
    let scans: i64 = sqlx::query_scalar(
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'webhook_inbox'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(
        scans < 50,
        "{scans} sequential scans of the inbox for 100 events"
    );
    drop(store);
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(admin.pool())
        .await
        .unwrap();
}

/// Item: what is acknowledged must be durable. On SQLite every pooled connection runs
/// with `synchronous = FULL` (2); on PostgreSQL ordinary transactions keep
/// `synchronous_commit = on`.
async fn every_connection_commits_to_disk_before_answering(store: Store) {
    // Hold several connections at once so the check is not made on one connection only.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = store.pool().acquire().await.unwrap();
        match store.engine() {
            Engine::Sqlite => {
                let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                assert_eq!(level, 2, "SQLite connection not at synchronous = FULL");
            }
            Engine::Postgres => {
                let level: String = sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                assert_eq!(level, "on");
            }
        }
        held.push(conn);
    }
}

fn amount(minor_units: i64) -> Amount {
    Amount::new(minor_units).unwrap()
}

fn usd() -> Currency {
    Currency::parse("usd").unwrap()
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn pi(s: &str) -> StripePaymentIntentId {
    StripePaymentIntentId::from_stripe(s)
}

fn re(s: &str) -> StripeRefundId {
    StripeRefundId::from_stripe(s)
}

fn split(platform: i64, organization: i64, creator: i64) -> Split {
    Split {
        platform: amount(platform),
        organization: amount(organization),
        creator: amount(creator),
    }
}

/// Lets a lease taken for `Duration::ZERO` run out, as a dead holder's would. Times are
/// whole seconds and a lease has run out once the clock is past it: a little over a
/// second is always enough.
async fn let_the_lease_run_out() {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

/// How the database refused a raw write: whether it was a CHECK (else a unique index),
/// and the constraint as the engine names it (PostgreSQL gives the name; SQLite's message
/// holds the CHECK's name, or the unique index's columns).
fn refusal(result: Result<sqlx::any::AnyQueryResult, sqlx::Error>, what: &str) -> (bool, String) {
    let err = match result {
        Ok(_) => panic!("the database accepted {what}"),
        Err(e) => e,
    };
    let Some(db) = err.as_database_error() else {
        panic!("{what}: not the database's refusal: {err:?}");
    };
    assert!(
        db.is_check_violation() || db.is_unique_violation(),
        "{what}: {err:?}"
    );
    let named = db
        .constraint()
        .map_or_else(|| db.message().to_owned(), str::to_owned);
    (db.is_check_violation(), named)
}

/// Asserts that a raw write ran into the unique index that lets a customer own a product
/// once (PostgreSQL names the index; SQLite names its columns).
fn assert_owned_once(store: &Store, result: Result<sqlx::any::AnyQueryResult, sqlx::Error>) {
    let (check, named) = refusal(result, "a second owned purchase of one product");
    assert!(!check, "{named}");
    let expected = match store.engine() {
        Engine::Postgres => Constraint::PurchasesOneActivePerCustomerProduct.name(),
        Engine::Sqlite => "purchases.tenant_id, purchases.customer_id, purchases.product_id",
    };
    assert!(
        named.contains(expected),
        "at most one completed, unrefunded purchase per customer and product: {named}"
    );
}

async fn tenant(store: &Store, fees: (u32, u32)) -> TenantId {
    let (t, _) = store
        .create_tenant(&NewTenant {
            name: "Acme".into(),
            default_currency: usd(),
            fees: FeeSchedule::new(fees.0, fees.1).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    t.id
}

fn new_product(capacity: Option<i64>) -> NewProduct {
    NewProduct {
        kind: if capacity.is_some() {
            ProductKind::Event
        } else {
            ProductKind::Course
        },
        title: "Rust for billing".into(),
        description: None,
        status: ProductStatus::Published,
        creator_id: Some("creator_1".into()),
        capacity,
        metadata: serde_json::Map::new(),
    }
}

fn new_price(unit_amount: Amount) -> NewPrice {
    NewPrice {
        currency: usd(),
        unit_amount,
        recurring: None,
        lookup_key: None,
    }
}

/// A published product with one price; `capacity` makes it an event.
async fn product(
    store: &Store,
    t: &TenantId,
    unit_amount: i64,
    capacity: Option<i64>,
) -> (tollgate_store::Product, tollgate_store::Price) {
    let p = store
        .create_product(t, &new_product(capacity))
        .await
        .unwrap();
    let price = store
        .create_price(t, &p.id, &new_price(amount(unit_amount)))
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

/// What each item of an order becomes when it is paid.
fn lines(order: &tollgate_store::Order, exclusive: bool) -> Vec<NewPurchase> {
    order
        .items
        .iter()
        .map(|i| NewPurchase {
            order_item_id: i.id.clone(),
            product_id: i.product_id.clone(),
            creator_id: None,
            amount: i.amount,
            exclusive,
        })
        .collect()
}

fn order_for(
    customer: &tollgate_store::Customer,
    items: Vec<NewOrderItem>,
    fees: FeeSchedule,
) -> NewOrder {
    NewOrder {
        customer_id: Some(customer.id.clone()),
        email: None,
        currency: usd(),
        items,
        fees,
        mode: CheckoutMode::Payment,
    }
}

async fn paid_order(
    store: &Store,
    t: &TenantId,
    customer: &tollgate_store::Customer,
    items: Vec<NewOrderItem>,
    payment: &str,
    fees: FeeSchedule,
) -> Vec<tollgate_store::Purchase> {
    let order = store
        .create_order(t, &order_for(customer, items, fees))
        .await
        .unwrap();
    let (purchases, changes) = store
        .complete_order(t, &order.id, Some(&pi(payment)), &lines(&order, true), &[])
        .await
        .unwrap();
    assert_eq!(
        changes,
        AccessChanges::one(t, &customer.id),
        "completing an order changes its customer's access"
    );
    purchases
}

/// A tenant without fees, a customer named `who`, and their purchase of a 1000 product
/// paid by `payment`.
async fn one_purchase(
    store: &Store,
    who: &str,
    payment: &str,
) -> (TenantId, tollgate_store::Customer, tollgate_store::Purchase) {
    let t = tenant(store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, who, None, None)
        .await
        .unwrap();
    let (a, pa) = product(store, &t, 1000, None).await;
    let p = paid_order(
        store,
        &t,
        &c,
        vec![item(&a, &pa, 1)],
        payment,
        FeeSchedule::default(),
    )
    .await
    .remove(0);
    (t, c, p)
}

/// A tenant, a customer and a product of 1,000 paid twice: by `<payment>_first`, then by
/// `<payment>_second` (the duplicate). Answers both purchases.
async fn paid_twice(
    store: &Store,
    who: &str,
    payment: &str,
) -> (
    TenantId,
    tollgate_store::Customer,
    tollgate_store::Purchase,
    tollgate_store::Purchase,
) {
    let t = tenant(store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, who, None, None)
        .await
        .unwrap();
    let (course, price) = product(store, &t, 1000, None).await;
    let mut paid = Vec::new();
    for n in ["first", "second"] {
        let mut p = paid_order(
            store,
            &t,
            &c,
            vec![item(&course, &price, 1)],
            &format!("{payment}_{n}"),
            FeeSchedule::default(),
        )
        .await;
        paid.push(p.remove(0));
    }
    let second = paid.pop().unwrap();
    (t, c, paid.pop().unwrap(), second)
}

/// A new refund request of `amount` (all that is left when `None`) under `key`.
async fn new_request(
    store: &Store,
    t: &TenantId,
    purchase: &tollgate_domain::PurchaseId,
    amount: Option<Amount>,
    key: &str,
) -> tollgate_store::RefundRequest {
    match store
        .open_refund_request(t, purchase, amount, None, Some(key))
        .await
        .unwrap()
    {
        Opened::New(r) => r,
        _ => panic!("a first request is new"),
    }
}

/// The request `key` names, asked for again (the same key finds the same request).
async fn request_by_key(
    store: &Store,
    t: &TenantId,
    purchase: &tollgate_domain::PurchaseId,
    key: &str,
) -> tollgate_store::RefundRequest {
    match store
        .open_refund_request(t, purchase, None, None, Some(key))
        .await
        .unwrap()
    {
        Opened::Existing(r) => r,
        _ => panic!("the same key finds the same request"),
    }
}

async fn migrations_apply_twice_without_change(store: Store) {
    store.migrate().await.unwrap();
    assert!(store.ping().await);
    if store.engine() == Engine::Postgres {
        // Event bodies are compressed with lz4, not pglz (the engine-specific step).
        let method: Option<String> = sqlx::query_scalar(
            "SELECT attcompression::text FROM pg_attribute \
             WHERE attrelid = 'webhook_payloads'::regclass AND attname = 'payload'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(method.as_deref(), Some("l"));

        // A database whose reads were numbered by the counter row goes on past its value.
        for sql in [
            "DROP SEQUENCE subscription_sync_seq",
            "UPDATE sync_counters SET value = 500 WHERE name = 'subscriptions'",
        ] {
            sqlx::query(sql).execute(store.pool()).await.unwrap();
        }
        store.migrate().await.unwrap();
        assert_eq!(store.next_sync_seq().await.unwrap(), 501);
        assert_eq!(store.next_sync_seq().await.unwrap(), 502);
    }
}

async fn api_keys_are_stored_hashed_and_revocable(store: Store) {
    let (t, key) = store
        .create_tenant(&NewTenant {
            name: "A".into(),
            default_currency: usd(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(key.secret.starts_with("tg_sk_"));
    assert_eq!(
        store.tenant_for_key(&key.secret).await.unwrap(),
        Some(t.id.clone())
    );
    let count = |value: String| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM api_keys WHERE secret_hash = $1")
                .bind(value)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count(key.secret.clone()).await,
        0,
        "the secret itself is not stored"
    );
    assert_eq!(
        count(tollgate_store::hash_secret(&key.secret)).await,
        1,
        "its hash is"
    );
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
                .get_or_create_customer(&t, "user-1", Some(&email("u@example.com")), None)
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
    ids.sort();
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
                email: Some(email("a@example.com")),
                currency: usd(),
                items: vec![item(&event, &event_price, 2)],
                fees: FeeSchedule::default(),
                mode: CheckoutMode::Payment,
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
                email: Some(email("b@example.com")),
                currency: usd(),
                items: vec![
                    item(&course, &course_price, 1),
                    item(&event, &event_price, 2),
                ],
                fees: FeeSchedule::default(),
                mode: CheckoutMode::Payment,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::SoldOut(p) if *p == event.id),
        "{err:?}"
    );
    let orders = store.list_orders(&t, None, 10, None).await.unwrap();
    assert_eq!(orders.len(), 1, "the sold-out order left no rows");
    assert_eq!(orders[0].id, first.id);
    assert_eq!(store.seats_taken(&t, &event.id).await.unwrap(), 2);
    // Expiring the first order frees its seats.
    assert!(
        store
            .close_order(&t, &first.id, OrderStatus::Expired, None)
            .await
            .unwrap()
    );
    assert_eq!(store.seats_taken(&t, &event.id).await.unwrap(), 0);
    assert_eq!(
        store.order(&t, &first.id).await.unwrap().status,
        OrderStatus::Expired
    );
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
            &order_for(&c, vec![item(&a, &pa, 1), item(&b, &pb, 1)], fees),
        )
        .await
        .unwrap();
    assert_eq!(order.amount_total, amount(2999));
    let lines = lines(&order, true);
    let (first, changes) = store
        .complete_order(&t, &order.id, Some(&pi("pi_1")), &lines, &[])
        .await
        .unwrap();
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
    let (again, changes) = store
        .complete_order(&t, &order.id, Some(&pi("pi_1")), &lines, &[])
        .await
        .unwrap();
    assert!(
        changes.is_empty(),
        "completing a completed order changes nobody's access"
    );
    assert_eq!(first.len(), 2);
    assert_eq!(
        first.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        again.iter().map(|p| p.id.clone()).collect::<Vec<_>>()
    );
    let p = first.iter().find(|p| p.product_id == a.id).unwrap();
    assert_eq!((p.amount, p.split), (amount(999), split(99, 24, 876)));
    assert_eq!(p.status, PurchaseStatus::Completed);
    assert_eq!(p.stripe_payment_intent_id, Some(pi("pi_1")));
    assert_eq!(p.refunded_amount(), Amount::ZERO);
    assert_eq!(p.refundable_amount(), amount(999));
    assert_eq!(
        store.order(&t, &order.id).await.unwrap().status,
        OrderStatus::Completed
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
    let result =
        sqlx::query("UPDATE purchases SET creator_payout = creator_payout + 1 WHERE id = $1")
            .bind(purchases[0].id.as_str())
            .execute(store.pool())
            .await;
    let (check, named) = refusal(result, "a split that does not add up");
    assert!(check, "{named}");
    assert!(
        named.contains(Constraint::PurchasesSplitAddsUp.name()),
        "CHECK amount = platform + organization + creator: {named}"
    );
    let result = sqlx::query("UPDATE purchases SET refunded_amount = amount + 1 WHERE id = $1")
        .bind(purchases[0].id.as_str())
        .execute(store.pool())
        .await;
    let (check, named) = refusal(result, "a refund above the amount");
    assert!(check, "{named}");
    // Refunded parts that add up to more than the amount would also break their own
    // CHECKs, so the engine may name either.
    assert!(
        named.contains(Constraint::PurchasesRefundWithinAmount.name())
            || named.contains("purchases_refund_split_adds_up"),
        "a refund cannot exceed the amount: {named}"
    );
    let after = store.purchase(&t, &purchases[0].id).await.unwrap();
    assert_eq!(
        (after.split, after.refunded_amount()),
        (purchases[0].split, Amount::ZERO),
        "the refused writes changed nothing"
    );
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
    assert_eq!(second[0].status, PurchaseStatus::Failed);
    assert_eq!(
        second[0].refund_reason,
        Some(RefundReason::DuplicatePurchase)
    );
    assert_eq!(store.grants_for_customer(&t, &c.id).await.unwrap().len(), 1);
    // The partial unique index holds even against a direct write.
    let result = sqlx::query(
        "UPDATE purchases SET status = 'completed', refund_reason = NULL WHERE id = $1",
    )
    .bind(second[0].id.as_str())
    .execute(store.pool())
    .await;
    assert_owned_once(&store, result);
}

/// A refund request holds its amount until settled. When the webhook worker records the
/// Stripe refund before the request's own call comes back, the request is settled with
/// it: the amount is counted once (refunded), not twice (refunded and held).
async fn a_refund_recorded_from_stripe_settles_the_request_it_carried_out(store: Store) {
    let fees = FeeSchedule::new(0, 0).unwrap();
    let t = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "held", None, None)
        .await
        .unwrap();
    let (a, pa) = product(&store, &t, 1000, None).await;
    let p = paid_order(&store, &t, &c, vec![item(&a, &pa, 1)], "pi_held", fees)
        .await
        .remove(0);
    let open = |n: i64, key: &'static str| {
        let (store, t, id) = (store.clone(), t.clone(), p.id.clone());
        async move {
            store
                .open_refund_request(&t, &id, Some(amount(n)), None, Some(key))
                .await
                .unwrap()
        }
    };
    let Opened::New(first) = open(150, "k1").await else {
        panic!("a first request is new")
    };
    assert!(
        matches!(open(851, "k2").await, Opened::Refused(_)),
        "150 is held: 851 does not fit"
    );
    let (_, changes) = store
        .record_external_refunds(
            &t,
            &pi("pi_held"),
            &[StripeRefund {
                id: re("re_held"),
                amount: amount(150),
                purchase: Some(p.id.clone()),
                counts: true,
                request: Some(first.id.clone()),
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
    assert!(
        matches!(open(850, "k3").await, Opened::New(_)),
        "150 refunded and no longer held: 850 fits"
    );
    let Opened::Existing(settled) = open(150, "k1").await else {
        panic!("the same key finds the same request")
    };
    assert_eq!(settled.stripe_refund_id, Some(re("re_held")));
}

/// Stripe answers a refund request with a refund that succeeded, then fails it, and the
/// worker reads the failure before the request records Stripe's answer. The refund is
/// recorded and undone then, and the request's answer, recorded later, counts it no more:
/// the money is the merchant's, the request failed, and the amount is free to refund.
async fn a_refund_stripe_failed_before_its_request_recorded_it_never_counts(store: Store) {
    let (t, _, p) = one_purchase(&store, "failed-first", "pi_failed_first").await;
    let request = new_request(&store, &t, &p.id, None, "k1").await;
    let (seen, _) = store
        .record_external_refunds(
            &t,
            &pi("pi_failed_first"),
            &[StripeRefund {
                id: re("re_failed_first"),
                amount: amount(1000),
                purchase: Some(p.id.clone()),
                counts: false,
                request: Some(request.id.clone()),
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(seen[0].refunded_amount(), amount(0), "{seen:?}");
    let answered = store
        .complete_refund_request(&t, &request.id, &re("re_failed_first"), amount(1000))
        .await
        .unwrap();
    assert!(
        answered.is_none(),
        "the request's answer counts nothing: {answered:?}"
    );
    let after = store.purchase(&t, &p.id).await.unwrap();
    assert_eq!(after.refunded_amount(), amount(0), "{after:?}");
    assert_eq!(after.status, PurchaseStatus::Completed);
    let refunds = store.refunds_for_purchase(&t, &p.id).await.unwrap();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert!(refunds[0].reversed_at.is_some(), "{refunds:?}");
    let settled = request_by_key(&store, &t, &p.id, "k1").await;
    assert_eq!(settled.status, RefundRequestStatus::Failed);
    assert!(
        matches!(
            store
                .open_refund_request(&t, &p.id, None, None, Some("k2"))
                .await
                .unwrap(),
            Opened::New(_)
        ),
        "nothing is held or refunded: the whole amount may be asked for again"
    );
}

/// Two calls for one request overlap (two instances' sweeps, or a sweep and a retry): one
/// is refused and fails the request, the other gets the refund and records it. The request
/// then says succeeded, so that a retry with its key is not told to ask again (and refund
/// twice).
async fn a_request_failed_by_one_call_succeeds_when_its_refund_is_recorded(store: Store) {
    let (t, _, p) = one_purchase(&store, "overlap", "pi_overlap").await;
    let request = new_request(&store, &t, &p.id, Some(amount(300)), "k1").await;
    store
        .fail_refund_request(&t, &request.id, "Stripe refused an overlapping call")
        .await
        .unwrap();
    let (after, _) = store
        .complete_refund_request(&t, &request.id, &re("re_overlap"), amount(300))
        .await
        .unwrap()
        .expect("the refund counts");
    assert_eq!(after.refunded_amount(), amount(300));
    let r = request_by_key(&store, &t, &p.id, "k1").await;
    assert_eq!(r.status, RefundRequestStatus::Succeeded);
}

/// A refund's metadata names the request it carried out; the request is settled only if
/// it is the refunding tenant's own.
async fn a_refund_naming_another_tenants_request_leaves_it_alone(store: Store) {
    let (a, _, pa) = one_purchase(&store, "tenant-a", "pi_tenant_a").await;
    let (b, _, pb) = one_purchase(&store, "tenant-b", "pi_tenant_b").await;
    let request = new_request(&store, &a, &pa.id, Some(amount(100)), "k1").await;
    for counts in [true, false] {
        let (seen, _) = store
            .record_external_refunds(
                &b,
                &pi("pi_tenant_b"),
                &[StripeRefund {
                    id: re(&format!("re_other_{counts}")),
                    amount: amount(100),
                    purchase: Some(pb.id.clone()),
                    counts,
                    request: Some(request.id.clone()),
                }],
                &[],
            )
            .await
            .unwrap();
        // Tenant b's own purchase counts its refund that counts, and only that one.
        assert_eq!(seen[0].refunded_amount(), amount(100), "{seen:?}");
    }
    let r = request_by_key(&store, &a, &pa.id, "k1").await;
    assert_eq!(r.status, RefundRequestStatus::Pending, "{r:?}");
    assert_eq!(r.stripe_refund_id, None);
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
    let (after, changes) = store
        .record_refund(
            &t,
            &p.id,
            amount(400),
            Some(RefundReason::RequestedByCustomer),
            &re("re_1"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
    assert_eq!(after.status, PurchaseStatus::PartiallyRefunded);
    assert_eq!(after.refunded, split(40, 20, 340));
    assert_eq!(after.refundable_amount(), amount(600));
    assert!(after.grants_access(), "a partial refund keeps access");
    let (again, changes) = store
        .record_refund(&t, &p.id, amount(400), None, &re("re_1"), &[])
        .await
        .unwrap();
    assert_eq!(
        again.refunded_amount(),
        amount(400),
        "the same Stripe refund is recorded once"
    );
    assert!(changes.is_empty(), "and changes nobody's access again");
    let err = store
        .record_refund(&t, &p.id, amount(601), None, &re("re_2"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(m) if m.contains("exceeds")),
        "{err:?}"
    );
    assert_eq!(
        store.purchase(&t, &p.id).await.unwrap().refunded_amount(),
        amount(400),
        "a refused refund records nothing"
    );
    let (full, _) = store
        .record_refund(&t, &p.id, amount(600), None, &re("re_3"), &[])
        .await
        .unwrap();
    assert_eq!(full.status, PurchaseStatus::Refunded);
    assert_eq!(full.refunded, split(100, 50, 850));
    assert_eq!(full.refundable_amount(), Amount::ZERO);
    assert!(
        store
            .grants_for_customer(&t, &c.id)
            .await
            .unwrap()
            .is_empty()
    );
    // Both refunds, each with its share of the split (times are whole seconds, so two
    // refunds of one second may be listed either way round).
    let mut refunds: Vec<_> = store
        .refunds_for_purchase(&t, &p.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.amount, r.split, r.stripe_refund_id, r.reason))
        .collect();
    refunds.sort_by_key(|r| r.0);
    assert_eq!(
        refunds,
        [
            (
                amount(400),
                split(40, 20, 340),
                Some(re("re_1")),
                Some(RefundReason::RequestedByCustomer)
            ),
            (amount(600), split(60, 30, 510), Some(re("re_3")), None),
        ]
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
    let external = [StripeRefund {
        id: re("re_ext"),
        amount: amount(800),
        purchase: None,
        counts: true,
        request: None,
    }];
    let (list, changes) = store
        .record_external_refunds(&t, &pi("pi_cart"), &external, &[])
        .await
        .unwrap();
    assert_eq!(
        list.iter().map(|p| p.refunded_amount()).collect::<Vec<_>>(),
        [amount(700), amount(100)]
    );
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
    let (list, changes) = store
        .record_external_refunds(&t, &pi("pi_cart"), &external, &[])
        .await
        .unwrap();
    assert_eq!(
        list.iter().map(|p| p.refunded_amount()).collect::<Vec<_>>(),
        [amount(700), amount(100)],
        "idempotent"
    );
    assert!(changes.is_empty(), "a known refund changes nothing");
    // A dispute freezes access; winning it thaws it.
    let (_, changes) = store
        .set_disputed(&t, &pi("pi_cart"), true, &[])
        .await
        .unwrap();
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
    assert!(
        store
            .grants_for_customer(&t, &c.id)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, changes) = store
        .set_disputed(&t, &pi("pi_cart"), false, &[])
        .await
        .unwrap();
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
    assert_eq!(store.grants_for_customer(&t, &c.id).await.unwrap().len(), 1);
}

fn inbox_event<'a>(id: &'a StripeEventId, tenant: Option<&'a TenantId>) -> NewInboxEvent<'a> {
    NewInboxEvent {
        event_id: id,
        event_type: "customer.subscription.updated",
        tenant_id: tenant,
        payload: "{}",
        event_created: Timestamp::from_secs(1),
        object_key: Some("subscription:sub_1"),
    }
}

async fn inbox_keeps_one_copy_and_one_worker_holds_an_event(store: Store) {
    let evt_1 = StripeEventId::from_stripe("evt_1");
    let evt_2 = StripeEventId::from_stripe("evt_2");
    let e = inbox_event(&evt_1, None);
    assert!(store.inbox_insert(&e).await.unwrap());
    assert!(
        !store.inbox_insert(&e).await.unwrap(),
        "a duplicate delivery is a no-op"
    );
    // Eight instances on one database claim at once: one holds the event.
    let mut instances = vec![store.clone()];
    for _ in 0..7 {
        instances.push(Store::connect(store.url()).await.unwrap());
    }
    let mut handles = Vec::new();
    for s in instances.clone() {
        handles.push(tokio::spawn(async move {
            s.inbox_claim(Duration::from_secs(30), 10).await.unwrap()
        }));
    }
    let mut claims = Vec::new();
    for h in handles {
        claims.extend(h.await.unwrap());
    }
    assert_eq!(claims.len(), 1, "exactly one instance holds the event");
    assert_eq!(claims[0].object_key.as_deref(), Some("subscription:sub_1"));
    assert_eq!(
        claims[0].payload, None,
        "the body is not read back when the key is known"
    );
    assert!(
        store
            .inbox_claim(Duration::from_secs(30), 10)
            .await
            .unwrap()
            .is_empty(),
        "a held event is not due"
    );
    // An expired lease (a dead instance) lets another instance claim it ...
    let other = &instances[1];
    store
        // Stored without an object key, as before keys existed: its body comes with it.
        .inbox_insert(&NewInboxEvent {
            object_key: None,
            ..inbox_event(&evt_2, None)
        })
        .await
        .unwrap();
    let mut held = Vec::new();
    for s in &instances {
        held.extend(s.inbox_claim(Duration::ZERO, 10).await.unwrap());
        if !held.is_empty() {
            break;
        }
    }
    assert_eq!(held.len(), 1);
    let_the_lease_run_out().await;
    let holder = instances
        .iter()
        .find(|s| s.instance_id() != other.instance_id())
        .unwrap();
    let lapsed: Vec<_> = holder.inbox_claim(Duration::ZERO, 10).await.unwrap();
    let_the_lease_run_out().await;
    let again = other
        .inbox_claim(Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(&again[0].event_id, &evt_2);
    assert!(again[0].attempts >= 2, "every claim counts an attempt");
    assert_eq!(again[0].payload.as_deref(), Some("{}"));
    // ... and the instance whose lease ran out can no longer mark or fail it.
    if let Some(lapsed) = lapsed.first() {
        assert_eq!(
            holder
                .inbox_mark_many(&[(lapsed, InboxStatus::Processed)])
                .await
                .unwrap(),
            0
        );
        assert!(!holder.inbox_fail(lapsed, "late", None).await.unwrap());
    }
    assert_eq!(
        store.inbox_event(&evt_2).await.unwrap().unwrap().status,
        InboxStatus::Pending
    );
    assert_eq!(
        other
            .inbox_mark_many(&[(&again[0], InboxStatus::Processed)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.inbox_event(&evt_2).await.unwrap().unwrap().status,
        InboxStatus::Processed
    );
}

/// How many rows of `table` are about events whose id starts with `prefix`.
async fn rows_of_events(store: &Store, table: &str, prefix: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE event_id LIKE $1"
    ))
    .bind(format!("{prefix}%"))
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// A batch stores each event's row and body in one write: when the database refuses one
/// body (here a trigger does, after the rows were written), nothing of that event is
/// kept, every other event is stored with its body, and the store goes on working (the
/// failed write left no transaction open behind it).
async fn a_batch_whose_body_is_refused_stores_nothing_of_that_event_and_the_rest_whole(
    store: Store,
) {
    let refuse: &[&str] = match store.engine() {
        Engine::Sqlite => &[
            "CREATE TRIGGER refuse_body BEFORE INSERT ON webhook_payloads \
             WHEN NEW.payload = 'refused' BEGIN SELECT RAISE(ABORT, 'body refused'); END",
        ],
        Engine::Postgres => &[
            "CREATE FUNCTION refuse_body() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.payload = 'refused' THEN RAISE EXCEPTION 'body refused'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_body BEFORE INSERT ON webhook_payloads \
             FOR EACH ROW EXECUTE FUNCTION refuse_body()",
        ],
    };
    for sql in refuse {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    // More events than one write takes: the refused body is in the second one, and the
    // first one's events are still answered as new.
    let ids: Vec<StripeEventId> = (0..300)
        .map(|n| StripeEventId::from_stripe(format!("evt_refused_{n}")))
        .collect();
    let mut batch: Vec<NewInboxEvent<'_>> = ids.iter().map(|id| inbox_event(id, None)).collect();
    batch[280].payload = "refused";
    let stored = store.inbox_insert_many(&batch, None).await;
    assert_eq!(stored.len(), 300);
    for (n, result) in stored.iter().enumerate() {
        match n {
            280 => assert!(result.is_err(), "the refused body fails its event"),
            _ => assert!(matches!(result, Ok(true)), "event {n}: {result:?}"),
        }
    }
    assert!(store.inbox_event(&ids[280]).await.unwrap().is_none());
    let bodies = rows_of_events(&store, "webhook_payloads", "evt_refused_").await;
    assert_eq!(
        bodies, 299,
        "each stored event has its body, the refused one none"
    );
    // Every connection is free of the failed write: the writes that follow commit.
    let later: Vec<StripeEventId> = (0..20)
        .map(|n| StripeEventId::from_stripe(format!("evt_after_refusal_{n}")))
        .collect();
    for id in &later {
        assert!(store.inbox_insert(&inbox_event(id, None)).await.unwrap());
    }
    let other = Store::connect(store.url()).await.unwrap();
    for id in &later {
        assert!(other.inbox_event(id).await.unwrap().is_some());
    }
}

/// A batch whose caller stops waiting (a timeout, an aborted task) while the database
/// writes it leaves nothing open behind it: the store and another instance on the same
/// database go on writing at once, and the batch is either stored whole or not at all.
async fn a_batch_abandoned_midway_leaves_no_transaction_behind(store: Store) {
    let body = "x".repeat(4000);
    let ids: Vec<StripeEventId> = (0..256)
        .map(|n| StripeEventId::from_stripe(format!("evt_abandoned_{n}")))
        .collect();
    let batch: Vec<NewInboxEvent<'_>> = ids
        .iter()
        .map(|id| NewInboxEvent {
            payload: &body,
            ..inbox_event(id, None)
        })
        .collect();
    // Abandoned after ever longer waits, until one wait was long enough to finish.
    let mut abandoned = 0;
    for micros in (0..40).map(|n| 50 * (1 << (n / 4))) {
        match tokio::time::timeout(
            Duration::from_micros(micros),
            store.inbox_insert_many(&batch, None),
        )
        .await
        {
            Err(_) => abandoned += 1,
            Ok(stored) => {
                assert!(stored.iter().all(|r| r.is_ok()), "{stored:?}");
                break;
            }
        }
        let other = Store::connect(store.url()).await.unwrap();
        let probe = StripeEventId::from_stripe(format!("evt_after_abandon_{micros}"));
        for writer in [&store, &other] {
            let written = tokio::time::timeout(
                Duration::from_secs(2),
                writer.inbox_insert(&inbox_event(&probe, None)),
            )
            .await;
            assert!(
                matches!(written, Ok(Ok(_))),
                "a write after abandoning a batch at {micros} µs: {written:?}"
            );
        }
    }
    assert!(
        abandoned > 0,
        "no wait was short enough to abandon the batch"
    );
    let stored = rows_of_events(&store, "webhook_inbox", "evt_abandoned_").await;
    let bodies = rows_of_events(&store, "webhook_payloads", "evt_abandoned_").await;
    assert_eq!(
        (stored, bodies),
        (256, 256),
        "stored whole, each with its body"
    );
}

/// A lease is renewed for the events the worker names (those in its hands), not for every
/// event leased to the instance: one stored and leased by a write whose answer was lost
/// never reached the worker, and once its lease runs out it is claimed again while the
/// instance lives (renewed along with the rest, it waited for the instance to stop).
async fn only_the_leases_of_events_in_hand_are_renewed(store: Store) {
    let in_hand = StripeEventId::from_stripe("evt_in_hand");
    let stray = StripeEventId::from_stripe("evt_stray");
    let stored = store
        .inbox_insert_many(
            &[inbox_event(&in_hand, None), inbox_event(&stray, None)],
            Some(Duration::ZERO),
        )
        .await;
    assert!(stored.iter().all(|r| matches!(r, Ok(true))));
    let_the_lease_run_out().await;
    let renew = |ids: Vec<StripeEventId>| {
        let store = store.clone();
        async move {
            store
                .inbox_renew_leases(&ids, Duration::from_secs(60))
                .await
                .unwrap()
        }
    };
    assert_eq!(renew(vec![in_hand.clone()]).await, 1);
    let other = Store::connect(store.url()).await.unwrap();
    let claimed: Vec<String> = other
        .inbox_claim(Duration::from_secs(60), 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.event_id.to_string())
        .collect();
    assert_eq!(
        claimed,
        ["evt_stray"],
        "the event not in hand is taken up again; the one in hand is not"
    );
    assert_eq!(
        renew(vec![stray.clone(), in_hand.clone()]).await,
        1,
        "a lease another instance has taken is not renewed"
    );
    assert_eq!(renew(vec![]).await, 0);
}

/// Group commit: many events in one write, each stored once (a repeat inside the batch
/// or of an earlier delivery is not new), and an event that cannot be stored fails alone.
/// Leased as they are stored, events are this instance's without a claim; renewed, they
/// stay so; the leases of an instance that ended are released for others to take.
async fn events_stored_together_are_each_stored_once_and_leased_to_their_instance(store: Store) {
    let ids: Vec<StripeEventId> = (0..250)
        .map(|n| StripeEventId::from_stripe(format!("evt_batch_{n}")))
        .collect();
    let early = inbox_event(&ids[3], None);
    assert!(store.inbox_insert(&early).await.unwrap());
    let mut batch: Vec<NewInboxEvent<'_>> = ids.iter().map(|id| inbox_event(id, None)).collect();
    batch.push(inbox_event(&ids[7], None));
    let bad_id = StripeEventId::from_stripe("evt_\u{0}bad");
    let mut with_bad = batch.clone();
    with_bad.push(NewInboxEvent {
        event_id: &bad_id,
        ..inbox_event(&ids[0], None)
    });
    let stored = store
        .inbox_insert_many(&with_bad, Some(Duration::from_secs(30)))
        .await;
    assert_eq!(stored.len(), 252);
    let new: Vec<bool> = stored[..251].iter().map(|r| *r.as_ref().unwrap()).collect();
    assert_eq!(
        new.iter().filter(|n| **n).count(),
        249,
        "250 ids, one stored before"
    );
    assert!(
        !new[3] && !new[250],
        "an earlier delivery and a repeat in the batch are not new"
    );
    match store.engine() {
        // PostgreSQL refuses a NUL in text: that event alone fails.
        Engine::Postgres => assert!(stored[251].is_err()),
        Engine::Sqlite => assert!(matches!(stored[251], Ok(true))),
    }
    assert!(
        store
            .inbox_claim(Duration::from_secs(30), 1000)
            .await
            .unwrap()
            .len()
            <= 2,
        "leased events are not claimed again (only the two stored unleased are)"
    );
    // Renewed, the leases hold past their first end.
    assert!(
        store
            .inbox_renew_leases(&ids, Duration::from_secs(60))
            .await
            .unwrap()
            >= 249
    );
    let other = Store::connect(store.url()).await.unwrap();
    assert!(
        other
            .inbox_claim(Duration::from_secs(30), 1000)
            .await
            .unwrap()
            .is_empty()
    );
    // Held by an instance that has ended (a crash): released, then claimed by another.
    sqlx::query("UPDATE webhook_inbox SET lease_token = 'an-instance-that-ended' WHERE event_id LIKE 'evt_batch_%'")
        .execute(store.pool())
        .await
        .unwrap();
    // On SQLite, which serves one instance, every other holder counts as ended: the first
    // store's own event (the one with a NUL, which SQLite keeps) is released too.
    let expected = match store.engine() {
        Engine::Postgres => 250,
        Engine::Sqlite => 251,
    };
    assert_eq!(other.inbox_release_dead_leases().await.unwrap(), expected);
    assert_eq!(
        other
            .inbox_claim(Duration::from_secs(30), 1000)
            .await
            .unwrap()
            .len(),
        expected as usize
    );
    if store.engine() == Engine::Postgres {
        assert_eq!(
            store.inbox_release_dead_leases().await.unwrap(),
            0,
            "a live instance's leases are its own"
        );
    }
}

async fn failed_events_retry_then_dead_letter_and_replay(store: Store) {
    let evt_f = StripeEventId::from_stripe("evt_f");
    let t = tenant(&store, (0, 0)).await;
    let lease = Duration::from_secs(30);
    store
        .inbox_insert(&inbox_event(&evt_f, Some(&t)))
        .await
        .unwrap();
    let claim = store.inbox_claim(lease, 1).await.unwrap().pop().unwrap();
    assert_eq!(claim.tenant_id.as_ref(), Some(&t));
    assert!(
        store
            .inbox_fail(
                &claim,
                "boom",
                Some(Timestamp::now().plus(Duration::from_secs(60)))
            )
            .await
            .unwrap()
    );
    assert!(
        store.inbox_claim(lease, 1).await.unwrap().is_empty(),
        "not due yet"
    );
    // Due again (as if the minute had passed), it fails for good.
    sqlx::query("UPDATE webhook_inbox SET next_attempt_at = 0 WHERE event_id = 'evt_f'")
        .execute(store.pool())
        .await
        .unwrap();
    let claim = store.inbox_claim(lease, 1).await.unwrap().pop().unwrap();
    assert!(store.inbox_fail(&claim, "boom", None).await.unwrap());
    let dead = store.inbox_event(&evt_f).await.unwrap().unwrap();
    assert_eq!(
        (dead.status, dead.last_error.as_deref()),
        (InboxStatus::Dead, Some("boom"))
    );
    assert!(
        store.inbox_claim(lease, 1).await.unwrap().is_empty(),
        "a dead letter is not claimed"
    );
    assert!(store.inbox_replay(&evt_f).await.unwrap());
    assert_eq!(
        store
            .inbox_claim(lease, 1)
            .await
            .unwrap()
            .pop()
            .unwrap()
            .event_id,
        evt_f
    );
}

async fn idempotency_keys_replay_and_refuse_other_bodies(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let t = t.as_str();
    let minute = Duration::from_secs(60);
    let begin = |scope: &str, key: &str, hash: &str, lock: Duration| {
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
        begin(t, "k", "h1", minute).await,
        IdempotencyOutcome::Proceed
    );
    assert_eq!(
        begin(t, "k", "h1", minute).await,
        IdempotencyOutcome::InProgress
    );
    store
        .idempotency_finish(t, "k", 200, "{\"ok\":true}")
        .await
        .unwrap();
    assert_eq!(
        begin(t, "k", "h1", minute).await,
        IdempotencyOutcome::Replay {
            status: 200,
            body: "{\"ok\":true}".into()
        }
    );
    assert_eq!(
        begin(t, "k", "h2", minute).await,
        IdempotencyOutcome::Mismatch
    );
    let other = tenant(&store, (0, 0)).await;
    assert_eq!(
        begin(other.as_str(), "k", "h2", minute).await,
        IdempotencyOutcome::Proceed,
        "keys are per tenant"
    );
    assert_eq!(
        begin("operator", "k", "h3", minute).await,
        IdempotencyOutcome::Proceed,
        "and the operator's are its own"
    );
    // A request that died holding its key gives it up once its lock runs out: of several
    // retries arriving together, exactly one takes it over.
    assert_eq!(
        begin(t, "dead", "h", Duration::ZERO).await,
        IdempotencyOutcome::Proceed
    );
    let_the_lease_run_out().await;
    let retries: Vec<_> = (0..6)
        .map(|_| tokio::spawn(begin(t, "dead", "h", minute)))
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
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            IdempotencyOutcome::Proceed | IdempotencyOutcome::InProgress
        )),
        "{outcomes:?}"
    );
    // Released keys run again; finished ones are kept until they are a day old.
    store.idempotency_release(t, "dead").await.unwrap();
    assert_eq!(
        begin(t, "dead", "h", minute).await,
        IdempotencyOutcome::Proceed
    );
    assert_eq!(store.idempotency_prune().await.unwrap(), 0);
    let backdate = |age: i64| {
        let store = store.clone();
        async move {
            sqlx::query("UPDATE idempotency_keys SET created_at = $1 WHERE idempotency_key = 'k'")
                .bind(Timestamp::now().secs() - age)
                .execute(store.pool())
                .await
                .unwrap();
        }
    };
    let day = i64::try_from(IDEMPOTENCY_RETENTION.as_secs()).unwrap();
    backdate(day - 60).await;
    assert_eq!(
        store.idempotency_prune().await.unwrap(),
        0,
        "kept until a day old"
    );
    backdate(day + 1).await;
    // Of the three `k`s (two tenants' and the operator's), only the first tenant's finished.
    assert_eq!(store.idempotency_prune().await.unwrap(), 1);
    assert_eq!(
        begin(t, "k", "h2", minute).await,
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
    for payment in ["pi_e1", "pi_e2"] {
        let order = store
            .create_order(
                &t,
                &order_for(
                    &c,
                    vec![item(&event, &event_price, 2)],
                    FeeSchedule::default(),
                ),
            )
            .await
            .unwrap();
        let lines = lines(&order, false);
        assert_eq!(lines[0].amount, amount(1000));
        let (done, changes) = store
            .complete_order(&t, &order.id, Some(&pi(payment)), &lines, &[])
            .await
            .unwrap();
        assert_eq!(
            done[0].status,
            PurchaseStatus::Completed,
            "more seats for the same event"
        );
        assert_eq!(changes, AccessChanges::one(&t, &c.id));
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
    let (partly, _) = store
        .record_refund(&t, &first.id, amount(100), None, &re("re_part"), &[])
        .await
        .unwrap();
    assert_eq!(partly.status, PurchaseStatus::PartiallyRefunded);
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
        (second.status, second.refund_reason),
        (
            PurchaseStatus::Failed,
            Some(RefundReason::DuplicatePurchase)
        )
    );
    let owed = store
        .unrefunded_duplicates(&t, &second.order_id)
        .await
        .unwrap();
    assert_eq!(owed.len(), 1, "the duplicate waits for its refund");
    assert_eq!(owed[0].id, second.id);
    assert_eq!(
        store.orders_with_unrefunded_duplicates(10).await.unwrap(),
        [(t.clone(), second.order_id.clone())]
    );
    let result = sqlx::query("UPDATE purchases SET status = 'completed' WHERE id = $1")
        .bind(second.id.as_str())
        .execute(store.pool())
        .await;
    // The index counts partly refunded purchases.
    assert_owned_once(&store, result);
    let (refunded, changes) = store
        .record_refund(
            &t,
            &second.id,
            amount(1000),
            Some(RefundReason::Duplicate),
            &re("re_dup"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refunded.status, PurchaseStatus::Refunded);
    assert_eq!(
        refunded.refund_reason,
        Some(RefundReason::DuplicatePurchase),
        "the first reason stands"
    );
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
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
    let placed_under = store.tenant(&t).await.unwrap().fees;
    let (c, _) = store
        .get_or_create_customer(&t, "u", None, None)
        .await
        .unwrap();
    let (a, pa) = product(&store, &t, 1000, None).await;
    let order = store
        .create_order(&t, &order_for(&c, vec![item(&a, &pa, 1)], placed_under))
        .await
        .unwrap();
    // The tenant moves to 30% while the payment is under way.
    let (moved, changes) = store
        .update_tenant(
            &t,
            &NewTenant {
                name: "Acme".into(),
                default_currency: usd(),
                fees: FeeSchedule::new(3000, 0).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.fees, FeeSchedule::new(3000, 0).unwrap());
    assert!(
        changes.is_empty(),
        "fees change nobody's access (the grace period is unchanged)"
    );
    let lines = vec![NewPurchase {
        order_item_id: order.items[0].id.clone(),
        product_id: a.id.clone(),
        creator_id: None,
        amount: amount(1000),
        exclusive: true,
    }];
    let (mut purchases, _) = store
        .complete_order(&t, &order.id, Some(&pi("pi_f")), &lines, &[])
        .await
        .unwrap();
    let p = purchases.remove(0);
    assert_eq!(p.split, split(100, 0, 900));
}

async fn one_stripe_refund_recorded_by_the_api_and_the_worker_at_once_counts_once(store: Store) {
    let (t, c, p) = one_purchase(&store, "u", "pi_r").await;
    for round in 0..5 {
        let refund = re(&format!("re_race_{round}"));
        let api = {
            let (store, t, id, refund) = (store.clone(), t.clone(), p.id.clone(), refund.clone());
            tokio::spawn(async move {
                store
                    .record_refund(&t, &id, amount(100), None, &refund, &[])
                    .await
            })
        };
        let worker = {
            let (store, t, id, refund) = (store.clone(), t.clone(), p.id.clone(), refund.clone());
            tokio::spawn(async move {
                store
                    .record_external_refunds(
                        &t,
                        &pi("pi_r"),
                        &[StripeRefund {
                            id: refund,
                            amount: amount(100),
                            purchase: Some(id),
                            counts: true,
                            request: None,
                        }],
                        &[],
                    )
                    .await
            })
        };
        let (_, by_api) = api.await.unwrap().unwrap();
        let (_, by_worker) = worker.await.unwrap().unwrap();
        // Whichever came second found the refund recorded and changed nothing.
        let mut landed = by_api;
        landed.merge(by_worker);
        assert_eq!(landed, AccessChanges::one(&t, &c.id), "round {round}");
    }
    let after = store.purchase(&t, &p.id).await.unwrap();
    assert_eq!(
        after.refunded_amount(),
        amount(500),
        "five refunds of 100, each once"
    );
    assert_eq!(
        store.refunds_for_purchase(&t, &p.id).await.unwrap().len(),
        5
    );
    // Refunds of one purchase take turns.
    let minute = Duration::from_secs(60);
    assert!(store.refund_lock(&t, &p.id, minute).await.unwrap());
    assert!(!store.refund_lock(&t, &p.id, minute).await.unwrap());
    store.refund_unlock(&t, &p.id).await.unwrap();
    assert!(store.refund_lock(&t, &p.id, Duration::ZERO).await.unwrap());
    let_the_lease_run_out().await;
    assert!(
        store.refund_lock(&t, &p.id, minute).await.unwrap(),
        "a lease whose holder died runs out"
    );
    assert!(
        !store.refund_lock(&t, &p.id, minute).await.unwrap(),
        "and the new holder's lease holds"
    );
}

async fn pending_orders_left_behind_are_found_for_the_sweep(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (a, pa) = product(&store, &t, 1000, None).await;
    let order = |address: &str| NewOrder {
        customer_id: None,
        email: Some(email(address)),
        currency: usd(),
        items: vec![item(&a, &pa, 1)],
        fees: FeeSchedule::default(),
        mode: CheckoutMode::Payment,
    };
    let hour = Duration::from_secs(3600);
    let orphan = store
        .create_order(&t, &order("a@example.com"))
        .await
        .unwrap();
    let live = store
        .create_order(&t, &order("b@example.com"))
        .await
        .unwrap();
    let now = Timestamp::now();
    let cs_live = tollgate_domain::StripeCheckoutSessionId::from_stripe("cs_live");
    let cs_old = tollgate_domain::StripeCheckoutSessionId::from_stripe("cs_old");
    store
        .attach_checkout_session(&t, &live.id, &cs_live, None, Some(now.plus(hour)))
        .await
        .unwrap();
    let expired = store
        .create_order(&t, &order("c@example.com"))
        .await
        .unwrap();
    let attached = store
        .attach_checkout_session(&t, &expired.id, &cs_old, None, Some(now.minus(2 * hour)))
        .await
        .unwrap();
    assert_eq!(attached.expires_at, Some(now.minus(2 * hour)));
    let stale = store
        .stale_pending_orders(
            now.plus(Duration::from_secs(1)),
            now.minus(Duration::from_secs(600)),
            10,
        )
        .await
        .unwrap();
    let mut found: Vec<_> = stale
        .iter()
        .map(|s| (s.order_id.clone(), s.stripe_checkout_session_id.clone()))
        .collect();
    found.sort();
    let mut expected = vec![(orphan.id.clone(), None), (expired.id, Some(cs_old))];
    expected.sort();
    assert_eq!(found, expected);
    assert!(stale.iter().all(|s| s.tenant_id == t));
    // An order without a session younger than the cut-off is not (yet) left behind.
    let young = store
        .stale_pending_orders(now.minus(hour), now.minus(Duration::from_secs(600)), 10)
        .await
        .unwrap();
    assert!(
        young.iter().all(|s| s.order_id != orphan.id),
        "a fresh order is not swept"
    );
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
            .purchases_for_payment_intent(&b, &pi("pi_a"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .record_refund(&b, &purchases[0].id, amount(1), None, &re("re_b"), &[])
            .await,
        Err(StoreError::NotFound)
    ));
    let (frozen, changes) = store
        .set_disputed(&b, &pi("pi_a"), true, &[])
        .await
        .unwrap();
    assert!(
        frozen.is_empty() && changes.is_empty(),
        "another tenant cannot freeze the purchase"
    );
    assert_eq!(
        store
            .list_purchases(&b, &Default::default(), 10, 0, None)
            .await
            .unwrap()
            .1,
        0
    );
    assert!(
        store
            .purchase(&a, &purchases[0].id)
            .await
            .unwrap()
            .grants_access(),
        "the owner's purchase is untouched"
    );
}

fn subscription_record(
    customer: &tollgate_store::Customer,
    status: SubscriptionStatus,
    cancel: bool,
) -> SubscriptionRecord {
    SubscriptionRecord {
        customer_id: customer.id.clone(),
        stripe_subscription_id: StripeSubscriptionId::from_stripe("sub_store_1"),
        stripe_customer_id: StripeCustomerId::from_stripe("cus_store_1"),
        status,
        product_id: None,
        price_id: None,
        stripe_price_id: StripePriceId::from_stripe("price_store_1"),
        stripe_item_id: StripeSubscriptionItemId::from_stripe("si_store_1"),
        quantity: 1,
        items: vec![],
        currency: usd(),
        current_period_start: Timestamp::from_secs(1_000),
        current_period_end: Timestamp::from_secs(2_000),
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

    let (s, changes) = store
        .upsert_subscription(
            &t,
            &subscription_record(&c, SubscriptionStatus::Active, true),
            newer,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        changes,
        AccessChanges::one(&t, &c.id),
        "the write landed and the subscriber's access is to be refreshed"
    );
    assert!(s.cancel_at_period_end);
    assert_eq!(s.synced_seq, newer);
    assert_eq!(s.current_period_end, Timestamp::from_secs(2_000));
    // The older read lands last, as a slow request or a late event would: it is ignored.
    let (s, changes) = store
        .upsert_subscription(
            &t,
            &subscription_record(&c, SubscriptionStatus::Trialing, false),
            older,
            &[],
        )
        .await
        .unwrap();
    assert!(changes.is_empty(), "an older read changes nothing");
    assert_eq!(s.status, SubscriptionStatus::Active);
    assert!(s.cancel_at_period_end);
    assert_eq!(s.synced_seq, newer);
    let (s, changes) = store
        .upsert_subscription(
            &t,
            &subscription_record(&c, SubscriptionStatus::Active, true),
            newer,
            &[],
        )
        .await
        .unwrap();
    assert!(changes.is_empty(), "the same read twice is written once");
    let newest = store.next_sync_seq().await.unwrap();
    let (after, changes) = store
        .upsert_subscription(
            &t,
            &subscription_record(&c, SubscriptionStatus::Canceled, false),
            newest,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
    assert_eq!(after.status, SubscriptionStatus::Canceled);
    assert_eq!(after.state.status, SubscriptionStatus::Canceled);
    assert_eq!(after.id, s.id, "one row per Stripe subscription");
    let listed = store
        .list_subscriptions(&t, &Default::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, s.id);
}

async fn usage_is_recorded_once_per_key_and_each_record_is_claimed_by_one_reporter(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (c, _) = store
        .get_or_create_customer(&t, "metered", None, None)
        .await
        .unwrap();
    store
        .set_stripe_customer(&t, &c.id, &StripeCustomerId::from_stripe("cus_metered"))
        .await
        .unwrap();
    let meter = store.get_or_create_meter(&t, "api_calls").await.unwrap();
    let usage = |key: &str, value: i64| NewUsage {
        customer_id: c.id.clone(),
        meter_id: meter.id.clone(),
        value,
        occurred_at: Timestamp::from_secs(1_800_000_000),
        idempotency_key: key.into(),
    };
    let (first, new) = store.record_usage(&t, &usage("k1", 5)).await.unwrap();
    assert!(new);
    assert_eq!(first.occurred_at, Timestamp::from_secs(1_800_000_000));
    let (again, new) = store.record_usage(&t, &usage("k1", 5)).await.unwrap();
    assert!(!new, "the same key again records nothing");
    assert_eq!(again.id, first.id);
    let err = store.record_usage(&t, &usage("k1", 6)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Constraint::UsageRecordsTenantKey)),
        "{err:?}"
    );
    for i in 0..9 {
        store
            .record_usage(&t, &usage(&format!("k{}", i + 2), 1))
            .await
            .unwrap();
    }

    // Two reporters claiming at once share the ten records without overlap.
    let minute = Duration::from_secs(60);
    let (a, b) = tokio::join!(store.claim_usage(6, minute), store.claim_usage(6, minute));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<_> = a.iter().chain(&b).map(|u| u.record.id.clone()).collect();
    assert_eq!(ids.len(), 10, "every record claimed");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "none claimed twice");
    assert!(
        store.claim_usage(10, minute).await.unwrap().is_empty(),
        "all leased"
    );
    assert_eq!(
        a[0].stripe_customer_id,
        Some(StripeCustomerId::from_stripe("cus_metered"))
    );
    assert_eq!(a[0].stripe_event_name, meter.stripe_event_name);

    // A reporter whose lease was taken over cannot mark the record.
    let mut stale = a[0].record.clone();
    stale.lease_token = Some("not-the-lease".into());
    assert!(!store.usage_reported(&stale).await.unwrap());
    assert!(store.usage_reported(&a[0].record).await.unwrap());
    assert!(
        store
            .usage_failed(&a[1].record, "boom", Some(Timestamp::from_secs(0)))
            .await
            .unwrap()
    );
    let retried = store.claim_usage(10, minute).await.unwrap();
    assert_eq!(retried.len(), 1, "only the failed one is due again");
    assert_eq!(retried[0].record.id, a[1].record.id);
    assert_eq!(retried[0].record.attempts, 2);
    let listed = store.list_usage(&t, Some(&c.id), 20).await.unwrap();
    let reported = listed.iter().find(|u| u.id == a[0].record.id).unwrap();
    assert_eq!(
        reported.status,
        tollgate_domain::status::UsageStatus::Reported
    );
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
        let mut statuses = vec![first[0].status.as_str(), second[0].status.as_str()];
        statuses.sort_unstable();
        assert_eq!(statuses, ["completed", "failed"], "round {round}");
        assert_eq!(
            store.grants_for_customer(&t, &c.id).await.unwrap().len(),
            1,
            "round {round}"
        );
    }
}

async fn a_check_violation_or_a_nul_byte_is_refused_not_a_database_error(store: Store) {
    let t = tenant(&store, (0, 0)).await;
    let (p, _) = product(&store, &t, 1000, None).await;

    // A negative price gets past `Amount` only through `from_db`; the CHECK stops it.
    let err = store
        .create_price(&t, &p.id, &new_price(Amount::from_db(-1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(m) if m.contains("unit_amount")),
        "{err:?}"
    );
    assert_eq!(
        store.all_prices_for_product(&t, &p.id).await.unwrap().len(),
        1,
        "the refused price was not written"
    );

    // A negative capacity, on create and on update.
    let err = store
        .create_product(&t, &new_product(Some(-1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(m) if m.contains("capacity")),
        "{err:?}"
    );
    let (event, _) = product(&store, &t, 500, Some(5)).await;
    let err = store
        .update_product(
            &t,
            &event.id,
            &ProductUpdate {
                capacity: Some(-1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(m) if m.contains("capacity")),
        "{err:?}"
    );
    assert_eq!(
        store.product(&t, &event.id).await.unwrap().capacity,
        Some(5)
    );

    // A grace period beyond the 60 days the schema allows.
    let err = store
        .update_tenant(
            &t,
            &NewTenant {
                name: "Acme".into(),
                default_currency: usd(),
                grace_period_days: 61,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(m) if m.contains("grace_period_days")),
        "{err:?}"
    );
    assert_eq!(
        store.tenant(&t).await.unwrap().grace_period_days,
        tollgate_store::DEFAULT_GRACE_PERIOD_DAYS
    );

    // A NUL character in text: PostgreSQL cannot store it and the store says so with
    // `Refused`. SQLite stores it, and then it must read back exactly as written; should
    // SQLite ever refuse it, that too must be `Refused`. Never a bare `Database` error.
    let nul = NewProduct {
        title: "a\0b".into(),
        ..new_product(None)
    };
    let stored = match (store.engine(), store.create_product(&t, &nul).await) {
        (_, Err(StoreError::Refused(_))) => 0,
        (Engine::Sqlite, Ok(p)) => {
            assert_eq!(p.title, "a\0b", "stored as written");
            assert_eq!(store.product(&t, &p.id).await.unwrap().title, "a\0b");
            1
        }
        (engine, other) => panic!("{engine:?}: a NUL in a title: {other:?}"),
    };
    match (
        store.engine(),
        store
            .get_or_create_customer(&t, "user\0one", None, None)
            .await,
    ) {
        (_, Err(StoreError::Refused(_))) => {}
        (Engine::Sqlite, Ok((c, true))) => assert_eq!(c.external_user_id, "user\0one"),
        (engine, other) => panic!("{engine:?}: a NUL in a user id: {other:?}"),
    }
    assert_eq!(
        store.list_products(&t, None, 10, None).await.unwrap().len(),
        2 + stored,
        "nothing refused was written"
    );
}

/// A second payment for a product the customer owns is refunded, and Stripe fails that
/// refund. The duplicate goes back to a failed purchase with nothing refunded, not a
/// purchase that grants access, and the sweep does not ask Stripe again: a refund fails
/// when the card can take none, and would fail again.
async fn a_duplicate_payment_whose_refund_fails_is_failed_again_and_not_asked_again(store: Store) {
    let (t, c, first, second) = paid_twice(&store, "dup-refund-fails", "pi_dup").await;
    assert_eq!(second.status, PurchaseStatus::Failed);
    let (refunded, _) = store
        .record_refund(
            &t,
            &second.id,
            amount(1000),
            Some(RefundReason::DuplicatePurchase),
            &re("re_dup_fails"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refunded.status, PurchaseStatus::Refunded);
    let (_, changes) = store
        .record_external_refunds(
            &t,
            &pi("pi_dup_second"),
            &[StripeRefund {
                id: re("re_dup_fails"),
                amount: amount(1000),
                purchase: Some(second.id.clone()),
                counts: false,
                request: None,
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changes, AccessChanges::one(&t, &c.id));
    let after = store.purchase(&t, &second.id).await.unwrap();
    assert_eq!(
        (after.status, after.refunded_amount()),
        (PurchaseStatus::Failed, amount(0)),
        "{after:?}"
    );
    assert!(
        store
            .unrefunded_duplicates(&t, &second.order_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .orders_with_unrefunded_duplicates(10)
            .await
            .unwrap()
            .is_empty()
    );
    let grants = store.grants_for_customer(&t, &c.id).await.unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].source, GrantSource::Purchase(first.id.clone()));
}

/// Tollgate refunds a duplicate payment, and the worker reads Stripe's failure of that
/// refund before the refund's answer is recorded. The refund is recorded and undone then,
/// so the answer, recorded later, counts it no more: no other event would come to undo it.
async fn a_duplicate_payments_refund_failed_before_it_was_recorded_never_counts(store: Store) {
    let (t, _, _, second) = paid_twice(&store, "dup-failed-first", "pi_dff").await;
    assert_eq!(second.status, PurchaseStatus::Failed);
    let failed = StripeRefund {
        id: re("re_dff"),
        amount: amount(1000),
        purchase: Some(second.id.clone()),
        counts: false,
        request: None,
    };
    let (seen, _) = store
        .record_external_refunds(&t, &pi("pi_dff_second"), &[failed], &[])
        .await
        .unwrap();
    assert_eq!(seen[0].refunded_amount(), amount(0), "{seen:?}");
    // The caller's answer ("succeeded"), recorded afterwards.
    let (after, _) = store
        .record_refund(
            &t,
            &second.id,
            amount(1000),
            Some(RefundReason::DuplicatePurchase),
            &re("re_dff"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (after.status, after.refunded_amount()),
        (PurchaseStatus::Failed, amount(0)),
        "{after:?}"
    );
    let refunds = store.refunds_for_purchase(&t, &second.id).await.unwrap();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert!(refunds[0].reversed_at.is_some(), "{refunds:?}");
}
