"""Adaptive pacing: what the learner takes from poll answers and where the planner puts polls.

Every time is explicit: no clock is read.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import pacing
from service.pacing import Learner, Outlook, Track, Window

T0 = 1_000.0
FLOOR, INTERVAL = 2.0, 2.5


def window(*values: float, min_spread: float = 0.0) -> Window:
    return Window(samples=values, min_spread=min_spread)


# Steady steps of 3 s and processing of 12 s, as if learned.
STEPS = (2.9, 3.0, 3.1, 2.9, 3.0, 3.1)
PROCESSING = (11.8, 12.0, 12.2, 11.8, 12.0, 12.2)


def ready_learner() -> Learner:
    learner = Learner(FLOOR, INTERVAL)
    learner.steps = window(*STEPS)
    learner.processing = window(*PROCESSING)
    return learner


def planned(track: Track, now: float, deadline: float = math.inf) -> float | None:
    outlook = Outlook(track, window(*STEPS), window(*PROCESSING), FLOOR, INTERVAL)
    return pacing.next_poll_at(outlook, now, FLOOR, deadline)


# The rolling windows.


@pytest.mark.parametrize(
    ("samples", "noise", "min_spread", "mean", "sd"),
    [
        # Exact measurements: the plain mean and (population) standard deviation.
        ((10.0, 12.0, 14.0), 0.0, 0.0, 12.0, math.sqrt(8 / 3)),
        # The same values measured through 2 s brackets (noise 4/12 each): less spread is real.
        ((10.0, 12.0, 14.0), 4 / 12, 0.0, 12.0, math.sqrt(8 / 3 - 4 / 12)),
        # Noise larger than the spread: the floor, a share of the mean.
        ((11.9, 12.0, 12.1), 1.0, 0.03, 12.0, 0.36),
        # One sample: no spread at all but the floor.
        ((3.0,), 0.0, 0.1, 3.0, 0.3),
    ],
)
def test_window_reads_samples_as_a_normal_without_the_noise(
    samples: tuple[float, ...], noise: float, min_spread: float, mean: float, sd: float
) -> None:
    """The mean of the samples; the spread less the average measurement noise, floored."""
    durations = Window(min_spread=min_spread)
    for value in samples:
        durations.add(value, noise)
    assert durations.mean == pytest.approx(mean)
    assert durations.sd == pytest.approx(sd)
    assert durations.longest == pytest.approx(mean + pacing.LONGEST_Z * sd)


def test_window_weighs_samples_by_their_precision() -> None:
    """A sample measured through wide brackets counts for little: 10 s measured exactly and
    20 s ± 10 s read as about 10.2 s (weights 1 / (noise + (0.1 · 15)²): 1/2.25 and 1/102.25),
    and the spread is the floor (the second sample's deviation is all noise)."""
    durations = Window(min_spread=0.1)
    durations.add(10.0, 0.0)
    durations.add(20.0, 100.0)
    weights = (1 / 2.25, 1 / 102.25)
    mean = (10.0 * weights[0] + 20.0 * weights[1]) / sum(weights)
    assert durations.mean == pytest.approx(mean)
    assert durations.mean == pytest.approx(10.2153, abs=1e-4)
    assert durations.sd == pytest.approx(0.1 * mean)


@pytest.mark.parametrize(
    ("value", "noise"),
    [(-1.0, 0.0), (0.0, 0.0), (math.inf, 0.0), (math.nan, 0.0), (5.0, -1.0), (5.0, math.inf)],
)
def test_window_leaves_out_impossible_samples(value: float, noise: float) -> None:
    """Negative, zero, infinite or NaN durations and negative noise are not samples."""
    durations = window(3.0)
    durations.add(value, noise)
    assert len(durations) == 1
    assert durations.mean == 3.0


def test_window_keeps_the_samples_of_the_jobs_begun_last() -> None:
    """Full, a window lets go of the sample of the job that began first, whenever it was
    measured: a long job begun early, measured last, does not crowd out the later short ones."""
    durations = Window(size=3, min_spread=0.0)
    for order, value in ((2, 1.0), (3, 2.0), (4, 3.0), (1, 100.0)):
        durations.add(value, order=order)
    assert len(durations) == 3
    assert durations.mean == pytest.approx(2.0)
    durations.add(4.0, order=5)
    assert durations.mean == pytest.approx(3.0)


def test_window_keeps_only_the_last_samples() -> None:
    """A full window forgets its oldest sample for each new one (and refits)."""
    durations = Window(size=3, min_spread=0.0)
    for value in (100.0, 1.0, 2.0, 3.0):
        durations.add(value)
    assert len(durations) == 3
    assert durations.mean == pytest.approx(2.0)


# What the learner learns.


def test_processing_time_is_learned_between_bracket_middles() -> None:
    """Queued at 0, processing at 2.5 (started in (0, 2.5]), still at 12.5, done at 15: the
    start is taken at 1.25, the end at 13.75, and both 2.5 s brackets count as noise."""
    learner = Learner(FLOOR, INTERVAL)
    learner.observe("job", "queued", 1, T0)
    learner.observe("job", "processing", None, T0 + 2.5)
    learner.observe("job", "processing", None, T0 + 12.5)
    assert learner.observe("job", "succeeded", None, T0 + 15.0) is None
    assert len(learner.processing) == 1
    assert learner.processing.mean == pytest.approx(12.5)
    assert learner.tracked == 0


def test_queue_steps_are_learned_once_per_job_from_its_first_known_change() -> None:
    """4 → 3 in (2, 4], then 2, 1, and processing in (11, 13]: three positions in 9 s, learned
    when processing starts (one sample per job: its changes share their brackets' noise)."""
    learner = Learner(FLOOR, INTERVAL)
    for at, position in ((0, 4), (2, 4), (4, 3), (7, 2), (11, 1)):
        learner.observe("job", "queued", position, T0 + at)
    assert len(learner.steps) == 0
    learner.observe("job", "processing", None, T0 + 13)
    assert len(learner.steps) == 1
    assert learner.steps.mean == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("first_position", "learned"),
    [
        # First seen at 4, processing in (8, 10] (at 9): 3.5 steps in 9 s on average.
        (4, 9 / 3.5),
        # First seen at 2: the odds near the ends of a step would bias it; not learned.
        (2, None),
    ],
)
def test_queue_steps_from_the_first_sighting(first_position: int, learned: float | None) -> None:
    """A job first seen queued had held its position since a random moment of that step."""
    learner = Learner(FLOOR, INTERVAL)
    learner.observe("job", "queued", first_position, T0)
    learner.observe("job", "queued", first_position, T0 + 8)  # no change seen in between
    learner.observe("job", "processing", None, T0 + 10)
    if learned is None:
        assert len(learner.steps) == 0
    else:
        assert learner.steps.mean == pytest.approx(learned)


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        # A 12 s gap brackets the start too loosely for its middle to mean anything.
        ([("queued", 1, 0), ("processing", None, 12), ("succeeded", None, 14)], "wide"),
        # Seen processing at once: when it started is unknown.
        ([("processing", None, 0), ("processing", None, 2), ("failed", None, 14)], "unknown"),
        # It went back in the queue: nothing before counts.
        ([("queued", 2, 0), ("processing", None, 2), ("queued", 5, 4), ("succeeded", None, 6)],
         "back"),
    ],
)  # fmt: skip
def test_nothing_is_learned_from_doubtful_timelines(
    answers: list[tuple[str, int | None, float]], reason: str
) -> None:
    """Wide brackets, unknown starts and jobs that went back teach nothing."""
    learner = Learner(FLOOR, INTERVAL)
    for status, position, at in answers:
        learner.observe("job", status, position, T0 + at)
    assert len(learner.processing) == 0, reason


def test_planned_jobs_are_not_learned_from_but_explorers_are() -> None:
    """Once ready, only one new job in EXPLORE_EVERY is an explorer (polled at the fixed
    interval); the planner's own polls cluster where changes are expected and would bias what
    is learned."""
    learner = ready_learner()
    explorers = [
        outlook.track.explores
        for index in range(2 * pacing.EXPLORE_EVERY)
        if (outlook := learner.observe(index, "queued", 3, T0)) is not None
    ]
    assert sum(explorers) == 2
    planned_job = next(i for i, explores in enumerate(explorers) if not explores)
    learner.observe(planned_job, "processing", None, T0 + 2)
    learner.observe(planned_job, "succeeded", None, T0 + 4)
    assert len(learner.processing) == len(PROCESSING)


def test_every_job_explores_while_too_little_is_known() -> None:
    """A cold learner plans nothing, so every job is polled at the fixed interval and taught."""
    learner = Learner(FLOOR, INTERVAL)
    outlooks = [learner.observe(index, "queued", 3, T0) for index in range(15)]
    assert all(o is not None and o.track.explores for o in outlooks)


def test_no_more_jobs_explore_while_cold_than_a_window_holds() -> None:
    """While too little is known, new jobs explore until as many as the window holds do (the
    samples of more would not be kept), then one in EXPLORE_EVERY."""
    learner = Learner(FLOOR, INTERVAL, window=8)
    outlooks = [learner.observe(index, "queued", 3, T0) for index in range(48)]
    explores = [o is not None and o.track.explores for o in outlooks]
    assert all(explores[:8])
    assert explores[8:].count(True) == 2  # the 20th and the 40th job


def test_errors_change_nothing_and_unknown_statuses_are_ignored() -> None:
    """No answer (status None) keeps the track as it was; an unknown status has no outlook."""
    learner = ready_learner()
    first = learner.observe("job", "queued", 3, T0)
    assert first is not None
    seen = (first.track.seen_at, first.track.position)
    again = learner.observe("job", None, None, T0 + 5)
    assert again is not None
    assert (again.track.seen_at, again.track.position) == seen
    assert learner.observe("other", None, None, T0) is None
    assert learner.observe("other", "paused", None, T0) is None


def test_a_clock_that_goes_back_starts_the_track_over() -> None:
    """An answer older than the last one seen (the wall clock stepped back) restarts the job."""
    learner = ready_learner()
    first = learner.observe("job", "queued", 3, T0)
    outlook = learner.observe("job", "queued", 2, T0 - 60)
    assert first is not None
    assert outlook is not None
    assert outlook.track is not first.track
    assert (outlook.track.seen_at, outlook.track.origin_position) == (T0 - 60, 2)


def test_tracks_are_bounded_oldest_first_and_forgettable() -> None:
    """Past max_tracks, the oldest job is forgotten; forget drops one at once."""
    learner = Learner(FLOOR, INTERVAL, max_tracks=2)
    for job in ("a", "b", "c"):
        learner.observe(job, "queued", 1, T0)
    assert learner.tracked == 2
    learner.forget("b")
    learner.forget("unknown")
    assert learner.tracked == 1


# Where processing should start.

STEADY = window(*[3.0] * pacing.MIN_SAMPLES, min_spread=0.1 / 3)  # 3 s ± 0.1 per position


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        # Position 2 seen at 10: its last step ends within 3 s, one more step follows; 2 sd of
        # leeway per position.
        (2, (10.0 + 3.0 - 0.4, 10.0 + 6.0 + 0.4)),
        # Position 1: within the next step.
        (1, (10.0 - 0.2, 10.0 + 3.0 + 0.2)),
        # Position 0 is read as "next".
        (0, (10.0 - 0.2, 10.0 + 3.0 + 0.2)),
    ],
)
def test_expected_start(position: int, expected: tuple[float, float]) -> None:
    """A sighting at position q places the start q-1 to q steps ahead."""
    start = pacing.expected_start(position, 10.0, STEADY)
    assert start == (pytest.approx(expected[0]), pytest.approx(expected[1]))


def test_expected_start_needs_history() -> None:
    """Too few steps learned: no prediction at all."""
    assert pacing.expected_start(3, 10.0, window(3.0)) == (-math.inf, math.inf)


@pytest.mark.parametrize(
    ("seen", "expected", "window_"),
    [
        # Only seen: within the bounds.
        ((10.0, 12.0), (-math.inf, math.inf), (10.0, 12.0)),
        # Seen and predicted: where both agree.
        ((10.0, 12.0), (11.0, 20.0), (11.0, 12.0)),
        # They disagree: the prediction was wrong, the bounds alone.
        ((10.0, 12.0), (30.0, 33.0), (10.0, 12.0)),
        # Queued, predicted, not yet seen processing.
        ((10.0, math.inf), (11.0, 14.0), (11.0, 14.0)),
        # Seen processing at once at 20, processing takes at most 15: within (5, 20].
        ((-math.inf, 20.0), (-math.inf, math.inf), (5.0, 20.0)),
        # Nothing bounds it.
        ((10.0, math.inf), (-math.inf, math.inf), None),
    ],
)
def test_start_window(
    seen: tuple[float, float],
    expected: tuple[float, float],
    window_: tuple[float, float] | None,
) -> None:
    """What the polls saw, narrowed by the queue's prediction when they agree."""
    track = Track("processing", None, 0.0, *seen, *expected)
    assert pacing.start_window(track, longest_s=15.0) == window_


def test_each_sighting_narrows_the_window() -> None:
    """Seen at position 2 at 0 (start in (3, 6] ± leeway), then at position 1 at 4.5 (start in
    (4.5, 7.5]): the start is in (4.5, 6 + leeway]."""
    learner = ready_learner()
    learner.steps = STEADY
    learner.observe("job", "queued", 2, T0)
    outlook = learner.observe("job", "queued", 1, T0 + 4.5)
    assert outlook is not None
    track = outlook.track
    assert (track.expect_lo, track.expect_hi) == (
        pytest.approx(T0 + 4.5 - 0.2),
        pytest.approx(T0 + 6.4),
    )
    assert pacing.start_window(track, 15.0) == (T0 + 4.5, pytest.approx(T0 + 6.4))


def test_a_sighting_that_disagrees_replaces_the_window() -> None:
    """Still at position 2 long after it should have started: the old window was wrong."""
    learner = ready_learner()
    learner.steps = STEADY
    learner.observe("job", "queued", 2, T0)
    outlook = learner.observe("job", "queued", 2, T0 + 30)
    assert outlook is not None
    assert (outlook.track.expect_lo, outlook.track.expect_hi) == (
        pytest.approx(T0 + 33 - 0.4),
        pytest.approx(T0 + 36 + 0.4),
    )


# Where the next poll goes.


def processing_since(lo: float, hi: float) -> Track:
    return Track("processing", None, hi, lo, hi, explores=False)


def queued(expect: tuple[float, float], seen_at: float) -> Track:
    """A planned job seen queued at `seen_at`, its start expected in `expect`."""
    return Track("queued", 3, seen_at, seen_at, math.inf, *expect, explores=False)


# Processing started in (10, 12]; processing takes 12 s ± 0.163: completion ~ N(23, 0.609).
COMPLETION_MEAN = 23.0
COMPLETION_SD = math.sqrt(4 / 12 + window(*PROCESSING).sd ** 2)
ANCHOR = COMPLETION_MEAN + pacing.ANCHOR * COMPLETION_SD
# Queued, the start settled in (20, 20.5]: completion ~ N(32.25, ...).
SETTLED_ANCHOR = 32.25 + pacing.ANCHOR * math.sqrt(0.25 / 12 + window(*PROCESSING).sd ** 2)


@pytest.mark.parametrize(
    ("track", "now", "deadline", "expected"),
    [
        # Queued, start expected in (30, 36]: three 3 s steps before the middle (33): it sees
        # position 3 or 4, and the window is halved.
        (queued((30.0, 36.0), 0.0), 0.0, math.inf, 24.0),
        # Far back: a poll 30 s on at most.
        (queued((40.0, 46.0), 0.0), 0.0, math.inf, pacing.MAX_WAIT_S),
        # One step before the middle is as early as allowed now.
        (queued((30.0, 36.0), 28.0), 28.0, math.inf, 30.0),
        # The middle is near: just the earliest allowed poll, which still splits the window.
        (queued((30.0, 33.0), 30.0), 30.0, math.inf, 32.0),
        # Settled (narrower than SETTLED_S): straight to the completion grid.
        (queued((20.0, 20.5), 5.0), 5.0, math.inf, SETTLED_ANCHOR),
        # Still queued past the end of its window: the fixed interval.
        (queued((30.0, 33.0), 33.5), 33.5, math.inf, None),
        # Just seen processing: nothing until the grid point through the anchor.
        (processing_since(10.0, 12.0), 12.0, math.inf, ANCHOR),
        # At the anchor, not done: the vendor's pace (the floor) from there.
        (processing_since(10.0, 12.0), ANCHOR, math.inf, ANCHOR + FLOOR),
        # A moment late for a grid point: the floor from now, not a skipped grid point.
        (processing_since(10.0, 12.0), ANCHOR + 0.3, math.inf, ANCHOR + 0.3 + FLOOR),
        # Past the learned maximum (start bound + longest): the fixed interval.
        (processing_since(10.0, 12.0), 12.0 + 12.7, math.inf, None),
        # The deadline comes first.
        (processing_since(10.0, 12.0), 12.0, 15.0, 15.0),
        # The deadline is nearer than the floor: the deadline (the timeout check).
        (processing_since(10.0, 12.0), 12.0, 13.0, 13.0),
    ],
)
def test_next_poll_at(track: Track, now: float, deadline: float, expected: float | None) -> None:
    """Where the planner puts the next poll (see the module's rules)."""
    result = planned(track, now, deadline)
    assert result == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("track", "processing", "reason"),
    [
        (processing_since(10.0, 12.0), PROCESSING[:2], "too little history"),
        (Track("queued", 3, 0.0, explores=True), PROCESSING, "explorer"),
        (Track("queued", None, 0.0, 0.0, math.inf, 5.0, 8.0, explores=False),
         PROCESSING, "no position"),
        (Track("queued", 3, 0.0, explores=False), PROCESSING, "no prediction"),
    ],
)  # fmt: skip
def test_no_plan_means_the_fixed_interval(
    track: Track, processing: tuple[float, ...], reason: str
) -> None:
    """The planner says None (the caller's fixed interval) when it cannot say better."""
    outlook = Outlook(track, window(*STEPS), window(*processing), FLOOR, INTERVAL)
    assert pacing.next_poll_at(outlook, 1.0, FLOOR, math.inf) is None, reason


@pytest.mark.parametrize(("interval_s", "floor_s"), [(2.5, 2.0), (2.0, 2.0), (10.0, 8.0)])
def test_a_watch_that_asked_for_slower_polling_keeps_its_proportion(
    interval_s: float, floor_s: float
) -> None:
    """The floor scales with a watch's own interval when that is slower than the default."""
    outlook = Outlook(Track("queued", 1, 0.0), window(), window(), 2.0, 2.5)
    assert outlook.floor_for(interval_s) == pytest.approx(floor_s)


def test_a_learned_job_is_polled_near_its_start_and_end() -> None:
    """End to end through the learner: a planned job first seen at position 2 is polled about
    when processing should start, then just after the likely completion."""
    learner = ready_learner()
    for index in range(pacing.EXPLORE_EVERY):  # the explorer's turn goes to another job
        learner.observe(("other", index), "queued", 3, T0)
    outlook = learner.observe("job", "queued", 2, T0)
    assert outlook is not None
    assert not outlook.track.explores
    first = pacing.next_poll_at(outlook, T0, FLOOR, math.inf)
    assert first == pytest.approx(T0 + 4.5)  # the middle of (3, 6]: its start is 1 to 2 steps on
    outlook = learner.observe("job", "processing", None, T0 + 4.5)
    assert outlook is not None
    second = pacing.next_poll_at(outlook, T0 + 4.5, FLOOR, math.inf)
    assert second is not None
    assert T0 + 4.5 + 12.0 - 1.0 < second < T0 + 4.5 + 12.0 + 1.0


# Properties.

times = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
spans = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
durations = st.lists(st.floats(min_value=0.01, max_value=1e4), min_size=0, max_size=8)


@st.composite
def outlooks(draw: st.DrawFn) -> tuple[Outlook, float]:
    now = draw(times)
    status = draw(st.sampled_from(["queued", "processing"]))
    position = draw(st.none() | st.integers(min_value=0, max_value=10**6))
    lo = draw(st.sampled_from([-math.inf]) | st.floats(min_value=now - 1e4, max_value=now))
    hi = draw(st.sampled_from([math.inf]) | st.floats(min_value=now - 1e4, max_value=now + 1e4))
    expect_lo = draw(
        st.sampled_from([-math.inf]) | st.floats(min_value=now - 1e4, max_value=now + 1e4)
    )
    expect_hi = draw(
        st.sampled_from([math.inf]) | st.floats(min_value=now - 1e4, max_value=now + 1e4)
    )
    track = Track(status, position, now, lo, hi, expect_lo, expect_hi,
                  explores=draw(st.booleans()))  # fmt: skip
    steps = Window(samples=tuple(draw(durations)))
    processing = Window(samples=tuple(draw(durations)))
    return Outlook(track, steps, processing, FLOOR, INTERVAL), now


@given(outlooks(), st.floats(min_value=0.1, max_value=3600), spans)
def test_never_sooner_than_the_floor_never_later_than_the_deadline(
    case: tuple[Outlook, float], floor_s: float, until_deadline: float
) -> None:
    """Whatever the track and the history: a planned poll is at least floor_s away (unless the
    deadline is nearer), at most MAX_WAIT_S away, and never past the deadline."""
    outlook, now = case
    deadline = now + until_deadline
    result = pacing.next_poll_at(outlook, now, floor_s, deadline)
    if result is None:
        return
    assert result <= deadline
    assert result <= now + max(pacing.MAX_WAIT_S, floor_s)
    assert result >= min(now + floor_s, deadline)


answers = st.lists(
    st.tuples(
        st.sampled_from(["queued", "processing", "succeeded", "failed", None, "odd"]),
        st.none() | st.integers(min_value=-5, max_value=50),
        st.floats(min_value=-10.0, max_value=30.0),
    ),
    max_size=30,
)


@given(answers)
def test_any_sequence_of_answers_is_taken_in(sequence: list[tuple[str | None, int | None, float]]
                                             ) -> None:  # fmt: skip
    """Odd positions, skipped states, errors and clocks that jump either way never break the
    learner, and its windows only hold finite positive durations."""
    learner = ready_learner()
    now = T0
    for status, position, step in sequence:
        now += step
        outlook = learner.observe("job", status, position, now)
        if outlook is not None:
            pacing.next_poll_at(outlook, now, FLOOR, now + 300)
    for learned in (learner.steps, learner.processing):
        assert math.isfinite(learned.mean)
        assert learned.mean > 0
        assert math.isfinite(learned.sd)
        assert learned.sd >= 0
