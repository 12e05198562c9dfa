-- A task's multipart upload in progress, so a retried attempt or the worker that takes a
-- dead one's task over continues at the last stored part instead of byte zero: the upload,
-- the source answer it holds (URL after redirects, validator for If-Range, size), and each
-- completed part with its ETag, checksum and byte range. Gone with the task; the worker
-- deletes it once the upload is completed or aborted.
CREATE TABLE media.task_uploads (
    task_id      uuid PRIMARY KEY REFERENCES media.tasks (id) ON DELETE CASCADE,
    object_key   text NOT NULL,
    upload_id    text NOT NULL,
    source_url   text NOT NULL,
    validator    text NOT NULL,
    size         bigint NOT NULL,
    content_type text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE media.task_upload_parts (
    task_id     uuid NOT NULL REFERENCES media.task_uploads (task_id) ON DELETE CASCADE,
    part_number integer NOT NULL,
    etag        text NOT NULL,
    checksum    jsonb NOT NULL,
    first_byte  bigint NOT NULL,
    last_byte   bigint NOT NULL,
    PRIMARY KEY (task_id, part_number)
);
