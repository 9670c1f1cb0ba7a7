-- Watches: one registration each. Polling writes only state changes, so the row is rewritten
-- a few times per job, not once per poll.
CREATE TABLE watches (
    id                TEXT PRIMARY KEY,          -- wch_..., time-ordered
    tenant            TEXT NOT NULL,
    job_id            TEXT NOT NULL,
    callback_url      TEXT NOT NULL,
    callback_method   TEXT NOT NULL,
    callback_headers  TEXT NOT NULL,             -- JSON object
    metadata          TEXT,                      -- JSON object or NULL
    events            TEXT NOT NULL,             -- JSON array
    payload_format    TEXT NOT NULL,
    secret            TEXT NOT NULL,
    poll_interval_s   REAL NOT NULL,
    timeout_s         REAL NOT NULL,
    upstream_api_key  TEXT,
    status            TEXT NOT NULL,
    job_status        TEXT,
    queue_position    INTEGER,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    completed_at      REAL,
    next_poll_at      REAL NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  REAL,
    lease_token       INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Listing per tenant, newest first, optionally by status or job.
CREATE INDEX watches_tenant_status ON watches (tenant, status, id);
CREATE INDEX watches_tenant_job ON watches (tenant, job_id);
-- Claiming: only active watches matter, due soonest first.
CREATE INDEX watches_claimable ON watches (next_poll_at) WHERE status = 'active';

CREATE TABLE idempotency_keys (
    tenant        TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    response      BLOB NOT NULL,
    watch_id      TEXT NOT NULL REFERENCES watches (id),
    created_at    REAL NOT NULL,
    PRIMARY KEY (tenant, key)
) STRICT;

-- Deliveries: one event of one watch to its callback; the id is the webhook-id.
CREATE TABLE deliveries (
    id                TEXT PRIMARY KEY,          -- msg_...
    watch_id          TEXT NOT NULL REFERENCES watches (id),
    event_type        TEXT NOT NULL,
    body              BLOB,                      -- NULL once purged
    final             INTEGER NOT NULL,          -- 1 for the watch's final event
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL,
    created_at        REAL NOT NULL,
    ended_at          REAL,
    lease_owner       TEXT,
    lease_expires_at  REAL,
    lease_token       INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX deliveries_watch ON deliveries (watch_id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE attempts (
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id),
    number           INTEGER NOT NULL,
    event_type       TEXT NOT NULL,
    started_at       REAL NOT NULL,
    duration_s       REAL NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    next_attempt_at  REAL
) STRICT;

CREATE INDEX attempts_delivery ON attempts (delivery_id, started_at);
