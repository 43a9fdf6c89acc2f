"""Exchange calendars: sessions, regular hours (opens, closes, Tokyo's lunch break), holidays,
half days, session ordinals and gaps inside a session.

Wraps ``exchange_calendars`` (XNYS, XTKS, ...) with the lookups the pipeline needs per bar, made
cheap by precomputing one dict per calendar. Run ``python -m miraikakaku.calendars XTKS 2018-01-02``
to see how a date resolves.

Rules (source: the exchange_calendars package, which encodes NYSE and JPX holiday rules and half
days):

* a daily bar's event time is the UTC close of its session (NYSE half day 2013-11-29 closes 13:00
  New York time = 18:00 UTC);
* a date that is not a session inside the calendar's range (a holiday, a weekend; the TSE's
  Saturday sessions before 1989) gets the calendar's regular close time on that local date and the
  quality flag ``not_a_session``;
* a date before the calendar's earliest supported date (XTKS: 1997-01-01) gets the regular close
  time and the flag ``calendar_estimated``.

Regular hours (``is_open``, ``session_bounds``, ``minutes_in_session``, ``intraday_gaps``) are
exchange_calendars' schedule: XNYS 09:30-16:00 New York (13:00 on half days: the day after
Thanksgiving, Dec 24, Jul 3, per NYSE's early-close rules); XTKS 09:00-15:00 Tokyo with the lunch
break 11:30-12:30 on every session exchange_calendars knows (1997 onward; the real morning session
ended at 11:00 before 2011-11-21, which exchange_calendars 4.13 does not model), and 15:30 closes
from 2024-11-05 (TSE's extended afternoon session). exchange_calendars 4.13 has no XTKS early
closes, and counts the 2020-10-01 TSE system outage as a non-session. Pre-market, after-hours and
the lunch break are outside regular hours.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import sys
import zoneinfo
from collections.abc import Iterable
from typing import NamedTuple

import exchange_calendars as xcals
import numpy as np
import pandas as pd

__all__ = ["SessionCalendar", "SessionBounds", "IntradayGap", "get_calendar",
           "FLAG_NOT_A_SESSION", "FLAG_CALENDAR_ESTIMATED", "FLAG_INTRADAY_GAP"]

FLAG_NOT_A_SESSION = "not_a_session"
FLAG_CALENDAR_ESTIMATED = "calendar_estimated"
FLAG_INTRADAY_GAP = "intraday_gap"
"""Quality flag of an intraday bar that follows missing regular-session minutes of its session."""

_MINUTE = dt.timedelta(minutes=1)


class SessionBounds(NamedTuple):
    """Regular hours of one session, UTC aware datetimes.

    Attributes:
        open, close: the session's regular open and close (close = 13:00 New York on a half day).
        break_start, break_end: the lunch break (XTKS 11:30-12:30 Tokyo), None without a break.
    """

    open: dt.datetime
    close: dt.datetime
    break_start: dt.datetime | None
    break_end: dt.datetime | None

    def intervals(self) -> list[tuple[dt.datetime, dt.datetime]]:
        """The trading intervals ``[(start, end), ...]`` (two around a lunch break, else one)."""
        if self.break_start is None or self.break_end is None:
            return [(self.open, self.close)]
        return [(self.open, self.break_start), (self.break_end, self.close)]


class IntradayGap(NamedTuple):
    """Missing regular-session minutes inside one session.

    Attributes:
        start: the first missing minute (UTC, the start of the bar that should be there).
        end: the start of the next bar present, or the session close for a trailing gap
            (UTC, exclusive).
        minutes_missing: regular minutes in ``[start, end)`` (a lunch break inside is not
            counted).
    """

    start: dt.datetime
    end: dt.datetime
    minutes_missing: int


def _utc(t) -> dt.datetime | None:
    if t is None or pd.isna(t):
        return None
    return t.to_pydatetime().astimezone(dt.timezone.utc)

_END = "2030-12-31"


class SessionCalendar:
    """Precomputed session lookups for one exchange calendar.

    Args:
        name: an exchange_calendars code (``XNYS``, ``XTKS``).

    Raises:
        exchange_calendars.errors.InvalidCalendarName: for an unknown code.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        probe = xcals.get_calendar(name)
        bound = probe.bound_min()
        earliest = pd.Timestamp("1980-01-01")
        start = max(earliest, bound) if bound is not None else earliest
        cal = xcals.get_calendar(name, start=start, end=_END)
        self.tz = zoneinfo.ZoneInfo(str(cal.tz))
        self.start: dt.date = start.date()
        """First date the calendar knows (sessions and holidays): XTKS 1997-01-01."""
        self.first_session: dt.date = cal.first_session.date()
        self.last_session: dt.date = cal.last_session.date()
        closes = cal.schedule["close"]
        self._close: dict[dt.date, dt.datetime] = {
            d.date(): c.to_pydatetime().astimezone(dt.timezone.utc) for d, c in closes.items()
        }
        self._open: dict[dt.date, dt.datetime] = {
            d.date(): o.to_pydatetime().astimezone(dt.timezone.utc)
            for d, o in cal.schedule["open"].items()
        }
        self._break: dict[dt.date, tuple[dt.datetime, dt.datetime]] = {
            d.date(): (_utc(b), _utc(e))
            for d, b, e in zip(cal.schedule.index, cal.schedule["break_start"],
                               cal.schedule["break_end"], strict=True)
            if not pd.isna(b) and not pd.isna(e)
        }
        self._early: frozenset[dt.date] = frozenset(d.date() for d in cal.early_closes)
        self._sessions: list[dt.date] = sorted(self._close)
        self._ordinal: dict[dt.date, int] = {d: i for i, d in enumerate(self._sessions)}
        # Regular close time (local wall clock) in force on a date: close_times is
        # ((None|date, time), ...) in ascending order.
        self._close_times = [(pd.Timestamp(d).date() if d is not None else dt.date.min, t)
                             for d, t in cal.close_times]

    def _regular_close(self, day: dt.date) -> dt.datetime:
        t = self._close_times[0][1]
        for since, tt in self._close_times:
            if day >= since:
                t = tt
        return dt.datetime.combine(day, t, tzinfo=self.tz).astimezone(dt.timezone.utc)

    def session_close(self, day: dt.date) -> tuple[dt.datetime, tuple[str, ...]]:
        """Return the UTC close of the session on local date ``day`` and any quality flags.

        Returns:
            ``(close_utc, flags)``: flags is empty for a real session, ``("not_a_session",)`` for a
            date the calendar has no session on, ``("calendar_estimated",)`` outside its range.
        """
        close = self._close.get(day)
        if close is not None:
            return close, ()
        if day < self.first_session or day > self.last_session:
            return self._regular_close(day), (FLAG_CALENDAR_ESTIMATED,)
        return self._regular_close(day), (FLAG_NOT_A_SESSION,)

    def regular_session(self, t: dt.datetime) -> dt.date | None:
        """The session date whose regular hours [open, close) contain the instant ``t``, or None
        (pre-market, after-hours, a holiday). Tokyo's lunch break counts as inside the session
        (the session bar spans it); the exchange has no trades then anyway."""
        day = t.astimezone(self.tz).date()
        opened, closed = self._open.get(day), self._close.get(day)
        if opened is None or closed is None:
            return None
        return day if opened <= t < closed else None

    def is_session(self, day: dt.date) -> bool:
        """True when ``day`` is a trading session of this exchange."""
        return day in self._close

    def session_bounds(self, day: dt.date) -> SessionBounds | None:
        """Regular hours of the session on local date ``day`` (UTC), or None for a non-session
        (a holiday, a weekend, a date outside the calendar's range)."""
        close = self._close.get(day)
        if close is None:
            return None
        brk = self._break.get(day, (None, None))
        return SessionBounds(self._open[day], close, brk[0], brk[1])

    def is_open(self, t: dt.datetime) -> bool:
        """True when the instant ``t`` (aware) is inside regular trading hours: after the open,
        before the close, and not in Tokyo's lunch break. Pre-market, after-hours, holidays and
        weekends are closed.

        Raises:
            ValueError: if ``t`` is naive.
        """
        if t.tzinfo is None:
            raise ValueError(f"naive datetime {t!r}: timestamps must carry a time zone")
        bounds = self.session_bounds(t.astimezone(self.tz).date())
        if bounds is None:
            return False
        return any(a <= t < b for a, b in bounds.intervals())

    def sessions_in_range(self, start: dt.date, end: dt.date) -> list[dt.date]:
        """Session dates ``start <= d <= end`` (both inclusive), ascending."""
        lo = bisect.bisect_left(self._sessions, start)
        hi = bisect.bisect_right(self._sessions, end)
        return self._sessions[lo:hi]

    def holidays(self, year: int) -> list[dt.date]:
        """Weekdays (Mon-Fri) of ``year`` without a session: scheduled holidays and ad hoc
        closures (NYSE: Hurricane Sandy 2012-10-29..30, national days of mourning; TSE: the
        2020-10-01 outage, Dec 31..Jan 3), ascending.

        Raises:
            ValueError: if ``year`` is not entirely inside the calendar's known range
                (``start``..``last_session``; XTKS starts 1997).
        """
        first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
        if first < self.start or last > self.last_session:
            raise ValueError(f"{self.name} knows sessions from {self.start} to "
                             f"{self.last_session}, not all of {year}")
        days = pd.bdate_range(first, last)
        return [d.date() for d in days if d.date() not in self._close]

    def is_half_day(self, day: dt.date) -> bool:
        """True when ``day`` is a session that closes before the regular close in force then
        (NYSE 13:00 closes; exchange_calendars' ``early_closes``)."""
        return day in self._early

    def minutes_in_session(self, day: dt.date) -> int:
        """Regular trading minutes of the session on ``day`` (lunch break excluded); 0 for a
        non-session. XNYS: 390 (210 on a half day); XTKS: 300 (330 from 2024-11-05)."""
        bounds = self.session_bounds(day)
        if bounds is None:
            return 0
        return int(sum((b - a).total_seconds() for a, b in bounds.intervals()) // 60)

    def regular_minutes_between(self, start: dt.datetime, end: dt.datetime) -> int:
        """Whole regular trading minutes in ``[start, end)`` (UTC aware), over every session
        the span touches; lunch breaks, nights, weekends and holidays count 0."""
        if end <= start:
            return 0
        total = 0.0
        for day in self.sessions_in_range(start.astimezone(self.tz).date() - dt.timedelta(days=1),
                                          end.astimezone(self.tz).date()):
            for a, b in self.session_bounds(day).intervals():  # type: ignore[union-attr]
                total += max(0.0, (min(b, end) - max(a, start)).total_seconds())
        return int(total // 60)

    def open_time_after(self, t: dt.datetime, duration: dt.timedelta) -> dt.datetime | None:
        """The instant at which the exchange has been open (regular hours) for ``duration``
        counted from ``t``: ``t + duration`` inside one trading interval; across a close, a
        night or a lunch break the count pauses. None past the calendar's last session.

        Used for freshness: an instrument is stale when no event came for ``duration`` of open
        exchange time.
        """
        left = duration
        day = t.astimezone(self.tz).date() - dt.timedelta(days=1)
        while True:
            bounds = self.session_bounds(day)
            if bounds is not None:
                for a, b in bounds.intervals():
                    if b <= t:
                        continue
                    begin = max(a, t)
                    if begin + left <= b:
                        return begin + left
                    left -= b - begin
            if day >= self.last_session:
                return None
            day = self.next_session(day)

    def intraday_gaps(self, bar_starts: Iterable[dt.datetime], *, edges: bool = False
                      ) -> list[IntradayGap]:
        """Missing regular-session 1-minute bars between consecutive bars of one session.

        Args:
            bar_starts: start times (aware) of one instrument's 1-minute bars, any order;
                duplicates are ignored, and so are bars outside regular hours (pre-market,
                after-hours, the lunch break).
            edges: also report the minutes missing between the open and a session's first bar
                and between its last bar and the close (use on a complete history: in a live
                stream the rest of the session may still come). Sessions without any bar are
                never reported.

        Returns:
            ``[IntradayGap(start, end, minutes_missing), ...]`` ascending; a lunch break or the
            early close of a half day is not a gap.
        """
        per_session: dict[dt.date, list[dt.datetime]] = {}
        for t in sorted({minute_floor(b) for b in bar_starts}):
            if self.is_open(t):
                per_session.setdefault(t.astimezone(self.tz).date(), []).append(t)
        gaps: list[IntradayGap] = []
        for day, starts in sorted(per_session.items()):
            bounds = self.session_bounds(day)
            assert bounds is not None
            spans = list(zip(starts, starts[1:], strict=False))
            if edges:
                spans = [(bounds.open - _MINUTE, starts[0])] + spans + [(starts[-1],
                                                                          bounds.close)]
            for prev, nxt in spans:
                gap = self._gap(bounds, prev + _MINUTE, nxt)
                if gap is not None:
                    gaps.append(gap)
        return gaps

    def _gap(self, bounds: SessionBounds, start: dt.datetime, end: dt.datetime
             ) -> IntradayGap | None:
        missing = 0.0
        first: dt.datetime | None = None
        for a, b in bounds.intervals():
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                missing += (hi - lo).total_seconds()
                first = lo if first is None else first
        if first is None or missing < 60:
            return None
        return IntradayGap(first, end, int(missing // 60))

    def ordinal(self, day: dt.date) -> float:
        """Session ordinal (0 = first session), fractional for non-sessions.

        Used to count sessions between two bars: ``ordinal(b) - ordinal(a)`` is 1 for consecutive
        sessions. A non-session date gets the ordinal of the previous session + 0.5.
        """
        i = self._ordinal.get(day)
        if i is not None:
            return float(i)
        pos = bisect.bisect_left(self._sessions, day)
        if pos == 0 and day < self.first_session:
            # before the calendar: approximate with business days
            return -float(np.busday_count(day, self.first_session))
        return pos - 0.5

    def next_session(self, day: dt.date) -> dt.date:
        """The first session strictly after ``day``.

        Outside the calendar's range (before the first date it knows, ``start``: XTKS before
        1997-01-01; or past its end) the next weekday stands in, as ``ordinal`` counts business
        days there.
        """
        nxt = day + dt.timedelta(days=1)
        while nxt.weekday() >= 5:
            nxt += dt.timedelta(days=1)
        if nxt < self.start:
            return nxt
        pos = bisect.bisect_right(self._sessions, day)
        if pos < len(self._sessions):
            return self._sessions[pos]
        return nxt


def minute_floor(t: dt.datetime) -> dt.datetime:
    """The start of the UTC minute containing ``t`` (aware)."""
    return t.astimezone(dt.timezone.utc).replace(second=0, microsecond=0)


@functools.cache
def get_calendar(name: str) -> SessionCalendar:
    """Return the (cached, process-wide) ``SessionCalendar`` for ``name``."""
    return SessionCalendar(name)


if __name__ == "__main__":  # pragma: no cover - manual inspection
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        sys.exit("usage: python -m miraikakaku.calendars CALENDAR YYYY-MM-DD (XNYS 2013-11-29)")
    cal = get_calendar(sys.argv[1])
    d = dt.date.fromisoformat(sys.argv[2])
    close, flags = cal.session_close(d)
    bounds = cal.session_bounds(d)
    print(f"{cal.name} {d}: session={cal.is_session(d)} half_day={cal.is_half_day(d)} "
          f"minutes={cal.minutes_in_session(d)} next_session={cal.next_session(d)}")
    if bounds is not None:
        print("  " + ", ".join(f"{k}={v:%Y-%m-%d %H:%M} UTC" if v is not None else f"{k}=-"
                               for k, v in bounds._asdict().items()))
    print(f"  daily bar event time (session close) = {close:%Y-%m-%d %H:%M} UTC"
          + (f", flags {', '.join(flags)}" if flags else ""))
