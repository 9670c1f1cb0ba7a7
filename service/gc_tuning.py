"""The garbage collector's settings for a long-running process of the bridge.

Most of the bridge's garbage is freed by reference counting; the collector only finds cycles.
With CPython's default thresholds a young collection runs every 700 allocations, several times
per request. At one every 5,000 it runs seven times less often, while each collection of the
middle generation (every tenth) still walks few enough survivors (the watches registered
meanwhile) to pause the event loop for a few milliseconds only; at 20,000 and more those pauses
reach 100 ms under a stream of registrations. The modules and objects built at start-up are
frozen: no full collection walks them again.

The sender process (service/sender.py) needs this as much as the server: without it, its
collections cost it about a seventh of its webhooks per second (docs/performance.md).
"""

from __future__ import annotations

import gc

# Allocations between two young garbage collections (CPython's default is 700).
YOUNG_THRESHOLD = 5_000


def tune() -> None:
    """Freeze what exists now and make young collections rarer: call once start-up is over."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
