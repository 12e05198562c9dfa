-- Schemas: `auth` is owned by the auth service, `media` by gateway and worker.
CREATE SCHEMA IF NOT EXISTS auth;
CREATE SCHEMA IF NOT EXISTS media;

CREATE TABLE auth.users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    name          text,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails are unique regardless of case.
CREATE UNIQUE INDEX users_email_lower_key ON auth.users (lower(email));

CREATE TABLE auth.sessions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    token_hash          bytea NOT NULL UNIQUE,  -- SHA-256 of the token; the token itself is never stored
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    idle_expires_at     timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    revoked_at          timestamptz
);
CREATE INDEX sessions_user_id_idx ON auth.sessions (user_id);

CREATE TABLE media.credit_accounts (
    user_id    uuid PRIMARY KEY,
    balance    integer NOT NULL CHECK (balance >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE media.tasks (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid NOT NULL,
    source_url          text NOT NULL,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    progress            smallint CHECK (progress BETWEEN 0 AND 100),
    bytes_done          bigint NOT NULL DEFAULT 0,
    bytes_total         bigint,
    attempt             integer NOT NULL DEFAULT 0,
    cost                integer NOT NULL CHECK (cost >= 0),
    error_code          text,
    error_message       text,
    object_key          text,
    result_size         bigint,
    result_sha256       text,
    result_content_type text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_user_created_idx ON media.tasks (user_id, created_at DESC, id DESC);
CREATE INDEX tasks_user_active_idx ON media.tasks (user_id) WHERE status IN ('queued', 'running');

-- Its updated_at trigger: functions/media.touch_updated_at.sql.

-- One row per status change (progress updates included), in order; `id` is the SSE cursor.
CREATE TABLE media.task_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id    uuid NOT NULL REFERENCES media.tasks (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL,
    status     text NOT NULL,
    task       jsonb NOT NULL,  -- the public task as it was after this change
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_events_user_id_idx ON media.task_events (user_id, id);
CREATE INDEX task_events_task_id_idx ON media.task_events (task_id, id);

-- Every credit movement. A task is charged once and refunded at most once:
-- the unique index enforces it, whichever component refunds first.
CREATE TABLE media.credit_ledger (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES media.credit_accounts (user_id),
    task_id    uuid REFERENCES media.tasks (id),
    delta      integer NOT NULL,
    reason     text NOT NULL CHECK (reason IN ('signup', 'charge', 'refund')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX credit_ledger_task_reason_key ON media.credit_ledger (task_id, reason)
    WHERE task_id IS NOT NULL;
CREATE UNIQUE INDEX credit_ledger_signup_key ON media.credit_ledger (user_id)
    WHERE reason = 'signup';

-- Messages written in the same transaction as the change they announce; the
-- relay publishes them with publisher confirms and deletes them after the confirm.
CREATE TABLE media.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exchange    text NOT NULL,
    routing_key text NOT NULL,
    body        bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}',
    mandatory   boolean NOT NULL,  -- jobs must reach a queue; events may find no listener
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Its wake-up trigger for the relay: functions/media.notify_outbox.sql.
