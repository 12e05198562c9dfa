-- A message in the outbox, published by the relay after commit.
-- (PL/pgSQL, not SQL: its plan is cached for the session instead of made on every call.)
CREATE OR REPLACE FUNCTION media.enqueue_outbox(
    p_exchange text, p_routing_key text, p_body bytea, p_headers jsonb, p_mandatory boolean
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO media.outbox (exchange, routing_key, body, headers, mandatory)
    VALUES (p_exchange, p_routing_key, p_body, coalesce(p_headers, '{}'), p_mandatory);
END $$;
