-- A task's status change as an event (the public task JSON, the SSE cursor) and its message
-- in the outbox, which names the event: the relay builds the TaskEvent from the event row.
--
-- A user's events become visible in the order of their ids. An id is taken at the insert but
-- becomes visible at commit: two transactions writing events of one user (two of their tasks
-- at once) could commit in the other order, and a client that saw 102 and resumed with
-- `Last-Event-ID: 102` would never see 101. A per-user lock taken before the insert, held to
-- commit, makes a user's events commit in id order; other users are not held up.
--
-- Lock order: every transaction that writes an event takes this lock before it touches the
-- user's rate-limit window or credit account (a submission: this lock, then both; a refund:
-- this lock, then the account), so the two never wait on each other in a cycle.
CREATE OR REPLACE FUNCTION media.record_task_event(
    p_task_id uuid, p_user_id uuid, p_status text, p_task jsonb,
    p_exchange text, p_routing_key text, p_headers jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('task_events:' || p_user_id::text, 0));
    INSERT INTO media.task_events (task_id, user_id, status, task)
    VALUES (p_task_id, p_user_id, p_status, p_task) RETURNING id INTO event_id;
    INSERT INTO media.outbox (exchange, routing_key, task_event_id, headers, mandatory)
    VALUES (p_exchange, p_routing_key, event_id, coalesce(p_headers, '{}'),
            false);  -- nobody may be listening; replay covers that
    RETURN event_id;
END $$;
