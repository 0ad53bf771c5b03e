-- Refunds asked for through the API are recorded before Stripe is asked, so that a retry
-- after a lost answer or a crash asks Stripe with the same idempotency key (the request's
-- id) and money moves once. A pending request holds its amount: refunds of one purchase
-- never together exceed what is left.
CREATE TABLE refund_requests (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    reason TEXT,
    -- The caller's Idempotency-Key, when it sent one: the same key finds this request.
    idempotency_key TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    stripe_refund_id TEXT,
    failure TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX refund_requests_key ON refund_requests (tenant_id, purchase_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX refund_requests_pending ON refund_requests (status, updated_at);
CREATE INDEX refund_requests_purchase ON refund_requests (purchase_id, status);

-- A refund Stripe later reports failed (or canceled) is reversed: the money is counted as
-- the merchant's again. The row stays, marked.
ALTER TABLE refunds ADD COLUMN reversed_at BIGINT;
-- A lost dispute takes the money back like a refund: its ledger rows name the dispute.
ALTER TABLE refunds ADD COLUMN stripe_dispute_id TEXT;
CREATE INDEX refunds_dispute ON refunds (stripe_dispute_id);

-- Disputes as Stripe reports them, per tenant.
CREATE TABLE disputes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    stripe_dispute_id TEXT NOT NULL UNIQUE,
    stripe_payment_intent_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount >= 0),
    currency TEXT NOT NULL,
    -- Stripe's dispute fee, withdrawn with the disputed amount.
    fee BIGINT NOT NULL DEFAULT 0 CHECK (fee >= 0),
    evidence_due_at BIGINT,
    -- When the loss was written into the ledger (once).
    loss_recorded_at BIGINT,
    stripe_created_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX disputes_tenant ON disputes (tenant_id, stripe_created_at);
CREATE INDEX disputes_payment ON disputes (stripe_payment_intent_id);

-- Which instance holds an Idempotency-Key while its request runs: a key held by an
-- instance that has died (a kill -9, a crash) is free at once, not when its lock runs out.
ALTER TABLE idempotency_keys ADD COLUMN locked_by TEXT;
