-- A request to run a job again that came while the job was running (an
-- operator retrying a delivery whose last attempt is still being recorded):
-- the one open job per dedup key cannot take a second row, so the running
-- one carries the request and goes back to pending when it ends.
ALTER TABLE jobs ADD COLUMN rerun BOOLEAN NOT NULL DEFAULT false;
