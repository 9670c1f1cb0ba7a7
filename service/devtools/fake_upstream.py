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

`/api/v1` needs `Authorization: Bearer <key>`; `/_sim` needs nothing. A `drop` fault closes the
connection without a byte of answer (see `asgi.drop_connection` for what clients see). The app
and its settings live in `simulator`, a job's timeline and faults in `upstream_jobs`; this module
is the entry point: `build_app` and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from service.devtools import asgi
from service.devtools.simulator import FakeUpstream, SimulatorConfig

__all__ = ["SimulatorConfig", "build_app", "command", "config_from_args", "configure_parser"]


def build_app(
    config: SimulatorConfig,
    clock: Callable[[], float] = time.monotonic,
    *,
    sleep: asgi.Sleep = asyncio.sleep,
) -> asgi.ASGIApp:
    """The simulator app; `clock` drives job timelines, `sleep` serves slow answers."""
    return FakeUpstream(config, clock, sleep)


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
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"fake-upstream: {exc}", file=sys.stderr)
        return 2
    keys = ", ".join(sorted(config.api_keys))
    return asgi.serve(
        build_app(config),
        args.host,
        args.port,
        lambda url: f"fake-upstream listening on {url} (keys: {keys})",
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m service.devtools.fake_upstream [flags]`."""
    parser = argparse.ArgumentParser(prog="fake-upstream", description="Simulate the upstream API.")
    configure_parser(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
