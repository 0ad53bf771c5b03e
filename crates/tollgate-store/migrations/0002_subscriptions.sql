-- Subscriptions and what hangs off them: plans' entitlements, the local mirror of Stripe's
-- subscriptions, the customer portal's settings, coupons and promotion codes, metered
-- usage waiting to be reported, and price migrations. Times from Stripe (periods, trial
-- ends) are Unix seconds, as Stripe gives them; Tollgate's own times are milliseconds.

-- How long a past_due subscription keeps its access, and what the customer portal offers.
ALTER TABLE tenants ADD COLUMN grace_period_days BIGINT NOT NULL DEFAULT 3
    CHECK (grace_period_days BETWEEN 0 AND 60);
-- JSON: {"cancel": bool, "switch_plan": bool, "update_payment_method": bool, "headline": str}
ALTER TABLE tenants ADD COLUMN portal_settings TEXT NOT NULL DEFAULT '{}';
-- The Stripe portal configuration made from those settings, and a hash of what it was
-- made from (a change of settings or of the plans on offer makes a new one).
ALTER TABLE tenants ADD COLUMN stripe_portal_configuration_id TEXT;
ALTER TABLE tenants ADD COLUMN stripe_portal_configuration_hash TEXT;

-- Metered prices bill what `POST /v1/usage` reports to the meter of `meter_event_name`.
ALTER TABLE prices ADD COLUMN usage_type TEXT NOT NULL DEFAULT 'licensed'
    CHECK (usage_type IN ('licensed', 'metered'));
ALTER TABLE prices ADD COLUMN meter_event_name TEXT;
CREATE INDEX prices_stripe ON prices (stripe_price_id);

-- A subscription checkout makes an order too (its first invoice is the payment).
ALTER TABLE orders ADD COLUMN mode TEXT NOT NULL DEFAULT 'payment'
    CHECK (mode IN ('payment', 'subscription'));

CREATE INDEX customers_stripe ON customers (stripe_customer_id);

-- A billing meter per tenant and event name. Stripe's event names are one namespace per
-- account, so the Stripe-side name carries the tenant.
CREATE TABLE meters (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    event_name TEXT NOT NULL,
    stripe_event_name TEXT NOT NULL UNIQUE,
    stripe_meter_id TEXT,
    created_at BIGINT NOT NULL,
    CONSTRAINT meters_tenant_event UNIQUE (tenant_id, event_name)
);

-- What a plan grants besides itself: other products, or named features.
CREATE TABLE entitlements (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    plan_id TEXT NOT NULL REFERENCES products (id),
    product_id TEXT REFERENCES products (id),
    feature TEXT,
    created_at BIGINT NOT NULL,
    CONSTRAINT entitlements_product_or_feature CHECK ((product_id IS NULL) <> (feature IS NULL))
);
CREATE UNIQUE INDEX entitlements_plan_product ON entitlements (plan_id, product_id) WHERE product_id IS NOT NULL;
CREATE UNIQUE INDEX entitlements_plan_feature ON entitlements (plan_id, feature) WHERE feature IS NOT NULL;
CREATE INDEX entitlements_tenant ON entitlements (tenant_id);

-- Every subscription write carries a number drawn before Stripe was asked; a write whose
-- number is older than the stored one is dropped, so an older read of Stripe never
-- overwrites a newer one.
CREATE TABLE sync_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO sync_counters (name, value) VALUES ('subscriptions', 0);

-- The local mirror of Stripe's subscriptions: Stripe's state as last read, plus what
-- Tollgate derives from it.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    customer_id TEXT NOT NULL REFERENCES customers (id),
    stripe_subscription_id TEXT NOT NULL UNIQUE,
    stripe_customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('incomplete', 'incomplete_expired', 'trialing', 'active',
        'past_due', 'canceled', 'unpaid', 'paused')),
    -- The plan: the first item's price, and its product (NULL when the price is not one of
    -- this tenant's, e.g. made in the Dashboard).
    product_id TEXT REFERENCES products (id),
    price_id TEXT REFERENCES prices (id),
    stripe_price_id TEXT NOT NULL,
    stripe_item_id TEXT NOT NULL,
    quantity BIGINT NOT NULL DEFAULT 1 CHECK (quantity >= 0),
    -- JSON: every item, [{"stripe_item_id", "stripe_price_id", "price_id", "quantity"}].
    items TEXT NOT NULL DEFAULT '[]',
    currency TEXT NOT NULL,
    current_period_start BIGINT NOT NULL,
    current_period_end BIGINT NOT NULL,
    trial_start BIGINT,
    trial_end BIGINT,
    cancel_at_period_end BIGINT NOT NULL DEFAULT 0 CHECK (cancel_at_period_end IN (0, 1)),
    cancel_at BIGINT,
    canceled_at BIGINT,
    ended_at BIGINT,
    -- pause_collection: 'void', 'keep_as_draft' or 'mark_uncollectible' while paused.
    pause_behavior TEXT,
    pause_resumes_at BIGINT,
    -- When the failed invoice that made it past_due was first attempted (Stripe's time).
    past_due_since BIGINT,
    -- A downgrade keeps the plan paid for until the period it was paid for ends.
    previous_price_id TEXT REFERENCES prices (id),
    previous_product_id TEXT REFERENCES products (id),
    previous_until BIGINT,
    latest_invoice_id TEXT,
    order_id TEXT REFERENCES orders (id),
    synced_seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_customer ON subscriptions (tenant_id, customer_id);
CREATE INDEX subscriptions_tenant_created ON subscriptions (tenant_id, created_at);
CREATE INDEX subscriptions_price ON subscriptions (price_id, status);

CREATE TABLE coupons (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT,
    -- Exactly one of: a share in basis points (2000 = 20%), or an amount in a currency.
    percent_off_bps BIGINT CHECK (percent_off_bps IS NULL OR percent_off_bps BETWEEN 1 AND 10000),
    amount_off BIGINT CHECK (amount_off IS NULL OR amount_off > 0),
    currency TEXT,
    duration TEXT NOT NULL CHECK (duration IN ('once', 'repeating', 'forever')),
    duration_in_months BIGINT CHECK (duration_in_months IS NULL OR duration_in_months > 0),
    max_redemptions BIGINT CHECK (max_redemptions IS NULL OR max_redemptions > 0),
    redeem_by BIGINT,
    stripe_coupon_id TEXT,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT,
    CONSTRAINT coupons_percent_or_amount CHECK ((percent_off_bps IS NULL) <> (amount_off IS NULL)),
    CONSTRAINT coupons_amount_has_currency CHECK (amount_off IS NULL OR currency IS NOT NULL),
    CONSTRAINT coupons_repeating_has_months CHECK ((duration = 'repeating') = (duration_in_months IS NOT NULL))
);
CREATE INDEX coupons_tenant ON coupons (tenant_id, created_at);

CREATE TABLE promotion_codes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    coupon_id TEXT NOT NULL REFERENCES coupons (id),
    code TEXT NOT NULL,
    active BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    max_redemptions BIGINT CHECK (max_redemptions IS NULL OR max_redemptions > 0),
    expires_at BIGINT,
    stripe_promotion_code_id TEXT,
    created_at BIGINT NOT NULL
);
-- Codes are compared without regard to case, as Stripe compares them.
CREATE UNIQUE INDEX promotion_codes_tenant_code ON promotion_codes (tenant_id, lower(code));

-- Usage of metered prices, recorded once per caller's idempotency key and reported to
-- Stripe's meter with the record's id as the meter event's identifier (Stripe drops a
-- repeated identifier), so a report retried after a timeout counts once.
CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    customer_id TEXT NOT NULL REFERENCES customers (id),
    meter_id TEXT NOT NULL REFERENCES meters (id),
    value BIGINT NOT NULL CHECK (value >= 0),
    -- When the usage happened (Unix seconds).
    occurred_at BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'reported', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    lease_token TEXT,
    last_error TEXT,
    reported_at BIGINT,
    created_at BIGINT NOT NULL,
    CONSTRAINT usage_records_tenant_key UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX usage_records_due ON usage_records (status, next_attempt_at);
CREATE INDEX usage_records_customer ON usage_records (tenant_id, customer_id, occurred_at);

-- A new price replacing an old one for new sign-ups, and optionally moving the existing
-- subscriptions onto it at a set time (they pay the new price from their next renewal).
CREATE TABLE price_migrations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    from_price_id TEXT NOT NULL REFERENCES prices (id),
    to_price_id TEXT NOT NULL REFERENCES prices (id),
    move_existing_at BIGINT,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'done', 'new_signups_only')),
    moved BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    -- Held by the instance moving the subscriptions.
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE INDEX price_migrations_due ON price_migrations (status, move_existing_at);
