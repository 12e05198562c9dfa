-- A task submission in one statement, in the caller's transaction (its own, when called
-- alone): the idempotency check, the rate-limit hit, the credit charge, the task row, its
-- first event and both outbox rows, instead of nine round trips. The gateway builds the job
-- message and the task's JSON itself: it chose the task's id and clock.
--
-- `p_task` is the new task row as JSON (id included) and `p_task_json` the task as API.md
-- shows it (the event's snapshot). The outcome is `accepted`, `replayed` (the
-- Idempotency-Key's earlier task: `task_id`), `idempotency_conflict`, `rate_limited` (with
-- `retry_after` seconds) or `insufficient_credits`.
--
-- It decides whether it refuses before it writes the task, instead of writing and undoing it
-- all in an exception block: each such block is a subtransaction, one per submission of a
-- batch, and more than 64 in one transaction overflow its backend's cache of subtransaction
-- ids, sending every other session's visibility checks to pg_subtrans until it ends. The
-- order: the user's event lock (see media.record_task_event), the rate-limit hit, the credit
-- charge; then the task, its event, its job and the ledger row. A refusal by the rate limit
-- writes nothing; one for credits gives back the hit it took, so only accepted submissions
-- count. A first submission opens the user's account with the sign-up grant, and the account
-- stays open if the grant does not cover the task (as `GET /v1/me` would have opened it).
CREATE OR REPLACE FUNCTION media.submit_task(
    p_task jsonb,
    p_task_json jsonb,
    p_idempotency_key text,      -- NULL without the header
    p_request_hash bytea,
    p_signup_credits integer,
    p_submits_per_window integer,
    p_window_seconds integer,
    p_job_exchange text, p_job_routing_key text, p_job_body bytea, p_job_headers jsonb,
    p_event_exchange text, p_event_routing_key text, p_event_headers jsonb,
    OUT outcome text, OUT retry_after integer, OUT task_id uuid
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_task media.tasks := jsonb_populate_record(NULL::media.tasks, p_task);
    v_subjects text[] := ARRAY['submit:' || v_task.user_id];
    v_earlier record;
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        -- Concurrent requests with one key queue here; the first one's task wins.
        PERFORM pg_advisory_xact_lock(
            hashtextextended(v_task.user_id || ':' || p_idempotency_key, 0));
        SELECT k.request_hash, k.task_id INTO v_earlier FROM media.idempotency_keys k
        WHERE k.user_id = v_task.user_id AND k.key = p_idempotency_key;
        IF FOUND THEN
            outcome := CASE WHEN v_earlier.request_hash = p_request_hash THEN 'replayed'
                            ELSE 'idempotency_conflict' END;
            task_id := v_earlier.task_id;
            RETURN;
        END IF;
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended('task_events:' || v_task.user_id::text, 0));
    retry_after := public.take_rate_limit(
        'media.rate_limit_windows', v_subjects, ARRAY[p_submits_per_window], p_window_seconds);
    IF retry_after IS NOT NULL THEN
        outcome := 'rate_limited';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM media.credit_accounts a WHERE a.user_id = v_task.user_id) THEN
        -- A first submission opens the account, with the sign-up grant.
        PERFORM media.open_credit_account(v_task.user_id, p_signup_credits);
    END IF;
    -- The CHECK on the balance is what keeps it from going negative; this is the refusal.
    UPDATE media.credit_accounts SET balance = balance - v_task.cost
    WHERE user_id = v_task.user_id AND balance >= v_task.cost;
    IF NOT FOUND THEN
        PERFORM public.give_back_rate_limit(
            'media.rate_limit_windows', v_subjects, p_window_seconds);
        outcome := 'insufficient_credits';
        RETURN;
    END IF;

    INSERT INTO media.tasks SELECT (v_task).*;
    PERFORM media.record_task_event(
        v_task.id, v_task.user_id, v_task.status, p_task_json,
        p_event_exchange, p_event_routing_key, p_event_headers);
    -- A job that reaches no queue must stay in the outbox: mandatory.
    PERFORM media.enqueue_outbox(
        p_job_exchange, p_job_routing_key, p_job_body, p_job_headers, true);
    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO media.idempotency_keys (user_id, key, request_hash, task_id)
        VALUES (v_task.user_id, p_idempotency_key, p_request_hash, v_task.id);
    END IF;
    -- After the task row, which it names; a free task moves no credit and writes no row.
    IF v_task.cost > 0 THEN
        INSERT INTO media.credit_ledger (user_id, task_id, delta, reason)
        VALUES (v_task.user_id, v_task.id, -v_task.cost, 'charge');
    END IF;
    outcome := 'accepted';
    task_id := v_task.id;
END $$;
