-- A deleted API key is kept, marked revoked, so that a client still presenting it is told
-- `session_revoked` (API.md: signed out / revoked), not `session_invalid` (never was one).
ALTER TABLE auth.api_keys ADD COLUMN revoked_at timestamptz;
