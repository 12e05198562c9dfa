-- What the user asked for (API.md's options: quality, mode, audio_format), null for the
-- defaults; and what the stored file is: the name a download is saved as and its media
-- (title, duration, size in pixels, codecs). The cache keeps the latter two with its entry.
-- media.submit_tasks fills the task row from its JSON, so `options` arrives with the row.
ALTER TABLE media.tasks
    ADD COLUMN options         jsonb,
    ADD COLUMN result_filename text,
    ADD COLUMN result_media    jsonb;
ALTER TABLE media.source_cache
    ADD COLUMN filename text,
    ADD COLUMN media    jsonb;
