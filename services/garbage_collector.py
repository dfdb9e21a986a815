"""Python's cyclic garbage collector, set for a server's process (docs/decisions.md).

With CPython's defaults the collector cost ingest ~15–25% of its CPU per event, and scoring
~8% (docs/benchmarks.md, "The garbage collector"): a batch of 500 events builds thousands of
dicts and lists that all die with the request, yet every 700 of them alive at once start a
young collection, and the full collections that follow walk the ~190,000 objects of start-up
(modules, the app, the metadata) each time, ~100 ms with the event loop stopped.
"""

from __future__ import annotations

import gc


def settle(young_threshold: int) -> None:
    """Call once the process has started, before it serves: what exists now lives as long as
    the process, so it is frozen out of every later collection (`gc.freeze`), and the young
    generation is collected every `young_threshold` net allocations instead of 700. Cycles
    still get collected; only less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
