"""The simulator speaking another provider's API: `fake-upstream --profile NAME`.

`DialectUpstream` is the simulator of `simulator.FakeUpstream` (the same jobs, timelines, faults,
counters and `/_sim/` control endpoints) whose API is a provider's dialect instead of the
BetterWaifu one: every request outside `/_sim/` goes to the dialect's routes, where a job is
rendered from its `View` at the moment of the poll. A fault of kind `404` or `401` answers as
the provider answers an unknown job or a wrong key; the other faults are the simulator's own.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import orjson
from starlette.types import Receive, Scope, Send

from service.devtools import asgi
from service.devtools.providers import Answer, Provider, Request
from service.devtools.simulator import FAULT_ANSWERS, SIM, FakeUpstream, SimulatorConfig

PATH_NOT_FOUND: Answer = (404, {"error": "Not found"})


class DialectUpstream(FakeUpstream):
    """The simulator answering in `provider`'s dialect."""

    def __init__(
        self,
        provider: Provider,
        config: SimulatorConfig,
        clock: Callable[[], float],
        sleep: asgi.Sleep,
    ) -> None:
        super().__init__(config, clock, sleep)
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(SIM):
            await self._dialect(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def _reply(self, send: Send, answer: Answer) -> None:
        status, body = answer
        await self._answer(send, status, orjson.dumps(body))

    async def _dialect(self, scope: Scope, receive: Receive, send: Send) -> None:
        provider = self.provider
        request = _request(scope)
        key = provider.presented_key(request)
        if await self._counted(request.method, key, receive, send):
            return
        refusal = provider.refuse(request) if provider.refuse else None
        if refusal is not None:
            await self._reply(send, refusal)
        elif key not in self.config.api_keys:
            await self._reply(send, provider.unauthorized)
        elif request.method == "POST" and request.path == provider.create_path:
            await self._create_job(receive, send)
        elif request.method != "GET":
            await self._reply(send, PATH_NOT_FOUND)
        elif match := provider.status_route.fullmatch(request.path):
            job_id = provider.job_id(request) if provider.job_id else match.group(1)
            await self._status(receive, send, job_id or "")
        elif provider.result_route and (match := provider.result_route.fullmatch(request.path)):
            await self._result(send, match.group(1))
        else:
            await self._reply(send, PATH_NOT_FOUND)

    def _fault_answer(self, kind: str) -> tuple[int, bytes]:
        """A 401 or 404 fault answers as the provider refuses a key or a job."""
        if kind in ("401", "404"):
            status, body = (
                self.provider.unauthorized if kind == "401" else self.provider.not_found("")
            )
            return status, orjson.dumps(body)
        return FAULT_ANSWERS[kind]

    async def _status(self, receive: Receive, send: Send, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            await self._reply(send, self.provider.not_found(job_id))
            return
        now = self._clock()
        fault = job.polled(now)
        if fault is not None and await self._fault(fault, receive, send):
            return
        await self._reply(send, self.provider.answer(job.view(now)))

    async def _result(self, send: Send, job_id: str) -> None:
        provider = self.provider
        job = self._jobs.get(job_id)
        if job is None or provider.render_result is None:
            await self._reply(send, provider.not_found(job_id))
            return
        view = job.view(self._clock())
        refusal = provider.result_error(view) if provider.result_error else None
        await self._reply(send, refusal or (200, provider.render_result(view)))

    async def _create_job(self, receive: Receive, send: Send) -> None:
        """A new job from the body's optional `sim` object, answered as the provider does."""
        job = await self._new_job(receive, send)
        if job is None:
            return
        provider = self.provider
        if provider.created is None:
            await self._reply(send, provider.answer(job.view(self._clock())))
        else:
            await self._reply(send, (200, provider.created(job.id)))


def _request(scope: Scope) -> Request:
    """What a dialect reads of a request; a repeated query parameter keeps its first value."""
    query: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(scope["query_string"].decode("latin-1")):
        query.setdefault(key, value)
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return Request(method=scope["method"], path=scope["path"], query=query, headers=headers)
