"""Adaptive pacing with the upstream's progress and ETA readings: where they place a job's end,
and where the planner then puts its polls.

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
STEP = pacing.PROGRESS_STEP

# Steady steps of 3 s and processing of 12 s ± 3 s, as if learned.
STEPS = (2.9, 3.0, 3.1, 2.9, 3.0, 3.1)
PROCESSING = (9.0, 12.0, 15.0, 9.0, 12.0, 15.0)


def ready_learner(reads: bool = False) -> Learner:
    """A learner that has learned, and whose next new job is planned (not an explorer); with
    `reads`, it has seen the upstream tell a job's progress."""
    learner = Learner(FLOOR, INTERVAL)
    learner.steps = Window(samples=STEPS)
    learner.processing = Window(samples=PROCESSING)
    for index in range(pacing.EXPLORE_EVERY):  # the explorer's turn goes to another job
        learner.observe(("other", index), "queued", 3, T0)
    if reads:
        learner.observe(("other", 0), "processing", None, T0 + 1, progress=0.5)
    return learner


def processing_track(end: tuple[float, float], explores: bool = False) -> Track:
    """A job seen processing since (10, 12] whose readings place its end in `end`."""
    return Track("processing", None, 12.0, 10.0, 12.0, explores=explores,
                 end_lo=end[0], end_hi=end[1])  # fmt: skip


def planned(track: Track, now: float, reads: bool = True) -> float | None:
    outlook = Outlook(
        track, Window(samples=STEPS), Window(samples=PROCESSING), FLOOR, INTERVAL, reads
    )
    return pacing.next_poll_at(outlook, now, FLOOR, math.inf)


# Where one reading places the end.


@pytest.mark.parametrize(
    ("before", "done_before", "at", "done", "expected"),
    [
        # Started in (10, 11], half done at 16: the end is 5 to 6 s of running on, each
        # reading's step making it a little wider.
        ((10.0, 11.0), 0.0, 16.0, 0.5,
         (16 + (1 - 0.5 - STEP) * 5 / (0.5 + STEP), 16 + (1 - 0.5 + STEP) * 6 / (0.5 - STEP))),
        # 0.2 done at 10 and 0.6 at 14: 0.1 a second, 4 s to go; no start needed.
        ((10.0, 10.0), 0.2, 14.0, 0.6,
         (14 + (0.4 - STEP) * 4 / (0.4 + 2 * STEP), 14 + (0.4 + STEP) * 4 / (0.4 - 2 * STEP))),
        # Done (1.0) yet still processing: it ends about now.
        ((10.0, 11.0), 0.0, 16.0, 1.0, (16.0, 16 + STEP * 6 / (1 - STEP))),
        # No measurable pace: progress within the readings' steps of the earlier one.
        ((10.0, 10.0), 0.2, 14.0, 0.2 + STEP, None),
        # Nothing done yet: no pace.
        ((10.0, 11.0), 0.0, 16.0, 0.0, None),
        # A start not bounded below: no pace.
        ((-math.inf, 11.0), 0.0, 16.0, 0.5, None),
    ],
)  # fmt: skip
def test_ends_by_rate(
    before: tuple[float, float],
    done_before: float,
    at: float,
    done: float,
    expected: tuple[float, float] | None,
) -> None:
    """A steady pace from an earlier point to this reading, each read to its step."""
    found = pacing.ends_by_rate(before, done_before, at, done)
    if expected is None:
        assert found is None
    else:
        assert found == (pytest.approx(expected[0]), pytest.approx(expected[1]))


@pytest.mark.parametrize(
    ("eta_s", "expected"),
    [
        (8.0, (107.0, 109.0)),  # whole seconds, rounded any way: ±1 s
        (8.4, (108.3, 108.5)),  # a fraction: ±0.1 s
        (0.0, (100.0, 101.0)),  # never before the reading itself
    ],
)
def test_ends_by_eta(eta_s: float, expected: tuple[float, float]) -> None:
    """An ETA places the end at the reading plus the ETA, to its resolution."""
    lo, hi = pacing.ends_by_eta(100.0, eta_s)
    assert (lo, hi) == (pytest.approx(expected[0]), pytest.approx(expected[1]))


# What the learner keeps of the readings.


def test_readings_narrow_the_end_and_a_pace_needs_no_start() -> None:
    """Seen queued at 0 and processing at 2 (started in (0, 2]) 10 % done: it ends 0 to 20 s
    on. At 10, 50 % done: from the first reading, 0.4 in 8 s, so 10 s to go (the start,
    known to 2 s, would say 8 to 10)."""
    learner = ready_learner()
    learner.observe("job", "queued", 1, T0)
    first = learner.observe("job", "processing", None, T0 + 2, progress=0.1)
    assert first is not None
    assert first.track.end_lo == T0 + 2
    assert first.track.end_hi == pytest.approx(T0 + 2 + (0.91 * 2 / 0.09))
    second = learner.observe("job", "processing", None, T0 + 10, progress=0.5)
    assert second is not None
    assert second.reads
    assert second.track.end_lo == pytest.approx(T0 + 10 + (0.49 * 8 / 0.42))
    assert second.track.end_hi == pytest.approx(T0 + 10 + (0.51 * 8 / 0.38))


def test_progress_takes_the_start_the_polls_saw_not_the_one_the_queue_predicts() -> None:
    """Queued at position 2 at 0 and 1 at 5 (predicted to start by 6.4), processing at 10 and
    20 % done: the queue was slower than learned (it started at 8, to end at 18). The end is
    placed from the start seen in (5, 10], so it is in the window; the prediction would have
    placed it after 23."""
    learner = ready_learner()
    learner.observe("job", "queued", 2, T0)
    learner.observe("job", "queued", 1, T0 + 5)
    outlook = learner.observe("job", "processing", None, T0 + 10, progress=0.2)
    assert outlook is not None
    assert outlook.track.end_lo <= T0 + 18 <= outlook.track.end_hi
    assert outlook.track.end_lo == T0 + 10


def test_a_reading_that_disagrees_replaces_the_window() -> None:
    """An ETA of 5 s at 10, then of 20 s at 12 (the job slowed down): the later one holds."""
    learner = ready_learner()
    learner.observe("job", "processing", None, T0 + 10, eta_s=5.0)
    outlook = learner.observe("job", "processing", None, T0 + 12, eta_s=20.0)
    assert outlook is not None
    assert (outlook.track.end_lo, outlook.track.end_hi) == (T0 + 31, T0 + 33)


def test_eta_readings_that_agree_narrow_each_other() -> None:
    """ETAs of 8 s at 10 and of 5 s at 12.5 (whole seconds, ±1 s): within (17, 18.5]."""
    learner = ready_learner()
    learner.observe("job", "processing", None, T0 + 10, eta_s=8.0)
    outlook = learner.observe("job", "processing", None, T0 + 12.5, eta_s=5.0)
    assert outlook is not None
    assert (outlook.track.end_lo, outlook.track.end_hi) == (T0 + 17, T0 + 18.5)


@pytest.mark.parametrize(
    ("progress", "eta_s"), [(1.5, None), (-0.1, None), (math.nan, None), (None, -1.0),
                            (None, math.inf), (None, math.nan), (0.0, None)]
)  # fmt: skip
def test_readings_that_say_nothing_are_ignored(progress: float | None, eta_s: float | None) -> None:
    """Out-of-range or non-finite readings, and progress 0, place no end."""
    learner = ready_learner()
    learner.observe("job", "queued", 1, T0)
    outlook = learner.observe("job", "processing", None, T0 + 2, progress=progress, eta_s=eta_s)
    assert outlook is not None
    assert (outlook.track.end_lo, outlook.track.end_hi) == (-math.inf, math.inf)
    assert not outlook.reads


def test_readings_are_forgotten_when_the_job_goes_back_to_the_queue() -> None:
    """Processing, then queued again: what its readings said no longer holds."""
    learner = ready_learner()
    learner.observe("job", "processing", None, T0, eta_s=8.0)
    outlook = learner.observe("job", "queued", 2, T0 + 2)
    assert outlook is not None
    assert (outlook.track.end_lo, outlook.track.end_hi) == (-math.inf, math.inf)
    assert outlook.track.read_at == math.inf


def test_an_upstream_without_queue_positions_is_planned_from_processing_alone() -> None:
    """Queue steps are only needed where the upstream tells positions."""
    learner = Learner(FLOOR, INTERVAL)
    learner.processing = Window(samples=PROCESSING)
    assert learner.ready
    learner.observe("with", "queued", 3, T0)
    assert not learner.ready


# Where the planner puts the polls.


@pytest.mark.parametrize(
    ("end", "now", "expected"),
    [
        # The end within 20 to 30: read again at 20 (surely running, a floor before the middle).
        ((20.0, 30.0), 12.0, 20.0),
        # Within 20 to 22: read again a floor before the middle (19), not at 20.
        ((20.0, 22.0), 12.0, 19.0),
        # Narrow (≤ PRECISE_S): just after it.
        ((20.0, 20.4), 12.0, 20.4),
        # Wide but no room to read again a floor before its middle: a grid through its end.
        ((15.0, 19.0), 14.0, 17.0),
        ((15.0, 19.0), 16.0, 19.0),
        # Past the window (the readings moved on): as soon as the floor allows.
        ((15.0, 15.3), 16.0, 18.0),
    ],
)
def test_a_read_end_is_read_again_then_polled_just_after(
    end: tuple[float, float], now: float, expected: float
) -> None:
    """A wide end window is narrowed by another reading; a narrow one is polled just after."""
    assert planned(processing_track(end), now) == pytest.approx(expected)


def test_explorers_keep_the_fixed_interval_whatever_they_read() -> None:
    """Explorers are learned from, so their polls stay independent of their timeline."""
    assert planned(processing_track((20.0, 20.4), explores=True), 12.0) is None


def test_the_first_poll_comes_sooner_where_answers_read() -> None:
    """Processing since (10, 12], 12 s ± 3 s: the first completion poll is on the grid through
    the 84 % quantile from the 10 % quantile on; READ_AHEAD floors sooner with readings, here
    one grid point. Processing of 12 s ± 0.4 s is predicted closely enough without."""
    track = Track("processing", None, 12.0, 10.0, 12.0, explores=False)
    without, with_readings = planned(track, 12.0, reads=False), planned(track, 12.0)
    assert without is not None
    assert with_readings == pytest.approx(without - FLOOR)
    steady = Window(samples=(11.6, 12.0, 12.4) * 2)
    first = [
        pacing.next_poll_at(
            Outlook(track, Window(samples=STEPS), steady, FLOOR, INTERVAL, reads), 12.0, FLOOR,
            math.inf,
        )
        for reads in (False, True)
    ]  # fmt: skip
    assert first[0] == first[1]


def test_a_wide_processing_spread_settles_the_start_at_once() -> None:
    """Processing that varies by seconds makes splitting a 6 s start window moot: the first
    poll goes straight to the completion grid, not to a split three steps on."""
    track = Track("queued", 3, 0.0, 0.0, math.inf, 30.0, 36.0, explores=False)
    wide = Window(samples=(4.0, 12.0, 20.0) * 2)  # a standard deviation of 6.5 s
    steady = Outlook(track, Window(samples=STEPS), Window(samples=(12.0,) * 6), FLOOR, INTERVAL)
    spread = Outlook(track, Window(samples=STEPS), wide, FLOOR, INTERVAL)
    assert pacing.next_poll_at(steady, 0.0, FLOOR, math.inf) == pytest.approx(24.0)
    completion = pacing.next_poll_at(spread, 0.0, FLOOR, math.inf)
    assert completion is not None
    assert completion == pytest.approx(pacing.MAX_WAIT_S)


def follow(learner: Learner, start: float, length: float, answer: str) -> tuple[list[float], float]:
    """Poll a job that starts processing at `start` and runs `length` s as the planner says;
    its answers tell `answer` ("progress": hundredths rounded down, "eta": whole seconds).
    Returns the polls while processing and the time the end was seen."""
    end = start + length
    now, polls = T0, list[float]()
    while True:
        if now >= end:
            assert learner.observe("job", "succeeded", None, now) is None
            return polls, now
        if now < start:
            outlook = learner.observe("job", "queued", 1, now)
        else:
            polls.append(now)
            done = math.floor(100 * (now - start) / length) / 100
            eta_s = float(round(end - now))
            outlook = learner.observe(
                "job", "processing", None, now,
                progress=done if answer == "progress" else None,
                eta_s=eta_s if answer == "eta" else None,
            )  # fmt: skip
        assert outlook is not None
        planned_at = pacing.next_poll_at(outlook, now, FLOOR, math.inf)
        assert planned_at is not None
        assert planned_at >= now + FLOOR
        now = planned_at


@pytest.mark.parametrize(("start", "length"), [(1.0, 12.0), (2.9, 9.5), (0.2, 25.0), (1.5, 15.3)])
def test_a_job_telling_its_progress_is_caught_just_after_its_end(
    start: float, length: float
) -> None:
    """A job that tells its progress, as long as learned (12 s ± 3 s) or far longer, is
    polled a few times while it runs and seen done within a second of its end (without
    readings, up to a floor after it), never by polls closer than the floor."""
    polls, seen = follow(ready_learner(reads=True), T0 + start, length, "progress")
    assert 0.0 <= seen - (T0 + start + length) <= 1.0
    assert len(polls) <= 3


@pytest.mark.parametrize(("start", "length"), [(1.0, 12.0), (2.9, 9.5), (0.2, 25.0)])
def test_a_job_telling_its_eta_is_caught_within_the_eta_resolution(
    start: float, length: float
) -> None:
    """An ETA in whole seconds places the end within ±1 s: the job is seen done at most 2 s
    after its end, with few polls."""
    polls, seen = follow(ready_learner(reads=True), T0 + start, length, "eta")
    assert 0.0 <= seen - (T0 + start + length) <= 2 * pacing.ETA_STEP_S
    assert len(polls) <= 3


# Properties.

moments = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


@given(
    moments,
    st.floats(min_value=0.0, max_value=1e3),
    st.floats(min_value=-1e3, max_value=1e3),
    st.floats(min_value=0.1, max_value=60.0),
    st.booleans(),
)
def test_a_read_end_never_brings_a_poll_below_the_floor(
    now: float, width: float, offset: float, floor_s: float, reads: bool
) -> None:
    """Wherever the readings place the end, the next poll is at least floor_s away and at most
    MAX_WAIT_S (or the floor, if longer)."""
    track = processing_track((now + offset, now + offset + width))
    outlook = Outlook(
        track, Window(samples=STEPS), Window(samples=PROCESSING), FLOOR, INTERVAL, reads
    )
    result = pacing.next_poll_at(outlook, now, floor_s, math.inf)
    assert result is not None
    assert now + floor_s <= result <= now + max(pacing.MAX_WAIT_S, floor_s)


readings = st.lists(
    st.tuples(
        st.sampled_from(["queued", "processing", "succeeded", None]),
        st.none() | st.floats(allow_nan=True, allow_infinity=True),
        st.none() | st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=-5.0, max_value=30.0),
    ),
    max_size=30,
)


@given(readings)
def test_any_readings_are_taken_in(
    sequence: list[tuple[str | None, float | None, float | None, float]],
) -> None:
    """Any progress and ETA values, in any order with any statuses and clock jumps, never
    break the learner, and the plan stays within its bounds."""
    learner = ready_learner()
    now = T0
    for status, progress, eta_s, step in sequence:
        now += step
        outlook = learner.observe("job", status, 1, now, progress=progress, eta_s=eta_s)
        if outlook is not None:
            result = pacing.next_poll_at(outlook, now, FLOOR, now + 300)
            assert result is None or now + FLOOR <= result <= now + pacing.MAX_WAIT_S
