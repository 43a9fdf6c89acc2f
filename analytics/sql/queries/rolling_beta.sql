-- rolling_beta: each instrument's 60-session rolling beta against a benchmark, per session.
--
-- Parameters: @symbols ARRAY<STRING>, @benchmark STRING (ticker or instrument id, e.g. SPY or
-- 1321.T), @start DATE, @end DATE (inclusive: the sessions reported; each window reaches back
-- 60 common sessions, before @start when needed).
-- Formula: over the last 60 sessions on which both the instrument and the benchmark have a
-- daily log return (rows of the common-date series, not calendar days),
--   beta_60(t) = COVAR_SAMP(r_i, r_b) / VAR_SAMP(r_b);
-- NULL until 60 common sessions exist (pandas: r_i.rolling(60).cov(r_b) / r_b.rolling(60).var()).
-- Input: daily_returns (log returns of the feature price, one source per session).
WITH r AS (
  SELECT instrument_id, symbol, session_date, log_return
  FROM miraikakaku.daily_returns
  WHERE session_date <= @end
    AND log_return IS NOT NULL
),
bench AS (
  SELECT instrument_id AS benchmark_id, session_date, log_return AS r_b
  FROM r
  WHERE symbol = @benchmark OR instrument_id = @benchmark
),
pairs AS (
  SELECT i.instrument_id, i.symbol, b.benchmark_id, i.session_date, i.log_return AS r_i, b.r_b
  FROM r AS i
  JOIN bench AS b ON i.session_date = b.session_date
  WHERE i.symbol IN UNNEST(@symbols) OR i.instrument_id IN UNNEST(@symbols)
),
rolled AS (
  SELECT instrument_id, symbol, benchmark_id AS benchmark, session_date, r_i, r_b,
         COUNT(*) OVER w AS n_60,
         COVAR_SAMP(r_i, r_b) OVER w AS cov_60,
         VAR_SAMP(r_b) OVER w AS var_b_60
  FROM pairs
  WINDOW w AS (PARTITION BY instrument_id ORDER BY session_date
               ROWS BETWEEN 59 PRECEDING AND CURRENT ROW)
)
SELECT instrument_id, symbol, benchmark, session_date, r_i, r_b, n_60,
       IF(n_60 = 60 AND var_b_60 > 0, cov_60 / var_b_60, NULL) AS beta_60
FROM rolled
WHERE session_date BETWEEN @start AND @end
ORDER BY instrument_id, session_date
