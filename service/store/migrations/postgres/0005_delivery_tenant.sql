-- The column and index of migrations/sqlite/0005_delivery_tenant.sql: each delivery's
-- per-tenant limit key (its watch's tenant), written once at insert, so that claims find each
-- group's (host and tenant) due deliveries through one index.
--
-- Storage: the column is never updated, and the new index's columns change only where the
-- claims and attempts already changed an indexed column (status, next_attempt_at): lease
-- renewals stay HOT. The backfill rewrites the table once.

ALTER TABLE deliveries ADD COLUMN tenant text COLLATE "C";

UPDATE deliveries d SET tenant = w.tenant FROM watches w WHERE w.id = d.watch_id;

ALTER TABLE deliveries ALTER COLUMN tenant SET NOT NULL;

-- A group's pending deliveries, oldest due (then id) first: the groups with any (one probe each), then
-- the due ones of each group a claim takes some from. It serves every claim the index of
-- migration 0003 served.
DROP INDEX deliveries_host_due;
CREATE INDEX deliveries_group_due ON deliveries (host, tenant, next_attempt_at, id)
    WHERE status = 'pending';
