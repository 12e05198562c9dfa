-- A task submission is one statement: media.submit_task() does the idempotency check, the
-- rate-limit hit, the credit charge, the task row, its first event and both outbox rows in
-- the caller's one transaction (its own, when called alone), instead of nine round trips.
-- The gateway builds the messages (protobuf, the task's JSON) itself; the database adds
-- only what it alone knows, the event id.

-- Tasks are created with the gateway's id and clock (so it can build their messages before
-- the one statement); updated_at still never goes back, whatever the clocks say.
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

-- One wake-up per transaction is enough for the relay: identical payloads are folded into
-- one notification at commit.
CREATE OR REPLACE FUNCTION media.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('media_outbox', '');
    RETURN NULL;
END $$;

-- A protobuf varint (non-negative values).
CREATE FUNCTION media.protobuf_varint(value bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    encoded bytea := '';
BEGIN
    IF value < 0 THEN
        RAISE EXCEPTION 'protobuf_varint: % is negative', value;
    END IF;
    LOOP
        IF value < 128 THEN
            RETURN encoded || set_byte('\x00'::bytea, 0, value::integer);
        END IF;
        encoded := encoded || set_byte('\x00'::bytea, 0, (value & 127)::integer | 128);
        value := value >> 7;
    END LOOP;
END $$;

-- (PL/pgSQL, not SQL: its plan is cached for the session instead of made on every call.)
CREATE FUNCTION media.enqueue_outbox(
    p_exchange text, p_routing_key text, p_body bytea, p_headers jsonb, p_mandatory boolean
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO media.outbox (exchange, routing_key, body, headers, mandatory)
    VALUES (p_exchange, p_routing_key, p_body, coalesce(p_headers, '{}'), p_mandatory);
END $$;

-- A task's status change as an event (the public task JSON, the SSE cursor) and its message
-- in the outbox. `p_task_field` is the serialized TaskEvent without its event_id (field 1),
-- which only this insert knows: a protobuf parser merges fields in any order, so the id is
-- put in front.
CREATE FUNCTION media.record_task_event(
    p_task_id uuid, p_user_id uuid, p_status text, p_task jsonb,
    p_exchange text, p_routing_key text, p_task_field bytea, p_headers jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    event_id bigint;
BEGIN
    INSERT INTO media.task_events (task_id, user_id, status, task)
    VALUES (p_task_id, p_user_id, p_status, p_task) RETURNING id INTO event_id;
    PERFORM media.enqueue_outbox(
        p_exchange, p_routing_key,
        '\x08'::bytea || media.protobuf_varint(event_id) || p_task_field,
        p_headers, false  -- nobody may be listening; replay covers that
    );
    RETURN event_id;
END $$;

-- The user's account with the sign-up grant, opened once; true when this call opened it.
CREATE FUNCTION media.open_credit_account(p_user_id uuid, p_grant integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO media.credit_accounts (user_id, balance) VALUES (p_user_id, p_grant)
    ON CONFLICT (user_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO media.credit_ledger (user_id, delta, reason) VALUES (p_user_id, p_grant, 'signup');
    RETURN true;
END $$;

-- Take `p_cost` credits for a task; false when the balance is too low or there is no
-- account. The CHECK on the balance is what keeps it from going negative.
CREATE FUNCTION media.charge_credits(p_user_id uuid, p_task_id uuid, p_cost integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE media.credit_accounts SET balance = balance - p_cost
    WHERE user_id = p_user_id AND balance >= p_cost;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO media.credit_ledger (user_id, task_id, delta, reason)
    VALUES (p_user_id, p_task_id, -p_cost, 'charge');
    RETURN true;
END $$;

-- A submission. `p_task` is the new task row as JSON (built by the gateway, id included)
-- and `p_task_json` the task as API.md shows it (the event's snapshot). The outcome is
-- `accepted`, `replayed` (the Idempotency-Key's earlier task: `task_id`),
-- `idempotency_conflict`, `rate_limited` (with `retry_after` seconds) or
-- `insufficient_credits`; a refusal writes nothing.
CREATE FUNCTION media.submit_task(
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
    v_window_start timestamptz;
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

    BEGIN  -- a refusal raises 'MF000' and so undoes everything in this block
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

        -- The user's rate-limit window and credit account are rows every submission of
        -- the user updates, locked until commit: they come last, so concurrent
        -- submissions of one user wait on them as briefly as possible.
        v_window_start :=
            to_timestamp(floor(extract(epoch FROM now()) / p_window_seconds) * p_window_seconds);
        INSERT INTO media.rate_limit_windows AS w (subject, window_start, hits)
        VALUES ('submit:' || v_task.user_id, v_window_start, 1)
        ON CONFLICT (subject, window_start) DO UPDATE SET hits = w.hits + 1
            WHERE w.hits < p_submits_per_window;
        IF NOT FOUND THEN
            outcome := 'rate_limited';
            retry_after := greatest(1, ceil(extract(epoch FROM
                v_window_start + make_interval(secs => p_window_seconds) - now())))::integer;
            RAISE EXCEPTION USING ERRCODE = 'MF000';
        END IF;
        IF NOT media.charge_credits(v_task.user_id, v_task.id, v_task.cost) THEN
            -- A first submission opens the account (with the sign-up grant) and tries again.
            IF NOT (media.open_credit_account(v_task.user_id, p_signup_credits)
                    AND media.charge_credits(v_task.user_id, v_task.id, v_task.cost)) THEN
                outcome := 'insufficient_credits';
                RAISE EXCEPTION USING ERRCODE = 'MF000';
            END IF;
        END IF;
    EXCEPTION WHEN SQLSTATE 'MF000' THEN
        RETURN;  -- the outcome set above survives the rollback
    END;
    IF random() < 0.01 THEN  -- old windows are pruned now and then, not on every request
        DELETE FROM media.rate_limit_windows w WHERE w.window_start < now() - interval '1 day';
    END IF;
    outcome := 'accepted';
    task_id := v_task.id;
END $$;
