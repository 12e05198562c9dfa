-- Take `p_cost` credits for a task; false when the balance is too low or there is no
-- account. The CHECK on the balance is what keeps it from going negative. A free task moves
-- no credit and writes no ledger row (so its refund, a copy of the charge, is nothing).
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
