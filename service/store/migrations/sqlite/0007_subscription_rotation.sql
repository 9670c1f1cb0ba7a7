-- Subscriptions may be disabled (a status) and have their secret rotated: the secret before
-- signs alongside the new one until previous_secret_until ('' stands for the shared secrets).
ALTER TABLE subscriptions ADD COLUMN previous_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN previous_secret_until REAL;

-- A subscription's health reads the attempts of the last day.
CREATE INDEX attempts_started ON attempts (started_at);
