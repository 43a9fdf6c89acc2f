"""Notification templates (notifier/templates.py): every rule kind in English and Japanese,
number and time formatting, locale fallback, escaping only in HTML.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_notifier_templates.py``
"""

from __future__ import annotations

import datetime as dt

import pytest

from notifier.templates import (
    KINDS,
    format_money,
    format_pct,
    format_time,
    render,
    render_email_html,
)

pytestmark = pytest.mark.unit

# 21:00 UTC on 2026-11-30 = 16:00 EST in New York, 06:00 JST on 2026-12-01 in Tokyo
T = dt.datetime(2026, 11, 30, 21, 0, tzinfo=dt.timezone.utc)
NY = "America/New_York"

CASES = {
    # kind: (context, en title, ja title, en body fragments, ja body fragments)
    "price_above": (
        dict(symbol="AAPL", currency="USD", value=171.234, level=170, event_time=T, timezone=NY,
             session_date="2026-11-30", rule_name="Apple 170"),
        "AAPL rose above 170.00 USD",
        "AAPL が 170.00 USD を上回りました",
        ["AAPL traded at 171.23 USD, above your level of 170.00 USD (session 2026-11-30).",
         "Time: 2026-11-30 16:00 EST", "Rule: Apple 170"],
        ["AAPL の価格が 171.23 USD となり、設定した水準 170.00 USD を上回りました"
         "（2026年11月30日の取引）。", "日時：2026年11月30日 16:00 EST", "ルール：Apple 170"]),
    "price_below": (
        dict(instrument_id="XTKS:7203", currency="JPY", value=1999.5, threshold=2000.0,
             event_time=T, timezone="Asia/Tokyo", session_date=dt.date(2026, 12, 1)),
        "7203 fell below 2,000 JPY",
        "7203 が 2,000 円 を下回りました",
        ["7203 traded at 1,999.50 JPY, below your level of 2,000 JPY (session 2026-12-01).",
         "Time: 2026-12-01 06:00 JST"],
        ["7203 の価格が 1,999.50 円 となり、設定した水準 2,000 円 を下回りました",
         "日時：2026年12月1日 06:00 JST"]),
    "pct_move": (
        dict(symbol="AAPL", currency="USD", value=-0.105, threshold=0.1, window=5, price=150.5,
             event_time=T),
        "AAPL fell 10.50% over 5 sessions",
        "AAPL が 5 営業日で 10.50% 下落しました",
        ["AAPL moved -10.50% over the last 5 sessions, to 150.50 USD (your threshold: ±10.00%).",
         "Time: 2026-11-30 21:00 UTC"],
        ["AAPL は直近 5 営業日で -10.50% 変動しました（現在値 150.50 USD）。",
         "設定したしきい値は ±10.00% です。", "日時：2026年11月30日 21:00 UTC"]),
    "volume_spike": (
        dict(symbol="AAPL", currency="USD", value=12_345_678, threshold=3, window=20,
             average=3_000_000, event_time=T, timezone=NY, session_date="2026-11-30"),
        "AAPL volume spike: 4.1× the 20-session average",
        "AAPL の出来高が急増しました（過去 20 営業日平均の 4.1 倍）",
        ["AAPL traded a volume of 12,345,678 in the session of 2026-11-30, 4.1× the average of "
         "the previous 20 sessions (3,000,000); your threshold is 3×."],
        ["2026年11月30日の AAPL の出来高は 12,345,678 で、過去 20 営業日の平均（3,000,000）の "
         "4.1 倍でした。設定した倍率は 3 倍です。"]),
    "predicted_move": (
        dict(symbol="7203", currency="JPY", value=0.032, threshold=0.03, target_date="2026-12-02",
             predicted_price=2064, base_price=2000, event_time=T, timezone="Asia/Tokyo"),
        "7203 forecast: +3.20% for 2026-12-02",
        "7203 は 2026年12月2日に 3.20% 上昇すると予測されています",
        ["The model predicts that 7203 will rise 3.20% by the session of 2026-12-02 (predicted "
         "price 2,064 JPY, last close 2,000 JPY); your threshold: ±3.00%."],
        ["モデルの予測では、7203 は 2026年12月2日の取引で +3.20% 変動します（予測価格 2,064 円、"
         "直近の終値 2,000 円）。設定したしきい値は ±3.00% です。"]),
    "market_alert": (
        dict(symbol="AAPL", currency="USD", value=169.5, threshold=170, alert_kind="price_cross",
             event_time=T, timezone=NY, message="AAPL closed below 170 USD at 169.5"),
        "Market alert: AAPL crossed below 170.00 USD",
        "マーケットアラート：AAPL が 170.00 USD を下回りました",
        ["AAPL traded at 169.50 USD, below the market alert level of 170.00 USD."],
        ["AAPL の価格が 169.50 USD となり、アラート水準 170.00 USD を下回りました。"]),
}


def test_every_kind_has_a_case():
    assert set(CASES) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("locale", ["en", "ja"])
def test_render_every_kind(kind, locale):
    ctx, en_title, ja_title, en_parts, ja_parts = CASES[kind]
    title, body = render(kind, locale, ctx)
    assert title == (en_title if locale == "en" else ja_title)
    for part in (en_parts if locale == "en" else ja_parts):
        assert part in body, (part, body)
    assert "\n" not in title and title == title.strip()
    if locale == "ja":  # a Japanese body has no English words but tickers, units and zones
        for word in ("traded", "session", "Time", "Rule", "threshold", "None"):
            assert word not in body
    assert "None" not in title + body and "{{" not in title + body


@pytest.mark.parametrize("locale", ["en", "ja"])
def test_rising_forms(locale):
    up_pct = render("pct_move", locale, dict(symbol="X", value=0.12, threshold=0.1, window=1))
    up_pred = render("predicted_move", locale, dict(symbol="X", value=0.05, threshold=0.03))
    if locale == "en":
        assert up_pct[0] == "X rose 12.00% over 1 session"
        assert up_pred[0] == "X forecast: +5.00% next session"
        assert "will rise 5.00% in the next session" in up_pred[1]
    else:
        assert up_pct[0] == "X が 1 営業日で 12.00% 上昇しました"
        assert up_pred[0] == "X は次の営業日に 5.00% 上昇すると予測されています"


@pytest.mark.parametrize("alert_kind,en,ja", [
    ("pct_move", "Market alert: AAPL moved -11.00%",
     "マーケットアラート：AAPL が -11.00% 変動しました"),
    ("predicted_move", "Market alert: AAPL forecast +4.00%",
     "マーケットアラート：AAPL の予測変動率 +4.00%"),
])
def test_market_alert_kinds(alert_kind, en, ja):
    value = -0.11 if alert_kind == "pct_move" else 0.04
    ctx = dict(symbol="AAPL", currency="USD", value=value, threshold=0.03, alert_kind=alert_kind,
               event_time=T)
    assert render("market_alert", "en", ctx)[0] == en
    assert render("market_alert", "ja", ctx)[0] == ja
    assert "alert threshold ±3.00%" in render("market_alert", "en", ctx)[1]
    assert "アラートのしきい値 ±3.00%" in render("market_alert", "ja", ctx)[1]


def test_aliases_of_the_rule_matcher():
    """notifier.rules gives volume_spike ``multiplier``/``mean_volume``/``ratio`` and, for
    predicted_move, may give the log return: shown as the simple return."""
    ctx = dict(symbol="AAPL", value=9_000_000, multiplier=2.5, window=10,
               mean_volume=3_000_000, ratio=3.0)
    assert render("volume_spike", "en", ctx)[0] == "AAPL volume spike: 3.0× the 10-session average"
    assert "your threshold is 2.5×" in render("volume_spike", "en", ctx)[1]
    ctx = dict(symbol="AAPL", value=-0.05, predicted_log_return=-0.05, threshold=0.03)
    assert render("predicted_move", "en", ctx)[0] == "AAPL forecast: -4.88% next session"
    assert render("predicted_move", "ja", ctx)[0] == \
        "AAPL は次の営業日に 4.88% 下落すると予測されています"


def test_market_alert_unknown_kind_uses_message():
    ctx = dict(symbol="AAPL", value=1.0, alert_kind="gap_open", message="AAPL gapped", event_time=T)
    assert render("market_alert", "en", ctx)[1].startswith("AAPL gapped")


@pytest.mark.parametrize("locale", ["fr", "de-DE", "", None, "xx"])
def test_unknown_locale_is_english(locale):
    ctx = CASES["price_above"][0]
    assert render("price_above", locale, ctx) == render("price_above", "en", ctx)


def test_regional_japanese_is_japanese():
    ctx = CASES["price_above"][0]
    assert render("price_above", "ja-JP", ctx) == render("price_above", "ja", ctx)
    assert render("price_above", "ja_JP", ctx) == render("price_above", "ja", ctx)


def test_errors():
    with pytest.raises(ValueError, match="unknown notification kind"):
        render("moon_phase", "en", {"value": 1})
    with pytest.raises(ValueError, match="'value'"):
        render("pct_move", "en", {"symbol": "AAPL", "threshold": 0.1})
    with pytest.raises(ValueError, match="'level'"):
        render("price_above", "en", {"symbol": "AAPL", "value": 171.0})
    with pytest.raises(ValueError, match="unknown time zone"):
        render("price_above", "en", dict(CASES["price_above"][0], timezone="Mars/Olympus"))


def test_text_is_not_escaped_html_is():
    ctx = dict(CASES["price_above"][0], rule_name='<script>alert("x")</script> & co')
    title, body = render("price_above", "en", ctx)
    assert 'Rule: <script>alert("x")</script> & co' in body
    html = render_email_html(title, body, "en", [("Rule", ctx["rule_name"])])
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in html
    assert '<html lang="en">' in html and "<h2" in html and title in html


def test_email_html_language_and_lines():
    title, body = render("price_above", "ja", CASES["price_above"][0])
    html = render_email_html(title, body, "ja")
    assert '<html lang="ja">' in html
    assert html.count("<p style=\"margin: 0.3em 0;\">") == len(body.splitlines())
    assert "メール通知" in html  # the Japanese footer
    assert "email notifications are on" in render_email_html(title, body, "fr")


def test_formatters():
    assert format_money(1234.5, "usd") == "1,234.50 USD"
    assert format_money(2000.0, "JPY", "en") == "2,000 JPY"
    assert format_money(2000.0, "JPY", "ja") == "2,000 円"
    assert format_money(1999.57, "JPY", "ja") == "1,999.57 円"
    assert format_money(5.0, "") == "5.00"
    assert format_pct(0.1234) == "+12.34%" and format_pct(-0.1234, signed=False) == "12.34%"
    summer = dt.datetime(2026, 7, 1, 13, 30, tzinfo=dt.timezone.utc)
    assert format_time(summer, NY) == "2026-07-01 09:30 EDT"
    assert format_time(summer, "Asia/Tokyo", "ja") == "2026年7月1日 22:30 JST"
    assert format_time("2026-07-01T13:30:00Z", None) == "2026-07-01 13:30 UTC"
    assert format_time(summer.replace(tzinfo=None), None) == "2026-07-01 13:30 UTC"
