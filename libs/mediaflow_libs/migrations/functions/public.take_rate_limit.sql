-- Fixed-window counters, the one rate limit of every service (sign-ins in auth, task
-- submissions in media), each in a table of its owner's schema with the columns
-- (subject text, window_start timestamptz, hits integer), primary key (subject, window_start).
--
-- Counts one attempt against every subject before it is made, so that attempts sent all at
-- once cannot each find room under a limit. When any subject has reached its limit, the
-- attempt is counted against none of them and the answer is the seconds until the window
-- ends (for Retry-After); otherwise null. A refusal writes no counter: only a subject's
-- counter row is locked, to the caller's commit. Subjects are taken in one order, so
-- concurrent attempts never wait on each other in a cycle.
CREATE OR REPLACE FUNCTION public.take_rate_limit(
    p_table regclass, p_subjects text[], p_limits integer[], p_window_seconds integer
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_window_start timestamptz := public.rate_limit_window(p_window_seconds);
    v_counted text[] := '{}';
    v_subject text;
    v_limit integer;
    v_hits integer;
BEGIN
    IF random() < 0.01 THEN  -- old windows are pruned now and then, not on every attempt
        EXECUTE format('DELETE FROM %s WHERE window_start < now() - interval ''1 day''', p_table);
    END IF;
    -- One simple statement a subject: a compound one costs its planning several times over.
    FOR v_subject, v_limit IN SELECT * FROM unnest(p_subjects, p_limits) ORDER BY 1 LOOP
        EXECUTE format(
            'INSERT INTO %s AS w (subject, window_start, hits) VALUES ($1, $2, 1)
             ON CONFLICT (subject, window_start) DO UPDATE SET hits = w.hits + 1
                 WHERE w.hits < $3
             RETURNING w.hits', p_table)
        INTO v_hits USING v_subject, v_window_start, v_limit;
        IF v_hits IS NULL THEN
            PERFORM public.give_back_rate_limit(p_table, v_counted, p_window_seconds);
            RETURN greatest(1, ceil(extract(epoch FROM
                v_window_start + make_interval(secs => p_window_seconds) - now())))::integer;
        END IF;
        v_counted := v_counted || v_subject;
    END LOOP;
    RETURN NULL;
END $$;
