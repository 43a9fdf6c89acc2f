"""Counters that are both Beam metrics and visible in this process while a local run goes on.

DoFns count with ``counter(namespace, name).inc(n)``: that increments the Beam counter (the
source of truth on Dataflow) and a process-local mirror. The mirror serves the live progress
display of ``miraikakaku run`` and the summaries of streaming runs on the DirectRunner, whose
metrics for unbounded pipelines stop updating after the first bundle (seen with Beam 2.74 here:
``result.metrics()`` kept reporting the first bundle's counts while every element was processed).
On a distributed runner the mirror stays in the workers and only Beam's metrics count.
``tick(stage)`` feeds the progress display only.
"""

from __future__ import annotations

import collections
import threading

from apache_beam.metrics import Metrics

__all__ = ["counter", "counters", "tick", "snapshot", "reset"]

_lock = threading.Lock()
_stages: collections.Counter[str] = collections.Counter()
_counts: collections.Counter[tuple[str, str]] = collections.Counter()


class _Counter:
    def __init__(self, namespace: str, name: str) -> None:
        self.key = (namespace, name)
        self._beam = Metrics.counter(namespace, name)

    def inc(self, n: int = 1) -> None:
        self._beam.inc(n)
        with _lock:
            _counts[self.key] += n


def counter(namespace: str, name: str) -> _Counter:
    """A counter that is a Beam metric and a local mirror (see the module docstring)."""
    return _Counter(namespace, name)


def counters() -> dict[tuple[str, str], int]:
    """The local mirror: (namespace, name) → count."""
    with _lock:
        return dict(_counts)


def tick(stage: str, n: int = 1) -> None:
    """Add ``n`` to the progress of ``stage`` (read, ordered, predicted, written)."""
    with _lock:
        _stages[stage] += n


def snapshot() -> dict[str, int]:
    """A copy of the stage progress counts."""
    with _lock:
        return dict(_stages)


def reset() -> None:
    """Zero everything (at the start of a run)."""
    with _lock:
        _stages.clear()
        _counts.clear()
