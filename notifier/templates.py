"""Notification texts in English and Japanese, rendered with Jinja2.

``render(kind, locale, context) -> (title, body)`` gives the plain-text title and body of one
notification for a user rule kind (``serving.app.models.RuleKind``: ``price_above``,
``price_below``, ``pct_move``, ``volume_spike``, ``predicted_move``, ``market_alert``) in the
user's language (``en`` or ``ja``; any other locale falls back to English).
``render_email_html(title, body, locale, details)`` wraps a rendered notification in the HTML
part of an email; everything in it is HTML-escaped (the text templates are not: a rule name such
as ``<b>`` stays as typed in the title, the inbox and the text email).

Context keys (prices in the instrument's quote currency, returns as fractions, timestamps UTC
aware; unknown keys are ignored):

=================  ========================================================================
``symbol``         ticker shown to the user; default: ``instrument_id`` after its ``:``
``instrument_id``  exchange-qualified id (``XNAS:AAPL``)
``currency``       ISO 4217 quote currency (``USD``, ``JPY``); JPY shows as 円 in Japanese
``value``          the observed value: price (price_above/below), return (pct_move, and the
                   predicted simple return ``expm1(log_return)`` for predicted_move), volume
                   (volume_spike), the alert's value (market_alert)
``level``          price level (price_above/below); ``threshold`` is accepted instead
``threshold``      fraction (pct_move, predicted_move), multiplier (volume_spike; or
                   ``multiplier``), the alert's threshold (market_alert)
``predicted_log_return``  predicted_move: when given, the move shown is ``expm1`` of it
``window``         sessions (pct_move, volume_spike)
``event_time``     UTC-aware datetime of the event; shown in ``timezone`` (IANA name of the
                   exchange's zone, e.g. ``Asia/Tokyo``) when given, else in UTC
``session_date``   exchange-local session date (``datetime.date`` or ISO text), optional
``rule_name``      the user's rule name, optional (``rule`` is accepted too)
``average``        volume_spike: mean volume of the previous ``window`` sessions, optional
                   (or ``mean_volume``); ``ratio`` = volume / average, optional
``price``          pct_move: the price after the move, optional
``target_date``    predicted_move: the session the forecast is for, optional
``predicted_price``, ``base_price``  predicted_move: optional, quote currency
``alert_kind``     market_alert: ``price_cross``, ``pct_move`` or ``predicted_move``
``message``        market_alert: the pipeline's one-line English description, optional
=================  ========================================================================

Example::

    >>> render("price_above", "ja", {"symbol": "AAPL", "currency": "USD", "value": 171.2,
    ...        "level": 170, "event_time": t, "timezone": "America/New_York"})[0]
    'AAPL が 170.00 USD を上回りました'

Errors: ``ValueError`` for an unknown kind or a context missing a required key (``value``;
``level`` for price rules).
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Mapping
from typing import Any

import jinja2

__all__ = ["KINDS", "LOCALES", "render", "render_email_html", "format_money", "format_pct",
           "format_time", "email_footer"]

LOCALES = ("en", "ja")
"""Languages with templates; any other locale renders in English."""

KINDS = ("price_above", "price_below", "pct_move", "volume_spike", "predicted_move",
         "market_alert")
"""Rule kinds with templates (``serving.app.models.RuleKind``)."""

_ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD"}

# -- plain-text templates: {kind: (title, body)} per locale; autoescape off ----------------------
_EN: dict[str, tuple[str, str]] = {
    "price_above": (
        "{{ symbol }} rose above {{ level }}",
        "{{ symbol }} traded at {{ value }}, above your level of {{ level }}"
        "{% if session %} (session {{ session }}){% endif %}.\n"
        "Time: {{ when }}{% if rule_name %}\nRule: {{ rule_name }}{% endif %}"),
    "price_below": (
        "{{ symbol }} fell below {{ level }}",
        "{{ symbol }} traded at {{ value }}, below your level of {{ level }}"
        "{% if session %} (session {{ session }}){% endif %}.\n"
        "Time: {{ when }}{% if rule_name %}\nRule: {{ rule_name }}{% endif %}"),
    "pct_move": (
        "{{ symbol }} {{ 'rose' if up else 'fell' }} {{ pct_abs }} over {{ window }} "
        "session{{ '' if window == 1 else 's' }}",
        "{{ symbol }} moved {{ pct }} over the last {{ window }} "
        "session{{ '' if window == 1 else 's' }}{% if price %}, to {{ price }}{% endif %} "
        "(your threshold: ±{{ threshold_pct }}).\n"
        "Time: {{ when }}{% if rule_name %}\nRule: {{ rule_name }}{% endif %}"),
    "volume_spike": (
        "{{ symbol }} volume spike{% if ratio %}: {{ ratio }}× the {{ window }}-session average"
        "{% endif %}",
        "{{ symbol }} traded a volume of {{ volume }}{% if session %} in the session of "
        "{{ session }}{% endif %}{% if ratio %}, {{ ratio }}× the average of the previous "
        "{{ window }} sessions{% if average %} ({{ average }}){% endif %}{% endif %}; "
        "your threshold is {{ multiplier }}×.\n"
        "Time: {{ when }}{% if rule_name %}\nRule: {{ rule_name }}{% endif %}"),
    "predicted_move": (
        "{{ symbol }} forecast: {{ pct }} {% if target %}for {{ target }}"
        "{% else %}next session{% endif %}",
        "The model predicts that {{ symbol }} will {{ 'rise' if up else 'fall' }} {{ pct_abs }} "
        "{% if target %}by the session of {{ target }}{% else %}in the next session{% endif %}"
        "{% if predicted_price %} (predicted price {{ predicted_price }}"
        "{% if base_price %}, last close {{ base_price }}{% endif %}){% endif %}; "
        "your threshold: ±{{ threshold_pct }}.\n"
        "Time: {{ when }}{% if rule_name %}\nRule: {{ rule_name }}{% endif %}"),
    "market_alert": (
        "Market alert: {{ symbol }} {% if alert_kind == 'price_cross' %}crossed "
        "{{ 'above' if up else 'below' }} {{ level }}{% elif alert_kind == 'pct_move' %}moved "
        "{{ pct }}{% elif alert_kind == 'predicted_move' %}forecast {{ pct }}"
        "{% else %}{{ alert_kind }}{% endif %}",
        "{% if alert_kind == 'price_cross' %}{{ symbol }} traded at {{ value }}, "
        "{{ 'above' if up else 'below' }} the market alert level of {{ level }}."
        "{% elif alert_kind == 'pct_move' %}{{ symbol }} moved {{ pct }} in one session "
        "(alert threshold ±{{ threshold_pct }})."
        "{% elif alert_kind == 'predicted_move' %}The model predicts {{ pct }} for {{ symbol }} "
        "in the next session (alert threshold ±{{ threshold_pct }})."
        "{% else %}{{ message or alert_kind }}{% endif %}"
        "{% if session %} Session: {{ session }}.{% endif %}\n"
        "Time: {{ when }}{% if rule_name %}\nRule: {{ rule_name }}{% endif %}"),
}

_JA: dict[str, tuple[str, str]] = {
    "price_above": (
        "{{ symbol }} が {{ level }} を上回りました",
        "{{ symbol }} の価格が {{ value }} となり、設定した水準 {{ level }} を上回りました"
        "{% if session %}（{{ session }}の取引）{% endif %}。\n"
        "日時：{{ when }}{% if rule_name %}\nルール：{{ rule_name }}{% endif %}"),
    "price_below": (
        "{{ symbol }} が {{ level }} を下回りました",
        "{{ symbol }} の価格が {{ value }} となり、設定した水準 {{ level }} を下回りました"
        "{% if session %}（{{ session }}の取引）{% endif %}。\n"
        "日時：{{ when }}{% if rule_name %}\nルール：{{ rule_name }}{% endif %}"),
    "pct_move": (
        "{{ symbol }} が {{ window }} 営業日で {{ pct_abs }} "
        "{{ '上昇' if up else '下落' }}しました",
        "{{ symbol }} は直近 {{ window }} 営業日で {{ pct }} 変動しました"
        "{% if price %}（現在値 {{ price }}）{% endif %}。設定したしきい値は ±{{ threshold_pct }} "
        "です。\n"
        "日時：{{ when }}{% if rule_name %}\nルール：{{ rule_name }}{% endif %}"),
    "volume_spike": (
        "{{ symbol }} の出来高が急増しました{% if ratio %}（過去 {{ window }} 営業日平均の "
        "{{ ratio }} 倍）{% endif %}",
        "{% if session %}{{ session }}の{% endif %} {{ symbol }} の出来高は {{ volume }} で"
        "{% if ratio %}、過去 {{ window }} 営業日の平均{% if average %}（{{ average }}）"
        "{% endif %}の {{ ratio }} 倍{% endif %}でした。設定した倍率は {{ multiplier }} 倍です。\n"
        "日時：{{ when }}{% if rule_name %}\nルール：{{ rule_name }}{% endif %}"),
    "predicted_move": (
        "{{ symbol }} は{% if target %} {{ target }}に{% else %}次の営業日に{% endif %} "
        "{{ pct_abs }} {{ '上昇' if up else '下落' }}すると予測されています",
        "モデルの予測では、{{ symbol }} は{% if target %} {{ target }}の取引で"
        "{% else %}次の営業日に{% endif %} {{ pct }} 変動します"
        "{% if predicted_price %}（予測価格 {{ predicted_price }}"
        "{% if base_price %}、直近の終値 {{ base_price }}{% endif %}）{% endif %}。"
        "設定したしきい値は ±{{ threshold_pct }} です。\n"
        "日時：{{ when }}{% if rule_name %}\nルール：{{ rule_name }}{% endif %}"),
    "market_alert": (
        "マーケットアラート：{{ symbol }} {% if alert_kind == 'price_cross' %}が {{ level }} を"
        "{{ '上回りました' if up else '下回りました' }}{% elif alert_kind == 'pct_move' %}が "
        "{{ pct }} 変動しました{% elif alert_kind == 'predicted_move' %}の予測変動率 {{ pct }}"
        "{% else %}{{ alert_kind }}{% endif %}",
        "{% if alert_kind == 'price_cross' %}{{ symbol }} の価格が {{ value }} となり、"
        "アラート水準 {{ level }} を{{ '上回りました' if up else '下回りました' }}。"
        "{% elif alert_kind == 'pct_move' %}{{ symbol }} が 1 営業日で {{ pct }} 変動しました"
        "（アラートのしきい値 ±{{ threshold_pct }}）。"
        "{% elif alert_kind == 'predicted_move' %}モデルの予測では、{{ symbol }} は次の営業日に "
        "{{ pct }} 変動します（アラートのしきい値 ±{{ threshold_pct }}）。"
        "{% else %}{{ message or alert_kind }}{% endif %}"
        "{% if session %}（{{ session }}の取引）{% endif %}\n"
        "日時：{{ when }}{% if rule_name %}\nルール：{{ rule_name }}{% endif %}"),
}

_FOOTER = {
    "en": "You receive this email because email notifications are on in your MiraiKakaku "
          "profile. Turn them off there to stop these emails.",
    "ja": "このメールは、MiraiKakaku のプロフィールでメール通知を有効にしているため"
          "送信されています。停止するにはプロフィールでメール通知をオフにしてください。",
}

# -- the HTML part of an email; autoescape on --------------------------------------------------
_EMAIL_HTML = """<!DOCTYPE html>
<html lang="{{ locale }}">
<head><meta charset="utf-8"><title>{{ title }}</title></head>
<body style="font-family: sans-serif; color: #222;">
<h2 style="margin-bottom: 0.5em;">{{ title }}</h2>
{% for line in lines %}<p style="margin: 0.3em 0;">{{ line }}</p>
{% endfor %}{% if details %}<table style="margin-top: 1em; border-collapse: collapse;">
{% for key, val in details %}<tr><th style="text-align: left; padding-right: 1em;">{{ key }}</th>\
<td>{{ val }}</td></tr>
{% endfor %}</table>
{% endif %}<p style="margin-top: 2em; font-size: small; color: #666;">{{ footer }}</p>
</body>
</html>
"""

_TEXT_ENV = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=False)
_HTML_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_COMPILED: dict[tuple[str, str], tuple[jinja2.Template, jinja2.Template]] = {
    (loc, kind): (_TEXT_ENV.from_string(t), _TEXT_ENV.from_string(b))
    for loc, table in (("en", _EN), ("ja", _JA)) for kind, (t, b) in table.items()}
_HTML = _HTML_ENV.from_string(_EMAIL_HTML)


def _locale(locale: str | None) -> str:
    base = (locale or "en").replace("_", "-").split("-", 1)[0].lower()
    return base if base in LOCALES else "en"


def format_money(amount: float, currency: str, locale: str = "en") -> str:
    """An amount in its currency: ``170.00 USD``, ``2,000 JPY`` (``2,000 円`` in Japanese).

    Two decimals, except for currencies without minor units (JPY, KRW, …), which show none
    unless the amount has a fraction (an adjusted close such as 1,999.57 円).

    Args:
        amount: the amount in ``currency``.
        currency: ISO 4217 code (case-insensitive); empty: the number alone.
        locale: ``en`` or ``ja``.
    """
    cur = (currency or "").upper()
    decimals = 2
    if cur in _ZERO_DECIMAL and abs(amount - round(amount)) < 0.005:
        decimals = 0
    number = f"{amount:,.{decimals}f}"
    if not cur:
        return number
    if cur == "JPY" and _locale(locale) == "ja":
        return f"{number} 円"
    return f"{number} {cur}"


def format_pct(fraction: float, *, signed: bool = True) -> str:
    """A fraction as a percentage with two decimals: ``+10.50%`` (``10.50%`` unsigned)."""
    return f"{fraction * 100:+.2f}%" if signed else f"{abs(fraction) * 100:.2f}%"


def _to_date(value: Any) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _format_date(value: Any, locale: str) -> str:
    d = _to_date(value)
    if d is None:
        return ""
    return f"{d.year}年{d.month}月{d.day}日" if locale == "ja" else d.isoformat()


def format_time(t: dt.datetime | str, timezone: str | None, locale: str = "en") -> str:
    """An event time in the exchange's zone (UTC without one), with the zone's abbreviation.

    ``2026-11-30 16:00 EST`` in English, ``2026年11月30日 16:00 JST`` in Japanese.

    Args:
        t: UTC-aware datetime (a naive one is taken as UTC) or ISO 8601 text.
        timezone: IANA zone name (``America/New_York``) or None.
        locale: ``en`` or ``ja``.

    Raises:
        ValueError: ``t`` is text that is not ISO 8601, or ``timezone`` is not a known zone.
    """
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    try:
        tz = zoneinfo.ZoneInfo(timezone) if timezone else dt.timezone.utc
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {timezone!r}") from e
    local = t.astimezone(tz)
    abbrev = local.tzname() or "UTC"
    if locale == "ja":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M} {abbrev}"
    return f"{local:%Y-%m-%d %H:%M} {abbrev}"


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 else f"{x:,.2f}"


def _prepare(kind: str, locale: str, c: Mapping[str, Any]) -> dict[str, Any]:
    """The template variables: every number already formatted for ``locale``."""
    if c.get("value") is None:
        raise ValueError(f"{kind}: the context needs 'value'")
    value = float(c["value"])
    currency = str(c.get("currency") or "")
    symbol = c.get("symbol") or str(c.get("instrument_id") or "?").split(":")[-1]
    when = c.get("event_time")
    money = lambda x: format_money(float(x), currency, locale)  # noqa: E731
    threshold = c.get("threshold")
    level = c.get("level", threshold)
    out: dict[str, Any] = {
        "symbol": symbol,
        "rule_name": c.get("rule_name") or c.get("rule") or "",
        "when": format_time(when, c.get("timezone"), locale) if when else "",
        "session": _format_date(c.get("session_date"), locale),
        "value": value, "window": int(c.get("window") or 1), "up": value >= 0,
        "pct": format_pct(value), "pct_abs": format_pct(value, signed=False),
        "threshold_pct": format_pct(float(threshold), signed=False) if threshold is not None
        else "", "level": "", "price": "", "ratio": "", "average": "", "volume": "",
        "multiplier": "", "target": "", "predicted_price": "", "base_price": "",
        "alert_kind": c.get("alert_kind") or "", "message": c.get("message") or "",
    }
    if kind in ("price_above", "price_below"):
        if level is None:
            raise ValueError(f"{kind}: the context needs 'level' (or 'threshold')")
        out.update(value=money(value), level=money(level))
    elif kind == "pct_move":
        if c.get("price") is not None:
            out["price"] = money(c["price"])
    elif kind == "volume_spike":
        multiplier = c.get("multiplier", threshold)
        out.update(volume=_number(value),
                   multiplier=f"{float(multiplier):g}" if multiplier is not None else "?")
        average = c.get("average", c.get("mean_volume"))
        ratio = c.get("ratio")
        if ratio is None and average:
            ratio = value / float(average)
        if ratio is not None:
            out["ratio"] = f"{float(ratio):.1f}"
        if average:
            out["average"] = _number(float(average))
    elif kind == "predicted_move":
        if c.get("predicted_log_return") is not None:  # shown as the simple return
            move = math.expm1(float(c["predicted_log_return"]))
            out.update(value=move, up=move >= 0, pct=format_pct(move),
                       pct_abs=format_pct(move, signed=False))
        out["target"] = _format_date(c.get("target_date"), locale)
        for key in ("predicted_price", "base_price"):
            if c.get(key) is not None:
                out[key] = money(c[key])
    elif kind == "market_alert":
        if out["alert_kind"] == "price_cross":
            lvl = float(level) if level is not None else math.nan
            out.update(value=money(value), level=money(lvl), up=value >= lvl)
    return out


def render(kind: str, locale: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """The title and body of a notification (plain text, not escaped).

    Args:
        kind: a rule kind (``KINDS``).
        locale: ``en`` or ``ja``; anything else (``fr``, ``None``) renders in English;
            ``ja-JP`` counts as ``ja``.
        context: the event's values (see the module docstring).

    Returns:
        ``(title, body)``: a one-line title and a body of one to three lines.

    Raises:
        ValueError: an unknown kind, or a context missing a required key.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r} (expected one of {KINDS})")
    loc = _locale(locale)
    variables = _prepare(kind, loc, context)
    title_t, body_t = _COMPILED[(loc, kind)]
    try:
        return title_t.render(variables).strip(), body_t.render(variables).strip()
    except jinja2.UndefinedError as e:  # a template bug, not the caller's
        raise ValueError(f"{kind}/{loc}: {e}") from e


def email_footer(locale: str) -> str:
    """Why the user gets the email and how to stop it, in ``locale`` (English fallback)."""
    return _FOOTER[_locale(locale)]


def render_email_html(title: str, body: str, locale: str,
                      details: list[tuple[str, str]] | None = None) -> str:
    """The HTML part of a notification email; every value is HTML-escaped.

    Args:
        title: the notification's title (``render``'s first value).
        body: its plain-text body; each line becomes a paragraph.
        locale: the user's language (``lang`` attribute and footer).
        details: optional ``(label, value)`` rows shown in a table.

    Returns:
        A complete HTML document (UTF-8).
    """
    loc = _locale(locale)
    lines = [ln for ln in body.splitlines() if ln.strip()]
    return _HTML.render(locale=loc, title=title, lines=lines, details=details or [],
                        footer=email_footer(loc))
