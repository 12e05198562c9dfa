-- A user's task events become visible in the order of their ids.
--
-- An event's id is taken when it is inserted, but it becomes visible at commit. Two
-- transactions writing events of one user (two of their tasks running at once) could commit
-- in the other order: for a moment event 102 is visible and 101 is not. A client that saw
-- 102 and reconnected with `Last-Event-ID: 102` would be replayed `id > 102` and never see
-- 101. Taking a per-user lock before the insert, held to commit, makes a user's events
-- commit in id order, which is all a per-user replay needs; other users are not held up.
--
-- Lock order: every transaction that writes an event takes this lock before it touches the
-- user's credit account (submission: event, then rate limit and charge; a refund: event,
-- then account), so the two never wait on each other in a cycle.
CREATE OR REPLACE FUNCTION media.record_task_event(
    p_task_id uuid, p_user_id uuid, p_status text, p_task jsonb,
    p_exchange text, p_routing_key text, p_task_field bytea, p_headers jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('task_events:' || p_user_id::text, 0));
    INSERT INTO media.task_events (task_id, user_id, status, task)
    VALUES (p_task_id, p_user_id, p_status, p_task) RETURNING id INTO event_id;
    PERFORM media.enqueue_outbox(
        p_exchange, p_routing_key,
        '\x08'::bytea || media.protobuf_varint(event_id) || p_task_field,
        p_headers, false  -- nobody may be listening; replay covers that
    );
    RETURN event_id;
END $$;
