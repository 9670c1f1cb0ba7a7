-- The tenant that started each job through `POST /v1/generate` with the shared upstream key
-- (`upstream.api_key`): with that key, only this tenant may watch the job, so another tenant
-- cannot read its result. A job started with a watch's own key, or outside the bridge, has no
-- row. Written in the transaction that commits the generate's watch.
CREATE TABLE job_owners (
    job_id      TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    created_at  REAL NOT NULL
) STRICT;

-- Dashboard sign-ins ended by their sign-out: a `bridge_ui` cookie naming one of these ids is
-- refused, though its signature is good (a copy of it may outlive the sign-out). A row is kept
-- until the cookie expires anyway (`expires_at`), then the hourly housekeeping deletes it.
CREATE TABLE revoked_sessions (
    id          TEXT PRIMARY KEY,
    expires_at  REAL NOT NULL
) STRICT;
