-- The upstream a watch polls, by its name in the settings (`[upstreams.<name>]`); the watches of
-- before there were several are the `default` upstream's (`[upstream]`).
ALTER TABLE watches ADD COLUMN upstream TEXT NOT NULL DEFAULT 'default';
