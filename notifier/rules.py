"""Matching users' alert rules (``AlertRule`` rows) against market events.

``RuleBook`` holds the enabled rules indexed by instrument id and reloads them from the
application database when they change (a cheap ``max(updated_at), count(*)`` poll), so rules
created, edited or disabled through the API apply without a restart. ``BarHistory`` keeps the
last closes and volumes per instrument and source (a ring buffer, warmed from the serving store
the first time an instrument with rules is seen). ``RuleMatcher.match(event)`` returns the rules
an event fires, after the per-rule cooldown (in event time).

Rule semantics (``serving.app.models.RuleKind``), on daily bars (``interval == "1d"``):

* ``price_above``: previous close ``< level`` and close ``>= level``;
* ``price_below``: previous close ``> level`` and close ``<= level``;
* ``pct_move``: ``|p / p[window sessions ago] - 1| >= threshold`` with ``p`` the adjusted
  close when the source has one, else the close;
* ``volume_spike``: ``volume >= multiplier * mean(volume of the previous window bars)``;
* ``predicted_move``: a champion prediction with ``|predicted_log_return| >= threshold``;
* ``market_alert``: a pipeline alert event, optionally only of ``params["alert_kinds"]``.

Try it: ``python -m pytest -q tests/unit/test_notifier_rules.py``.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from notifier.events import MarketEvent
from serving.app.models import AlertRule, RuleKind, utc

__all__ = [
    "HISTORY_SIZE",
    "Bar",
    "BarHistory",
    "BarLoader",
    "RuleSpec",
    "Match",
    "RuleBook",
    "RuleMatcher",
    "store_bar_loader",
    "evaluate",
    "save_last_fired",
]

log = logging.getLogger(__name__)

HISTORY_SIZE = 260
"""Bars kept per instrument and source (about a year of sessions); rule windows are at most
``HISTORY_SIZE - 1``."""

PRICE_KINDS = frozenset({RuleKind.price_above.value, RuleKind.price_below.value,
                         RuleKind.pct_move.value, RuleKind.volume_spike.value})


@dataclasses.dataclass(frozen=True)
class Bar:
    """One daily bar as the rules need it.

    Attributes:
        session_date: exchange-local session date.
        close: close, quote currency.
        price: adjusted close when the source has one, else close (quote currency).
        volume: shares, or None.
    """

    session_date: dt.date
    close: float
    price: float
    volume: float | None


BarLoader = Callable[[str, str, dt.date, int], Sequence[Bar]]
"""``loader(instrument_id, source, before, n)``: the last ``n`` daily bars of one source with
``session_date < before``, oldest first."""


def store_bar_loader(store: Any) -> BarLoader:
    """A ``BarLoader`` over a serving store's ``get_bars`` (``stores.base.ServingStore``)."""

    def load(instrument_id: str, source: str, before: dt.date, n: int) -> list[Bar]:
        # ~1.6 calendar days per session plus holidays: ask for enough days, keep the last n.
        start = before - dt.timedelta(days=int(n * 1.6) + 10)
        rows = store.get_bars(instrument_id, interval="1d", start=start,
                              end=before - dt.timedelta(days=1), source=source)
        bars = [Bar(r.session_date, r.close, r.adj_close if r.adj_close is not None else r.close,
                    r.volume) for r in rows if r.session_date < before]
        return bars[-n:]

    return load


class BarHistory:
    """The last ``size`` daily bars per (instrument, source), sorted by session date.

    A bar for a session already held replaces it (a replay or a correction); a bar older than
    the newest held is inserted in date order. Missing history is loaded with ``loader`` the
    first time a key is seen (bars strictly before the event's session).

    Args:
        loader: where to warm history from (None: start empty).
        size: bars kept per key.
    """

    def __init__(self, loader: BarLoader | None = None, size: int = HISTORY_SIZE) -> None:
        self._loader = loader
        self._size = size
        self._bars: dict[tuple[str, str], list[Bar]] = {}

    def __len__(self) -> int:
        return len(self._bars)

    def previous(self, instrument_id: str, source: str, session_date: dt.date) -> list[Bar]:
        """Held bars strictly before ``session_date``, oldest first (warms the key if new)."""
        bars = self._held(instrument_id, source, session_date)
        i = bisect.bisect_left([b.session_date for b in bars], session_date)
        return bars[:i]

    def add(self, instrument_id: str, source: str, bar: Bar) -> None:
        """Insert or replace ``bar`` (by session date), keeping the newest ``size`` bars."""
        bars = self._held(instrument_id, source, bar.session_date)
        dates = [b.session_date for b in bars]
        i = bisect.bisect_left(dates, bar.session_date)
        if i < len(bars) and bars[i].session_date == bar.session_date:
            bars[i] = bar
        else:
            bars.insert(i, bar)
        del bars[:-self._size]

    def _held(self, instrument_id: str, source: str, session_date: dt.date) -> list[Bar]:
        key = (instrument_id, source)
        bars = self._bars.get(key)
        if bars is None:
            bars = list(self._loader(instrument_id, source, session_date, self._size)
                        if self._loader else [])
            self._bars[key] = bars
        elif bars and session_date < bars[0].session_date and self._loader:
            # an event older than everything held (a replay from the start): reload around it
            bars[:] = list(self._loader(instrument_id, source, session_date, self._size))
        return bars


@dataclasses.dataclass
class RuleSpec:
    """An enabled rule as the matcher holds it (a detached copy of the ``AlertRule`` row)."""

    id: int
    user_id: int
    name: str
    instrument_id: str
    kind: str
    params: dict[str, Any]
    channels: list[str]
    cooldown_seconds: int
    last_fired_at: dt.datetime | None

    @classmethod
    def of(cls, row: AlertRule) -> RuleSpec:
        """Copy an ``AlertRule`` row."""
        return cls(row.id, row.user_id, row.name, row.instrument_id, row.kind,
                   dict(row.params or {}), list(row.channels or []), int(row.cooldown_seconds),
                   utc(row.last_fired_at))


@dataclasses.dataclass(frozen=True)
class Match:
    """A rule an event fired.

    Attributes:
        rule: the rule.
        event: the event.
        value: what crossed: the close (price kinds, quote currency), the move as a fraction
            (``pct_move``), the volume in shares (``volume_spike``), the predicted log return
            (``predicted_move``), the alert's value (``market_alert``).
        context: values for the notification text (level, threshold, window, previous close...).
    """

    rule: RuleSpec
    event: MarketEvent
    value: float
    context: dict[str, Any]

    @property
    def dedup_key(self) -> str:
        """``{rule_id}/{event_id}``: unique per user (a replayed event notifies once)."""
        return f"{self.rule.id}/{self.event.event_id}"


def evaluate(rule: RuleSpec, event: MarketEvent,
             previous: Sequence[Bar]) -> tuple[float, dict[str, Any]] | None:
    """Whether ``rule`` fires on ``event`` given the bars before it (cooldown not applied).

    Args:
        rule: the rule.
        event: the event (its instrument is the rule's).
        previous: bars of the event's instrument and source before its session, oldest first.

    Returns:
        ``(value, context)`` when it fires (see ``Match``), else None.
    """
    p = rule.params
    kind = rule.kind
    if event.type == "price":
        if kind not in PRICE_KINDS or event.close is None or event.interval != "1d":
            return None
        if kind in (RuleKind.price_above.value, RuleKind.price_below.value):
            if not previous:
                return None
            level, prev, close = float(p["level"]), previous[-1].close, event.close
            crossed = (prev < level <= close) if kind == RuleKind.price_above.value else (
                prev > level >= close)
            return (close, {"level": level, "previous_close": prev}) if crossed else None
        window = int(p["window"])
        if kind == RuleKind.pct_move.value:
            if len(previous) < window:
                return None
            base = previous[-window].price
            price = event.feature_price
            if not base or price is None:
                return None
            move = price / base - 1.0
            if abs(move) >= float(p["threshold"]):
                return move, {"threshold": float(p["threshold"]), "window": window,
                              "base_price": base, "base_date": previous[-window].session_date}
            return None
        # volume_spike
        vols = [b.volume for b in previous[-window:]]
        if event.volume is None or len(vols) < window or any(v is None for v in vols):
            return None
        mean = sum(vols) / window  # type: ignore[arg-type]
        multiplier = float(p["multiplier"])
        if mean > 0 and event.volume >= multiplier * mean:
            return event.volume, {"multiplier": multiplier, "window": window,
                                  "mean_volume": mean, "ratio": event.volume / mean}
        return None
    if event.type == "prediction":
        if kind != RuleKind.predicted_move.value or event.role not in (None, "champion"):
            return None
        r = event.predicted_log_return
        if r is not None and abs(r) >= float(p["threshold"]):
            return r, {"threshold": float(p["threshold"])}
        return None
    if event.type == "alert" and kind == RuleKind.market_alert.value:
        kinds = p.get("alert_kinds")
        if kinds and event.alert_kind not in kinds:
            return None
        return (event.alert_value if event.alert_value is not None else 0.0), {
            "threshold": event.alert_threshold}
    return None


class RuleBook:
    """Enabled rules indexed by instrument id, reloaded from the database when they change.

    Args:
        poll_seconds: how often ``refresh`` asks the database whether rules changed.
        clock: monotonic clock in seconds (tests pass their own).
    """

    def __init__(self, poll_seconds: float = 1.0,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.poll_seconds = poll_seconds
        self._clock = clock or time.monotonic
        self._by_instrument: dict[str, list[RuleSpec]] = {}
        self._by_id: dict[int, RuleSpec] = {}
        self._version: tuple[Any, int] | None = None
        self._checked_at: float | None = None
        self.reloads = 0

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def instruments(self) -> set[str]:
        """Instrument ids with at least one enabled rule."""
        return set(self._by_instrument)

    def for_instrument(self, instrument_id: str) -> list[RuleSpec]:
        """Enabled rules on ``instrument_id`` (empty list when none)."""
        return self._by_instrument.get(instrument_id, [])

    def rules(self) -> list[RuleSpec]:
        """Every enabled rule held."""
        return list(self._by_id.values())

    def get(self, rule_id: int) -> RuleSpec | None:
        """The enabled rule ``rule_id``, or None."""
        return self._by_id.get(rule_id)

    def set_rules(self, rules: Iterable[RuleSpec]) -> None:
        """Replace the rules with ``rules`` (no database: embedding, tests)."""
        self._by_id = {r.id: r for r in rules}
        self._by_instrument = {}
        for r in self._by_id.values():
            self._by_instrument.setdefault(r.instrument_id, []).append(r)

    def refresh(self, session: Session, *, force: bool = False) -> bool:
        """Reload the rules if they changed since the last load.

        Asks the database at most every ``poll_seconds`` (unless ``force``): ``max(updated_at)``
        and ``count(*)`` of ``alert_rules`` (a deletion changes the count, an edit or a
        disable the timestamp).

        Returns:
            True when the rules were reloaded.
        """
        now = self._clock()
        if not force and self._checked_at is not None and \
                now - self._checked_at < self.poll_seconds:
            return False
        self._checked_at = now
        version = tuple(session.execute(
            select(func.max(AlertRule.updated_at), func.count(AlertRule.id))).one())
        if version == self._version and not force:
            return False
        self.load(session)
        self._version = version  # type: ignore[assignment]
        return True

    def load(self, session: Session) -> None:
        """Load every enabled rule, keeping in-memory ``last_fired_at`` when it is newer."""
        old = self._by_id
        by_id: dict[int, RuleSpec] = {}
        by_instrument: dict[str, list[RuleSpec]] = {}
        for row in session.scalars(select(AlertRule).where(AlertRule.enabled.is_(True))
                                   .order_by(AlertRule.id)):
            spec = RuleSpec.of(row)
            prev = old.get(spec.id)
            if prev is not None and prev.last_fired_at is not None and (
                    spec.last_fired_at is None or prev.last_fired_at > spec.last_fired_at):
                spec.last_fired_at = prev.last_fired_at
            by_id[spec.id] = spec
            by_instrument.setdefault(spec.instrument_id, []).append(spec)
        self._by_id, self._by_instrument = by_id, by_instrument
        self.reloads += 1
        log.info("loaded %d enabled alert rules on %d instruments", len(by_id),
                 len(by_instrument))


class RuleMatcher:
    """Matches events against a ``RuleBook``, keeping bar history and applying cooldowns.

    Args:
        book: the rules.
        history: bar history (default: empty, no warm-up).
    """

    def __init__(self, book: RuleBook, history: BarHistory | None = None) -> None:
        self.book = book
        self.history = history if history is not None else BarHistory()

    def match(self, event: MarketEvent) -> list[Match]:
        """The rules ``event`` fires, cooldown applied; records the event's bar in history.

        Only instruments with rules are tracked. A rule in cooldown (``event_time -
        last_fired_at < cooldown_seconds``) does not fire; call ``fired`` for the matches that
        were notified.
        """
        rules = self.book.for_instrument(event.instrument_id)
        if not rules:
            return []
        previous: list[Bar] = []
        is_bar = event.type == "price" and event.interval == "1d" and event.close is not None
        if is_bar and any(r.kind in PRICE_KINDS for r in rules):
            source = event.source or ""
            previous = self.history.previous(event.instrument_id, source, event.session_date)
        out: list[Match] = []
        for rule in rules:
            hit = evaluate(rule, event, previous)
            if hit is None:
                continue
            last = rule.last_fired_at
            if last is not None and (event.event_time - last).total_seconds() < \
                    rule.cooldown_seconds:
                continue
            out.append(Match(rule, event, hit[0], hit[1]))
        if is_bar and any(r.kind in PRICE_KINDS for r in rules):
            self.history.add(event.instrument_id, event.source or "",
                             Bar(event.session_date, event.close,  # type: ignore[arg-type]
                                 event.feature_price, event.volume))  # type: ignore[arg-type]
        return out

    def fired(self, matches: Iterable[Match]) -> None:
        """Start the cooldown of each matched rule at its event's time."""
        for m in matches:
            last = m.rule.last_fired_at
            if last is None or m.event.event_time > last:
                m.rule.last_fired_at = m.event.event_time


def save_last_fired(session: Session, rules: Iterable[RuleSpec]) -> None:
    """Persist ``last_fired_at`` of ``rules`` without touching ``updated_at`` (so the notifier's
    own writes do not look like rule edits to ``RuleBook.refresh``)."""
    for r in rules:
        if r.last_fired_at is not None:
            session.execute(update(AlertRule).where(AlertRule.id == r.id).values(
                last_fired_at=r.last_fired_at, updated_at=AlertRule.updated_at))
