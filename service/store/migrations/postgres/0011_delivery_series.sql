-- The columns of migrations/sqlite/0011_delivery_series.sql: a delivery's attempts come in
-- series, 1 when it is recorded and one more at each redelivery; each attempt keeps its own.
--
-- Storage: both columns have a constant default (no table rewrite); only the deliveries that
-- were redelivered before are rewritten.
ALTER TABLE deliveries ADD COLUMN series integer NOT NULL DEFAULT 1;
ALTER TABLE attempts ADD COLUMN series integer NOT NULL DEFAULT 1;

-- Before, a redelivery restarted the numbering without keeping a series: each attempt numbered
-- 1 began one.
UPDATE attempts a SET series = (
    SELECT count(*) FROM attempts s
    WHERE s.delivery_id = a.delivery_id AND s.number = 1
    AND (s.started_at < a.started_at OR (s.started_at = a.started_at AND s.seq <= a.seq))
)
WHERE a.delivery_id IN (
    SELECT delivery_id FROM attempts WHERE number = 1 GROUP BY delivery_id HAVING count(*) > 1
);

-- A delivery is in its latest series; one redelivered since its last attempt, in the next.
UPDATE deliveries d SET series = s.n + CASE WHEN d.attempts = 0 THEN 1 ELSE 0 END
FROM (SELECT delivery_id, count(*) AS n FROM attempts WHERE number = 1 GROUP BY delivery_id) s
WHERE s.delivery_id = d.id AND (s.n > 1 OR d.attempts = 0);
