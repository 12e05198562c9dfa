-- Uncounts an attempt public.take_rate_limit counted (one that turned out not to count).
CREATE OR REPLACE FUNCTION public.give_back_rate_limit(
    p_table regclass, p_subjects text[], p_window_seconds integer
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'UPDATE %s SET hits = hits - 1
         WHERE subject = ANY($1) AND window_start = $2 AND hits > 0', p_table)
    USING p_subjects, public.rate_limit_window(p_window_seconds);
END $$;
