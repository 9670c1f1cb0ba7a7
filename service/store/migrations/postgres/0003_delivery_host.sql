-- The column and index of migrations/sqlite/0003_delivery_host.sql: each delivery's per-host
-- limit key, written once at insert, so that claims find each host's due deliveries through an
-- index instead of a regular expression per row.
--
-- Storage: the column is never updated, and the new index's columns change only where the
-- claims and attempts already changed an indexed column (status, next_attempt_at): lease
-- renewals stay HOT. The backfill rewrites the table once.

ALTER TABLE deliveries ADD COLUMN host text COLLATE "C";

-- `base.callback_host` in PostgreSQL's regular expressions (scheme://host[:port] without
-- userinfo, lower-cased; the whole URL lower-cased when it has no scheme). The bridge computes
-- the key of new rows itself; the contract tests check both agree.
UPDATE deliveries d SET host = (
    SELECT coalesce(
        lower(substring(u.url from '^([^:/?#]+)://') || '://'
              || substring(u.url from '^[^:/?#]+://(?:[^/?#]*@)?([^@/?#]*)')),
        lower(u.url))
    FROM (SELECT coalesce(s.url, w.callback_url) AS url FROM watches w
          LEFT JOIN subscriptions s ON s.id = d.subscription_id WHERE w.id = d.watch_id) u);

ALTER TABLE deliveries ALTER COLUMN host SET NOT NULL;

-- A host's pending deliveries, oldest due first: the hosts with any (one probe each), then the
-- due ones of each host a claim takes some from.
CREATE INDEX deliveries_host_due ON deliveries (host, next_attempt_at) WHERE status = 'pending';
