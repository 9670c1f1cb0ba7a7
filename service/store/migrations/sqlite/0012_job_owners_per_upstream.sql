-- A job is owned at its upstream: the same id at two upstreams is two jobs. SQLite cannot change
-- a primary key in place, so the table is rebuilt; the rows of before are the default upstream's.
CREATE TABLE job_owners_per_upstream (
    upstream    TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (upstream, job_id)
) STRICT;
INSERT INTO job_owners_per_upstream (upstream, job_id, tenant, created_at)
    SELECT 'default', job_id, tenant, created_at FROM job_owners;
DROP TABLE job_owners;
ALTER TABLE job_owners_per_upstream RENAME TO job_owners;
