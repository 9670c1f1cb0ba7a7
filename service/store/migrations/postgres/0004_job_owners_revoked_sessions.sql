-- The table of migrations/sqlite/0004_job_owners.sql in PostgreSQL types: the tenant that
-- started each job through `POST /v1/generate` with the shared upstream key. Rows are written
-- once, with the generate's watch, and read by registrations that use the shared key.
CREATE TABLE job_owners (
    job_id      text COLLATE "C" PRIMARY KEY,
    tenant      text NOT NULL,
    created_at  double precision NOT NULL
);

-- Dashboard sign-ins ended by their sign-out, kept until their cookie expires: each dashboard
-- request looks its session id up here (a primary-key probe). Rows are few (one per sign-out).
CREATE TABLE revoked_sessions (
    id          text COLLATE "C" PRIMARY KEY,
    expires_at  double precision NOT NULL
);
