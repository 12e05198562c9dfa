-- A worker holds the task it works on by a lease on the task row: the holder's token and
-- when the hold runs out unless renewed (its heartbeat). A dead worker's lease runs out
-- and the next delivery of the job takes the task over. While a retry waits in a delay
-- queue the lease has no owner but runs until the retry is due.
ALTER TABLE media.tasks
    ADD COLUMN lease_owner      text,
    ADD COLUMN lease_expires_at timestamptz;
-- The reaper's look-up: running tasks whose lease ran out long ago.
CREATE INDEX tasks_running_lease_idx ON media.tasks (lease_expires_at) WHERE status = 'running';

-- (Heartbeats leave updated_at alone: functions/media.touch_updated_at.sql.)

-- Stored results by normalised source URL: a later task for the same source completes by a
-- server-side copy of the stored object instead of downloading it again.
CREATE TABLE media.source_cache (
    source_key   text PRIMARY KEY,
    object_key   text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    content_type text NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now()
);
