"""Acknowledge Pub/Sub messages only after what they became is written (DirectRunner).

Stub: the ledger and the DirectRunner read evaluator land here. ``settle(records)`` is the one
call the sinks and the deduplication make once a record is durable or dropped as a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["settle"]


def settle(records: Iterable[object]) -> int:
    """Mark the messages the given records came from as done (stub: nothing to settle).

    Args:
        records: ``PriceEvent`` (``provenance``), ``DeadLetter`` (``origin``, ``position``) or
            ``SupersededRevision`` (its ``event``) records; others are ignored.

    Returns:
        The number of messages settled by this call.
    """
    del records
    return 0
