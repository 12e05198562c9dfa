-- The start of the fixed window of `p_seconds` that now() falls in.
CREATE OR REPLACE FUNCTION public.rate_limit_window(p_seconds integer) RETURNS timestamptz
LANGUAGE sql STABLE STRICT AS $$
    SELECT to_timestamp(floor(extract(epoch FROM now()) / p_seconds) * p_seconds)
$$;
