"""The CPU one poll costs the worker, with nothing else in the way: see bench/README.md.

    .venv/bin/python bench/poll_cost.py [--watches 1000] [--seconds 25] [--runs 5]

The worker as its unit tests build it (`tests/unit/worker_rig.py`: `Worker.build` on the memory
store and a fake clock, the upstream answering `queued` behind an `httpx.MockTransport`) polls
`--watches` watches every 2.5 s of the fake clock for `--seconds`; the process CPU per poll is
printed, the lowest and the median of `--runs` runs. No network, no other process and no real
waiting: what the bridge's own code costs per poll, steady enough to tell two versions apart
(run it from each checkout in turn) where `bench/run.py` phase B moves with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

# The code of the checkout this file is in, whatever is installed: versions are compared so.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import logs
from service.config import LogSettings
from tests.unit.worker_rig import running


async def cost_per_poll(watches: int, seconds: float) -> tuple[float, int]:
    """Process CPU seconds per poll over `seconds` of the fake clock, and the polls made."""
    async with running() as rig:
        for n in range(watches):
            await rig.register(f"job-{n}")
        await rig.run_for(2.5)  # every watch polled once: the first polls' set-up is not timed
        before = len(rig.upstream.requests)
        started = time.process_time()
        await rig.run_for(seconds)
        polls = len(rig.upstream.requests) - before
        return (time.process_time() - started) / polls, polls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watches", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=25.0, help="of the fake clock")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logs.configure(LogSettings(level="warning"))
    runs = [asyncio.run(cost_per_poll(args.watches, args.seconds)) for _ in range(args.runs)]
    costs = [1e6 * cost for cost, _ in runs]
    print(
        f"CPU per poll: {min(costs):.1f} µs lowest, {statistics.median(costs):.1f} µs median "
        f"({args.runs} runs of {runs[0][1]:,} polls)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
