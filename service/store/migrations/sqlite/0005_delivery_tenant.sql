-- The per-tenant delivery limit's key kept in each delivery: its watch's tenant, written once at
-- insert. A claim then finds each group's (host and tenant) due deliveries through one index,
-- and leaves the rows of a tenant it takes nothing from unread, as it does a host's.

ALTER TABLE deliveries ADD COLUMN tenant TEXT NOT NULL DEFAULT '';

UPDATE deliveries SET tenant = (SELECT w.tenant FROM watches w WHERE w.id = deliveries.watch_id);

-- A group's pending deliveries, oldest due (then id) first: the groups with any (one probe each), then
-- the due ones of each group a claim takes some from. It serves every claim the index of
-- migration 0003 served.
DROP INDEX deliveries_host_due;
CREATE INDEX deliveries_group_due ON deliveries (host, tenant, next_attempt_at, id)
    WHERE status = 'pending';
