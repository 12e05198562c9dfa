-- updated_at (and with it the API's ETag) moves on every change users see, and never goes
-- back whatever the clocks say (tasks are created with the gateway's clock). Heartbeats
-- renew the lease every second; they are bookkeeping, so they leave it alone.
CREATE OR REPLACE FUNCTION media.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_jsonb(NEW) - 'lease_owner' - 'lease_expires_at' - 'updated_at'
       = to_jsonb(OLD) - 'lease_owner' - 'lease_expires_at' - 'updated_at' THEN
        NEW.updated_at := OLD.updated_at;
    ELSE
        NEW.updated_at := greatest(clock_timestamp(), OLD.updated_at + interval '1 microsecond');
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER tasks_touch_updated_at BEFORE UPDATE ON media.tasks
    FOR EACH ROW EXECUTE FUNCTION media.touch_updated_at();
