"""The least any poll schedule can spend for a push latency p50: see bench/README.md.

    .venv/bin/python bench/pacing_bound.py [--processing-sigma 0.5] [--latency 1.0 1.25] ...

A bound for `bench/pacing.py`'s workload without readings, computed, not measured: a planner
that knew each job's processing start exactly and its processing time's distribution exactly
(log-normal, the simulator's median, `--processing-sigma`), spending one request while the job
is queued (the poll at registration) and then polls at least `--min-interval` apart. For each
latency L it finds the schedule with the fewest expected requests that finds at least half the
jobs within L of their end (a push latency p50 of L before the bridge's own milliseconds), and
compares it with the fixed strategy's requests on the same workload (Monte Carlo over the
simulator's own draws). A real planner learns the distribution and the start, so it can only
do worse. For comparison it also prints what the bridge's own planner (`service.pacing`)
spends and finds when it knows as much: the start, and processing times learned from
`--draws` jobs instead of 64.

The schedule comes from a dynamic program over poll times on a grid of `--step` seconds (a
finer grid could only lower its figures, by less than the printed digits).
After a poll at t (the job still running), the next at s >= t + gap costs P(T > t) and finds
the jobs ending in (s - L, s] within L (L <= gap, so that window starts after t); the jobs
found in time are weighed by a multiplier, bisected until they are half of all jobs.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import sys
from collections import deque
from statistics import NormalDist

from service import pacing
from service.devtools.upstream_jobs import REALISTIC_PROCESSING_S, realistic_spec

MAX_WAIT_S = 30.0  # the bridge never waits longer between two polls of a job


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The fewest requests any schedule needs for a push latency p50.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--processing-sigma", type=float, default=0.5, help="log-normal sigma")
    parser.add_argument(
        "--latency", type=float, nargs="+", default=[1.0, 1.1, 1.25, 1.5],
        help="push latency p50 targets, seconds (each at most --min-interval)",
    )  # fmt: skip
    parser.add_argument("--min-interval", type=float, default=2.0, help="poll.min_interval_s")
    parser.add_argument("--interval", type=float, default=2.5, help="the fixed strategy's")
    parser.add_argument("--step", type=float, default=0.02, help="grid of poll times, seconds")
    parser.add_argument("--draws", type=int, default=200_000, help="Monte Carlo jobs (fixed)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if any(not 0 < latency <= args.min_interval for latency in args.latency):
        parser.error("each --latency must be above 0 and at most --min-interval")
    return args


def fixed_requests(args: argparse.Namespace) -> float:
    """Mean requests per job of polling at once and then every `--interval` seconds."""
    rng = random.Random(args.seed)
    total = 0
    for _ in range(args.draws):
        spec = realistic_spec(rng, "succeeded", args.processing_sigma)
        queued = (spec.queue_positions - spec.queue_phase) * spec.seconds_per_position
        total += 1 + math.ceil((queued + spec.processing_s) / args.interval)
    return total / int(args.draws)


class Schedules:
    """Optimal poll schedules over processing times T ~ log-normal, on a grid of `step` s."""

    def __init__(self, sigma: float, gap_s: float, step_s: float) -> None:
        self.median, self.sigma = REALISTIC_PROCESSING_S[0], sigma
        self.step_s = step_s
        self.gap = round(gap_s / step_s)
        self.longest = round(MAX_WAIT_S / step_s)
        horizon = self.median * math.exp(5 * sigma)
        self.cdf = [self.share_by(k * step_s) for k in range(math.ceil(horizon / step_s) + 1)]

    def share_by(self, seconds: float) -> float:
        """P(T <= seconds)."""
        if seconds <= 0:
            return 0.0
        return NormalDist().cdf(math.log(seconds / self.median) / self.sigma)

    def best(self, latency_s: float, weight: float) -> tuple[float, float, list[int]]:
        """The schedule minimising requests - weight x (share found within `latency_s`):
        its expected processing requests, that share, and its poll times (grid indexes)."""
        cdf, n = self.cdf, len(self.cdf)
        found = [cdf[j] - self.share_by(j * self.step_s - latency_s) for j in range(n)]
        # After a poll at i: the cost to go is P(T > i) + min over the next poll j of
        # (its cost to go - weight x found[j]), j in [i + gap, i + longest]: a sliding minimum.
        to_go = [0.0] * n
        after = [0.0] * n  # to_go[j] - weight * found[j]
        nxt: list[int | None] = [None] * n
        window: deque[int] = deque()  # indexes by descending index, ascending `after`
        for i in range(n - 1, -1, -1):
            if (entering := i + self.gap) < n:
                while window and after[window[-1]] >= after[entering]:
                    window.pop()
                window.append(entering)
            while window and window[0] > i + self.longest:
                window.popleft()
            j = window[0] if window else None
            to_go[i] = 1.0 - cdf[i] + (after[j] if j is not None else 0.0)
            nxt[i] = j
            after[i] = to_go[i] - weight * found[i]
        first = min(range(min(self.longest, n)), key=after.__getitem__)
        polls, requests, share = [first], 1.0, found[first]
        while (j := nxt[polls[-1]]) is not None and cdf[polls[-1]] < 1.0:
            requests += 1.0 - cdf[polls[-1]]
            share += found[j]
            polls.append(j)
        return requests, share, polls

    def cheapest(self, latency_s: float) -> tuple[float, float, list[int]]:
        """At least the expected requests of any schedule (or mix of schedules) that finds
        half the jobs within `latency_s`, the share the best one found finds, and its polls
        (where no schedule finds half: the one that finds the most, and its requests).

        The best schedule for a weight w that finds a share s >= 1/2 with r requests bounds
        every other that finds half: theirs are at least r - w (s - 1/2)."""
        low, high = 0.0, 1_000.0
        for _ in range(40):
            middle = (low + high) / 2
            if self.best(latency_s, middle)[1] >= 0.5:
                high = middle
            else:
                low = middle
        requests, share, polls = self.best(latency_s, high)
        return requests - high * max(share - 0.5, 0.0), share, polls


def planner(args: argparse.Namespace) -> tuple[float, float]:
    """The bridge's planner on a job seen processing from 0 on, knowing the processing times
    of `--draws` jobs: its mean requests per job (with the one while queued) and p50 latency."""
    rng = random.Random(args.seed)
    median, draws = REALISTIC_PROCESSING_S[0], int(args.draws)
    times = [median * math.exp(rng.gauss(0.0, args.processing_sigma)) for _ in range(draws)]
    learned = pacing.Window(size=draws, samples=tuple(times))
    track = pacing.Track(pacing.PROCESSING, None, 0.0, start_lo=-1e-3, start_hi=0.0, explores=False)
    outlook = pacing.Outlook(track, pacing.Window(), learned, args.min_interval, args.interval)
    polls, now = [0.0], 0.0
    while now < max(times):
        track.seen_at = now
        planned = pacing.next_poll_at(outlook, now, args.min_interval, math.inf)
        now = now + args.interval if planned is None else planned
        polls.append(now)
    requests, late = 0, []
    for end in times:
        found = bisect.bisect_left(polls, end)
        requests += found + 1
        late.append(polls[found] - end)
    return requests / draws, sorted(late)[draws // 2]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fixed = fixed_requests(args)
    schedules = Schedules(args.processing_sigma, args.min_interval, args.step)
    print(
        f"Processing log-normal, median {REALISTIC_PROCESSING_S[0]:g} s, sigma "
        f"{args.processing_sigma:g}; polls at least {args.min_interval:g} s apart; fixed "
        f"{args.interval:g} s: {fixed:.2f} requests per job"
    )
    print(f"{'p50 latency':>12}  {'requests':>8}  {'of fixed':>8}  first polls after the start")
    for latency in args.latency:
        processing, share, polls = schedules.cheapest(latency)
        if share < 0.5:
            print(f"{latency * 1000:>9.0f} ms  unreachable: at most {share:.4f} found in time")
            continue
        requests = 1.0 + processing  # the poll at registration, while queued
        times = ", ".join(f"{index * args.step:.1f}" for index in polls[:4])
        print(
            f"{latency * 1000:>9.0f} ms  {requests:>8.2f}  {requests / fixed:>8.2f}  "
            f"{times} s ... (found in time: {share:.3f})"
        )
    requests, p50 = planner(args)
    print(
        f"{p50 * 1000:>9.0f} ms  {requests:>8.2f}  {requests / fixed:>8.2f}  "
        "the bridge's planner, knowing as much (its p50)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
