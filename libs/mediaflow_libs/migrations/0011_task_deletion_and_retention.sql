-- A task its owner deletes stays as a row, marked, because the credit ledger names it (its
-- charge and refund stay counted); every read its owner makes skips it. A succeeded task's
-- result is kept until `result_expires_at` (null: for ever). `objects_removed_at` says the
-- task's stored objects are gone: removed by the delete itself, or by the worker's sweep,
-- which also removes them once a result has expired (and those a delete could not).
ALTER TABLE media.tasks
    ADD COLUMN deleted_at         timestamptz,
    ADD COLUMN result_expires_at  timestamptz,
    ADD COLUMN objects_removed_at timestamptz;
-- The sweep's two look-ups: objects still stored of deleted tasks, and of expiring results.
CREATE INDEX tasks_deleted_objects_idx ON media.tasks (deleted_at)
    WHERE deleted_at IS NOT NULL AND objects_removed_at IS NULL;
CREATE INDEX tasks_expiring_objects_idx ON media.tasks (result_expires_at)
    WHERE result_expires_at IS NOT NULL AND objects_removed_at IS NULL;
