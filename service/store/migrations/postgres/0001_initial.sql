-- The tables, columns and indexes of migrations/sqlite/0001_initial.sql in PostgreSQL types.
-- Times stay epoch seconds (double precision), so both backends answer the same values.
-- Ids compare bytewise (COLLATE "C"): listings and cursors order them as SQLite does, whatever
-- the database's collation.
--
-- Storage. The frequent writes are lease claims and renewals: each held watch is renewed every
-- third of a lease. They set only lease_owner, lease_expires_at and lease_token, which no index
-- covers (neither as a key nor in a predicate), so PostgreSQL can write the new row version on the
-- same page without touching any index (a HOT update, pruned without vacuum) if the page has room.
-- A claim or renewal rewrites many rows of a page in one statement, and the versions it replaces
-- cannot be pruned before it commits, so a page needs room for a second copy of its rows:
-- fillfactor 50. (Measured with 200 watches renewed together: at fillfactor 75 a third of each
-- renewal went to other pages, with index entries, until the table had doubled anyway; at 50
-- every renewal was HOT and the table kept its size.) Progress and attempt write-backs change
-- indexed columns (next_poll_at, next_attempt_at, status) but only happen on state changes.
-- Autovacuum visits these two tables after 2% of their rows changed (the default is 20%), so dead
-- versions and the statistics the claim queries are planned with stay current.

CREATE TABLE watches (
    id                text COLLATE "C" PRIMARY KEY,  -- wch_..., time-ordered
    tenant            text NOT NULL,
    job_id            text NOT NULL,
    callback_url      text NOT NULL,
    callback_method   text NOT NULL,
    callback_headers  json NOT NULL,
    metadata          json,
    events            json NOT NULL,
    payload_format    text NOT NULL,
    secret            text NOT NULL,
    poll_interval_s   double precision NOT NULL,
    timeout_s         double precision NOT NULL,
    upstream_api_key  text,
    status            text NOT NULL,
    job_status        text,
    queue_position    bigint,
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text,
    created_at        double precision NOT NULL,
    updated_at        double precision NOT NULL,
    completed_at      double precision,
    next_poll_at      double precision NOT NULL,
    lease_owner       text,
    lease_expires_at  double precision,
    lease_token       bigint NOT NULL DEFAULT 0
) WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- Listing per tenant, newest first, optionally by status or job.
CREATE INDEX watches_tenant_status ON watches (tenant, status, id);
CREATE INDEX watches_tenant_job ON watches (tenant, job_id);
-- Claiming: only active watches matter, due soonest first.
CREATE INDEX watches_claimable ON watches (next_poll_at) WHERE status = 'active';

CREATE TABLE idempotency_keys (
    tenant        text NOT NULL,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    response      bytea NOT NULL,
    watch_id      text COLLATE "C" NOT NULL REFERENCES watches (id),
    created_at    double precision NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- Deliveries: one event of one watch to its callback; the id is the webhook-id.
CREATE TABLE deliveries (
    id                text COLLATE "C" PRIMARY KEY,  -- msg_...
    watch_id          text COLLATE "C" NOT NULL REFERENCES watches (id),
    event_type        text NOT NULL,
    body              bytea,                         -- NULL once purged
    final             boolean NOT NULL,              -- the watch's final event
    status            text NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   double precision,
    created_at        double precision NOT NULL,
    ended_at          double precision,
    lease_owner       text,
    lease_expires_at  double precision,
    lease_token       bigint NOT NULL DEFAULT 0
) WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

CREATE INDEX deliveries_watch ON deliveries (watch_id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

-- Append-only: the default storage fits. seq plays SQLite's rowid (recording order, no index).
CREATE TABLE attempts (
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    delivery_id      text COLLATE "C" NOT NULL REFERENCES deliveries (id),
    number           integer NOT NULL,
    event_type       text NOT NULL,
    started_at       double precision NOT NULL,
    duration_s       double precision NOT NULL,
    status_code      integer,
    error            text,
    next_attempt_at  double precision
);

CREATE INDEX attempts_delivery ON attempts (delivery_id, started_at);
