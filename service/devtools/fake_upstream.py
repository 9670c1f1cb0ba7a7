"""A fast, faithful simulator of the upstream generation API, with faults on demand.

`webhook-bridge fake-upstream` (or `python -m service.devtools.fake_upstream`) serves:

```
POST /api/v1/generate        create a job; an optional "sim" object in the body steers it
GET  /api/v1/generate/{id}   queued -> processing -> succeeded | failed, by the clock
POST /_sim/jobs              create a job from a sim object, optionally with a chosen "id"
GET  /_sim/jobs/{id}         its settings, created_at / terminal_at (epoch seconds), polls
GET  /_sim/stats             request counters of /api/v1 (the /_sim endpoints are not counted)
POST /_sim/reset             forget every job and counter
```

Every job follows the settings `--queue-positions`, `--seconds-per-position` and
`--processing-s` unless its sim object says otherwise; with `--workload realistic` each job's
queue and processing times are drawn instead, from the distributions documented on
`upstream_jobs.realistic_spec` (and in docs/pacing.md): `GET /_sim/jobs/{id}` shows the draw.
With `--readings progress` a processing answer also tells `progress` (0 to 1) and `eta` (seconds
left), for trying the bridge's progress-aware pacing; by default it is the vendor's, without them.

`--profile NAME` speaks another provider's API instead (`dialect_upstream`, with the dialects
of `providers`), at the root; `--profile runway --profile fal` serves each under its own
prefix, `/runway` and `/fal`, as separate simulators: each its own jobs, faults and
counters, its API at `http://HOST:PORT/runway/...` and its control endpoints at
`http://HOST:PORT/runway/_sim/...`. `--profile betterwaifu` is the default simulator, so it can
be served beside others.

`/api/v1` needs `Authorization: Bearer <key>`; `/_sim` needs nothing. A `drop` fault closes the
connection without a byte of answer (see `asgi.drop_connection` for what clients see). The app
and its settings live in `simulator`, a job's timeline and faults in `upstream_jobs`; this module
is the entry point: `build_app` and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pkgutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.devtools import asgi, providers
from service.devtools.dialect_upstream import DialectUpstream
from service.devtools.simulator import FakeUpstream, SimulatorConfig

__all__ = [
    "SimulatorConfig", "build_app", "command", "config_from_args", "configure_parser",
    "profile_names",
]  # fmt: skip

BETTERWAIFU = "betterwaifu"


def profile_names() -> list[str]:
    """The profiles the simulator speaks: betterwaifu and each module of `providers`
    (`openai_videos.py` speaks `openai-videos`)."""
    modules = pkgutil.iter_modules(providers.__path__)
    return [BETTERWAIFU, *sorted(module.name.replace("_", "-") for module in modules)]


def _simulator(
    profile: str, config: SimulatorConfig, clock: Callable[[], float], sleep: asgi.Sleep
) -> ASGIApp:
    if profile == BETTERWAIFU:
        return FakeUpstream(config, clock, sleep)
    module = importlib.import_module(f"{providers.__name__}.{profile.replace('-', '_')}")
    return DialectUpstream(module.PROVIDER, config, clock, sleep)


def build_app(
    config: SimulatorConfig,
    clock: Callable[[], float] = time.monotonic,
    *,
    sleep: asgi.Sleep = asyncio.sleep,
    profiles: Sequence[str] = (),
) -> ASGIApp:
    """The simulator app; `clock` drives job timelines, `sleep` serves slow answers. Without
    `profiles` it speaks BetterWaifu's API, with one that profile's at the root, with several
    each under `/<name>`."""
    apps = {name: _simulator(name, config, clock, sleep) for name in profiles or [BETTERWAIFU]}
    if len(apps) == 1:
        return next(iter(apps.values()))
    return Prefixes(apps)


class Prefixes:
    """Several simulators in one server, each under `/<name>`: `/runway/v1/tasks/x` is the
    runway simulator's `/v1/tasks/x`."""

    def __init__(self, apps: Mapping[str, ASGIApp]) -> None:
        self._apps = dict(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        name, _, rest = scope["path"][1:].partition("/")
        app = self._apps.get(name)
        if app is None:
            known = ", ".join(f"/{known}" for known in self._apps)
            await asgi.send_json(send, 404, {"error": f"no simulator at /{name} (serving {known})"})
            return
        root = scope.get("root_path", "") + "/" + name
        await app({**scope, "path": "/" + rest, "root_path": root}, receive, send)


_FLAG_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int, "int | None": int, "float": float, "str": str,
}  # fmt: skip


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add --host, --port, --api-key (repeatable) and one flag per SimulatorConfig setting."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9090, help="port to listen on (0: any)")
    parser.add_argument(
        "--api-key", action="append", metavar="KEY", help="accepted API key (default bw_test_key)"
    )
    parser.add_argument(
        "--profile",
        action="append",
        choices=profile_names(),
        metavar="NAME",
        help="speak this provider's API instead of BetterWaifu's (one of "
        f"{', '.join(profile_names())}); repeat it to serve several at once, each under /NAME: "
        "its base URL is then http://HOST:PORT/NAME and its /_sim/ endpoints are under it",
    )
    for setting in fields(SimulatorConfig):
        if setting.name == "api_keys":
            continue
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            type=_FLAG_TYPES[str(setting.type)],
            default=setting.default,
            help=f"{setting.metadata['help']} (default {setting.default})",
        )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The SimulatorConfig the parsed flags describe; ValueError if it is invalid."""
    settings = {
        f.name: getattr(args, f.name) for f in fields(SimulatorConfig) if f.name != "api_keys"
    }
    if args.api_key:
        return SimulatorConfig(api_keys=frozenset(args.api_key), **settings)
    return SimulatorConfig(**settings)


def command(args: argparse.Namespace) -> int:
    """Serve the simulator until SIGINT or SIGTERM."""
    profiles: list[str] = args.profile or []
    try:
        config = config_from_args(args)
        if len(set(profiles)) < len(profiles):
            raise ValueError("a --profile is given twice")
    except ValueError as exc:
        print(f"fake-upstream: {exc}", file=sys.stderr)
        return 2
    keys = ", ".join(sorted(config.api_keys))
    served = ", ".join(f"{name} at /{name}" for name in profiles)
    if len(profiles) == 1:
        served = f"profile {profiles[0]}"
    about = f"{served}; keys: {keys}" if served else f"keys: {keys}"
    return asgi.serve(
        build_app(config, profiles=profiles),
        args.host,
        args.port,
        lambda url: f"fake-upstream listening on {url} ({about})",
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m service.devtools.fake_upstream [flags]`."""
    parser = argparse.ArgumentParser(prog="fake-upstream", description="Simulate the upstream API.")
    configure_parser(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
