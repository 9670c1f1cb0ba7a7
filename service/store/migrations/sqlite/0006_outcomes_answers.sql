-- How each job ended (`rules.job_outcome`), kept with its watch so that lists filter and count
-- by it; and, per attempt, what the deliverer made of it and the start of the receiver's answer.

ALTER TABLE watches ADD COLUMN outcome TEXT NOT NULL DEFAULT 'in_progress';

-- Existing watches, once: from their final event while it is kept, else from what the watch
-- says (`rules.recorded_outcome`, the store's Python function registered on its connection).
UPDATE watches SET outcome = recorded_outcome(status, job_status,
    (SELECT e.type FROM events e WHERE e.watch_id = watches.id AND e.final = 1),
    (SELECT iif(json_valid(CAST(e.body AS TEXT)),
                json_extract(CAST(e.body AS TEXT), '$.error_code'), NULL)
     FROM events e WHERE e.watch_id = watches.id AND e.final = 1))
WHERE status <> 'active';

-- Listing per tenant by outcome, newest first.
CREATE INDEX watches_tenant_outcome ON watches (tenant, outcome, id);

-- NULL for attempts recorded before they were kept; response_size NULL: no answer.
ALTER TABLE attempts ADD COLUMN verdict TEXT;
ALTER TABLE attempts ADD COLUMN response_body TEXT;
ALTER TABLE attempts ADD COLUMN response_size INTEGER;
ALTER TABLE attempts ADD COLUMN response_truncated INTEGER;
ALTER TABLE attempts ADD COLUMN response_type TEXT;
