-- A job is owned at its upstream: the same id at two upstreams is two jobs. The rows of before
-- are the default upstream's.
ALTER TABLE job_owners ADD COLUMN upstream text COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE job_owners DROP CONSTRAINT job_owners_pkey;
ALTER TABLE job_owners ADD PRIMARY KEY (upstream, job_id);
