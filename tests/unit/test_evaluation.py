"""The model quality report: metric formulas on hand-checkable arrays, the SMA baseline on real
prices, and ``evaluate`` end to end on a tiny real slice with a tiny trained model.

Expected values are computed here independently: metrics with numpy and ``math.comb`` (not
scipy), the SMA forecast and the price errors from the CSV closes with pandas.
Run: ``pytest tests/unit/test_evaluation.py -q``.
"""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest

from miraikakaku.settings import Settings
from models.evaluation import (
    binomial_p_value,
    evaluate,
    forecast_last_value,
    forecast_metrics,
    forecast_sma,
    lookup_base_prices,
)
from models.training import build_examples, train

pytestmark = pytest.mark.unit

PRIORITY = ["chart0", "sp500_5yr", "yfinance", "mlbot", "user"]
START, END, CUTOFF = "2017-03-01", "2017-11-24", "2017-09-29"
SHARED = Settings().shared_data_dir / "normalized"
US = SHARED / "us_daily_sp500_5yr_2013_2018.normalized.csv.gz"
JP = SHARED / "jp_daily.normalized.csv.gz"


def _rows(path, prefix: str, keep) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
        lines = (line.rstrip("\n") for line in f if line.startswith(prefix))
        return [header] + [line for line in lines if keep(line.split(","))]


@pytest.fixture(scope="module")
def slice_files(tmp_path_factory):
    """AAPL (S&P 500 file) and 7203.T (chart0 rows only) from March to November 2017."""
    d = tmp_path_factory.mktemp("eval-slice")
    aapl = _rows(US, "AAPL,", lambda f: START <= f[1] <= END)
    toyota = _rows(JP, "7203.T,", lambda f: f[8] == "chart0" and START <= f[1] <= END)
    paths = [d / "aapl.csv", d / "toyota.csv"]
    for p, rows in zip(paths, (aapl, toyota)):
        p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def closes(slice_files) -> dict[str, pd.Series]:
    """Feature prices by ISO date: AAPL close; 7203.T chart0 close (chart0 has no adj_close)."""
    out = {}
    for path, iid in zip(slice_files, ("XNAS:AAPL", "XTKS:7203")):
        df = pd.read_csv(path, dtype={"date": str})
        out[iid] = df.set_index("date")["close"].astype(float)
    return out


def test_metrics_on_hand_checkable_arrays():
    t = np.array([0.01, -0.02, 0.0, 0.03])
    p = np.array([0.005, 0.01, -0.01, 0.02])
    base = np.array([100.0, 200.0, 50.0, 10.0])
    cur = np.array(["USD", "USD", "JPY", "JPY"], dtype=object)
    m = forecast_metrics(t, p, base, cur)
    assert m["n"] == 4 and m["n_direction"] == 3
    assert m["rmse_log_return"] == pytest.approx(math.sqrt((0.005**2 + 0.03**2 + 0.01**2
                                                            + 0.01**2) / 4))
    assert m["mae_log_return"] == pytest.approx((0.005 + 0.03 + 0.01 + 0.01) / 4)
    pred_price, real_price = base * np.exp(p), base * np.exp(t)
    assert m["mape"] == pytest.approx(100 * np.mean(np.abs(pred_price - real_price) / real_price))
    assert m["direction_hits"] == 2 and m["directional_accuracy"] == pytest.approx(2 / 3)
    assert m["binomial_p_value"] == pytest.approx(1.0)  # 2 of 3 is as likely as 1 of 3
    usd = pred_price[:2] - real_price[:2]
    assert m["price"]["USD"] == {"n": 2, "rmse": pytest.approx(np.sqrt(np.mean(usd**2))),
                                 "mae": pytest.approx(np.mean(np.abs(usd)))}
    assert set(m["price"]) == {"USD", "JPY"}
    flat = forecast_metrics(t, forecast_last_value(np.zeros((4, 20, 8))))
    assert flat["directional_accuracy"] is None and flat["binomial_p_value"] is None
    assert flat["mape"] == pytest.approx(100 * np.mean(np.abs(np.expm1(-t))))
    with pytest.raises(ValueError):
        forecast_metrics(t, p[:3])


def _binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value: the total probability of outcomes no likelier than k (log-space
    pmf from ``math.lgamma``, so large n stays cheap)."""
    def logpmf(i: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)

    ref = logpmf(k)
    return min(1.0, sum(math.exp(logpmf(i)) for i in range(n + 1)
                        if logpmf(i) <= ref + 1e-7))


@pytest.mark.parametrize("k,n", [(60, 100), (42046, 87422), (5, 10), (0, 7)])
def test_binomial_p_value_matches_the_exact_sum(k, n):
    if n <= 100:  # small n: exact rational arithmetic as a check on the log-space helper
        pmf = [math.comb(n, i) for i in range(n + 1)]
        assert _binomial_two_sided(k, n) == pytest.approx(
            sum(q for q in pmf if q <= pmf[k]) / 2**n, rel=1e-9)
    assert binomial_p_value(k, n) == pytest.approx(_binomial_two_sided(k, n), rel=1e-6)
    with pytest.raises(ValueError):
        binomial_p_value(n + 1, n)


def test_sma_baseline_is_the_mean_of_the_last_five_prices(slice_files, closes):
    ex = build_examples(slice_files, PRIORITY)
    sma = forecast_sma(ex.x)
    assert sma.shape == (len(ex),) and len(ex) > 200
    for i in range(0, len(ex), 17):
        series = closes[ex.instrument_id[i]]
        upto = series[series.index <= str(ex.as_of_date[i])]
        expected = math.log(upto.iloc[-5:].mean() / upto.iloc[-1])
        assert sma[i] == pytest.approx(expected, abs=2e-6)  # windows are float32
    with pytest.raises(ValueError):
        forecast_sma(ex.x[:, :3, :])


def test_base_prices_are_found_and_checked(slice_files, closes):
    ex = build_examples(slice_files, PRIORITY)
    base, currency, source = lookup_base_prices(slice_files, ex, PRIORITY)
    assert np.isfinite(base).all()
    for i in range(0, len(ex), 11):
        assert base[i] == closes[ex.instrument_id[i]][str(ex.as_of_date[i])]
    assert set(currency) == {"USD", "JPY"}
    assert set(source) == {"user", "chart0"}  # aapl.csv has no source column: "user"
    broken = ex.take(np.arange(len(ex)))
    broken.y[0] += 0.01  # a target no source reproduces stays unpriced
    assert np.isnan(lookup_base_prices(slice_files, broken, PRIORITY)[0][0])


@pytest.fixture(scope="module")
def report(slice_files, tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("eval-data"))
    version = train(slice_files, settings=settings, epochs=1, units=4, batch_size=32,
                    cutoff=CUTOFF, progress=False)
    out = evaluate(settings=settings, paths=slice_files)
    return settings, version, out


def test_report_files_hold_the_right_numbers(report, slice_files, closes):
    settings, version, out = report
    assert out.directory.parent == settings.data_dir / "reports"
    assert out.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads(out.metrics_path.read_text())
    assert on_disk["model"]["version"] == version.version == "1"
    assert on_disk["model"]["cutoff_date"] == CUTOFF

    # Independent recomputation: the same held-out examples, prices from the CSV closes.
    ex = build_examples(slice_files, PRIORITY)
    held = ex.take(ex.as_of_date > np.datetime64(CUTOFF))
    assert on_disk["period"]["examples"] == len(held) > 50
    assert on_disk["period"]["first_as_of"] > CUTOFF
    lstm = version.load().predict(held.x, verbose=0).reshape(-1).astype(np.float64)
    base = np.array([closes[i][str(d)] for i, d in zip(held.instrument_id, held.as_of_date)])
    real = np.array([closes[i][str(d)] for i, d in zip(held.instrument_id, held.target_date)])
    sma = np.array([closes[i][closes[i].index <= str(d)].iloc[-5:].mean()
                    for i, d in zip(held.instrument_id, held.as_of_date)])
    y = np.log(real / base)
    nz = y != 0
    usd = np.array([i == "XNAS:AAPL" for i in held.instrument_id])
    for name, pred_price, pred_return in (("lstm", base * np.exp(lstm), lstm),
                                          ("last_value", base, np.zeros_like(base)),
                                          ("sma_5", sma, np.log(sma / base))):
        m = on_disk["forecasts"][name]
        err = pred_price - real
        assert m["n"] == len(held)
        assert m["mape"] == pytest.approx(100 * np.mean(np.abs(err) / real), rel=1e-4)
        assert m["rmse_log_return"] == pytest.approx(np.sqrt(np.mean((pred_return - y) ** 2)),
                                                     rel=1e-3)
        assert m["price"]["USD"]["rmse"] == pytest.approx(np.sqrt(np.mean(err[usd] ** 2)),
                                                          rel=1e-4)
        assert m["price"]["JPY"]["mae"] == pytest.approx(np.mean(np.abs(err[~usd])), rel=1e-4)
        if name == "last_value":
            assert m["directional_accuracy"] is None
        else:
            hits = int(np.sum(np.sign(pred_return[nz]) == np.sign(y[nz])))
            assert m["direction_hits"] == hits
            assert m["binomial_p_value"] == pytest.approx(
                _binomial_two_sided(hits, int(nz.sum())), rel=1e-6)
        page = out.html_path.read_text()
        assert f"<td>{name}</td>" in page
        assert f"<td>{m['rmse_log_return']:.6g}</td>" in page
        assert f"<td>{m['mape']:.5g}</td>" in page
    assert "data:image/png;base64," in page and "<script" not in page
