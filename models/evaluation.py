"""Model quality report: the LSTM against the last-value and a moving-average baseline.

``evaluate`` builds the examples exactly as training does (``models.training.build_examples``),
keeps the held-out period (``as_of_date`` after the model's training cutoff, recorded in its
metadata as ``cutoff_date``; training used no target after it), scores three forecasts of the
next session's feature price P_{t+1} made at the close of t, and writes a report:

* ``lstm``: the model version (latest in the registry, or the one asked for);
* ``last_value``: P_{t+1} = P_t (the random walk; log return 0);
* ``sma_5``: P_{t+1} = mean(P_{t-4..t}), the 5-bar simple moving average of feature prices, i.e.
  the log return ln(SMA_5 / P_t). The prices come from the window itself: its ``log_return_1``
  column holds ln(P_s / P_{s-1}) for its last N bars, so P_{t-k} / P_t = exp(-(r_t + ... +
  r_{t-k+1})) needs no other input.

Metrics (``forecast_metrics``): RMSE and MAE of the log return, MAPE of the price forecast
(100 · mean |P̂ - P| / P, which equals 100 · mean |exp(ŷ - y) - 1|), RMSE and MAE in price units
per currency (pooling dollars with yen would mean nothing), and directional accuracy (share of
sessions with a nonzero realized return whose sign the forecast got right; a zero forecast is a
miss, as in ``models.training.evaluate_forecasts``; None for a forecast that never names a
direction, such as the last value) with an exact two-sided binomial test against 50 %
(``scipy.stats.binomtest``). The test treats sessions as independent; stocks move together on
the same day, so the p-value overstates the evidence (the report says so).

Base prices P_t for the price-unit metrics are looked up in the same files (feature price of
the bar at ``as_of_date`` and ``target_date``), trying sources in priority order and keeping the
one whose ln(P_{t+1} / P_t) equals the example's target; examples where none does are counted
(``unpriced``) and left out of the price-unit metrics only.

Output, in ``Settings().data_dir / "reports" / "evaluation-<model>-v<version>-<UTC time>"``:
``metrics.json``, ``predictions.png`` (predicted vs realized prices for two instruments and a
scatter of forecast vs realized log returns) and ``report.html`` (self-contained: table and plot
inline). Run: ``miraikakaku evaluate [--model-version N] [--input FILE ...] [--cutoff DATE]``.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import html
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from miraikakaku.settings import Settings, get_settings
from models.registry import ModelVersion, latest_version, list_versions
from models.training import Examples, build_examples
from transforms.features import FEATURE_NAMES

__all__ = [
    "SMA_WINDOW",
    "FORECASTS",
    "EvaluationReport",
    "forecast_last_value",
    "forecast_sma",
    "forecast_metrics",
    "binomial_p_value",
    "lookup_base_prices",
    "evaluate",
]

SMA_WINDOW = 5
"""Bars in the moving-average baseline."""

FORECASTS = ("lstm", "last_value", f"sma_{SMA_WINDOW}")
"""Names of the compared forecasts, in report order."""

_LR1 = FEATURE_NAMES.index("log_return_1")


def forecast_last_value(x: np.ndarray) -> np.ndarray:
    """The random walk: forecast log return 0 for every window.

    Args:
        x: ``[n, N, F]`` windows.

    Returns:
        ``float64 [n]`` zeros.
    """
    return np.zeros(x.shape[0], dtype=np.float64)


def forecast_sma(x: np.ndarray, window: int = SMA_WINDOW) -> np.ndarray:
    """Forecast P_{t+1} = mean(P_{t-window+1..t}) as the log return ln(SMA / P_t).

    Args:
        x: ``[n, N, F]`` raw windows (``FEATURE_NAMES`` order on the last axis) with N >= window.
        window: bars in the average.

    Returns:
        ``float64 [n]`` forecast log returns (<= 0 after a rise, >= 0 after a fall).

    Raises:
        ValueError: if the windows are shorter than ``window`` or ``window`` < 1.
    """
    if window < 1 or x.shape[1] < window:
        raise ValueError(f"need window >= 1 and windows of >= {window} bars, got {x.shape}")
    r = x[:, ::-1, _LR1].astype(np.float64)[:, : window - 1]  # r_t, r_{t-1}, ...
    rel = np.concatenate([np.ones((x.shape[0], 1)), np.exp(-np.cumsum(r, axis=1))], axis=1)
    return np.log(rel.mean(axis=1))


def binomial_p_value(hits: int, n: int) -> float:
    """Exact two-sided binomial test of ``hits`` successes in ``n`` trials against p = 0.5.

    Uses ``scipy.stats.binomtest`` (two-sided: the sum of the probabilities of all outcomes no
    more likely than the observed one).

    Raises:
        ValueError: if ``n`` < 1 or ``hits`` is outside [0, n].
    """
    if n < 1 or not 0 <= hits <= n:
        raise ValueError(f"need 0 <= hits <= n and n >= 1, got hits={hits}, n={n}")
    from scipy.stats import binomtest

    return float(binomtest(int(hits), int(n), 0.5, alternative="two-sided").pvalue)


def forecast_metrics(y_true: np.ndarray, y_pred: np.ndarray, base_price: np.ndarray | None = None,
                     currency: np.ndarray | None = None) -> dict[str, Any]:
    """Score next-session forecasts (formulas in the module docstring).

    Args:
        y_true: ``[n]`` realized log returns ln(P_{t+1} / P_t).
        y_pred: ``[n]`` forecast log returns.
        base_price: ``[n]`` P_t in quote currency, NaN where unknown; None skips the price-unit
            metrics.
        currency: ``[n]`` ISO 4217 codes of ``base_price`` (required with it).

    Returns:
        ``n``, ``rmse_log_return``, ``mae_log_return``, ``mape`` (percent), ``n_direction``
        (nonzero realized returns), ``direction_hits``, ``directional_accuracy`` and
        ``binomial_p_value`` (None when the forecast is 0 everywhere), and ``price`` =
        ``{currency: {"n", "rmse", "mae"}}`` over the examples with a known base price.

    Raises:
        ValueError: for empty or mismatched arrays, or ``base_price`` without ``currency``.
    """
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.size == 0 or t.shape != p.shape:
        raise ValueError(f"need equal, non-empty arrays, got {t.shape} and {p.shape}")
    nz = t != 0
    hits = int(np.sum(np.sign(p[nz]) == np.sign(t[nz])))
    names_direction = bool(np.any(p != 0))
    out: dict[str, Any] = {
        "n": int(t.size),
        "rmse_log_return": float(np.sqrt(np.mean((p - t) ** 2))),
        "mae_log_return": float(np.mean(np.abs(p - t))),
        "mape": float(100.0 * np.mean(np.abs(np.expm1(p - t)))),
        "n_direction": int(nz.sum()),
        "direction_hits": hits if names_direction else None,
        "directional_accuracy": hits / int(nz.sum()) if names_direction and nz.any() else None,
        "binomial_p_value": binomial_p_value(hits, int(nz.sum()))
        if names_direction and nz.any() else None,
        "price": {},
    }
    if base_price is not None:
        if currency is None:
            raise ValueError("base_price needs currency")
        b = np.asarray(base_price, dtype=np.float64).reshape(-1)
        cur = np.asarray(currency, dtype=object).reshape(-1)
        if b.shape != t.shape or cur.shape != t.shape:
            raise ValueError(f"base_price/currency shapes {b.shape}/{cur.shape} != {t.shape}")
        known = np.isfinite(b)
        err = b * np.exp(p) - b * np.exp(t)
        for c in sorted({str(c) for c in cur[known]}):
            m = known & (cur == c)
            out["price"][c] = {"n": int(m.sum()), "rmse": float(np.sqrt(np.mean(err[m] ** 2))),
                               "mae": float(np.mean(np.abs(err[m])))}
    return out


def lookup_base_prices(paths: Sequence[str | Path], examples: Examples,
                       source_priority: Sequence[str], tolerance: float = 2e-5
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find P_t (feature price at ``as_of_date``) for each example in the price files.

    Reads the files with the pipeline's parser and validator, keeps the bars of the examples'
    instruments and dates, and for each example takes the first source (priority order) whose
    bars at ``as_of_date`` and ``target_date`` reproduce the example's target log return within
    ``tolerance`` (targets are float32).

    Args:
        paths: the files the examples were built from.
        examples: the examples.
        source_priority: source names, best first.
        tolerance: largest accepted |ln(P_{t+1}/P_t) - y|.

    Returns:
        ``(base_price float64 [n] (NaN where not found), currency object [n], source object [n])``.

    Raises:
        FileNotFoundError: if a file does not exist.
    """
    from miraikakaku.instruments import load_master
    from miraikakaku.schema import DeadLetter
    from transforms.parsing import file_spec, iter_file
    from transforms.validation import BlockedEvent, validate_event

    wanted = set(examples.instrument_id.tolist())
    lo = examples.as_of_date.min().astype(dt.date) if len(examples) else dt.date.max
    prices: dict[tuple[str, dt.date], dict[str, tuple[float, str]]] = collections.defaultdict(dict)
    master = load_master()
    for path in paths:
        for item in iter_file(file_spec(path), master):
            if isinstance(item, DeadLetter) or item.instrument_id not in wanted \
                    or item.interval != "1d" or item.session_date < lo:
                continue
            try:
                e = validate_event(item)
            except BlockedEvent:
                continue
            prices[(e.instrument_id, e.session_date)].setdefault(
                e.source, (e.feature_price, e.currency))
    rank = {s: i for i, s in enumerate(source_priority)}
    n = len(examples)
    base = np.full(n, np.nan)
    currency = np.full(n, None, dtype=object)
    source = np.full(n, None, dtype=object)
    for i in range(n):
        iid = examples.instrument_id[i]
        at = prices.get((iid, examples.as_of_date[i].astype(dt.date)), {})
        nxt = prices.get((iid, examples.target_date[i].astype(dt.date)), {})
        for s in sorted(at, key=lambda s: (rank.get(s, len(rank)), s)):
            if s in nxt and abs(math.log(nxt[s][0] / at[s][0]) - float(examples.y[i])) <= tolerance:
                base[i], currency[i], source[i] = at[s][0], at[s][1], s
                break
    return base, currency, source


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
    """A written quality report.

    Attributes:
        directory: the report directory.
        metrics_path, png_path, html_path: the files in it.
        metrics: the content of ``metrics.json`` (see ``evaluate``).
    """

    directory: Path
    metrics_path: Path
    png_path: Path
    html_path: Path
    metrics: dict[str, Any]


def _pick_version(model_dir: Path, version: str | None) -> ModelVersion:
    if version is None:
        return latest_version(model_dir)
    for v in list_versions(model_dir):
        if v.version == str(version):
            return v
    raise FileNotFoundError(f"no model version {version} in {model_dir}")


def evaluate(*, model_version: str | None = None, paths: Sequence[str | Path] | None = None,
             cutoff: dt.date | str | None = None, settings: Settings | None = None,
             out_dir: Path | None = None, progress: bool = False) -> EvaluationReport:
    """Score the LSTM and the baselines on the held-out period and write the report.

    Args:
        model_version: registry version to evaluate (``"3"``); default the latest.
        paths: price files; default the model's ``input_files`` from its metadata, else
            ``settings.default_inputs``.
        cutoff: held-out examples are those with ``as_of_date`` after it; default the model's
            ``cutoff_date`` (its training cutoff).
        settings: model directory, source priority and ``data_dir``; default ``get_settings()``.
        out_dir: report directory; default ``settings.data_dir / "reports" /
            "evaluation-<model>-v<version>-<UTC time>"``.
        progress: log progress lines on stderr.

    Returns:
        The ``EvaluationReport``; ``metrics`` holds ``model`` (name, version, cutoff),
        ``period`` (first/last as-of date, examples, instruments), ``forecasts`` (per name:
        ``forecast_metrics``), ``always_up_fraction``, ``unpriced`` and ``timings_seconds``.

    Raises:
        FileNotFoundError: no model version (or not the one asked for), or a missing input file.
        ValueError: no cutoff known, or no held-out examples after it.
    """
    settings = settings or get_settings()
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if progress:
            import sys

            print(f"[evaluate {time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr,
                  flush=True)

    mv = _pick_version(settings.model_dir, model_version)
    meta = mv.metadata
    cut = cutoff if cutoff is not None else meta.get("cutoff_date")
    if cut is None:
        raise ValueError(f"model version {mv.version} has no cutoff_date: pass --cutoff")
    cut = dt.date.fromisoformat(str(cut))
    files = [Path(p) for p in (paths or meta.get("input_files") or settings.default_inputs)]
    window = int(meta.get("window") or 20)
    priority = list(meta.get("source_priority") or settings.source_priority)
    log(f"model {mv.name} v{mv.version}, held-out period after {cut}, files "
        f"{', '.join(f.name for f in files)}")
    examples = build_examples(files, priority, window)
    t_build = time.perf_counter() - t0
    held_out = examples.take(examples.as_of_date > np.datetime64(cut, "D"))  # as split_by_date
    del examples
    if len(held_out) == 0:
        raise ValueError(f"no examples with as_of_date after {cut}")
    log(f"{len(held_out):,} held-out examples; looking up base prices")
    base, currency, _ = lookup_base_prices(files, held_out, priority)
    t_lookup = time.perf_counter() - t0 - t_build
    model = mv.load()
    lstm = model.predict(held_out.x, batch_size=4096, verbose=0).reshape(-1).astype(np.float64)
    forecasts = {"lstm": lstm, "last_value": forecast_last_value(held_out.x),
                 f"sma_{SMA_WINDOW}": forecast_sma(held_out.x)}
    y = held_out.y.astype(np.float64)
    nz = y != 0
    metrics: dict[str, Any] = {
        "model": {"name": mv.name, "version": mv.version, "path": str(mv.path),
                  "created_at": meta.get("created_at"), "cutoff_date": cut.isoformat(),
                  "validation_metrics": meta.get("validation_metrics")},
        "period": {"first_as_of": str(held_out.as_of_date.min()),
                   "last_as_of": str(held_out.as_of_date.max()), "examples": len(held_out),
                   "instruments": len(set(held_out.instrument_id.tolist())),
                   "input_files": [str(f) for f in files]},
        "baselines": {"last_value": "P_{t+1} = P_t (log return 0)",
                      f"sma_{SMA_WINDOW}": f"P_{{t+1}} = mean of the last {SMA_WINDOW} feature "
                                           "prices P_{t-4..t}"},
        "forecasts": {name: forecast_metrics(y, f, base, currency)
                      for name, f in forecasts.items()},
        "always_up_fraction": float(np.mean(y[nz] > 0)) if nz.any() else None,
        "unpriced": int(np.sum(~np.isfinite(base))),
    }
    log("metrics done; plotting")
    out = out_dir or (settings.data_dir / "reports" / (
        f"evaluation-{mv.name}-v{mv.version}-"
        f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"))
    out.mkdir(parents=True, exist_ok=True)
    png = out / "predictions.png"
    _plot(png, held_out, forecasts, base, currency)
    metrics["timings_seconds"] = {"build_examples": round(t_build, 1),
                                  "lookup_prices": round(t_lookup, 1),
                                  "total": round(time.perf_counter() - t0, 1)}
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(_html(metrics, png), encoding="utf-8")
    log(f"report written to {out}")
    return EvaluationReport(out, metrics_path, png, html_path, metrics)


def _plot_instruments(held_out: Examples, currency: np.ndarray) -> list[str]:
    """Up to two instruments to draw: the one with the most held-out sessions per currency."""
    counts = collections.Counter(zip(held_out.instrument_id.tolist(), currency.tolist(),
                                     strict=True))
    best: dict[str, tuple[int, str]] = {}
    for (iid, cur), n in counts.items():
        if cur is not None and (cur not in best or n > best[cur][0]):
            best[cur] = (n, iid)
    return [best[c][1] for c in sorted(best)][:2]


def _plot(path: Path, held_out: Examples, forecasts: dict[str, np.ndarray], base: np.ndarray,
          currency: np.ndarray, last_sessions: int = 120) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = _plot_instruments(held_out, currency)
    fig, axes = plt.subplots(len(chosen) + 1, 1, figsize=(11, 3.6 * (len(chosen) + 1)))
    axes = np.atleast_1d(axes)
    styles = {"lstm": ("tab:red", "-"), "last_value": ("tab:gray", ":"),
              f"sma_{SMA_WINDOW}": ("tab:blue", "--")}
    for ax, iid in zip(axes, chosen, strict=False):
        idx = np.flatnonzero((held_out.instrument_id == iid) & np.isfinite(base))
        idx = idx[np.argsort(held_out.target_date[idx])][-last_sessions:]
        days = held_out.target_date[idx].astype("datetime64[D]").astype(dt.date)
        realized = base[idx] * np.exp(held_out.y[idx].astype(np.float64))
        ax.plot(days, realized, color="black", lw=1.6, label="realized")
        for name, f in forecasts.items():
            color, ls = styles[name]
            ax.plot(days, base[idx] * np.exp(f[idx]), color=color, ls=ls, lw=1.0, label=name)
        ax.set_title(f"{iid}: next-session feature price, last {len(idx)} held-out sessions")
        ax.set_ylabel(str(currency[idx[0]]) if len(idx) else "")
        ax.legend(loc="best", fontsize=8)
    ax = axes[-1]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(held_out), size=min(20_000, len(held_out)), replace=False)
    ax.scatter(held_out.y[pick], forecasts["lstm"][pick], s=2, alpha=0.25, color="tab:red",
               label="lstm")
    lim = float(np.quantile(np.abs(held_out.y), 0.995)) or 0.05
    ax.plot([-lim, lim], [-lim, lim], color="black", lw=0.8, label="perfect forecast")
    ax.axhline(0, color="tab:gray", lw=0.6, ls=":")
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("realized log return")
    ax.set_ylabel("LSTM forecast log return")
    ax.set_title(f"forecast vs realized log return ({len(pick):,} held-out sessions sampled)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else html.escape(str(value))


def _html(metrics: dict[str, Any], png: Path) -> str:
    """A self-contained page: the metrics table and the plot inline (base64 PNG)."""
    fc = metrics["forecasts"]
    currencies = sorted({c for m in fc.values() for c in m["price"]})
    head = ["forecast", "n", "RMSE (log return)", "MAE (log return)", "MAPE (%)"]
    head += [f"RMSE ({c})" for c in currencies] + [f"MAE ({c})" for c in currencies]
    head += ["directional accuracy", "binomial p (vs 50 %)"]
    rows = []
    for name, m in fc.items():
        cells = [name, _fmt(m["n"]), _fmt(m["rmse_log_return"]), _fmt(m["mae_log_return"]),
                 _fmt(m["mape"], 5)]
        cells += [_fmt(m["price"].get(c, {}).get("rmse")) for c in currencies]
        cells += [_fmt(m["price"].get(c, {}).get("mae")) for c in currencies]
        cells += [_fmt(m["directional_accuracy"], 4), _fmt(m["binomial_p_value"], 3)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    model, period = metrics["model"], metrics["period"]
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    best = min(fc, key=lambda k: fc[k]["rmse_log_return"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>MiraiKakaku model quality: {html.escape(model['name'])} v{html.escape(model['version'])}
</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
<h1>Model quality: {html.escape(model['name'])} version {html.escape(model['version'])}</h1>
<p>Held-out period: as-of dates {period['first_as_of']} to {period['last_as_of']} (after the
training cutoff {model['cutoff_date']}), {period['examples']:,} next-session forecasts of
{period['instruments']} instruments. Baselines: last value (P<sub>t+1</sub> = P<sub>t</sub>) and
the {SMA_WINDOW}-bar simple moving average of feature prices. Lowest log-return RMSE:
<b>{html.escape(best)}</b>.</p>
<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>
{''.join(rows)}</table>
<p>MAPE is of the price forecast P&#770;<sub>t+1</sub>. Price-unit RMSE/MAE are per currency
({metrics['unpriced']:,} forecasts without a base price are left out of them only).
Directional accuracy counts sessions with a nonzero realized return; a zero forecast is a miss,
and the last-value forecast names no direction (n/a). Share of up moves (accuracy of always
forecasting "up"): {_fmt(metrics['always_up_fraction'], 4)}. The binomial test is exact and
two-sided against 50 % and assumes independent sessions; returns of different stocks on the same
day are correlated, so the p-value overstates the evidence.</p>
<img alt="predictions vs actual" src="data:image/png;base64,{image}" style="max-width:100%">
<pre>{html.escape(json.dumps(metrics, indent=2))}</pre>
</body></html>
"""
