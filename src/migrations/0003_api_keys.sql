-- API keys (auth.mode = keys). Only the SHA-256 digest of a key's secret is stored.
-- A revoked key keeps its row, so its name is never given to another key and the
-- sessions it made keep their owner.
CREATE TABLE api_keys (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT        NOT NULL UNIQUE,
    digest     BYTEA       NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);

-- The key that created a session; NULL for a session made in open mode (and for every
-- session made before keys existed). Only its owner reads a session.
ALTER TABLE sessions ADD COLUMN owner BIGINT REFERENCES api_keys (id);
