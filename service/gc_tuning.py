"""The garbage collector's settings for a long-running process of the bridge.

Most of the bridge's garbage is freed by reference counting; the collector only finds cycles.
With CPython's default thresholds a young collection runs several times per request; rarer
young collections cost less in all, as long as each collection of the middle generation still
walks few enough survivors (the watches registered meanwhile) to pause the event loop only
briefly: the threshold below is where that balance was measured (docs/performance.md, section
3). The modules and objects built at start-up are frozen: no full collection walks them again.
The sender process (service/sender.py) applies the same settings.
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
