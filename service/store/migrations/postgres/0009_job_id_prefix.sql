-- Searching watches by the start of their job id: LIKE 'prefix%' uses a btree index only when
-- its operator class compares bytes (text_pattern_ops) or the database's collation is C.
CREATE INDEX watches_tenant_job_prefix ON watches (tenant, job_id text_pattern_ops);
