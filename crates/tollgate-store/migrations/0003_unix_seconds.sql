-- One unit of time: every time Tollgate keeps is Unix seconds, as Stripe's times already
-- were. The columns below held Unix milliseconds.

UPDATE tenants SET created_at = created_at / 1000;
UPDATE api_keys SET created_at = created_at / 1000, revoked_at = revoked_at / 1000;
UPDATE customers SET created_at = created_at / 1000;
UPDATE products SET created_at = created_at / 1000, updated_at = updated_at / 1000,
    deleted_at = deleted_at / 1000;
UPDATE prices SET created_at = created_at / 1000;
UPDATE orders SET created_at = created_at / 1000, updated_at = updated_at / 1000,
    completed_at = completed_at / 1000;
UPDATE bookings SET created_at = created_at / 1000, updated_at = updated_at / 1000;
UPDATE purchases SET created_at = created_at / 1000, updated_at = updated_at / 1000,
    purchased_at = purchased_at / 1000, refunded_at = refunded_at / 1000,
    refund_lock_until = refund_lock_until / 1000;
UPDATE refunds SET created_at = created_at / 1000;
UPDATE webhook_inbox SET received_at = received_at / 1000, next_attempt_at = next_attempt_at / 1000,
    lease_until = lease_until / 1000, processed_at = processed_at / 1000;
UPDATE idempotency_keys SET created_at = created_at / 1000, locked_until = locked_until / 1000;
UPDATE meters SET created_at = created_at / 1000;
UPDATE entitlements SET created_at = created_at / 1000;
UPDATE subscriptions SET created_at = created_at / 1000, updated_at = updated_at / 1000;
UPDATE coupons SET created_at = created_at / 1000, deleted_at = deleted_at / 1000;
UPDATE promotion_codes SET created_at = created_at / 1000;
UPDATE usage_records SET created_at = created_at / 1000, next_attempt_at = next_attempt_at / 1000,
    lease_until = lease_until / 1000, reported_at = reported_at / 1000;
UPDATE price_migrations SET created_at = created_at / 1000, completed_at = completed_at / 1000,
    move_existing_at = move_existing_at / 1000, lease_until = lease_until / 1000;
