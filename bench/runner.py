"""What every benchmark does around its measurements: one entry point for all of them.

`run_bench` makes the temporary directory and the `Services`, runs the benchmark on uvloop (as
the bridge runs), turns Ctrl-C and SIGTERM into a clean stop, removes every process and the
directory whatever happened, prints the report and writes the result, with the command, the
arguments and the machine, to `bench/results/<UTC time>[-name].json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import ROOT, BenchError, Services

Result = dict[str, Any]
# The benchmark itself: given the services, the temporary directory and the run's time stamp.
Body = Callable[[Services, Path, str], Coroutine[Any, Any, Result]]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when installed (the bridge runs on it), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def environment() -> dict[str, Any]:
    """The machine, the versions that matter and the commit, for the result file."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True,
                text=True, check=True, timeout=10,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {
            name: version(name)
            for name in ("webhook-bridge", "httpx", "aiohttp", "httpx-aiohttp", "uvloop", "uvicorn")
        },
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


# py-spy's output formats, and the ending of their files.
PY_SPY_SUFFIXES = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "txt"}


def py_spy(
    services: Services,
    pid: int,
    label: str,
    fmt: str,
    stem: Path,
    seconds: float,
    # --gil: only the thread holding the interpreter, where CPU-bound Python time goes.
    options: Sequence[str] = ("--rate", "100", "--nonblocking", "--gil"),
) -> Callable[[], None]:
    """Start py-spy (from the virtualenv) recording process `pid` for `seconds`, in `fmt` (a
    key of PY_SPY_SUFFIXES), into `stem` plus the format's ending; returns the function that
    waits for it."""
    out = stem.with_name(f"{stem.name}.{PY_SPY_SUFFIXES[fmt]}")
    exe = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if exe is None:
        raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
    spy = services.spawn_tool(
        f"py-spy-{label}",
        [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
         *options, "--format", fmt, "--output", str(out)],
    )  # fmt: skip

    def wait() -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.process.wait(60)
        services.stop(spy)
        print(f"  py-spy profile of {label}: {out}")

    return wait


def run_bench(
    args: argparse.Namespace,
    name: str,
    body: Body,
    *,
    report: Callable[[Result], str] | None = None,
    targets: Callable[[Result], dict[str, Any]] | None = None,
    arguments: dict[str, Any] | None = None,
    cleanup: Callable[[], None] | None = None,
    prefix: str = "bridge-bench-",
) -> int:
    """Run `body` and record its result; the exit status (0, 1 on a `BenchError`, 130 when
    interrupted). `args` needs `results` and `keep_temp`; `arguments` overrides what the
    result file says of them (a password in a URL, say); `cleanup` runs after the services
    are stopped, whatever happened."""
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.results.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    services = Services(workdir)
    # SIGTERM stops the run like Ctrl-C does: through the cleanup below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    factory = loop_factory()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(body(services, workdir, stamp))
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        services.close()
        if cleanup is not None:
            cleanup()
        if args.keep_temp:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if report is not None:
        print(report(result))
    output = {
        "started_at": started.isoformat(),
        "command": [Path(sys.argv[0]).as_posix(), *sys.argv[1:]],
        "arguments": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            **(arguments or {}),
        },
        "event_loop": factory.__module__,
        "environment": environment(),
        **({"targets": targets(result)} if targets is not None else {}),
        **result,
    }
    path = args.results / (f"{stamp}-{name}.json" if name else f"{stamp}.json")
    path.write_text(json.dumps(output, indent=2, default=str) + "\n")
    print(f"results: {path}")
    return 0
