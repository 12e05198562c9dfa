-- Operators: an account can be disabled (it cannot sign in; its sessions and API keys are
-- revoked when it is), and credits can be granted, each grant a ledger row with its reason.
ALTER TABLE auth.users ADD COLUMN disabled_at timestamptz;

ALTER TABLE media.credit_ledger ADD COLUMN note text;
ALTER TABLE media.credit_ledger DROP CONSTRAINT credit_ledger_reason_check;
ALTER TABLE media.credit_ledger ADD CONSTRAINT credit_ledger_reason_check
    CHECK (reason IN ('signup', 'charge', 'refund', 'grant'));
ALTER TABLE media.credit_ledger ADD CONSTRAINT credit_ledger_grant_note_check
    CHECK (reason <> 'grant' OR length(btrim(note)) > 0);

-- TASK_COST_CREDITS=0 and SIGNUP_CREDITS=0 (a service without credits): no ledger rows of 0.
-- A task without a charge row is refunded nothing, as before (the refund copies the charge).
CREATE OR REPLACE FUNCTION media.open_credit_account(p_user_id uuid, p_grant integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO media.credit_accounts (user_id, balance) VALUES (p_user_id, p_grant)
    ON CONFLICT (user_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_grant <> 0 THEN
        INSERT INTO media.credit_ledger (user_id, delta, reason)
        VALUES (p_user_id, p_grant, 'signup');
    END IF;
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION media.charge_credits(p_user_id uuid, p_task_id uuid, p_cost integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE media.credit_accounts SET balance = balance - p_cost
    WHERE user_id = p_user_id AND balance >= p_cost;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_cost <> 0 THEN
        INSERT INTO media.credit_ledger (user_id, task_id, delta, reason)
        VALUES (p_user_id, p_task_id, -p_cost, 'charge');
    END IF;
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION media.submit_task(
    p_task jsonb,
    p_task_json jsonb,
    p_idempotency_key text,      -- NULL without the header
    p_request_hash bytea,
    p_signup_credits integer,
    p_submits_per_window integer,
    p_window_seconds integer,
    p_job_exchange text, p_job_routing_key text, p_job_body bytea, p_job_headers jsonb,
    p_event_exchange text, p_event_routing_key text, p_event_task_field bytea,
    p_event_headers jsonb,
    OUT outcome text, OUT retry_after integer, OUT task_id uuid
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_task media.tasks := jsonb_populate_record(NULL::media.tasks, p_task);
    v_subject text := 'submit:' || v_task.user_id;
    v_window_start timestamptz :=
        to_timestamp(floor(extract(epoch FROM now()) / p_window_seconds) * p_window_seconds);
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
    INSERT INTO media.rate_limit_windows AS w (subject, window_start, hits)
    VALUES (v_subject, v_window_start, 1)
    ON CONFLICT (subject, window_start) DO UPDATE SET hits = w.hits + 1
        WHERE w.hits < p_submits_per_window;
    IF NOT FOUND THEN
        outcome := 'rate_limited';
        retry_after := greatest(1, ceil(extract(epoch FROM
            v_window_start + make_interval(secs => p_window_seconds) - now())))::integer;
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
        UPDATE media.rate_limit_windows SET hits = hits - 1
        WHERE subject = v_subject AND window_start = v_window_start;
        outcome := 'insufficient_credits';
        RETURN;
    END IF;

    INSERT INTO media.tasks SELECT (v_task).*;
    PERFORM media.record_task_event(
        v_task.id, v_task.user_id, v_task.status, p_task_json,
        p_event_exchange, p_event_routing_key, p_event_task_field, p_event_headers);
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

    IF random() < 0.01 THEN  -- old windows are pruned now and then, not on every request
        DELETE FROM media.rate_limit_windows w WHERE w.window_start < now() - interval '1 day';
    END IF;
    outcome := 'accepted';
    task_id := v_task.id;
END $$;
