-- RETRY_MAX_ATTEMPTS counts the attempts that stored nothing new: an attempt that added
-- parts to the task's recorded upload brought the task closer to done, so a large transfer
-- whose workers keep being killed is not failed for it. The counts live with the upload:
-- each claim records how many bytes its parts held then, and the next claim (or the
-- outcome, or the reaper) compares. A fresh upload's zeros mean its attempt began from
-- nothing; an upload replaced after the source changed starts the count again, which can
-- only fail a task sooner, never keep it longer.
ALTER TABLE media.task_uploads
    ADD COLUMN attempts_with_progress integer NOT NULL DEFAULT 0,
    ADD COLUMN kept_bytes_at_claim bigint NOT NULL DEFAULT 0;
-- An upload in progress across the upgrade: its current attempt is measured from what it
-- holds.
UPDATE media.task_uploads u SET kept_bytes_at_claim = (
    SELECT coalesce(max(p.last_byte) + 1, 0) FROM media.task_upload_parts p
    WHERE p.task_id = u.task_id);
