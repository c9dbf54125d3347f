-- Idempotency keys (the Idempotency-Key header of post_task and sync/sum): the first
-- request with a key runs and its answer is kept; a retry with the same key and the
-- same request gets that answer again. Kept for tasks.idempotency_ttl, then purged.
CREATE TABLE idempotency_keys (
    -- The API key that sent it; 0 in open mode (API key ids start at 1).
    owner         BIGINT      NOT NULL,
    key           TEXT        NOT NULL,
    -- SHA-256 of the route and the request's numbers: another request under the same
    -- key is refused.
    fingerprint   BYTEA       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- While the first request runs: until when it may, at the latest. A serve that dies
    -- mid-request leaves a key that a retry takes over after that.
    running_until TIMESTAMPTZ,
    -- The answer, once given.
    status        SMALLINT,
    body          TEXT,
    location      TEXT,
    PRIMARY KEY (owner, key)
);

-- The purge removes the oldest first, in bounded batches.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
