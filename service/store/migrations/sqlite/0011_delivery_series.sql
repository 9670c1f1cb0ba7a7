-- A delivery's attempts come in series: 1 when it is recorded, one more at each redelivery
-- (`Store.redeliver`); each attempt keeps the series it was made in, numbered from 1 within it.
ALTER TABLE deliveries ADD COLUMN series INTEGER NOT NULL DEFAULT 1;
ALTER TABLE attempts ADD COLUMN series INTEGER NOT NULL DEFAULT 1;

-- Before, a redelivery restarted the numbering without keeping a series: each attempt numbered
-- 1 began one (only the deliveries redelivered since are rewritten).
UPDATE attempts SET series = (
    SELECT count(*) FROM attempts AS s
    WHERE s.delivery_id = attempts.delivery_id AND s.number = 1
    AND (s.started_at < attempts.started_at
         OR (s.started_at = attempts.started_at AND s.rowid <= attempts.rowid))
)
WHERE delivery_id IN (
    SELECT delivery_id FROM attempts WHERE number = 1 GROUP BY delivery_id HAVING count(*) > 1
);

-- A delivery is in its latest series; one redelivered since its last attempt, in the next.
UPDATE deliveries SET series = s.n + iif(deliveries.attempts = 0, 1, 0)
FROM (SELECT delivery_id, count(*) AS n FROM attempts WHERE number = 1 GROUP BY delivery_id) AS s
WHERE s.delivery_id = deliveries.id AND (s.n > 1 OR deliveries.attempts = 0);
