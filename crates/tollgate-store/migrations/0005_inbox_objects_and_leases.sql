-- The object an event is about, as the worker groups events ("subscription:sub_...",
-- "refunds:pi_...", ...): events about one object are applied one at a time, and one
-- read of the object serves every queued event about it. NULL for events stored before
-- this column existed (the worker reads it from the payload) and for events that concern
-- no object.
ALTER TABLE webhook_inbox ADD COLUMN object_key TEXT;

-- A claim moves `next_attempt_at` to the end of its lease, so the claim query walks only
-- the due part of the index and never leased rows; `lease_until` said the same twice.
UPDATE webhook_inbox SET next_attempt_at = lease_until
    WHERE status = 'pending' AND lease_until IS NOT NULL AND lease_until > next_attempt_at;
ALTER TABLE webhook_inbox DROP COLUMN lease_until;

-- The holder of a lease is an instance; its leases are renewed together and released
-- together when it is found dead.
CREATE INDEX webhook_inbox_leases ON webhook_inbox (lease_token) WHERE lease_token IS NOT NULL;

-- Lists by status (a tenant's pending events or dead letters, the operator's dead letters)
-- read an index range, newest first, instead of every row.
CREATE INDEX webhook_inbox_status ON webhook_inbox (status, tenant_id, received_at);

-- Event bodies apart from the rows that say what became of the events: claiming and
-- marking an event rewrite a short row, not its body (SQLite rewrites a whole row on
-- update, PostgreSQL a whole tuple).
CREATE TABLE webhook_payloads (
    event_id TEXT PRIMARY KEY REFERENCES webhook_inbox (event_id),
    payload TEXT NOT NULL
);
INSERT INTO webhook_payloads (event_id, payload) SELECT event_id, payload FROM webhook_inbox;
ALTER TABLE webhook_inbox DROP COLUMN payload;
