"""The simulated upstream: its settings and the bare-ASGI app that serves them.

Global fault rates hit any `/api/v1` request before it is authenticated or routed (so a faulted
POST creates no job); a job's own faults hit its next polls. The `/_sim` control endpoints need
no key and are not counted in the stats. The hot path (an authenticated poll) is a header scan, a
dict lookup and at most one orjson encoding.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from service.devtools import asgi
from service.devtools.upstream_jobs import (
    DEFAULT_ERROR,
    Fault,
    Job,
    JobSpec,
    SpecError,
    make_output,
    new_job_id,
    parse_spec,
    realistic_spec,
)

API = "/api/v1/"
SIM = "/_sim/"
MALFORMED_BODY = b'{"id": "job_x", "status": '
UNAUTHORIZED = orjson.dumps({"error": "Invalid or missing API key"})
NOT_FOUND = orjson.dumps({"error": "Generation not found"})
ID_REQUIRED = orjson.dumps({"error": "Generation ID is required"})
PATH_NOT_FOUND = orjson.dumps({"error": "Not found"})
NOT_ALLOWED = orjson.dumps({"error": "Method not allowed"})
FAULT_ANSWERS = {
    "5xx": (503, orjson.dumps({"error": "Service temporarily unavailable"})),
    "429": (429, orjson.dumps({"error": "Too many requests"})),
    "malformed": (200, MALFORMED_BODY),
    "404": (404, NOT_FOUND),
    "401": (401, UNAUTHORIZED),
    "400": (400, ID_REQUIRED),
}

Headers = Sequence[tuple[bytes, bytes]]
WORKLOADS = ("fixed", "realistic")
READINGS = ("none", "progress")
# GETs are also counted per 100 ms slot of wall-clock time (GET /_sim/timeline), for the last
# this many slots (10 minutes).
TIMELINE_SLOT_S = 0.1
TIMELINE_SLOTS = 6000


_DURATIONS = (
    "queue_positions", "seconds_per_position", "processing_s", "processing_sigma", "retry_after",
    "slow_s",
)  # fmt: skip


def _rate(help_text: str) -> Any:
    return field(default=0.0, metadata={"help": help_text})


@dataclass
class SimulatorConfig:
    """How the simulator behaves by default; a job's `sim` object overrides the job settings."""

    api_keys: frozenset[str] = field(default_factory=lambda: frozenset({"bw_test_key"}))
    queue_positions: int = field(default=3, metadata={"help": "initial queue position of a job"})
    seconds_per_position: float = field(default=1.0, metadata={"help": "seconds per position"})
    processing_s: float = field(default=3.0, metadata={"help": "seconds spent processing"})
    workload: str = field(
        default="fixed",
        metadata={
            "help": "fixed: every job as the three settings above; realistic: each job's queue "
            "and processing times drawn as documented in upstream_jobs.realistic_spec"
        },
    )
    processing_sigma: float = field(
        default=0.03,
        metadata={"help": "realistic workload: log-normal sigma of the processing time"},
    )
    readings: str = field(
        default="none",
        metadata={
            "help": "none: a processing answer is the vendor's; progress: it also tells "
            '"progress" (the fraction done, in hundredths rounded down) and "eta" (the seconds '
            "left, rounded), as some other APIs do"
        },
    )
    failure_rate: float = _rate("fraction of jobs that end failed")
    seed: int | None = field(default=None, metadata={"help": "seed for ids, outcomes, faults"})
    error_rate: float = _rate("fraction of API requests answered 503")
    rate_limit_rate: float = _rate("fraction of API requests answered 429")
    retry_after: int = field(default=1, metadata={"help": "Retry-After seconds of a global 429"})
    slow_rate: float = _rate("fraction of API requests answered after --slow-s")
    slow_s: float = field(default=2.0, metadata={"help": "delay of a slow answer, seconds"})
    malformed_rate: float = _rate("fraction of API requests answered with truncated JSON")
    drop_rate: float = _rate("fraction of API requests whose connection is closed unanswered")

    def __post_init__(self) -> None:
        for name in _RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if sum(rate for _, rate in self.fault_rates()) > 1.0:
            raise ValueError("the fault rates add up to more than 1")
        for name in _DURATIONS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}")
        if self.readings not in READINGS:
            raise ValueError(f"readings must be one of {', '.join(READINGS)}")

    def fault_rates(self) -> list[tuple[Fault, float]]:
        """Each global fault with its rate."""
        return [
            (Fault("drop"), self.drop_rate),
            (Fault("5xx"), self.error_rate),
            (Fault("429", retry_after=self.retry_after), self.rate_limit_rate),
            (Fault("malformed"), self.malformed_rate),
            (Fault("slow", delay_s=self.slow_s), self.slow_rate),
        ]


# The fractions in SimulatorConfig: the job failure rate and the global fault rates.
_RATES = tuple(
    setting.name for setting in fields(SimulatorConfig) if setting.name.endswith("_rate")
)


def _thresholds(config: SimulatorConfig) -> tuple[tuple[float, Fault], ...]:
    """The cumulative fault rates that one random draw is compared with."""
    thresholds: list[tuple[float, Fault]] = []
    total = 0.0
    for fault, rate in config.fault_rates():
        if rate > 0:
            total += rate
            thresholds.append((total, fault))
    return tuple(thresholds)


class FakeUpstream:
    """The simulator as an ASGI app; its state lives in memory until `POST /_sim/reset`."""

    def __init__(
        self, config: SimulatorConfig, clock: Callable[[], float], sleep: asgi.Sleep
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random(config.seed)
        self._auth = frozenset(
            f"{scheme} {key}".encode() for key in config.api_keys for scheme in ("Bearer", "bearer")
        )
        self._thresholds = _thresholds(config)
        self._jobs: dict[str, Job] = {}
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._requests = self._gets = self._posts = self._dropped = 0
        self._by_status: dict[int, int] = {}
        self._gets_by_key: dict[str, int] = {}
        self._timeline: dict[int, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(API):
                await self._api(scope, receive, send, path[len(API) :])
            elif path.startswith(SIM):
                await self._control(scope, receive, send, path[len(SIM) :])
            else:
                await asgi.send_bytes(send, 404, PATH_NOT_FOUND)

    async def _answer(self, send: Send, status: int, body: bytes, extra: Headers = ()) -> None:
        self._by_status[status] = self._by_status.get(status, 0) + 1
        await asgi.send_bytes(send, status, body, extra=extra)

    async def _api(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        method: str = scope["method"]
        auth = asgi.header(scope, b"authorization")
        key = auth.split(b" ", 1)[-1].decode(errors="replace") if auth else None
        if await self._counted(method, key, receive, send):
            return
        if auth not in self._auth:
            await self._answer(send, 401, UNAUTHORIZED)
        elif route in ("generate", "generate/"):
            if method == "POST":
                await self._create(receive, send)
            elif method == "GET":
                await self._answer(send, 400, ID_REQUIRED)
            else:
                await self._not_allowed(send, b"GET, POST")
        elif route.startswith("generate/"):
            if method == "GET":
                await self._poll(receive, send, route[len("generate/") :])
            else:
                await self._not_allowed(send, b"GET")
        else:
            await self._answer(send, 404, PATH_NOT_FOUND)

    async def _counted(self, method: str, key: str | None, receive: Receive, send: Send) -> bool:
        """Count an API request (a GET by the API `key` it presented), then draw a global fault;
        True when the fault answered it."""
        self._requests += 1
        if method == "GET":
            self._count_get(key)
        elif method == "POST":
            self._posts += 1
        fault = self._roll() if self._thresholds else None
        return fault is not None and await self._fault(fault, receive, send)

    def _count_get(self, key: str | None) -> None:
        """Count a GET, by the API key it presented ("none" without one) and its 100 ms slot."""
        self._gets += 1
        key = "none" if key is None else key
        self._gets_by_key[key] = self._gets_by_key.get(key, 0) + 1
        slot = int(time.time() / TIMELINE_SLOT_S)
        timeline = self._timeline
        if slot not in timeline:
            timeline[slot] = 0
            if len(timeline) > TIMELINE_SLOTS:
                del timeline[min(timeline)]
        timeline[slot] += 1

    async def _not_allowed(self, send: Send, allow: bytes) -> None:
        await self._answer(send, 405, NOT_ALLOWED, [(b"allow", allow)])

    def _roll(self) -> Fault | None:
        draw = self._rng.random()
        for threshold, fault in self._thresholds:
            if draw < threshold:
                return fault
        return None

    async def _fault(self, fault: Fault, receive: Receive, send: Send) -> bool:
        """Serve `fault`; False when the request should still be answered normally."""
        if fault.kind == "slow":
            await self._sleep(fault.delay_s)
            return False
        if fault.kind == "drop":
            self._dropped += 1
            await asgi.drop_connection(receive, send)
            return True
        status, body = self._fault_answer(fault.kind)
        extra = ((b"retry-after", b"%d" % fault.retry_after),) if fault.kind == "429" else ()
        await self._answer(send, status, body, extra)
        return True

    def _fault_answer(self, kind: str) -> tuple[int, bytes]:
        """The answer of a fault that answers: status and body."""
        return FAULT_ANSWERS[kind]

    async def _poll(self, receive: Receive, send: Send, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            await self._answer(send, 404, NOT_FOUND)
            return
        fault = job.polled(self._clock())
        if fault is not None and await self._fault(fault, receive, send):
            return
        await self._answer(send, 200, job.body(self._clock()))

    async def _json_object(self, receive: Receive) -> dict[str, Any]:
        try:
            payload = orjson.loads(await asgi.read_body(receive))
        except asgi.BodyTooLarge:
            raise SpecError(f"the body is larger than {asgi.MAX_BODY} bytes") from None
        except orjson.JSONDecodeError as exc:
            raise SpecError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise SpecError("the body must be a JSON object")
        return payload

    async def _create(self, receive: Receive, send: Send) -> None:
        job = await self._new_job(receive, send)
        if job is not None:
            await self._answer(send, 200, orjson.dumps({"id": job.id, "status": "queued"}))

    async def _new_job(self, receive: Receive, send: Send) -> Job | None:
        """A job from the body's optional `sim` object; None when that is invalid (400 sent)."""
        try:
            payload = await self._json_object(receive)
            spec = self._spec(payload.get("sim") or {}, "sim")
        except SpecError as exc:
            await self._answer(send, 400, orjson.dumps({"error": str(exc)}))
            return None
        return self._add(spec, None)

    def _spec(self, raw: object, where: str) -> JobSpec:
        config = self.config
        failed = config.failure_rate > 0 and self._rng.random() < config.failure_rate
        outcome = "failed" if failed else "succeeded"
        if config.workload == "realistic":
            defaults = realistic_spec(self._rng, outcome, config.processing_sigma)
        else:
            defaults = JobSpec(
                queue_positions=config.queue_positions,
                seconds_per_position=config.seconds_per_position,
                processing_s=config.processing_s,
                outcome=outcome,
                error=DEFAULT_ERROR,
            )
        return parse_spec(raw, defaults, config.slow_s, where)

    def _add(self, spec: JobSpec, job_id: str | None) -> Job:
        while job_id is None or job_id in self._jobs:
            job_id = new_job_id(self._rng)
        output = (
            make_output(self._rng, spec.images, spec.image_urls)
            if spec.outcome == "succeeded"
            else None
        )
        reads = self.config.readings == "progress"
        job = Job(job_id, spec, self._clock(), time.time(), output, reads=reads)
        self._jobs[job_id] = job
        return job

    async def _control(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        method: str = scope["method"]
        if route == "jobs" and method == "POST":
            await self._control_create(receive, send)
        elif route.startswith("jobs/") and method == "GET":
            job = self._jobs.get(route[len("jobs/") :])
            if job is None:
                await asgi.send_bytes(send, 404, NOT_FOUND)
            else:
                await asgi.send_json(send, 200, job.describe(self._clock()))
        elif route == "stats" and method == "GET":
            await asgi.send_json(send, 200, self.stats())
        elif route == "timeline" and method == "GET":
            gets = [[slot * TIMELINE_SLOT_S, n] for slot, n in sorted(self._timeline.items())]
            await asgi.send_json(send, 200, {"slot_s": TIMELINE_SLOT_S, "gets": gets})
        elif route == "faults" and method == "POST":
            await self._control_faults(receive, send)
        elif route == "reset" and method == "POST":
            self._jobs.clear()
            self._reset_counters()
            await asgi.send_json(send, 200, {"ok": True})
        else:
            await asgi.send_bytes(send, 404, PATH_NOT_FOUND)

    async def _control_create(self, receive: Receive, send: Send) -> None:
        try:
            payload = await self._json_object(receive)
            job_id = payload.pop("id", None)
            if job_id is not None and (not isinstance(job_id, str) or not job_id or "/" in job_id):
                raise SpecError("id must be a non-empty string without '/'")
            spec = self._spec(payload, "")
        except SpecError as exc:
            await asgi.send_json(send, 400, {"error": str(exc)})
            return
        if job_id in self._jobs:
            await asgi.send_json(send, 409, {"error": f"job {job_id} already exists"})
            return
        await asgi.send_json(send, 200, {"id": self._add(spec, job_id).id})

    async def _control_faults(self, receive: Receive, send: Send) -> None:
        """Change the global fault rates at run time: a body such as {"error_rate": 1.0}; the
        rates not named keep their values."""
        try:
            payload = await self._json_object(receive)
            unknown = sorted(set(payload) - set(_RATES))
            if unknown:
                raise SpecError(f"{unknown[0]} is not a fault rate ({', '.join(_RATES)})")
            if any(isinstance(v, bool) or not isinstance(v, int | float) for v in payload.values()):
                raise SpecError("fault rates must be numbers")
            config = dataclasses.replace(self.config, **payload)
        except (SpecError, ValueError) as exc:
            await asgi.send_json(send, 400, {"error": str(exc)})
            return
        self.config = config
        self._thresholds = _thresholds(config)
        await asgi.send_json(send, 200, {name: getattr(config, name) for name in _RATES})

    def stats(self) -> dict[str, Any]:
        """Counters of the /api/v1 requests since start or the last reset."""
        return {
            "requests_total": self._requests,
            "gets_total": self._gets,
            "posts_total": self._posts,
            "by_status_code": {str(code): n for code, n in sorted(self._by_status.items())},
            "dropped_total": self._dropped,
            "gets_by_key": dict(self._gets_by_key),
            "jobs_total": len(self._jobs),
        }
