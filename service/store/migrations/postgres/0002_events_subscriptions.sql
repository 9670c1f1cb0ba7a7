-- The tables and columns of migrations/sqlite/0002_events_subscriptions.sql in PostgreSQL types.
--
-- Storage. Events are append-only (inserted once, never updated, deleted in bulk by
-- housekeeping): the default fillfactor fits, as for attempts. seq is an identity: the recording
-- order. Sequence values are taken before commit, so two transactions may commit out of seq
-- order; the events of one watch cannot (they are written under its lease, one write after the
-- other), which is the order `watch_events` relies on.
-- Subscriptions are few and rarely written; the fan-out reads them on every recorded event.
-- The new deliveries columns are written once, at insert: they add no update traffic, and the
-- new index's predicate (status = 'pending') is one the claims already change, so lease
-- renewals stay HOT.

CREATE TABLE events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text COLLATE "C" NOT NULL UNIQUE,   -- evt_...
    tenant      text NOT NULL,
    watch_id    text COLLATE "C" NOT NULL REFERENCES watches (id),
    type        text NOT NULL,
    final       boolean NOT NULL,
    body        bytea NOT NULL,                     -- the envelope
    created_at  double precision NOT NULL
);

CREATE INDEX events_tenant ON events (tenant, seq);
CREATE INDEX events_tenant_type ON events (tenant, type, seq);
CREATE INDEX events_watch ON events (watch_id, seq);

CREATE TABLE subscriptions (
    id              text COLLATE "C" PRIMARY KEY,   -- sub_..., time-ordered
    tenant          text NOT NULL,
    url             text NOT NULL,
    events          json NOT NULL,
    secret          text NOT NULL,                  -- sealed; '' signs with the shared secrets
    headers         json NOT NULL,                  -- values sealed
    final_statuses  json NOT NULL,
    status          text NOT NULL,                  -- active, deleted, gone
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL
);

CREATE INDEX subscriptions_tenant ON subscriptions (tenant, status, id);

-- NULL: a delivery to the watch's own callback. event_id has no foreign key: events are deleted
-- by housekeeping while the deliveries (and their attempt log) stay.
ALTER TABLE deliveries
    ADD COLUMN subscription_id text COLLATE "C" REFERENCES subscriptions (id),
    ADD COLUMN event_id text COLLATE "C";
CREATE INDEX deliveries_subscription ON deliveries (subscription_id) WHERE status = 'pending';

-- A watch without a callback stores callback_url = ''. A constant default: no table rewrite.
ALTER TABLE watches ADD COLUMN final_statuses json NOT NULL DEFAULT '[]';
