-- Submissions that reach a gateway together are written in one call: one transaction and one
-- commit for all of them instead of one each (the commit, the call and the round trip are
-- most of a submission's cost). Each is still media.submit_task, with its own outcome.
--
-- Lock order, so that batches never wait on each other in a cycle: every Idempotency-Key
-- lock of the batch first, then the submissions in the caller's order, which sorts them by
-- user (and key): per user, its event lock, then its rate-limit and credit rows, as one
-- submission alone takes them. Worker transactions take one user's locks in the same order.
CREATE OR REPLACE FUNCTION media.submit_tasks(
    p_tasks jsonb[],
    p_task_jsons jsonb[],
    p_idempotency_keys text[],   -- NULL elements without the header
    p_request_hashes bytea[],
    p_signup_credits integer,
    p_submits_per_window integer,
    p_window_seconds integer,
    p_job_exchange text, p_job_routing_key text, p_job_bodies bytea[], p_job_headers jsonb[],
    p_event_exchange text, p_event_routing_keys text[], p_event_headers jsonb
) RETURNS TABLE (item integer, outcome text, retry_after integer, task_id uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(p_tasks, 1), 0);
BEGIN
    FOR i IN 1 .. n LOOP
        IF p_idempotency_keys[i] IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(
                hashtextextended((p_tasks[i] ->> 'user_id') || ':' || p_idempotency_keys[i], 0));
        END IF;
    END LOOP;
    FOR i IN 1 .. n LOOP
        RETURN QUERY SELECT i, s.outcome, s.retry_after, s.task_id FROM media.submit_task(
            p_tasks[i], p_task_jsons[i], p_idempotency_keys[i], p_request_hashes[i],
            p_signup_credits, p_submits_per_window, p_window_seconds,
            p_job_exchange, p_job_routing_key, p_job_bodies[i], p_job_headers[i],
            p_event_exchange, p_event_routing_keys[i], p_event_headers
        ) s;
    END LOOP;
END $$;
