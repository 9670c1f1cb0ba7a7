-- The columns and index of migrations/sqlite/0006_outcomes_answers.sql: each job's outcome,
-- kept with its watch, and per attempt the deliverer's verdict and the start of the answer.
--
-- Storage: outcome changes only when status does (a completion, a cancellation), so the new
-- index costs no HOT update that the status index did not already; attempts are appended.

ALTER TABLE watches ADD COLUMN outcome text NOT NULL DEFAULT 'in_progress';

-- A final event's error_code. jsonb cannot hold \u0000, which the upstream's answer kept
-- verbatim in the body may: such a body is read with that escape left out (or, that failing,
-- the code is unknown), rather than stopping the migration.
CREATE OR REPLACE FUNCTION pg_temp.final_error_code(body bytea) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN convert_from(body, 'UTF8')::jsonb ->> 'error_code';
EXCEPTION WHEN untranslatable_character THEN
    BEGIN
        RETURN replace(convert_from(body, 'UTF8'), '\u0000', '')::jsonb ->> 'error_code';
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
END $$;

-- Existing watches, once, as `rules.recorded_outcome` decides: from the final event while it is
-- kept, else from the upstream's last status, else cancelled or unknown.
UPDATE watches w SET outcome = CASE
        WHEN f.type = 'job.succeeded' THEN 'succeeded'
        WHEN f.type = 'job.failed' THEN CASE f.error_code
            WHEN 'timeout' THEN 'timed_out'
            WHEN 'not_found' THEN 'not_found'
            WHEN 'unauthorized' THEN 'unauthorized'
            WHEN 'bad_request' THEN 'bad_request'
            ELSE 'failed' END
        WHEN w.job_status = 'succeeded' THEN 'succeeded'
        WHEN w.job_status = 'failed' THEN 'failed'
        WHEN w.status = 'cancelled' THEN 'cancelled'
        ELSE 'unknown' END
FROM watches x
LEFT JOIN LATERAL (
    SELECT e.type, pg_temp.final_error_code(e.body) AS error_code
    FROM events e WHERE e.watch_id = x.id AND e.final LIMIT 1
) f ON true
WHERE x.id = w.id AND w.status <> 'active';

DROP FUNCTION pg_temp.final_error_code(bytea);

CREATE INDEX watches_tenant_outcome ON watches (tenant, outcome, id);

ALTER TABLE attempts ADD COLUMN verdict text;
ALTER TABLE attempts ADD COLUMN response_body text;
ALTER TABLE attempts ADD COLUMN response_size integer;
ALTER TABLE attempts ADD COLUMN response_truncated boolean;
ALTER TABLE attempts ADD COLUMN response_type text;
