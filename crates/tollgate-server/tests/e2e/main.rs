//! Tollgate end to end: the real server on port 0, the sandbox over HTTP, on SQLite and on
//! PostgreSQL (skipped with a message when PostgreSQL is absent, unless
//! `TOLLGATE_REQUIRE_POSTGRES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod flows;
mod holes;
mod service;
mod subscriptions;
mod support;

/// Runs each case on both engines.
macro_rules! both_engines {
    ($($case:ident),+ $(,)?) => {
        mod sqlite_engine {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { crate::$case(crate::support::Engine::Sqlite).await; })+
        }
        mod postgres_engine {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { crate::$case(crate::support::Engine::Postgres).await; })+
        }
    };
}

use flows::*;
use holes::*;
use subscriptions::*;

both_engines!(
    a_paid_checkout_becomes_a_purchase_with_its_split_and_grants_access,
    duplicated_reordered_and_retried_webhooks_make_exactly_one_purchase,
    the_success_page_sync_completes_the_order_before_any_webhook,
    refunds_reverse_the_split_and_a_full_refund_revokes_access,
    a_refund_made_in_stripe_has_the_same_effect,
    a_dispute_freezes_access,
    a_three_item_cart_books_an_event_and_a_sold_out_event_is_refused,
    a_guest_checkout_records_the_purchase_against_the_email,
    the_validation_pipeline_answers_each_mistake_with_its_error,
    when_stripe_fails_the_order_is_marked_failed_and_nothing_is_purchased,
    an_event_acknowledged_before_a_crash_is_applied_once_after_restart,
    another_tenants_key_finds_none_of_this_tenants_objects,
    idempotency_keys_replay_and_refuse_other_bodies,
    errors_are_in_our_format_everywhere,
    checkout_creation_is_rate_limited_per_tenant,
    webhooks_with_bad_signatures_are_refused_and_stored_events_can_be_replayed,
    concurrent_get_or_create_calls_make_one_customer_and_one_stripe_customer,
    two_paid_checkouts_of_one_product_keep_one_purchase_and_refund_the_other,
    a_paid_session_its_order_never_recorded_still_completes_the_order,
    a_trial_becomes_active_and_renews,
    a_failing_renewal_is_past_due_in_grace_then_canceled_and_revoked,
    past_due_beyond_the_grace_period_is_revoked,
    upgrades_prorate_now_and_downgrades_wait_for_the_period_end,
    cancel_at_period_end_keeps_access_until_then_and_resume_undoes_it,
    pause_revokes_and_unpause_restores,
    a_change_is_not_undone_by_a_read_that_began_before_it,
    a_replayed_answer_does_not_undo_a_later_change,
    portal_actions_flow_back_through_webhooks,
    subscription_events_duplicated_and_reordered_converge,
    concurrent_events_at_stripe_latency_converge_for_every_subscription,
    a_promotion_code_discounts_the_subscription,
    usage_is_reported_once_despite_retries,
    a_price_migration_moves_new_signups_then_existing_subscriptions,
    subscriptions_are_invisible_to_other_tenants,
    a_new_subscription_checkout_expires_the_older_one,
    tax_checkouts_for_a_known_customer_pass_stripes_rules,
    one_tenants_promotion_code_never_discounts_another_tenants_product,
    promotion_code_names_are_each_tenants_own,
    a_tenant_reads_but_never_sets_the_platform_fee,
    parallel_checkouts_of_one_event_sell_exactly_its_seats,
    parallel_refunds_of_one_purchase_never_exceed_it,
    hostile_values_on_every_route_answer_without_5xx_in_the_error_shape,
    unknown_query_parameters_are_refused_and_lookups_find_one,
    every_operation_asks_for_the_key_its_document_names,
    an_event_alone_never_fails_a_paid_order,
    a_lost_dispute_takes_the_money_back_and_a_won_one_gives_access_back,
    guest_purchases_are_claimed_by_the_customer_with_that_email,
    a_refund_retried_after_a_lost_answer_moves_money_once,
    a_refund_whose_request_died_is_settled_once,
    refunds_and_disputes_before_the_purchase_is_recorded_still_count,
    a_refund_stripe_fails_later_is_undone,
    a_duplicate_payments_failed_refund_is_undone_and_not_asked_again,
    a_duplicate_payments_refund_whose_answer_was_lost_is_made_once,
    more_than_a_page_of_refunds_all_count,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_access_refresh_is_retried_until_it_succeeds() {
    holes::a_failed_access_refresh_is_retried_until_it_succeeds().await;
}

/// Several instances share one database only on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_postgres_sees_access_granted_and_revoked_by_the_first() {
    flows::a_second_instance_sees_access_changes(support::Engine::Postgres).await;
}

/// The service as an operator runs it (one engine: what is tested is not the storage).
mod service_tests {
    macro_rules! cases {
        ($($case:ident),+ $(,)?) => {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { crate::service::$case().await; })+
        };
    }
    cases!(
        a_wrong_key_stops_start_up_with_stripes_refusal_and_request_id,
        keys_and_secrets_of_the_wrong_kind_stop_start_up_with_what_to_do,
        a_restricted_key_is_accepted,
        a_live_key_says_live_mode_and_sigterm_exits_0,
        sigterm_lets_a_request_in_flight_finish_and_exits_0,
        requests_carry_an_id_into_json_logs_without_colour,
        mistaken_settings_say_what_to_do,
        readyz_asks_stripe_at_most_every_few_seconds_and_answers_in_the_error_format,
        stripe_setup_creates_corrects_and_then_leaves_the_webhook_endpoint,
        the_built_in_sandbox_keeps_its_objects_across_a_restart,
    );
}
