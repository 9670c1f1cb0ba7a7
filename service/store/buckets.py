"""Pure: the buckets of `Store.outcome_buckets`, decided once for every backend. Each backend
finds the jobs and webhooks that ended in the buckets (the SQL backends in SQL, with `index`'s
arithmetic: `floor((t - since) / bucket_s)`) and hands them to `assemble`, which counts them
and takes the percentiles. The webhooks come one by one rather than counted: the percentiles
need every time, and sorting them here is quicker than SQL's window functions
(bench/trends.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from service.store.base import OutcomeBucket

# Per bucket that has any, of jobs: (bucket, succeeded, timed out, every final event).
JobCounts = tuple[int, int, int, int]
# Per webhook that ended: (bucket, the time it took to deliver, None when it was not).
Webhook = tuple[int, float | None]


def end(since: float, bucket_s: float, count: int) -> float:
    """Where the last bucket ends (excluded)."""
    return since + bucket_s * count


def index(moment: float, since: float, bucket_s: float, count: int) -> int | None:
    """The bucket `moment` is in, None when it is in none of them."""
    if not since <= moment < end(since, bucket_s, count):
        return None
    return min(math.floor((moment - since) / bucket_s), count - 1)  # rounding at the very end


def nearest_rank(ordered: Sequence[float], percent: int) -> float | None:
    """The least of `ordered` (ascending) that at least `percent` % of them do not exceed: the
    one of rank `ceil(percent * n / 100)`."""
    if not ordered:
        return None
    return ordered[-(-percent * len(ordered) // 100) - 1]


def assemble(
    since: float,
    bucket_s: float,
    count: int,
    jobs: Iterable[JobCounts],
    webhooks: Iterable[Webhook],
) -> list[OutcomeBucket]:
    """Every bucket, oldest first, from the counts of jobs and the webhooks of the buckets that
    had any."""
    jobs_in = {row[0]: row for row in jobs}
    took: list[list[float]] = [[] for _ in range(count)]
    undelivered = [0] * count
    for at, seconds in webhooks:
        if seconds is None:
            undelivered[at] += 1
        else:
            took[at].append(seconds)
    found = []
    for i in range(count):
        _, succeeded, timed_out, ended = jobs_in.get(i, (i, 0, 0, 0))
        times = sorted(took[i])
        found.append(
            OutcomeBucket(
                start=since + i * bucket_s,
                succeeded=succeeded,
                failed=ended - succeeded - timed_out,
                timed_out=timed_out,
                delivered=len(times),
                undelivered=undelivered[i],
                latency_p50_s=nearest_rank(times, 50),
                latency_p90_s=nearest_rank(times, 90),
            )
        )
    return found
