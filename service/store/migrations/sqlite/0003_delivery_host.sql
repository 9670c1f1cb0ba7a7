-- The per-host delivery limit's key kept in each delivery: `base.callback_host` of its endpoint
-- (its subscription's URL, else its watch's callback URL), written once at insert. A claim then
-- finds each host's due deliveries through an index instead of computing the key of every row
-- it reads, and leaves the rows of a host it takes nothing from unread.

ALTER TABLE deliveries ADD COLUMN host TEXT NOT NULL DEFAULT '';

-- Existing rows, once: `callback_host` is the store's Python function (the same code computes
-- the key of new rows), registered on its connection.
UPDATE deliveries SET host = callback_host(coalesce(
    (SELECT s.url FROM subscriptions s WHERE s.id = deliveries.subscription_id),
    (SELECT w.callback_url FROM watches w WHERE w.id = deliveries.watch_id)));

-- A host's pending deliveries, oldest due first: the hosts with any (one probe each), then the
-- due ones of each host a claim takes some from.
CREATE INDEX deliveries_host_due ON deliveries (host, next_attempt_at) WHERE status = 'pending';
