-- Operators: an account can be disabled (it cannot sign in; its sessions and API keys are
-- revoked when it is), and credits can be granted, each grant a ledger row with its reason.
ALTER TABLE auth.users ADD COLUMN disabled_at timestamptz;

ALTER TABLE media.credit_ledger ADD COLUMN note text;
ALTER TABLE media.credit_ledger DROP CONSTRAINT credit_ledger_reason_check;
ALTER TABLE media.credit_ledger ADD CONSTRAINT credit_ledger_reason_check
    CHECK (reason IN ('signup', 'charge', 'refund', 'grant'));
ALTER TABLE media.credit_ledger ADD CONSTRAINT credit_ledger_grant_note_check
    CHECK (reason <> 'grant' OR length(btrim(note)) > 0);
