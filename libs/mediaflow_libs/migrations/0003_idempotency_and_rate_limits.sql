-- Idempotency-Key: the first request with a key creates the task; a repeat with the same
-- body gets that task back, a repeat with another body is a conflict.
CREATE TABLE media.idempotency_keys (
    user_id      uuid NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    task_id      uuid NOT NULL REFERENCES media.tasks (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- Fixed-window request counters shared by every gateway replica.
CREATE TABLE media.rate_limit_windows (
    subject      text NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, window_start)
);
