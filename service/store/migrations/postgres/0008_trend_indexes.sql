-- The indexes of migrations/sqlite/0008_trend_indexes.sql: a tenant's final events, and the
-- ended final deliveries to its callbacks, by time, for the dashboard's trends.
CREATE INDEX events_tenant_final ON events (tenant, created_at, watch_id) WHERE final;
CREATE INDEX deliveries_tenant_ended ON deliveries (tenant, ended_at, status, created_at)
    WHERE final AND subscription_id IS NULL AND ended_at IS NOT NULL;
