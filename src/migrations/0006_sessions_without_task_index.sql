-- Nothing looks a session up by its task id, and task ids are random UUIDs made by
-- serve, one per task: the unique index on them only cost every insert a write at a
-- random place of a large B-tree (about a fifth of PostgreSQL's time per inserted
-- session, measured with pgbench on batches of 16) and its space on disk.
ALTER TABLE sessions DROP CONSTRAINT IF EXISTS sessions_task_id_key;
