"""Live progress counters for local runs (the DirectRunner executes DoFns in this process).

DoFns call ``tick(stage)``; ``miraikakaku run`` polls ``snapshot()`` from a display thread. On a
distributed runner the ticks stay in the workers and the display shows nothing: Beam's metrics
(counters) remain the source of truth for the run summary, these are only for watching.
"""

from __future__ import annotations

import collections
import threading

__all__ = ["tick", "snapshot", "reset"]

_lock = threading.Lock()
_counts: collections.Counter[str] = collections.Counter()


def tick(stage: str, n: int = 1) -> None:
    """Add ``n`` to the count of ``stage`` (``read``, ``ordered``, ``predicted``, ``written``)."""
    with _lock:
        _counts[stage] += n


def snapshot() -> dict[str, int]:
    """A copy of the current counts."""
    with _lock:
        return dict(_counts)


def reset() -> None:
    """Zero all counts (at the start of a run)."""
    with _lock:
        _counts.clear()
