-- The user's account with the sign-up grant, opened once; true when this call opened it.
-- A grant of 0 (a service without credits) writes no ledger row.
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
