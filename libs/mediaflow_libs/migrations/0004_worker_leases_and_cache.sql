-- A worker holds the task it works on by a lease on the task row: the holder's token and
-- when the hold runs out unless renewed (its heartbeat). A dead worker's lease runs out
-- and the next delivery of the job takes the task over. While a retry waits in a delay
-- queue the lease has no owner but runs until the retry is due.
ALTER TABLE media.tasks
    ADD COLUMN lease_owner      text,
    ADD COLUMN lease_expires_at timestamptz;
-- The reaper's look-up: running tasks whose lease ran out long ago.
CREATE INDEX tasks_running_lease_idx ON media.tasks (lease_expires_at) WHERE status = 'running';

-- Heartbeats renew the lease every second; they are bookkeeping, not a change of the task
-- users see, so they leave updated_at (and with it the API's ETag) alone.
CREATE OR REPLACE FUNCTION media.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) - 'lease_owner' - 'lease_expires_at' - 'updated_at'
       = to_jsonb(OLD) - 'lease_owner' - 'lease_expires_at' - 'updated_at' THEN
        NEW.updated_at := OLD.updated_at;
    ELSE
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

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
