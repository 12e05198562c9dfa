-- A task event's message is built by the relay from the event row (the outbox names it),
-- not in SQL: such a row has no body of its own. Removed with its event.
ALTER TABLE media.outbox
    ALTER COLUMN body DROP NOT NULL,
    ADD COLUMN task_event_id bigint REFERENCES media.task_events (id) ON DELETE CASCADE,
    ADD CONSTRAINT outbox_body_or_event_check CHECK ((body IS NULL) = (task_event_id IS NOT NULL));

-- Replaced by functions of other arguments (functions/), or no longer used.
DROP FUNCTION IF EXISTS media.protobuf_varint(bigint);
DROP FUNCTION IF EXISTS media.record_task_event(uuid, uuid, text, jsonb, text, text, bytea, jsonb);
DROP FUNCTION IF EXISTS media.submit_task(
    jsonb, jsonb, text, bytea, integer, integer, integer, text, text, bytea, jsonb,
    text, text, bytea, jsonb);
DROP FUNCTION IF EXISTS media.submit_tasks(
    jsonb[], jsonb[], text[], bytea[], integer, integer, integer, text, text, bytea[], jsonb[],
    text, text[], bytea[], jsonb);
