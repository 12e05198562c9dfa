-- Wakes the relays. One wake-up per transaction is enough: identical payloads are folded
-- into one notification at commit.
CREATE OR REPLACE FUNCTION media.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('media_outbox', '');
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON media.outbox
    FOR EACH ROW EXECUTE FUNCTION media.notify_outbox();
