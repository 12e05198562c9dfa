-- A task's upload may hold a segmented stream stored as it is (an fMP4 playlist's init
-- section and segments, concatenated): its size is known only once it is made, and each
-- completed part records where the next byte comes from (the segment's index in the
-- playlist's list of pieces, and the offset inside it), so another attempt fetches at most
-- that one segment again. Null for a direct file, whose byte range says it all.
ALTER TABLE media.task_uploads ALTER COLUMN size DROP NOT NULL;
ALTER TABLE media.task_upload_parts
    ADD COLUMN next_segment integer,
    ADD COLUMN next_segment_offset bigint;
