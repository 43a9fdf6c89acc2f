"""Opaque cursors of the paged read endpoints (keyset pagination over the serving store).

A cursor is the base64url (no padding) of the compact JSON ``{"k": [...]}`` holding the key of
the last item of the previous page; the next page holds the items strictly after it in the
endpoint's order, so pages never skip or repeat rows while the pipeline appends new ones:

* bars (``GET /v1/symbols/{symbol}/bars``): ``[row_key, source]``, ascending;
* predictions (``.../predictions``): ``[row_key, model_name, model_version]``, ascending;
* alerts (``GET /v1/alerts``): ``[event_time ISO 8601 UTC, alert_id]``, newest first.

Clients treat cursors as opaque strings: pass ``next_cursor`` back as ``cursor`` with the same
filters (``start``/``end``/``interval``/``source``/``symbol``/``since``); ``next_cursor`` is
null on the last page. A cursor that does not decode, has the wrong shape, or names another
instrument or interval is an ``InvalidRequest`` (422). Try it:
``curl 'localhost:8000/v1/symbols/AAPL/bars?limit=2'`` then ``...&cursor=<next_cursor>``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from typing import Annotated

from fastapi import Query

from serving.app.api.errors import InvalidRequest

__all__ = ["CursorQuery", "encode_cursor", "decode_cursor", "bars_after", "predictions_after",
           "alerts_after", "CURSOR_MAX_LENGTH"]

CURSOR_MAX_LENGTH = 512
"""Longest accepted cursor (characters)."""

CursorQuery = Annotated[
    str | None,
    Query(max_length=CURSOR_MAX_LENGTH,
          description="Opaque cursor: the `next_cursor` of the previous page (same filters).")]
"""The optional ``cursor`` query parameter."""


def encode_cursor(key: Sequence[str]) -> str:
    """The cursor of ``key`` (the last item's sort key, as strings)."""
    raw = json.dumps({"k": list(key)}, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _invalid(reason: str) -> InvalidRequest:
    return InvalidRequest(f"invalid cursor: {reason}",
                          details=[{"loc": ["query", "cursor"], "msg": reason,
                                    "type": "value_error"}])


def decode_cursor(cursor: str, length: int) -> list[str]:
    """The key in ``cursor``.

    Args:
        cursor: what a previous page returned as ``next_cursor``.
        length: how many key parts the endpoint's cursors hold.

    Returns:
        The key parts (strings).

    Raises:
        InvalidRequest: not base64url JSON ``{"k": [<length> strings]}`` (422).
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid("not a cursor returned by this API") from None
    key = value.get("k") if isinstance(value, dict) else None
    if (not isinstance(key, list) or len(key) != length
            or not all(isinstance(k, str) and 0 < len(k) <= 256 for k in key)):
        raise _invalid("not a cursor of this endpoint")
    return key


def bars_after(cursor: str | None, instrument_id: str, interval: str) -> tuple[str, str] | None:
    """The ``(row_key, source)`` to continue after, or None for the first page.

    Raises:
        InvalidRequest: a bad cursor, or one of another instrument or interval (422).
    """
    if cursor is None:
        return None
    row_key, source = decode_cursor(cursor, 2)
    if not row_key.startswith(f"{instrument_id}#{interval}#"):
        raise _invalid("the cursor belongs to another instrument or interval")
    return row_key, source


def predictions_after(cursor: str | None, instrument_id: str) -> tuple[str, str, str] | None:
    """The ``(row_key, model_name, model_version)`` to continue after, or None.

    Raises:
        InvalidRequest: a bad cursor, or one of another instrument (422).
    """
    if cursor is None:
        return None
    row_key, name, version = decode_cursor(cursor, 3)
    if not row_key.startswith(f"{instrument_id}#pred#"):
        raise _invalid("the cursor belongs to another instrument")
    return row_key, name, version


def alerts_after(cursor: str | None) -> tuple[dt.datetime, str] | None:
    """The ``(event_time, alert_id)`` (aware UTC) to continue after (newest first), or None.

    Raises:
        InvalidRequest: a bad cursor (422).
    """
    if cursor is None:
        return None
    when, alert_id = decode_cursor(cursor, 2)
    try:
        event_time = dt.datetime.fromisoformat(when)
    except ValueError:
        raise _invalid("not a cursor of this endpoint") from None
    if event_time.tzinfo is None:
        raise _invalid("not a cursor of this endpoint")
    try:
        return event_time.astimezone(dt.timezone.utc), alert_id
    except OverflowError:
        raise _invalid("not a cursor of this endpoint") from None
