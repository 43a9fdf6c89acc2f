-- beta: each instrument's beta against a benchmark (an index ETF) over a window.
--
-- Parameters: @symbols ARRAY<STRING> (tickers or instrument ids), @benchmark STRING (ticker or
-- instrument id: SPY for US stocks, 1321.T, the Nikkei 225 ETF, for Tokyo), @start DATE,
-- @end DATE (inclusive).
-- Formula (the market-model slope; Bodie, Kane & Marcus, "Investments", chapter "Index Models"):
--   beta = COVAR_SAMP(r_i, r_b) / VAR_SAMP(r_b)
-- over the sessions in the window where both the instrument and the benchmark have a daily log
-- return (common dates only); n counts them. alpha is the daily intercept
-- AVG(r_i) - beta * AVG(r_b) (log-return units per session), corr the Pearson correlation and
-- r_squared = corr^2. Beta is NULL below 2 common sessions or when the benchmark has no variance.
-- Input: daily_returns (log returns of the feature price, one source per session).
WITH r AS (
  SELECT instrument_id, symbol, session_date, log_return
  FROM miraikakaku.daily_returns
  WHERE session_date BETWEEN @start AND @end
    AND log_return IS NOT NULL
),
bench AS (
  SELECT instrument_id AS benchmark_id, session_date, log_return AS r_b
  FROM r
  WHERE symbol = @benchmark OR instrument_id = @benchmark
),
stats AS (
  SELECT i.instrument_id, MIN(i.symbol) AS symbol, MIN(b.benchmark_id) AS benchmark,
         COUNT(*) AS n,
         COVAR_SAMP(i.log_return, b.r_b) AS cov_ib,
         VAR_SAMP(b.r_b) AS var_b,
         CORR(i.log_return, b.r_b) AS corr,
         AVG(i.log_return) AS mean_r_i,
         AVG(b.r_b) AS mean_r_b
  FROM r AS i
  JOIN bench AS b ON i.session_date = b.session_date
  WHERE i.symbol IN UNNEST(@symbols) OR i.instrument_id IN UNNEST(@symbols)
  GROUP BY i.instrument_id
)
SELECT instrument_id, symbol, benchmark, n,
       IF(var_b > 0, cov_ib / var_b, NULL) AS beta,
       IF(var_b > 0, mean_r_i - cov_ib / var_b * mean_r_b, NULL) AS alpha,
       corr,
       corr * corr AS r_squared,
       cov_ib, var_b
FROM stats
ORDER BY instrument_id
