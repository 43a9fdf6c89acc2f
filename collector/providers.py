"""Live quotes from a public price API as ``PriceEvent``s, and a loop that polls and publishes them.

``QuoteProvider`` is the small interface (a ``name`` and ``fetch_quotes(symbols)``);
``AlphaVantageProvider`` implements it over Alpha Vantage's ``GLOBAL_QUOTE`` endpoint with httpx
(the transport is injectable: tests serve recorded responses in the documented format from
``tests/fixtures/provider/`` through ``httpx.MockTransport``). The API key comes from the
environment variable ``MIRAIKAKAKU_ALPHAVANTAGE_API_KEY`` and never appears in errors or logs.
Errors are split the way the publisher's retry policy is: ``TransientProviderError`` (rate limit,
HTTP 429/5xx, network) is worth trying again later, ``PermanentProviderError`` (an ``Error
Message`` answer, an unknown symbol, a malformed answer) is not. ``poll(provider, ["IBM"], topic,
interval_s=60, iterations=10)`` fetches and publishes through ``publish_events``; a symbol that
fails permanently becomes a dead letter in the report, a transient failure is counted and retried
at the next iteration. Manual run: ``python -m collector.cli publish --provider alphavantage
--symbols IBM --iterations 1``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import httpx

from collector.publisher import PublishReport, RetryPolicy, make_publisher, publish_events
from miraikakaku.calendars import get_calendar
from miraikakaku.instruments import InstrumentMaster, load_master
from miraikakaku.schema import SCHEMA_VERSION, DeadLetter, PriceEvent, make_event_id

__all__ = [
    "API_KEY_ENV",
    "FLAG_PARTIAL_BAR",
    "AlphaVantageProvider",
    "PermanentProviderError",
    "PollReport",
    "ProviderError",
    "QuoteProvider",
    "TransientProviderError",
    "poll",
    "quote_to_event",
]

_LOG = logging.getLogger(__name__)

API_KEY_ENV = "MIRAIKAKAKU_ALPHAVANTAGE_API_KEY"
"""Environment variable holding the Alpha Vantage API key."""

FLAG_PARTIAL_BAR = "partial_bar"
"""Quality flag of a daily bar fetched before its session closed (its values will still change)."""

FETCH_STEP = "FetchQuotes"
"""Dead-letter step name for quotes a provider could not deliver."""


class ProviderError(Exception):
    """A quote could not be fetched.

    Attributes:
        provider: the provider's name.
        symbol: the symbol asked for.
    """

    def __init__(self, provider: str, symbol: str, message: str) -> None:
        super().__init__(f"{provider} {symbol}: {message}")
        self.provider = provider
        self.symbol = symbol


class TransientProviderError(ProviderError):
    """Worth trying again later: a rate limit, HTTP 429 or 5xx, a network error."""


class PermanentProviderError(ProviderError):
    """Trying again will not help: an error answer, an unknown symbol, a malformed answer."""


@runtime_checkable
class QuoteProvider(Protocol):
    """A source of latest quotes.

    Attributes:
        name: the source name events carry (``alphavantage``).
    """

    name: str

    def fetch_quotes(self, symbols: Sequence[str]) -> list[PriceEvent]:
        """Fetch the latest quote of each symbol as a ``PriceEvent`` (prices in quote currency).

        Raises:
            TransientProviderError: a failure worth retrying later.
            PermanentProviderError: a failure retrying will not fix.
        """
        ...


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def quote_to_event(quote: Mapping[str, Any], *, fetched_at: dt.datetime, source: str,
                   master: InstrumentMaster) -> PriceEvent:
    """Turn one ``GLOBAL_QUOTE`` object into a daily-bar ``PriceEvent`` (a pure function).

    The quote is the daily bar of the session ``07. latest trading day`` (exchange-local date):
    open/high/low from ``02``-``04``, close = ``05. price``, volume ``06``; prices are raw, in the
    instrument's quote currency. The event-time rule:

    * fetched at or after that session's close (exchange calendar of the instrument): a complete
      bar; ``event_time`` is the session close and the sequence is 0, so the id equals the one of
      the same bar from any daily file of this source;
    * fetched before the close (an intraday ``GLOBAL_QUOTE`` is a partial bar, its price the last
      trade so far): ``event_time`` is the fetch time (UTC, milliseconds), the flag
      ``partial_bar`` is set and the sequence is the fetch time in Unix seconds, so each
      snapshot has its own event id and the final bar is not mistaken for a duplicate of one.

    Args:
        quote: the object under ``"Global Quote"``.
        fetched_at: when the answer arrived (aware).
        source: the source name (``alphavantage``).
        master: instrument reference data for the id, currency and calendar.

    Raises:
        KeyError, ValueError: a missing or malformed field (the provider maps these to
            ``PermanentProviderError``).
    """
    symbol = str(quote["01. symbol"]).strip()
    inst = master.resolve(symbol)
    day = dt.date.fromisoformat(str(quote["07. latest trading day"]).strip())
    values = {}
    for key, name in (("02. open", "open"), ("03. high", "high"), ("04. low", "low"),
                      ("05. price", "close"), ("06. volume", "volume")):
        values[name] = float(str(quote[key]).strip())
    close_time, flags = get_calendar(inst.calendar).session_close(day)
    fetched = fetched_at.astimezone(dt.timezone.utc)
    fetched = fetched.replace(microsecond=fetched.microsecond // 1000 * 1000)
    if fetched < close_time:
        event_time, sequence = fetched, int(fetched.timestamp())
        flags = (*flags, FLAG_PARTIAL_BAR)
    else:
        event_time, sequence = close_time, 0
    if not inst.known:
        flags = (*flags, "unknown_instrument")
    return PriceEvent(
        schema_version=SCHEMA_VERSION,
        event_id=make_event_id(source, inst.instrument_id, "1d",
                               f"{day.year:04d}{day.month:02d}{day.day:02d}", sequence),
        instrument_id=inst.instrument_id,
        symbol=inst.symbol,
        source=source,
        sequence=sequence,
        interval="1d",
        session_date=day,
        event_time=event_time,
        open=values["open"], high=values["high"], low=values["low"], close=values["close"],
        volume=values["volume"],
        adj_close=None,
        currency=inst.currency,
        flags=flags,
    )


class AlphaVantageProvider:
    """Alpha Vantage ``GLOBAL_QUOTE`` (https://www.alphavantage.co/documentation/#latestprice).

    One GET per symbol: ``{base_url}?function=GLOBAL_QUOTE&symbol=IBM&apikey=...``. The documented
    answer is ``{"Global Quote": {"01. symbol": "IBM", "02. open": "...", ..., "10. change
    percent": "..."}}`` with numbers as strings; rate limits come as ``{"Note": ...}`` or
    ``{"Information": ...}`` (transient), a bad call as ``{"Error Message": ...}`` (permanent), an
    unknown symbol as an empty ``"Global Quote"`` (permanent). The free tier allows few calls
    (25 a day at the time of writing), so poll sparingly. See ``quote_to_event`` for the event-time
    rule of complete and partial (intraday) bars.

    Args:
        api_key: the key; default from ``MIRAIKAKAKU_ALPHAVANTAGE_API_KEY``.
        transport: an httpx transport (tests pass ``httpx.MockTransport``); default: the network.
        base_url: the query endpoint.
        timeout: HTTP timeout, seconds.
        clock: returns the current aware UTC time (the fetch time of a quote).
        master: instrument reference data (default: the packaged one).

    Raises:
        ValueError: no API key given and none in the environment.
    """

    name = "alphavantage"
    BASE_URL = "https://www.alphavantage.co/query"

    def __init__(self, api_key: str | None = None, *,
                 transport: httpx.BaseTransport | None = None, base_url: str = BASE_URL,
                 timeout: float = 10.0, clock: Callable[[], dt.datetime] = _utc_now,
                 master: InstrumentMaster | None = None) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not key.strip():
            raise ValueError(f"no Alpha Vantage API key: set {API_KEY_ENV}")
        self._key = key.strip()
        self._base_url = base_url
        self._clock = clock
        self._master = master or load_master()
        self._http = httpx.Client(transport=transport, timeout=timeout)

    def __repr__(self) -> str:
        return f"AlphaVantageProvider(base_url={self._base_url!r})"  # never the key

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    def __enter__(self) -> AlphaVantageProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***")

    def _get(self, symbol: str) -> dict[str, Any]:
        params = {"function": "GLOBAL_QUOTE", "symbol": symbol, "apikey": self._key}
        try:
            response = self._http.get(self._base_url, params=params)
        except httpx.TransportError as e:
            raise TransientProviderError(self.name, symbol,
                                         self._redact(f"{type(e).__name__}: {e}")) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientProviderError(self.name, symbol, f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise PermanentProviderError(self.name, symbol, f"HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise PermanentProviderError(self.name, symbol, "answer is not JSON") from None
        if not isinstance(body, dict):
            raise PermanentProviderError(self.name, symbol, "answer is not a JSON object")
        return body

    def fetch_quote(self, symbol: str) -> PriceEvent:
        """Fetch one symbol's latest quote as a daily-bar event (see ``quote_to_event``).

        Raises:
            TransientProviderError: ``Note``/``Information`` (rate limit), HTTP 429/5xx, network.
            PermanentProviderError: ``Error Message``, unknown symbol, malformed answer.
        """
        body = self._get(symbol)
        for key in ("Note", "Information"):
            if key in body:
                raise TransientProviderError(self.name, symbol,
                                             f"{key}: {self._redact(str(body[key]))[:200]}")
        if "Error Message" in body:
            raise PermanentProviderError(
                self.name, symbol, f"Error Message: {self._redact(str(body['Error Message']))}")
        quote = body.get("Global Quote")
        if not isinstance(quote, dict) or not quote:
            raise PermanentProviderError(self.name, symbol,
                                         "empty 'Global Quote' (unknown symbol?)")
        answered = str(quote.get("01. symbol", "")).strip()
        if answered.upper() != symbol.strip().upper():
            raise PermanentProviderError(self.name, symbol, f"answer is for {answered!r}")
        try:
            return quote_to_event(quote, fetched_at=self._clock(), source=self.name,
                                  master=self._master)
        except (KeyError, ValueError) as e:
            raise PermanentProviderError(self.name, symbol,
                                         f"malformed quote: {type(e).__name__}: {e}") from None

    def fetch_quotes(self, symbols: Sequence[str]) -> list[PriceEvent]:
        """Fetch each symbol in turn (``fetch_quote``); the first failure is raised.

        Raises:
            TransientProviderError, PermanentProviderError: as ``fetch_quote``.
        """
        return [self.fetch_quote(s) for s in symbols]


@dataclasses.dataclass
class PollReport:
    """What ``poll`` did.

    Attributes:
        iterations: polling rounds completed.
        quotes: events fetched.
        transient_errors: fetches that failed transiently (retried next round).
        permanent_errors: fetches that failed permanently (dead-lettered in ``publish``).
        publish: the publish reports of all rounds, merged.
    """

    iterations: int = 0
    quotes: int = 0
    transient_errors: int = 0
    permanent_errors: int = 0
    publish: PublishReport = dataclasses.field(default_factory=PublishReport)


def poll(provider: QuoteProvider, symbols: Sequence[str], topic: str, interval_s: float,
         iterations: int | None, *, publisher=None, policy: RetryPolicy | None = None,
         sleep: Callable[[float], None] = time.sleep,
         on_round: Callable[[int, PollReport], None] | None = None) -> PollReport:
    """Fetch quotes every ``interval_s`` seconds and publish them with ``publish_events``.

    Each symbol is fetched on its own, so one bad symbol does not hide the others. A permanent
    failure becomes a ``DeadLetter`` (step ``FetchQuotes``, reason ``provider_error``) that the
    publish report counts; a transient one is counted and the symbol is tried again next round.

    Args:
        provider: the quote source.
        symbols: tickers to poll.
        topic: ``projects/{project}/topics/{topic}``.
        interval_s: seconds between the starts of two rounds.
        iterations: number of rounds; None polls until interrupted.
        publisher: a publisher client (default: ``make_publisher()``, stopped at the end).
        policy: the publish retry policy.
        sleep: sleep function (tests inject one).
        on_round: called after each round with its number (1-based) and the report so far.

    Returns:
        The merged report.
    """
    own_client = publisher is None
    client = publisher or make_publisher()
    report = PollReport()
    try:
        n = 0
        while iterations is None or n < iterations:
            began = time.monotonic()
            items: list[PriceEvent | DeadLetter] = []
            for symbol in symbols:
                try:
                    items.extend(provider.fetch_quotes([symbol]))
                except TransientProviderError as e:
                    report.transient_errors += 1
                    _LOG.warning("%s (will retry next round)", e)
                except PermanentProviderError as e:
                    report.permanent_errors += 1
                    items.append(DeadLetter(FETCH_STEP, "provider_error", str(e), symbol,
                                            provider.name))
            report.quotes += sum(isinstance(i, PriceEvent) for i in items)
            report.publish.merge(publish_events(items, topic, publisher=client, policy=policy))
            n += 1
            report.iterations = n
            if on_round is not None:
                on_round(n, report)
            if iterations is None or n < iterations:
                sleep(max(0.0, interval_s - (time.monotonic() - began)))
    finally:
        if own_client:
            client.stop()
    return report
