-- Tollgate's core schema, run as is on SQLite and on PostgreSQL. Money is integer minor
-- units; times are Unix milliseconds.
-- The invariants that matter for money are CHECK constraints, not only code. Flags are
-- 0/1 integers, which both engines (and sqlx's Any driver) read the same way.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    default_currency TEXT NOT NULL DEFAULT 'usd',
    success_url_template TEXT,
    cancel_url_template TEXT,
    portal_return_url_template TEXT,
    platform_fee_bps BIGINT NOT NULL DEFAULT 0 CHECK (platform_fee_bps >= 0),
    organization_fee_bps BIGINT NOT NULL DEFAULT 0 CHECK (organization_fee_bps >= 0),
    created_at BIGINT NOT NULL,
    CONSTRAINT tenants_fees_at_most_100_percent CHECK (platform_fee_bps + organization_fee_bps <= 10000)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    secret_hash TEXT NOT NULL UNIQUE,
    last4 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    external_user_id TEXT NOT NULL,
    email TEXT,
    name TEXT,
    stripe_customer_id TEXT,
    created_at BIGINT NOT NULL,
    CONSTRAINT customers_tenant_external_user UNIQUE (tenant_id, external_user_id)
);

CREATE TABLE products (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    kind TEXT NOT NULL CHECK (kind IN ('content', 'course', 'digital_product', 'event', 'plan')),
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    creator_id TEXT,
    capacity BIGINT CHECK (capacity IS NULL OR capacity >= 0),
    metadata TEXT NOT NULL DEFAULT '{}',
    stripe_product_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX products_tenant ON products (tenant_id, created_at);

CREATE TABLE prices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    product_id TEXT NOT NULL REFERENCES products (id),
    currency TEXT NOT NULL,
    unit_amount BIGINT NOT NULL CHECK (unit_amount >= 0),
    recurring_interval TEXT CHECK (recurring_interval IN ('day', 'week', 'month', 'year')),
    recurring_interval_count BIGINT CHECK (recurring_interval_count IS NULL OR recurring_interval_count > 0),
    trial_days BIGINT CHECK (trial_days IS NULL OR trial_days > 0),
    lookup_key TEXT,
    active BIGINT NOT NULL CHECK (active IN (0, 1)),
    stripe_price_id TEXT,
    created_at BIGINT NOT NULL,
    CONSTRAINT prices_tenant_lookup_key UNIQUE (tenant_id, lookup_key)
);
CREATE INDEX prices_product ON prices (product_id);

CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    customer_id TEXT REFERENCES customers (id),
    email TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed', 'expired')),
    currency TEXT NOT NULL,
    amount_total BIGINT NOT NULL CHECK (amount_total >= 0),
    stripe_checkout_session_id TEXT UNIQUE,
    stripe_payment_intent_id TEXT,
    checkout_url TEXT,
    expires_at BIGINT,
    failure_reason TEXT,
    -- The tenant's fee schedule when the order was placed: the split follows the price the
    -- buyer agreed to, not a schedule changed while the payment was under way.
    platform_fee_bps BIGINT NOT NULL DEFAULT 0 CHECK (platform_fee_bps >= 0),
    organization_fee_bps BIGINT NOT NULL DEFAULT 0 CHECK (organization_fee_bps >= 0),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    completed_at BIGINT,
    CONSTRAINT orders_fees_at_most_100_percent CHECK (platform_fee_bps + organization_fee_bps <= 10000)
);
CREATE INDEX orders_pending ON orders (status, created_at);
CREATE INDEX orders_tenant ON orders (tenant_id, created_at);

CREATE TABLE order_items (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    order_id TEXT NOT NULL REFERENCES orders (id),
    position BIGINT NOT NULL,
    product_id TEXT NOT NULL REFERENCES products (id),
    price_id TEXT NOT NULL REFERENCES prices (id),
    title TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    unit_amount BIGINT NOT NULL CHECK (unit_amount >= 0),
    amount BIGINT NOT NULL,
    CONSTRAINT order_items_amount CHECK (amount = unit_amount * quantity)
);
CREATE INDEX order_items_order ON order_items (order_id);

CREATE TABLE bookings (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    order_id TEXT NOT NULL REFERENCES orders (id),
    product_id TEXT NOT NULL REFERENCES products (id),
    customer_id TEXT REFERENCES customers (id),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'canceled')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX bookings_product ON bookings (product_id, status);

CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    order_id TEXT NOT NULL REFERENCES orders (id),
    order_item_id TEXT NOT NULL UNIQUE REFERENCES order_items (id),
    customer_id TEXT REFERENCES customers (id),
    email TEXT,
    product_id TEXT NOT NULL REFERENCES products (id),
    creator_id TEXT,
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount >= 0),
    platform_fee BIGINT NOT NULL CHECK (platform_fee >= 0),
    organization_fee BIGINT NOT NULL CHECK (organization_fee >= 0),
    creator_payout BIGINT NOT NULL CHECK (creator_payout >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'refunded', 'partially_refunded', 'failed')),
    stripe_payment_intent_id TEXT NOT NULL,
    stripe_checkout_session_id TEXT,
    purchased_at BIGINT,
    refunded_amount BIGINT NOT NULL DEFAULT 0,
    refunded_platform_fee BIGINT NOT NULL DEFAULT 0,
    refunded_organization_fee BIGINT NOT NULL DEFAULT 0,
    refunded_creator_payout BIGINT NOT NULL DEFAULT 0,
    refunded_at BIGINT,
    refund_reason TEXT,
    disputed BIGINT NOT NULL DEFAULT 0 CHECK (disputed IN (0, 1)),
    -- 1 where a customer may own the product once (everything but event tickets).
    exclusive BIGINT NOT NULL DEFAULT 1 CHECK (exclusive IN (0, 1)),
    -- A refund through the API holds this lease while it talks to Stripe, so that two
    -- refunds of one purchase never run at once.
    refund_lock_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT purchases_split_adds_up CHECK (amount = platform_fee + organization_fee + creator_payout),
    CONSTRAINT purchases_refund_within_amount CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    CONSTRAINT purchases_refund_split_adds_up CHECK (
        refunded_amount = refunded_platform_fee + refunded_organization_fee + refunded_creator_payout),
    CONSTRAINT purchases_refund_parts_within_split CHECK (
        refunded_platform_fee BETWEEN 0 AND platform_fee
        AND refunded_organization_fee BETWEEN 0 AND organization_fee
        AND refunded_creator_payout BETWEEN 0 AND creator_payout)
);
-- One purchase per product per payment: a cart's payment intent pays several products.
CREATE UNIQUE INDEX purchases_payment_intent_product ON purchases (stripe_payment_intent_id, product_id);
-- At most one completed, not fully refunded purchase per customer and product (a partly
-- refunded purchase still grants access, so it still counts); event tickets may be bought
-- again.
CREATE UNIQUE INDEX purchases_one_active_per_customer_product
    ON purchases (tenant_id, customer_id, product_id)
    WHERE status IN ('completed', 'partially_refunded') AND exclusive = 1;
CREATE INDEX purchases_tenant_created ON purchases (tenant_id, created_at);
CREATE INDEX purchases_customer ON purchases (tenant_id, customer_id);

CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    platform_fee BIGINT NOT NULL CHECK (platform_fee >= 0),
    organization_fee BIGINT NOT NULL CHECK (organization_fee >= 0),
    creator_payout BIGINT NOT NULL CHECK (creator_payout >= 0),
    reason TEXT,
    stripe_refund_id TEXT UNIQUE,
    created_at BIGINT NOT NULL,
    CONSTRAINT refunds_split_adds_up CHECK (amount = platform_fee + organization_fee + creator_payout)
);
CREATE INDEX refunds_purchase ON refunds (purchase_id);

CREATE TABLE webhook_inbox (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    tenant_id TEXT,
    payload TEXT NOT NULL,
    event_created BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'processed', 'ignored', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    -- Who holds the lease: a worker whose lease ran out cannot mark another's claim.
    lease_token TEXT,
    last_error TEXT,
    processed_at BIGINT
);
-- What workers claim next: due pending events, oldest first (the claim query's order).
CREATE INDEX webhook_inbox_due ON webhook_inbox (next_attempt_at, received_at) WHERE status = 'pending';
CREATE INDEX webhook_inbox_tenant ON webhook_inbox (tenant_id, received_at);

-- `scope` is the tenant id, or `operator` for the operator routes. Keys are kept 24 hours.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code BIGINT,
    response_body TEXT,
    -- While the first request runs; a request that died (a crash, a dropped connection)
    -- no longer holds the key once this passes.
    locked_until BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
