-- Events and subscriptions: every event of every watch is kept (API clients read them back), and
-- tenant-wide endpoints get their own deliveries of them.

-- Events: appended as polling records them, deleted by housekeeping once their watch has ended.
-- seq is the recording order (AUTOINCREMENT: never reused, so a reader's "after" stays valid).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,          -- evt_...
    tenant      TEXT NOT NULL,
    watch_id    TEXT NOT NULL REFERENCES watches (id),
    type        TEXT NOT NULL,
    final       INTEGER NOT NULL,
    body        BLOB NOT NULL,                 -- the envelope
    created_at  REAL NOT NULL
) STRICT;

-- Recent events per tenant, all or of some types; the events of one watch in order.
CREATE INDEX events_tenant ON events (tenant, seq);
CREATE INDEX events_tenant_type ON events (tenant, type, seq);
CREATE INDEX events_watch ON events (watch_id, seq);

CREATE TABLE subscriptions (
    id              TEXT PRIMARY KEY,          -- sub_..., time-ordered
    tenant          TEXT NOT NULL,
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,             -- JSON array
    secret          TEXT NOT NULL,             -- sealed; '' signs with the shared secrets
    headers         TEXT NOT NULL,             -- JSON object, values sealed
    final_statuses  TEXT NOT NULL,             -- JSON array of HTTP statuses
    status          TEXT NOT NULL,             -- active, deleted, gone
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
) STRICT;

-- Listing per tenant, and the fan-out's lookup of a tenant's active subscriptions.
CREATE INDEX subscriptions_tenant ON subscriptions (tenant, status, id);

-- NULL: a delivery to the watch's own callback. event_id has no foreign key: events are deleted
-- by housekeeping while the deliveries (and their attempt log) stay.
ALTER TABLE deliveries ADD COLUMN subscription_id TEXT REFERENCES subscriptions (id);
ALTER TABLE deliveries ADD COLUMN event_id TEXT;
-- Ending a subscription cancels its pending deliveries.
CREATE INDEX deliveries_subscription ON deliveries (subscription_id) WHERE status = 'pending';

-- A watch without a callback stores callback_url = ''.
ALTER TABLE watches ADD COLUMN final_statuses TEXT NOT NULL DEFAULT '[]';
