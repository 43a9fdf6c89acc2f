"""Weird input never yields a 500: odd symbols in paths and queries, odd query values.

The ``client`` fixture's TestClient re-raises any server exception, so an unhandled error fails
the test even before the status check. Run: ``pytest tests/api/test_fuzz.py -q``.
"""

import random
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.api

WEIRD_SYMBOLS = [
    "../etc", "..", ".", "%00", "\x00", "AAPL\x00", "A#B", "A?B", "A/B", "A\\B", "x" * 64,
    "x" * 65, "x" * 5000, "トヨタ", "7203．T", "😀", " ", "\t", "' OR 1=1 --",
    "AAPL;DROP TABLE bars", "XNAS:", ":AAPL", "XNAS:AAPL#1d", "XNAS:AAPL#1d#20180207", "%",
    "%25", "%2F", "*", "_", "?", "AAPL%", "\u202eLPAA", "\ud7ff", "NaN", "null", "-1",
]
SUFFIXES = ["", "/quote", "/bars", "/predictions"]


def _encode(text: str) -> str:
    # percent-encode everything, dots too (so "." and ".." are not resolved as dot segments)
    return quote(text, safe="").replace(".", "%2E")


def _get(client: TestClient, url: str, **params: str):
    # no redirect following: "/v1/symbols/" (an encoded "/" after TestClient decodes the path a
    # second time) redirects to the list, which is not what these tests look at
    return client.get(url, params=params or None, follow_redirects=False)


def _assert_handled(resp, allowed: set[int]) -> None:
    assert resp.status_code in allowed, (resp.request.url, resp.status_code, resp.text[:200])
    if resp.status_code >= 400:
        assert resp.headers["content-type"].startswith("application/json")
        assert set(resp.json()) == {"error"}


@pytest.mark.parametrize("symbol", WEIRD_SYMBOLS, ids=range(len(WEIRD_SYMBOLS)))
def test_weird_symbol_in_path(client: TestClient, symbol: str) -> None:
    for suffix in SUFFIXES:
        # encoded: the whole string arrives as the path parameter
        _assert_handled(_get(client, f"/v1/symbols/{_encode(symbol)}{suffix}"),
                        {307, 404, 422})
        # raw, where httpx can send it: dot segments are resolved, so it may hit another route
        if symbol.isprintable() and "#" not in symbol and "?" not in symbol:
            _assert_handled(_get(client, f"/v1/symbols/{symbol}{suffix}"),
                            {200, 307, 404, 422})


def test_symbol_whitespace_is_trimmed(client: TestClient) -> None:
    resp = client.get("/v1/symbols/%20aapl%20/quote")
    assert resp.status_code == 200 and resp.json()["instrument_id"] == "XNAS:AAPL"


@pytest.mark.parametrize("symbol", WEIRD_SYMBOLS, ids=range(len(WEIRD_SYMBOLS)))
def test_weird_symbol_in_alert_query(client: TestClient, symbol: str) -> None:
    _assert_handled(_get(client, "/v1/alerts", symbol=symbol), {404, 422})


def test_random_strings_never_500(client: TestClient) -> None:
    rng = random.Random(20180207)
    pool = [chr(c) for c in range(0x00, 0x80)] + list("éü日本株€😀\u200b\ufeff")
    for _ in range(150):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 80)))
        _assert_handled(_get(client, f"/v1/symbols/{_encode(text)}/bars"),
                        {200, 307, 404, 422})
        _assert_handled(_get(client, "/v1/symbols/AAPL/bars", start=text, source=text[:40]),
                        {404, 422})
        _assert_handled(_get(client, "/v1/alerts", since=text), {200, 422})


@pytest.mark.parametrize("params", [
    {"start": "9999-12-31"}, {"end": "1000-01-01"}, {"start": "1000-01-01", "end": "9999-12-31"},
    {"limit": "1" * 40}, {"limit": "1.5"}, {"limit": "NaN"}, {"limit": "inf"},
    {"source": "x" * 33}, {"source": ""}, {"start": "2018-02-07\x00"},
    {"start": "２０１８-０２-０７"}, {"unknown": "ignored"},
])
def test_odd_bar_params(client: TestClient, params: dict[str, str]) -> None:
    _assert_handled(_get(client, "/v1/symbols/AAPL/bars", **params), {200, 404, 422})


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59.999999", "0001-01-01T00:00:00",
                                   "1e308", "-1e308", "99999999999999999999", "2018-02-07 21:00",
                                   "2018-02-07T21:00:00+25:00"])
def test_odd_since(client: TestClient, since: str) -> None:
    _assert_handled(_get(client, "/v1/alerts", since=since), {200, 422})
