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
    v_counted text[];
BEGIN
    EXECUTE format(
        $sql$WITH counted AS (
                 INSERT INTO %1$s AS w (subject, window_start, hits)
                 SELECT u.subject, $3, 1 FROM unnest($1::text[]) AS u (subject) ORDER BY 1
                 ON CONFLICT (subject, window_start) DO UPDATE SET hits = w.hits + 1
                     WHERE w.hits < (SELECT l.max_hits FROM unnest($1::text[], $2::integer[])
                                         AS l (subject, max_hits) WHERE l.subject = w.subject)
                 RETURNING w.subject)
             SELECT array_agg(subject) FROM counted$sql$, p_table)
    INTO v_counted USING p_subjects, p_limits, v_window_start;
    IF random() < 0.01 THEN  -- old windows are pruned now and then, not on every attempt
        EXECUTE format('DELETE FROM %s WHERE window_start < now() - interval ''1 day''', p_table);
    END IF;
    IF coalesce(cardinality(v_counted), 0) = cardinality(p_subjects) THEN
        RETURN NULL;
    END IF;
    PERFORM public.give_back_rate_limit(p_table, v_counted, p_window_seconds);
    RETURN greatest(1, ceil(extract(epoch FROM
        v_window_start + make_interval(secs => p_window_seconds) - now())))::integer;
END $$;
