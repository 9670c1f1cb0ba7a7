-- The dashboard's trends (`Store.outcome_buckets`) read a tenant's final events recorded within
-- a day and the final deliveries to its callbacks that ended within it. Without these indexes a
-- read went through every event and every delivery of the tenant: with 100,000 watches, 115 ms
-- for a day in which 3,334 of them ended, 4 ms with them (bench/trends.py; docs/performance.md).
-- Both hold final rows only and the columns read, so the rows themselves are not visited.
CREATE INDEX events_tenant_final ON events (tenant, created_at, watch_id) WHERE final = 1;
CREATE INDEX deliveries_tenant_ended ON deliveries (tenant, ended_at, status, created_at)
    WHERE final = 1 AND subscription_id IS NULL AND ended_at IS NOT NULL;
