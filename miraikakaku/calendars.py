"""Exchange calendars: session dates, session closes (UTC) and session ordinals.

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
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import sys
import zoneinfo

import exchange_calendars as xcals
import numpy as np
import pandas as pd

__all__ = ["SessionCalendar", "get_calendar", "FLAG_NOT_A_SESSION", "FLAG_CALENDAR_ESTIMATED"]

FLAG_NOT_A_SESSION = "not_a_session"
FLAG_CALENDAR_ESTIMATED = "calendar_estimated"

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


@functools.cache
def get_calendar(name: str) -> SessionCalendar:
    """Return the (cached, process-wide) ``SessionCalendar`` for ``name``."""
    return SessionCalendar(name)


if __name__ == "__main__":  # pragma: no cover - manual inspection
    cal = get_calendar(sys.argv[1])
    d = dt.date.fromisoformat(sys.argv[2])
    print(cal.session_close(d), cal.is_session(d), cal.next_session(d))
