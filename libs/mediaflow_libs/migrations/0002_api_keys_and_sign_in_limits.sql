-- API keys: shown once, stored as SHA-256 only.
CREATE TABLE auth.api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX api_keys_user_id_idx ON auth.api_keys (user_id, created_at);

-- Failed sign-ins per account and per client address in fixed windows; shared by every
-- auth replica because it lives in the database.
CREATE TABLE auth.sign_in_failures (
    subject      text NOT NULL,          -- 'email:<lower-case email>' or 'ip:<address>'
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL DEFAULT 0,  -- failed sign-ins
    PRIMARY KEY (subject, window_start)
);
