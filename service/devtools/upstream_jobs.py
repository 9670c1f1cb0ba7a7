"""The simulated upstream's jobs: what a job is told to do, and how it answers a poll over time.

A job's `sim` settings (or the body of `POST /_sim/jobs`) become a `JobSpec`; every value is
checked, and a `SpecError` names the first wrong field. A `Job` is created at clock time `t0` and
answers by elapsed time alone:

```
t0 ........ t0 + (positions - queue_phase)*seconds_per_position ........ + processing_s ......
   queued (queue_position counts down, at least 1)          processing         succeeded | failed
```

`queue_phase` (0 to 1, default 0) is the part of the first position's time already gone when the
job is created: a real queue moves when a job ahead of it finishes, at any moment.
`realistic_spec` draws a job as a busy upstream would serve it (the simulator's `--workload
realistic`); the distributions are documented on it.

Its faults are served, in order and `count` times each, to its next polls before the timeline.
A job made with `reads` (the simulator's `--readings progress`) also tells, while processing, its
`progress` and `eta`, as other APIs do; the vendor's answer has neither.
"""

from __future__ import annotations

import math
import random
import string
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import orjson

from service.devtools.providers import Phase, View

OUTCOMES = ("succeeded", "failed")
FAULT_KINDS = ("5xx", "429", "slow", "malformed", "drop", "404", "401", "400")
DEFAULT_ERROR = "Generation failed due to an internal error"

_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits
MAX_IMAGES = 100
MAX_URL_CHARS = 2048
MAX_POLL_TIMES = 64


class SpecError(ValueError):
    """A job's simulation settings are invalid; the message names the field."""


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, served `count` times: `retry_after` is for 429, `delay_s` for slow."""

    kind: str
    count: int = 1
    retry_after: int = 1
    delay_s: float = 0.0


@dataclass(frozen=True)
class JobSpec:
    """How one job behaves."""

    queue_positions: int
    seconds_per_position: float
    processing_s: float
    outcome: str
    queue_phase: float = 0.0
    error: str = DEFAULT_ERROR
    images: int = 1
    # The images' URLs as given (any text: a test may hand the bridge hostile ones); empty:
    # `images` random CDN URLs.
    image_urls: tuple[str, ...] = ()
    faults: tuple[Fault, ...] = ()


# The keys a `sim` object and a fault may hold: their dataclasses' fields.
_SPEC_KEYS = frozenset(setting.name for setting in fields(JobSpec))
_FAULT_KEYS = frozenset(setting.name for setting in fields(Fault))


def _field(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _whole(raw: dict[str, Any], key: str, default: int, where: str, upper: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise SpecError(f"{_field(where, key)} must be an integer from 0 to {upper}")
    return value


def _seconds(raw: dict[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise SpecError(f"{_field(where, key)} must be a non-negative number of seconds")
    return float(value)


def _fraction(raw: dict[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise SpecError(f"{_field(where, key)} must be a number from 0 to less than 1")
    return float(value)


def _check_keys(raw: object, known: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SpecError(f"{where or 'the body'} must be a JSON object")
    unknown = sorted(set(raw) - known)
    if unknown:
        allowed = ", ".join(sorted(known))
        raise SpecError(f"{_field(where, unknown[0])} is not a known setting ({allowed})")
    return raw


def parse_fault(raw: object, where: str, slow_s: float) -> Fault:
    """One entry of `faults`; a slow fault without `delay_s` waits `slow_s`."""
    entry = _check_keys(raw, _FAULT_KEYS, where)
    kind = entry.get("kind")
    if kind not in FAULT_KINDS:
        raise SpecError(f"{where}.kind must be one of {', '.join(FAULT_KINDS)}")
    count = _whole(entry, "count", 1, where, 1_000_000)
    if count < 1:
        raise SpecError(f"{where}.count must be at least 1")
    return Fault(
        kind=str(kind),
        count=count,
        retry_after=_whole(entry, "retry_after", 1, where, 86_400),
        delay_s=_seconds(entry, "delay_s", slow_s, where),
    )


def _urls(raw: dict[str, Any], where: str) -> tuple[str, ...]:
    urls = raw.get("image_urls", [])
    if (
        not isinstance(urls, list)
        or len(urls) > MAX_IMAGES
        or not all(isinstance(url, str) and len(url) <= MAX_URL_CHARS for url in urls)
    ):
        raise SpecError(
            f"{_field(where, 'image_urls')} must be a list of at most {MAX_IMAGES} strings of "
            f"at most {MAX_URL_CHARS} characters"
        )
    if urls and "images" in raw:
        raise SpecError(
            f"give {_field(where, 'images')} (a count of random URLs) or "
            f"{_field(where, 'image_urls')}, not both"
        )
    return tuple(urls)


def parse_spec(raw: object, defaults: JobSpec, slow_s: float, where: str) -> JobSpec:
    """The settings in `raw` over `defaults`; `where` prefixes field names in errors."""
    settings = _check_keys(raw, _SPEC_KEYS, where)
    outcome = settings.get("outcome", defaults.outcome)
    if outcome not in OUTCOMES:
        raise SpecError(f"{_field(where, 'outcome')} must be one of {', '.join(OUTCOMES)}")
    error = settings.get("error", defaults.error)
    if not isinstance(error, str):
        raise SpecError(f"{_field(where, 'error')} must be a string")
    faults = settings.get("faults", [])
    if not isinstance(faults, list):
        raise SpecError(f"{_field(where, 'faults')} must be a list")
    return JobSpec(
        queue_positions=_whole(settings, "queue_positions", defaults.queue_positions, where, 10**6),
        seconds_per_position=_seconds(
            settings, "seconds_per_position", defaults.seconds_per_position, where
        ),
        processing_s=_seconds(settings, "processing_s", defaults.processing_s, where),
        queue_phase=_fraction(settings, "queue_phase", defaults.queue_phase, where),
        outcome=str(outcome),
        error=error,
        images=_whole(settings, "images", defaults.images, where, MAX_IMAGES),
        image_urls=_urls(settings, where),
        faults=tuple(
            parse_fault(item, f"{_field(where, 'faults')}[{index}]", slow_s)
            for index, item in enumerate(faults)
        ),
    )


# The realistic workload: a busy upstream with a few workers (see `realistic_spec`).
REALISTIC_POSITIONS = (1, 8)
REALISTIC_STEP_S = (3.0, 0.1)
REALISTIC_PROCESSING_S = (12.0, 0.03)


def realistic_spec(
    rng: random.Random, outcome: str, processing_sigma: float = REALISTIC_PROCESSING_S[1]
) -> JobSpec:
    """A job drawn as a busy upstream serves it, the distributions being:

    - `queue_positions`: uniform from 1 to 8: the service is busy, a new job always waits;
    - `seconds_per_position`: normal, mean 3 s, standard deviation 0.1 s (at least 0.5 s),
      drawn per job: a position frees each time one of the 4 workers finishes a job (12 s of
      processing over 4 workers), a pace that drifts a little over minutes;
    - `queue_phase`: uniform from 0 to 1: the job ahead is anywhere in its processing;
    - `processing_s`: log-normal, median 12 s, sigma `processing_sigma` (0.03 by default, about
      ±0.36 s): fixed-step sampling on a dedicated GPU takes nearly the same time every run; a
      larger sigma models mixed models, sizes or hardware.

    A job is thus 21 s from creation to its end on average (9 to 38 s)."""
    low, high = REALISTIC_POSITIONS
    step_mean, step_sd = REALISTIC_STEP_S
    median = REALISTIC_PROCESSING_S[0]
    return JobSpec(
        queue_positions=rng.randint(low, high),
        seconds_per_position=max(0.5, rng.gauss(step_mean, step_sd)),
        processing_s=median * math.exp(rng.gauss(0.0, processing_sigma)),
        outcome=outcome,
        queue_phase=rng.random(),
    )


def new_job_id(rng: random.Random) -> str:
    """`job_` and 12 random lower-case alphanumerics."""
    return "job_" + "".join(rng.choices(_LOWER_ALNUM, k=12))


def make_output(rng: random.Random, images: int, urls: tuple[str, ...] = ()) -> dict[str, Any]:
    """A succeeded job's `output`: an image per URL of `urls`, else `images` images at random
    CDN URLs; each with a slug; and a seed."""

    def slug(k: int, alphabet: str = _LOWER_ALNUM) -> str:
        return "".join(rng.choices(alphabet, k=k))

    def image(url: str | None) -> dict[str, str]:
        url = url or f"https://images.betterwaifu.com/{slug(6)}/{slug(6)}.webp"
        return {"url": url, "id": slug(16, _ALNUM)}

    chosen: list[str | None] = list(urls) if urls else [None] * images
    return {"images": [image(url) for url in chosen], "seed": rng.randrange(2**32)}


@dataclass(slots=True)
class _Pending:
    fault: Fault
    left: int


class Job:
    """One simulated generation: its timeline, its pending faults and its poll count."""

    __slots__ = (
        "_faults",
        "_processing_body",
        "_terminal_body",
        "created_at",
        "id",
        "output",
        "poll_times",
        "polls",
        "queue_end",
        "reads",
        "spec",
        "t0",
        "terminal_time",
    )

    def __init__(
        self,
        job_id: str,
        spec: JobSpec,
        t0: float,
        created_at: float,
        output: dict[str, Any] | None,
        *,
        reads: bool = False,
    ) -> None:
        """`t0` is on the simulator's clock, `created_at` on the wall clock; `output` is None
        exactly when the job fails; with `reads`, a processing answer tells its progress."""
        self.id = job_id
        self.reads = reads
        self.spec = spec
        self.t0 = t0
        self.created_at = created_at
        self.output = output
        self.polls = 0
        # When the last polls came, on the simulator's clock (the bench reads their pattern).
        self.poll_times: deque[float] = deque(maxlen=MAX_POLL_TIMES)
        self.queue_end = t0
        if spec.queue_positions:
            waited = spec.queue_positions - spec.queue_phase
            self.queue_end = t0 + waited * spec.seconds_per_position
        self.terminal_time = self.queue_end + spec.processing_s
        self._faults = deque(_Pending(fault, fault.count) for fault in spec.faults)
        self._processing_body = orjson.dumps({"id": job_id, "status": "processing"})
        if self.output is not None:
            terminal = {"id": job_id, "status": "succeeded", "output": self.output}
        else:
            terminal = {"id": job_id, "status": "failed", "error": spec.error}
        self._terminal_body = orjson.dumps(terminal)

    def status(self, now: float) -> str:
        """queued, processing, succeeded or failed at clock time `now`."""
        if now < self.queue_end:
            return "queued"
        if now < self.terminal_time:
            return "processing"
        return self.spec.outcome

    def _position(self, now: float) -> int:
        """The queue position at clock time `now` (before `queue_end`): 1 is next."""
        spec = self.spec
        gone = spec.queue_phase + (now - self.t0) / spec.seconds_per_position
        return max(1, min(spec.queue_positions, math.ceil(spec.queue_positions - gone)))

    def body(self, now: float) -> bytes:
        """The JSON a poll at clock time `now` answers, as the vendor documents it."""
        if now < self.queue_end:
            position = self._position(now)
            return orjson.dumps({"id": self.id, "status": "queued", "queue_position": position})
        if now < self.terminal_time:
            return self._processing_body if not self.reads else self._reading(now)
        return self._terminal_body

    def _reading(self, now: float) -> bytes:
        """A processing answer that tells how far the job is, as APIs that report it do: the
        fraction done in hundredths, rounded down, and the whole seconds left."""
        done = (now - self.queue_end) / self.spec.processing_s
        return orjson.dumps(
            {
                "id": self.id,
                "status": "processing",
                "progress": math.floor(100 * done) / 100,
                "eta": round(self.terminal_time - now),
            }
        )

    def view(self, now: float) -> View:
        """The job at clock time `now` as any provider's dialect renders it; progress is the
        elapsed share of processing, the ETA the processing time left."""
        phase = self.status(now)
        processing = phase == "processing"
        spent = now - self.queue_end
        return View(
            job_id=self.id,
            phase=cast(Phase, phase),
            queue_position=self._position(now) if phase == "queued" else None,
            progress=spent / self.spec.processing_s if processing else None,
            eta_s=self.terminal_time - now if processing else None,
            output_urls=tuple(image["url"] for image in (self.output or {}).get("images", ())),
            error=self.spec.error if phase == "failed" else None,
            created_at=self.created_at,
        )

    def polled(self, now: float) -> Fault | None:
        """Count a poll at clock time `now`; the fault it gets, if any are left (each is served
        `count` times)."""
        self.polls += 1
        self.poll_times.append(now)
        if not self._faults:
            return None
        pending = self._faults[0]
        pending.left -= 1
        if pending.left <= 0:
            self._faults.popleft()
        return pending.fault

    def describe(self, now: float) -> dict[str, Any]:
        """The spec, wall-clock creation and terminal times, the poll count and the times of
        the last `MAX_POLL_TIMES` polls (wall clock), and the current status."""
        spec = asdict(self.spec)
        spec["faults"] = [asdict(fault) for fault in self.spec.faults]
        return {
            "id": self.id,
            "status": self.status(now),
            **spec,
            "faults_left": [{"kind": p.fault.kind, "count": p.left} for p in self._faults],
            "created_at": self.created_at,
            "terminal_at": self.created_at + (self.terminal_time - self.t0),
            "polls": self.polls,
            "poll_times": [self.created_at + (at - self.t0) for at in self.poll_times],
            "output": self.output,
        }
