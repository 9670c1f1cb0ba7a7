"""Pure: adaptive poll pacing. Learn how the upstream moves; poll where the news is likely.

A job goes `queued` (its `queue_position` counting down, where the upstream tells it) →
`processing` (with its progress or an ETA, where the upstream tells them) → `succeeded`/`failed`.
The `Learner` sees every poll's answer and keeps, per upstream, two rolling windows of measured
durations: the seconds one queue position takes (`steps`) and the seconds processing takes
(`processing`), each read as a normal distribution.

Measuring. A poll only brackets a change: it happened after the previous poll and at or before
this one. A duration is measured between the middles of two brackets, and each bracket adds
its width²/12 of variance, which the window takes out again. That is sound only when the polls
fall independently of the job's timeline, as fixed-interval polls do; the planner's polls
cluster where changes are expected, so the middle of their brackets would be biased. So every
new job is learned from while too little is known (as many as a window holds), and afterwards
one new job in `EXPLORE_EVERY` is an *explorer*: both are polled at the fixed interval (as the
fixed strategy would: they cost nothing extra) and learned from; the others are planned. A
window keeps the samples of the jobs begun last, not of the last measured: of jobs begun
together, the last to end are the longest.
Brackets wider than two fixed intervals are not used. Queue steps are measured once per job,
when processing starts, over every position since its first well-bracketed change, or since it
was first seen queued at position p (it held p since a random moment of that step, as a queue
moves when a job ahead finishes: p - 1/2 steps on average, used from `FIRST_SEEN_POSITIONS` on).

Planning. Per job, a `Track` holds what its polls showed, and where processing starts: after
the last poll that saw the job queued, at or before the first that saw it processing, and,
while queued, within the window its queue predicts. A poll at t that sees position q places
the start in (t + (q-1)·step, t + q·step] (with leeway for the step's spread): each sighting
narrows the window (one that disagrees replaces it). The completion is then that window plus
the learned processing time.

Readings. A processing answer's progress p at t says the job goes at a pace that ends it at
start + (t - start)/p, and with an earlier reading p₀ at t₀ at the pace (p - p₀)/(t - t₀),
which needs no start; an ETA e says it ends at t + e. Each reading is taken at its
resolution (`PROGRESS_STEP`, `ETA_STEP_S`) and the start where the polls saw it (not where the
queue predicts it: an error there is multiplied by (1 - p)/p), so it places the end in a
window: the narrowest of them narrows the job's end window, and one that disagrees (the pace
changed, the ETA moved) replaces it. `next_poll_at`:

- queued, the start window still wider than `SETTLED_S` and than processing's spread: the poll
  that halves it. Any poll splits the window at t + k·step for every k, so a time a whole
  number of steps (at most `SPLIT_STEPS`) before the window's middle will do: one poll per
  step as the start nears, and the phase of the queue is pinned down finer than the 2 s
  between two polls of a job could. Far back in the queue, a poll every `MAX_WAIT_S` at most;
- processing with readings: an end window wider than `PRECISE_S`, a poll to read the job
  again, where it is surely still running and a floor before the window's middle; else (or
  with no room for that) just after the window, and before it on a grid `floor_s` apart;
- processing without readings, or queued with a settled start: polls on a grid `floor_s`
  apart through the `ANCHOR` quantile of the predicted completion, from its `LOW` quantile on
  (`READ_AHEAD` floors sooner where the upstream tells readings and the completion is spread
  over more than a floor, so that the first one leaves room to read the job again before its
  end): just after where completions are likely, at the vendor's pace as the end nears, none
  while it is unlikely;
- an explorer, too little history, odd answers (queued with no position), a start later than
  predicted, or a job without readings past the learned maximum (its start + mean + 3
  standard deviations of processing): None, and the caller polls at its fixed interval. A job
  that runs long is thus never abandoned.

Too little history means fewer than `MIN_SAMPLES` of processing, and of queue steps where the
upstream tells positions: an upstream without them is planned from processing alone.
Every planned time is at least `floor_s` after `now`, at most `MAX_WAIT_S` after it (a stale
prediction is corrected soon) and never past the deadline. The learner does O(1) work per
observation (a window's sums are recomputed once per new sample, over at most `WINDOW`) and
holds at most `max_tracks` jobs, the oldest forgotten first.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

QUEUED = "queued"
PROCESSING = "processing"
TERMINAL = frozenset({"succeeded", "failed"})

WINDOW = 64  # samples per rolling window
EXPLORE_EVERY = 20  # one new job in this many is polled at the fixed interval, to learn from
MIN_SAMPLES = 5  # fewer than this: no prediction, the fixed interval
FIRST_SEEN_POSITIONS = 3  # learn from a job first seen at least this many positions back
# The learned standard deviation is at least this share of the mean: taking the measurement
# noise out of a few dozen samples is itself noisy.
MIN_SPREAD = 0.03
LONGEST_Z = 3.0  # the learned maximum: mean + 3 standard deviations
START_Z = 2.0  # leeway of a predicted start, in standard deviations of the queue steps
LOW = -1.28  # no completion poll before the 10 % quantile of the predicted completion...
ANCHOR = 1.0  # ...and the grid of completion polls goes through its 84 % quantile
SETTLED_S = 1.0  # a start window this narrow is not split further...
# ...nor one narrower than this share of processing's standard deviation (which it widens by
# 4 % at most): a wide spread makes the start's phase moot.
SETTLED_SHARE = 1.0
SPLIT_STEPS = 3  # the first split of the start window comes at most this many steps before
GRID_SLACK = 0.25  # a poll this share of `floor_s` late still counts as on its grid point
PROGRESS_STEP = 0.01  # a progress fraction is read to ± this (a percentage, however rounded)
ETA_STEP_S = 1.0  # an ETA in whole seconds is read to ± this (however rounded)
PRECISE_S = 0.5  # a predicted end this narrow is polled just after; a wider one is refined
# Where answers tell progress and the completion is spread over more than a floor, the first
# completion poll comes this many floors sooner: its reading leaves room for another before
# the end, and a pace measured between the two.
READ_AHEAD = 1.5
MAX_WAIT_S = 30.0  # never wait longer than this between polls: predictions may be stale
MAX_TRACKS = 200_000
_INF = math.inf


class Window:
    """The measured durations of the last `size` jobs of one kind, each with the variance its
    measurement adds (a change bracketed by polls `w` seconds apart is known to ±w/2: variance
    w²/12). The last jobs by `order` (when the job began), not by when they were measured: of
    jobs begun together, the last measured are the longest, and would crowd out the others.

    Read as a normal distribution: the mean of the samples, and a standard deviation that is
    the samples' own less the measurement noise (at least `min_spread` of the mean), so that
    coarse polling does not make the upstream look less predictable than it is; each sample
    weighs by its precision, 1 / (its noise + (min_spread · mean)²). The sums are
    recomputed when read after a new sample, over at most `size` samples."""

    __slots__ = ("_added", "_mean", "_min_spread", "_samples", "_sd", "size")

    def __init__(
        self, size: int = WINDOW, min_spread: float = MIN_SPREAD, samples: tuple[float, ...] = ()
    ) -> None:
        self.size = size
        self._samples: list[tuple[float, float, float]] = []  # (order, value, noise), by order
        self._added = 0
        self._min_spread = min_spread
        self._mean: float | None = None
        self._sd = 0.0
        for sample in samples:
            self.add(sample)

    def add(self, value: float, noise_var: float = 0.0, order: float | None = None) -> None:
        """One duration, the variance of its measurement and when its job began (by default,
        after every sample so far); a negative or infinite one is left out (not a too
        uncertain one: which values that drops depends on the value). Past `size`, the
        sample of the job that began first goes."""
        finite = math.isfinite(value) and math.isfinite(noise_var)
        if not finite or value <= 0 or noise_var < 0:
            return
        self._added += 1
        bisect.insort(self._samples, (self._added if order is None else order, value, noise_var))
        if len(self._samples) > self.size:
            del self._samples[0]
        self._mean = None

    def __len__(self) -> int:
        return len(self._samples)

    def _fit(self) -> float:
        if self._mean is None:
            samples = self._samples
            rough = math.fsum(value for _, value, _ in samples) / len(samples)
            # Each sample weighs by its precision: a sample measured through wide brackets
            # says little, and would make the spread noisy.
            floor = max((self._min_spread * rough) ** 2, 1e-9)
            weighted = [(1.0 / (noise + floor), value, noise) for _, value, noise in samples]
            total = math.fsum(w for w, _, _ in weighted)
            mean = math.fsum(w * value for w, value, _ in weighted) / total
            spread = math.fsum(w * (value - mean) ** 2 for w, value, _ in weighted)
            variance = (spread - math.fsum(w * noise for w, _, noise in weighted)) / total
            self._sd = max(math.sqrt(max(variance, 0.0)), self._min_spread * mean)
            self._mean = mean
        return self._mean

    @property
    def mean(self) -> float:
        """The mean duration; the window must not be empty."""
        return self._fit()

    @property
    def sd(self) -> float:
        """The standard deviation of the durations, measurement noise taken out."""
        self._fit()
        return self._sd

    @property
    def longest(self) -> float:
        """The longest duration to expect."""
        return self.mean + LONGEST_Z * self.sd


@dataclass(slots=True)
class Track:
    """What is known of one job in progress. Times are clock seconds; -inf/inf: unknown."""

    status: str
    position: int | None
    seen_at: float  # the last poll that saw it in progress
    start_lo: float = -_INF  # processing starts (or started) after this...
    start_hi: float = _INF  # ...and at or before this (both seen, not predicted)
    expect_lo: float = -_INF  # processing is expected to start after this...
    expect_hi: float = _INF  # ...and at or before this (predicted from the queue)
    # Where its queue steps are measured from: a change to `origin_position` in (origin_lo,
    # origin_hi], or its first sighting there at origin_hi (origin_lo -inf: phase unknown).
    origin_lo: float = -_INF
    origin_hi: float = -_INF
    origin_position: int = 0
    explores: bool = True  # polled regardless of its timeline and learned from (see the module)
    # Where the upstream's progress or ETA readings place the end (-inf/inf: no reading)...
    end_lo: float = -_INF
    end_hi: float = _INF
    # ...and the first progress reading while processing, which the later ones take a rate from.
    read_at: float = _INF
    read_progress: float = 0.0
    seq: int = 0  # when the learner first saw it, as a count of jobs: the order of its samples


@dataclass(frozen=True, slots=True)
class Outlook:
    """A job's track and the upstream's learned windows: what the planner needs, with the
    shortest gap between two polls (`floor_s`), the fixed interval it goes with, and whether
    the upstream's answers read progress or an ETA (`reads`)."""

    track: Track
    steps: Window
    processing: Window
    floor_s: float
    interval_s: float
    reads: bool = False

    def floor_for(self, interval_s: float) -> float:
        """The floor for a watch polled every `interval_s` when fixed: a watch that asked for
        slower polling than the default keeps the same proportion."""
        return max(self.floor_s, interval_s * self.floor_s / self.interval_s)


def _mid(lo: float, hi: float) -> float:
    return (lo + hi) / 2


def expected_start(position: int, now: float, steps: Window) -> tuple[float, float]:
    """Where processing should start for a job seen queued at `position` at `now`: the
    position's last step ends within one step, the others take a step each (with
    `START_Z` standard deviations of leeway per step); (-inf, inf) without history."""
    if len(steps) < MIN_SAMPLES:
        return (-_INF, _INF)
    positions = max(position, 1)  # 0 is read as "next"
    leeway = START_Z * positions * steps.sd
    return (now + (positions - 1) * steps.mean - leeway, now + positions * steps.mean + leeway)


def start_window(track: Track, longest_s: float) -> tuple[float, float] | None:
    """Where processing starts (or started): what the polls saw, narrowed by what the queue
    predicts when the two agree (a job seen processing at once started at most `longest_s`
    before); None when nothing bounds it."""
    lo, hi = max(track.start_lo, track.expect_lo), min(track.start_hi, track.expect_hi)
    if lo > hi:  # the prediction was wrong: only what was seen
        lo, hi = track.start_lo, track.start_hi
    if lo == -_INF and hi < _INF:
        lo = hi - longest_s
    if hi == _INF:
        return None
    return (lo, hi)


def ends_by_rate(
    before: tuple[float, float], done_before: float, at: float, done: float
) -> tuple[float, float] | None:
    """Where a job ends that was `done_before` done at some time in `before` (a span, or one
    instant twice) and is `done` done at `at`, going on at the same pace; each fraction read to
    ±`PROGRESS_STEP` (0 before the start exactly). None when the two bound no pace."""
    step = PROGRESS_STEP if done_before > 0 else 0.0
    first_lo, first_hi = done_before - step, done_before + step
    now_lo, now_hi = max(done - PROGRESS_STEP, 0.0), min(done + PROGRESS_STEP, 1.0)
    if now_lo <= first_hi or before[0] == -_INF or before[1] > at:
        return None
    early = at + (1.0 - now_hi) * (at - before[1]) / (now_hi - first_lo)
    late = at + (1.0 - now_lo) * (at - before[0]) / (now_lo - first_hi)
    return (early, late)


def ends_by_eta(at: float, eta_s: float) -> tuple[float, float]:
    """Where a job ends that is `eta_s` from its end at `at`: whole seconds are read to
    ±`ETA_STEP_S` (rounded any way), an ETA with a fraction to a tenth of that."""
    step = ETA_STEP_S if float(eta_s).is_integer() else ETA_STEP_S / 10
    return (at + max(eta_s - step, 0.0), at + eta_s + step)


class Learner:
    """Learns one upstream's queue and processing times from every poll's answer.

    One learner per upstream (the poller's), not per API key: the keys of one upstream share
    its queue and workers, and one window per key would learn slower from fewer jobs."""

    def __init__(
        self, floor_s: float, interval_s: float, window: int = WINDOW, max_tracks: int = MAX_TRACKS
    ) -> None:
        self.floor_s, self.interval_s = floor_s, interval_s
        self.steps = Window(window)
        self.processing = Window(window)
        self._tracks: dict[object, Track] = {}
        self._created = 0
        self._cold = 0  # jobs made explorers because too little was known
        self._max_tracks = max_tracks
        self._positions = False  # whether the upstream tells queue positions at all
        self._reads = False  # whether it tells progress or an ETA

    @property
    def ready(self) -> bool:
        """Whether enough has been learned to plan polls: processing times, and the queue's
        steps where the upstream tells positions."""
        steps = len(self.steps) >= MIN_SAMPLES or not self._positions
        return steps and len(self.processing) >= MIN_SAMPLES

    @property
    def tracked(self) -> int:
        """Jobs with a track."""
        return len(self._tracks)

    def forget(self, job: object) -> None:
        self._tracks.pop(job, None)

    def _outlook(self, track: Track) -> Outlook:
        return Outlook(
            track, self.steps, self.processing, self.floor_s, self.interval_s, self._reads
        )

    def _narrow_enough(self, lo: float, hi: float) -> bool:
        return hi - lo <= 2 * self.interval_s

    def observe(
        self,
        job: object,
        status: str | None,
        position: int | None,
        now: float,
        *,
        progress: float | None = None,
        eta_s: float | None = None,
    ) -> Outlook | None:
        """Take one poll's answer for `job` at `now` (status None: no answer, an error), with
        the upstream's progress fraction and ETA if it gave them, and return the job's outlook
        while it is in progress."""
        track = self._tracks.get(job)
        if status is None:
            return None if track is None else self._outlook(track)
        if status in TERMINAL:
            self._tracks.pop(job, None)
            if track is not None and track.status == PROCESSING and now >= track.seen_at:
                self._learn_processing(track, now)
            return None
        if status not in (QUEUED, PROCESSING):
            return None
        if status == PROCESSING:
            position = None
        elif position is not None:
            self._positions = True
        if track is None or now < track.seen_at:  # new, or the clock went back: start over
            track = self._track(job, status, position, now)
        elif status != track.status or position != track.position:
            self._changed(track, status, position, now)
        track.seen_at = now
        if track.status == QUEUED:
            track.start_lo = max(track.start_lo, now)  # still queued: not started yet
            if track.position is not None:
                expected = expected_start(track.position, now, self.steps)
                lo, hi = max(track.expect_lo, expected[0]), min(track.expect_hi, expected[1])
                # Each sighting narrows the window; one that disagrees replaces it.
                track.expect_lo, track.expect_hi = (lo, hi) if lo <= hi else expected
        else:
            self._read(track, now, progress, eta_s)
        return self._outlook(track)

    def _read(self, track: Track, now: float, progress: float | None, eta_s: float | None) -> None:
        """Narrow where the job ends by what a processing answer read: its progress, over the
        time since processing was seen to start or since the first reading, and its ETA; the
        narrowest of those, and one that disagrees with the window so far replaces it."""
        ends: list[tuple[float, float] | None] = []
        if progress is not None and 0.0 <= progress <= 1.0:
            first = (track.read_at, track.read_at)
            if track.read_at < now:
                ends.append(ends_by_rate(first, track.read_progress, now, progress))
            # Only what the polls saw of the start: a predicted start a little off would put
            # the end off by as much, times (1 - progress) / progress.
            ends.append(ends_by_rate((track.start_lo, track.start_hi), 0.0, now, progress))
            if track.read_at == _INF:
                track.read_at, track.read_progress = now, progress
        if eta_s is not None and 0.0 <= eta_s < _INF:
            ends.append(ends_by_eta(now, eta_s))
        bounded = [end for end in ends if end is not None]
        if not bounded:
            return
        self._reads = True
        lo, hi = min(bounded, key=lambda end: end[1] - end[0])
        narrowed = max(track.end_lo, lo), min(track.end_hi, hi)
        track.end_lo, track.end_hi = narrowed if narrowed[0] <= narrowed[1] else (lo, hi)

    def _track(self, job: object, status: str, position: int | None, now: float) -> Track:
        track = Track(status, position, now)
        self._created += 1
        track.seq = self._created
        # While too little is known every job explores, but no more than a window holds: the
        # samples of more would not be kept, and their fixed-interval polls would teach nothing.
        cold = not self.ready and self._cold < self.processing.size
        self._cold += cold
        track.explores = cold or self._created % EXPLORE_EVERY == 0
        if status == QUEUED:
            if position is not None:
                track.origin_hi, track.origin_position = now, position
        else:
            track.start_hi = now
        self._tracks.pop(job, None)
        self._tracks[job] = track
        while len(self._tracks) > self._max_tracks:
            del self._tracks[next(iter(self._tracks))]
        return track

    def _learn_processing(self, track: Track, now: float) -> None:
        lo, hi = track.start_lo, track.start_hi
        if not track.explores or not self._narrow_enough(lo, hi):
            return
        end_lo = track.seen_at
        if self._narrow_enough(end_lo, now):
            noise = ((now - end_lo) ** 2 + (hi - lo) ** 2) / 12
            self.processing.add(_mid(end_lo, now) - _mid(lo, hi), noise, track.seq)

    def _learn_step(self, track: Track, lo: float, hi: float, went_to: int) -> None:
        """At the start of processing (`went_to` 0), the seconds per position since the job's
        origin: one sample per job, over as many positions as it was seen to go through (the
        brackets' noise is divided by as many, and the samples of one job do not share it)."""
        if not (track.explores and self._narrow_enough(lo, hi)):
            return
        if went_to > 0:
            if track.origin_lo == -_INF:  # a first well-known change: measure from it
                track.origin_lo, track.origin_hi, track.origin_position = lo, hi, went_to
            return
        positions = track.origin_position
        if track.origin_hi == -_INF or positions < 1:
            return
        if track.origin_lo > -_INF:
            noise = ((hi - lo) ** 2 + (track.origin_hi - track.origin_lo) ** 2) / 12
            elapsed = _mid(lo, hi) - _mid(track.origin_lo, track.origin_hi)
            self.steps.add(elapsed / positions, noise / positions**2, track.seq)
        elif positions >= FIRST_SEEN_POSITIONS:
            spent = positions - 0.5  # half of the first step, on average, had passed
            step = (_mid(lo, hi) - track.origin_hi) / spent
            self.steps.add(step, ((hi - lo) ** 2 / 12 + step**2 / 12) / spent**2, track.seq)

    def _changed(self, track: Track, status: str, position: int | None, now: float) -> None:
        went_from = track.position if track.status == QUEUED else None
        went_to = 0 if status == PROCESSING else position
        forward = went_from is not None and went_to is not None and went_to < went_from
        if forward:
            self._learn_step(track, track.seen_at, now, went_to or 0)
        if status == PROCESSING:
            track.start_hi = min(track.start_hi, now)
        track.status, track.position = status, position
        if status == QUEUED and not forward:  # moved back, or from processing: start over
            track.start_lo, track.start_hi = -_INF, _INF
            track.expect_lo, track.expect_hi = -_INF, _INF
            track.origin_lo = track.origin_hi = -_INF
            track.end_lo, track.end_hi = -_INF, _INF
            track.read_at = _INF


def next_poll_at(outlook: Outlook, now: float, floor_s: float, deadline: float) -> float | None:
    """When to poll this job next, or None for the caller's fixed interval (see the module).

    The result is in [now + floor_s, deadline] (the deadline itself when it is sooner)."""
    planned = _plan(outlook, now, floor_s)
    if planned is None:
        return None
    earliest = now + floor_s
    latest = now + max(MAX_WAIT_S, floor_s)
    return min(max(planned, earliest), latest, deadline)


def _plan(outlook: Outlook, now: float, floor_s: float) -> float | None:
    track, processing, steps = outlook.track, outlook.processing, outlook.steps
    if track.explores or len(processing) < MIN_SAMPLES:
        return None  # an explorer, or no history: the fixed interval
    if track.end_hi < _INF:
        return _plan_read_end(track.end_lo, track.end_hi, now, floor_s)
    window = start_window(track, processing.longest)
    if window is None:
        return None
    lo, hi = window
    if track.status == QUEUED:
        if track.position is None or now >= hi or len(steps) < MIN_SAMPLES:
            return None  # odd, past the prediction, or nothing learned of the queue
        settled = max(SETTLED_S, SETTLED_SHARE * processing.sd)
        split = _split(lo, hi, now + floor_s, steps.mean, settled)
        if split is not None:
            return split
    elif now >= hi + processing.longest:  # past the learned maximum
        return None
    mean = _mid(lo, hi) + processing.mean
    sd = math.sqrt((hi - lo) ** 2 / 12 + processing.sd**2)
    read_ahead = READ_AHEAD * floor_s if outlook.reads and sd > floor_s else 0.0
    low = mean + LOW * sd - read_ahead
    return _grid(low, mean + ANCHOR * sd, now, floor_s)


def _plan_read_end(lo: float, hi: float, now: float, floor_s: float) -> float:
    """The next poll of a job whose readings place its end in (lo, hi]: wider than
    `PRECISE_S`, a poll to read it again where it is surely not done yet and a floor before
    its middle (a later reading predicts better, and the last poll must be a floor later);
    else, or too late for that, `hi`, and before it a grid `floor_s` apart from `lo` on.
    Past `hi` (the readings moved), as soon as the floor allows."""
    if hi - lo > PRECISE_S:
        again = min(lo, _mid(lo, hi) - floor_s)
        if again >= now + floor_s:
            return again
    return hi if now + floor_s >= hi else _grid(lo, hi, now, floor_s)


def _grid(low: float, anchor: float, now: float, floor_s: float) -> float:
    """The first poll from `low` on (and at least `floor_s` after `now`) of a grid `floor_s`
    apart through `anchor`."""
    earliest = max(now + floor_s, low)
    # A poll a moment past a grid point stays on the grid (the caller keeps `floor_s`).
    return anchor + math.ceil((earliest - anchor) / floor_s - GRID_SLACK) * floor_s


def _split(lo: float, hi: float, earliest: float, step_s: float, settled: float) -> float | None:
    """A poll that halves the window (lo, hi] where processing should start, or None when it
    is narrow enough or no poll can halve it any more (then: poll for the completion).

    A poll at t that sees position q places the start in (t + (q-1)·step, t + q·step]: it
    splits the window at every t + k·step. So the poll goes a whole number of steps before
    the window's middle: at most `SPLIT_STEPS` (the fewer, the less the steps' spread blurs
    it; and none while far back), as early as allowed within that (one split per step)."""
    if hi - lo <= settled:
        return None
    middle = _mid(lo, hi)
    if middle < earliest:
        return earliest if earliest < hi else None
    steps_before = min(SPLIT_STEPS, math.floor((middle - earliest) / step_s))
    return middle - steps_before * step_s
