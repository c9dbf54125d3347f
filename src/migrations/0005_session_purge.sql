-- Sessions are purged once older than tasks.result_ttl plus tasks.session_retention,
-- oldest first, in bounded batches. An index on the creation time finds them; time
-- partitions would drop a day at once, but lookups are by id, which would then search
-- every partition, and a partitioned table cannot keep ids unique on their own.
CREATE INDEX sessions_created_at ON sessions (created_at);

-- Session ids are a keyed permutation of a counter, handed out in blocks of 1024 (see
-- the service's session_ids module): a purged session's id maps to a counter value at
-- or below purged_through, and answers 410; an id never given maps far above, 404.
CREATE SEQUENCE session_blocks;
CREATE TABLE session_ids (
    only_row       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    -- The permutation's key: written once by the first serve that needs it.
    secret         BYTEA CHECK (octet_length(secret) = 32),
    -- The highest counter value of a purged session.
    purged_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO session_ids DEFAULT VALUES;
